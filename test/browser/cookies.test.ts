/** The refresh cookie's browser-facing design in Chromium (cookies.browser.ts), and the docs UI (docs.browser.ts). */
import { haveChromium } from './chromium.ts'

if (haveChromium()) {
  await import('./cookies.browser.ts')
  await import('./docs.browser.ts')
}
