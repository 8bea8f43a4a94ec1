/**
 * Runs the browser tests (*.browser.ts) when Debian's Chromium is installed. CI installs
 * it (.ci/run) and fails here if it is missing; a developer machine without it reports the file
 * as skipped, with the command that enables it.
 */
import { existsSync } from 'node:fs'
import t from 'tap'

if (existsSync('/usr/bin/chromium')) {
  await import('./cookies.browser.ts')
  await import('./docs.browser.ts')
  await import('./client.browser.ts')
  await import('./passkeys.browser.ts')
} else if (process.env.CI === 'true') {
  throw new Error('/usr/bin/chromium is required in CI (apt-get install chromium)')
} else {
  t.plan(0, 'skipped: /usr/bin/chromium is not installed (apt-get install chromium to run the browser tests)')
}
