/** Passkeys through @gatehouse/client in Chromium, with a CDP virtual authenticator (passkeys.browser.ts). */
import { haveChromium } from './chromium.ts'

if (haveChromium()) await import('./passkeys.browser.ts')
