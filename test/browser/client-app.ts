/**
 * Shared set-up of the tests of @gatehouse/client in Chromium (client.browser.ts,
 * passkeys.browser.ts): one headless Chromium, a test app on its own origin
 * (http://localhost:<app port>) that serves the built `client/dist/gatehouse-client.js`, the real
 * service reached as http://localhost:<service port> (the same site, so the SameSite=Strict
 * refresh cookie goes along; the test app is in CORS_ORIGINS and is the WebAuthn origin, RP ID
 * `localhost`), and helpers to drive the client in a page.
 *
 * Imported once per process (ES modules are cached): the files that use it share the browser
 * and the test app.
 */
import { readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { listeningTestApp, PASSWORD, testDb, type Test } from '../helper.ts'

export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]
const CLIENT_JS = new URL('../../client/dist/gatehouse-client.js', import.meta.url)

const clientJs = await readFile(CLIENT_JS, 'utf8').catch(() => {
  throw new Error('client/dist/gatehouse-client.js is missing: run npm run build:client (npm test does)')
})

/**
 * The test app. `/?base=URL` loads the client for that Gatehouse as `window.gh`, with
 * `window.GatehouseError` and `window.states` (every status onChange reported);
 * `/gatehouse-client.js` is the built client.
 */
async function testAppServer (): Promise<{ origin: string, server: Server }> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x')
    if (url.pathname === '/gatehouse-client.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' }).end(clientJs)
    } else if (url.pathname === '/') {
      const base = JSON.stringify(url.searchParams.get('base') ?? '')
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(
        '<!doctype html><meta charset="utf-8"><title>app</title><script type="module">' +
        "import { createGatehouseClient, GatehouseError } from '/gatehouse-client.js'\n" +
        `window.gh = createGatehouseClient({ baseUrl: ${base} })\n` +
        'window.GatehouseError = GatehouseError\n' +
        'window.states = []\n' +
        'window.gh.onChange((s) => window.states.push(s.status))\n' +
        '</script>'
      )
    } else {
      res.writeHead(404).end()
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { origin: `http://localhost:${(server.address() as AddressInfo).port}`, server }
}

export const site = await testAppServer()
// The file's database boots while Chromium starts.
export const [browser]: [Browser, unknown] = await Promise.all([
  chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS }),
  testDb()
])
t.teardown(async () => {
  await browser.close()
  site.server.closeAllConnections()
  await new Promise<void>((resolve) => site.server.close(() => resolve()))
})

/** One request as the service received it. */
export interface Wire { method: string, path: string, status: number | undefined }

/** The service listening on 127.0.0.1, reached by the pages as http://localhost:<port>. */
export async function service (test: Test, opts: { now?: () => Date, env?: Record<string, string> } = {}) {
  const { app, port } = await listeningTestApp(test, {
    now: opts.now,
    env: { COOKIE_SECURE: 'false', CORS_ORIGINS: site.origin, WEBAUTHN_RP_ID: 'localhost', WEBAUTHN_ORIGINS: site.origin, ...opts.env }
  })
  const url = `http://localhost:${port}`
  const wire: Wire[] = []
  app.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const entry: Wire = { method: req.method ?? '', path: new URL(req.url ?? '/', 'http://x').pathname, status: undefined }
    wire.push(entry)
    res.on('finish', () => { entry.status = res.statusCode })
  })
  // Chromium's idle preconnect sockets would hold app.close() (see cookies.browser.ts).
  test.teardown(() => app.server.closeAllConnections())
  /** The requests `keep` selects from now on. */
  const requestsFromNow = (keep: (w: Wire) => boolean) => {
    const from = wire.length
    return () => wire.slice(from).filter(keep)
  }
  return { app: app as App, url, port, wire, requestsFromNow }
}

/** A browser profile of its own (cookies, locks, channels, clock), closed after the test. */
export async function newContext (test: Test, opts: { clock?: boolean } = {}): Promise<BrowserContext> {
  const context = await browser.newContext()
  test.teardown(() => context.close())
  if (opts.clock === true) await context.clock.install()
  return context
}

/** Loads the test app in `page` for that Gatehouse; resolves once its page-load check has settled. */
export async function loadApp (page: Page, gatehouse: string) {
  await page.goto(`${site.origin}/?base=${encodeURIComponent(gatehouse)}`)
  await page.waitForFunction(() => (globalThis as unknown as Window).gh !== undefined)
  await page.evaluate(() => (globalThis as unknown as Window).gh.ready)
}

/** A new tab of the test app. */
export async function openTab (context: BrowserContext, gatehouse: string): Promise<Page> {
  const page = await context.newPage()
  await loadApp(page, gatehouse)
  return page
}

// The test's tsconfig has no DOM lib: what the page exposes, typed loosely.
export interface PublicPasskey { id: string, name: string, createdAt: string, lastUsedAt: string | null, backedUp: boolean }
export interface PageClient {
  ready: Promise<unknown>
  state: { status: string, user: { email: string } | null }
  signup (email: string, password: string): Promise<{ verificationRequired: boolean, user: { id: string, email: string } }>
  login (email: string, password: string): Promise<{ mfaRequired: boolean }>
  loginMfa (code: string | { backupCode: string }): Promise<{ email: string }>
  registerPasskey (name?: string): Promise<PublicPasskey>
  loginWithPasskey (): Promise<{ id: string, email: string }>
  verifyEmail (token: string): Promise<void>
  resendVerification (email: string): Promise<void>
  logout (): Promise<void>
  logoutAll (): Promise<number>
  getUser (): Promise<{ email: string, id: string, emailVerified?: boolean } | null>
  getAccessToken (): Promise<string | null>
  fetch (input: string, init?: Record<string, unknown>): Promise<{ status: number, json (): Promise<Record<string, unknown>> }>
}
export interface Window { gh: PageClient, states: string[], GatehouseError: new (...args: never[]) => unknown }
export const gh = () => (globalThis as unknown as Window).gh

export const status = (page: Page) => page.evaluate(() => (globalThis as unknown as Window).gh.state.status)
export const states = (page: Page) => page.evaluate(() => (globalThis as unknown as Window).states)
export const tokenOf = (page: Page) => page.evaluate(() => (globalThis as unknown as Window).gh.getAccessToken())
export const waitForStatus = (page: Page, expected: string) =>
  page.waitForFunction((s) => (globalThis as unknown as Window).gh.state.status === s, expected, { timeout: 10_000 })
export const signupIn = (page: Page, email: string) => page.evaluate(({ email, password }) =>
  (globalThis as unknown as Window).gh.signup(email, password), { email, password: PASSWORD })

/**
 * Runs `gh[call](...args)` in the page and returns what it threw, as the app sees it: whether it
 * is a GatehouseError, its name, code, status, message and its cause's name and code; null when
 * it did not throw.
 */
export const thrownWith = (page: Page, call: string, ...args: unknown[]) => page.evaluate(async ({ call, args }) => {
  const w = globalThis as unknown as Window
  try {
    await (w.gh as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[call]!(...args)
    return null
  } catch (err) {
    const e = err as { name: string, code: string, status: number, message: string, cause?: { name?: string, code?: string } }
    return {
      isGatehouseError: err instanceof w.GatehouseError, name: e.name, code: e.code, status: e.status,
      message: e.message, cause: { name: e.cause?.name, code: e.cause?.code }
    }
  }
}, { call, args })

/** `thrownWith`, reduced to what most assertions compare: the kind of error, its code and status. */
export async function thrown (page: Page, call: string, ...args: unknown[]) {
  const e = await thrownWith(page, call, ...args)
  return e === null ? null : { isGatehouseError: e.isGatehouseError, name: e.name, code: e.code, status: e.status }
}

/** The refresh cookie the browser holds for the service (it is scoped to /api/auth). */
export async function refreshCookieIn (context: BrowserContext, gatehouse: string) {
  return (await context.cookies(`${gatehouse}/api/auth/refresh`)).find((c) => c.name === 'refresh_token')
}

export const settle = (ms = 800) => new Promise((resolve) => setTimeout(resolve, ms))
