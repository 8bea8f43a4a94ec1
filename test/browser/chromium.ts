/**
 * The guard of every browser test file: the tests run when Debian's Chromium is installed. CI
 * installs it (.ci/run) and fails if it is missing; a developer machine without it reports the
 * file as skipped, with the command that enables it. CI runs them in its PostgreSQL pass only
 * (GATEHOUSE_BROWSER_TESTS=postgres-pass in its PGlite pass; the reason is in .ci/run). Each
 * browser test file is a thin entry that asks this first and then imports its *.browser.ts, so
 * nothing launches without Chromium.
 */
import { existsSync } from 'node:fs'
import t from 'tap'

export function haveChromium (): boolean {
  if (process.env.GATEHOUSE_BROWSER_TESTS === 'postgres-pass') {
    // .ci/run's PGlite pass: the browser tests run in its PostgreSQL pass (see .ci/run).
    t.plan(0, 'skipped: CI runs the browser tests once, in its PostgreSQL pass')
    return false
  }
  if (existsSync('/usr/bin/chromium')) return true
  if (process.env.CI === 'true') throw new Error('/usr/bin/chromium is required in CI (apt-get install chromium)')
  t.plan(0, 'skipped: /usr/bin/chromium is not installed (apt-get install chromium to run the browser tests)')
  return false
}
