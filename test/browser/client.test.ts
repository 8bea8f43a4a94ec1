/** @gatehouse/client in Chromium: tabs, refresh, logout, MFA, offline (client.browser.ts). */
import { haveChromium } from './chromium.ts'

if (haveChromium()) await import('./client.browser.ts')
