/**
 * The refresh cookie's browser-facing design, end to end: the real service listening on
 * 127.0.0.1, driven by real headless Chromium (playwright-core + Debian's /usr/bin/chromium).
 *
 * Origins used (cookies ignore ports; 127.0.0.1 and localhost are different sites):
 * - the service, http://127.0.0.1:<app port> (and, for the same-site case, http://localhost:<app port>);
 * - two tiny static sites (node:http on 127.0.0.1), browsed as http://localhost:<port>:
 *   `siteA` is the one listed in CORS_ORIGINS where a scenario needs it, `siteB` is never listed.
 *
 * The SPA shell "at the service origin" is served by page.route, as a reverse proxy in front of
 * the API would: a document rendered from an API response carries helmet's CSP
 * `default-src 'none'`, under which the page may not fetch at all (checked in the first test).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { eq } from 'drizzle-orm'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { authEvents, refreshTokens, sessions } from '../../src/db/schema.ts'
import { listeningTestApp, PASSWORD, signup as injectSignup, testDb, uniqueEmail, type Test } from '../helper.ts'

const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]
const started = Date.now()

// ---------------------------------------------------------------------------------------------
// Static sites (the other origins)

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

/**
 * `/` is a blank page; `/form?action=URL` auto-submits an empty POST form to URL (the classic
 * CSRF page); `/link?href=URL` holds a link `#go` to URL (a cross-site top-level navigation).
 */
async function staticSite (): Promise<{ origin: string, server: Server }> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x')
    let body = '<!doctype html><meta charset="utf-8"><title>static</title><p>static</p>'
    if (url.pathname === '/form') {
      const action = escapeHtml(url.searchParams.get('action') ?? '')
      body = `<!doctype html><meta charset="utf-8"><title>form</title><form id="f" method="POST" action="${action}"></form>` +
        '<script>document.getElementById("f").submit()</script>'
    } else if (url.pathname === '/link') {
      body = `<!doctype html><meta charset="utf-8"><title>link</title><a id="go" href="${escapeHtml(url.searchParams.get('href') ?? '')}">go</a>`
    } else if (url.pathname !== '/') {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(body)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { origin: `http://localhost:${(server.address() as AddressInfo).port}`, server }
}

const siteA = await staticSite()
const siteB = await staticSite()
t.teardown(async () => {
  for (const s of [siteA, siteB]) {
    s.server.closeAllConnections()
    await new Promise<void>((resolve) => s.server.close(() => resolve()))
  }
})

// ---------------------------------------------------------------------------------------------
// One browser for the file

const userDataDir = await mkdtemp(join(tmpdir(), 'gatehouse-chromium-'))
// Chromium starts in its own process while this one boots PGlite for the file's database.
const [context]: [BrowserContext, unknown] = await Promise.all([
  chromium.launchPersistentContext(userDataDir, { executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS }),
  testDb()
])
t.teardown(async () => {
  await context.close()
  await rm(userDataDir, { recursive: true, force: true })
  t.comment(`browser file wall time ${Date.now() - started} ms`)
})

// ---------------------------------------------------------------------------------------------
// Helpers

/** The real app on this file's database, listening on 127.0.0.1 (plain http, COOKIE_SECURE=false). */
async function listeningApp (test: Test, env: Record<string, string> = {}) {
  const { app, base, port } = await listeningTestApp(test, { env: { COOKIE_SECURE: 'false', ...env } })
  const wire = recordWire(app)
  // Runs after the subtest's pages close and before the helper's app.close() (teardowns are
  // LIFO). Chromium keeps speculative preconnect sockets that never send a byte; Node's
  // closeIdleConnections() (Fastify forceCloseConnections: 'idle') does not count them as idle,
  // so without this app.close() waits about 100 s for them (see the report).
  test.teardown(() => app.server.closeAllConnections())
  await context.clearCookies()
  return { app, wire, base, port }
}

async function newPage (test: Test): Promise<Page> {
  const page = await context.newPage()
  test.teardown(() => page.close())
  return page
}

/** A blank document whose origin is `origin` (the SPA shell; see the file comment). */
async function spaPage (test: Test, origin: string): Promise<Page> {
  const page = await newPage(test)
  const url = `${origin}/__spa__`
  await page.route(url, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>SPA</title>' }))
  await page.goto(url)
  await page.unroute(url)
  return page
}

async function sitePage (test: Test, origin: string): Promise<Page> {
  const page = await newPage(test)
  await page.goto(`${origin}/`)
  return page
}

interface FetchInit { method?: string, headers?: Record<string, string>, body?: string, credentials?: 'omit' | 'same-origin' | 'include' }
type FetchResult =
  | { ok: true, status: number, body: Record<string, unknown>, setCookieHeader: string | null, documentCookie: string }
  | { ok: false, error: string, documentCookie: string }

/** fetch() run inside the page: what the page's script can see of the response. */
function pageFetch (page: Page, url: string, init: FetchInit = {}): Promise<FetchResult> {
  return page.evaluate(async ({ url, init }) => {
    // The test's tsconfig has no DOM lib.
    const doc = (globalThis as unknown as { document: { cookie: string } }).document
    try {
      const res = await fetch(url, init)
      const text = await res.text()
      let body: Record<string, unknown>
      try { body = JSON.parse(text) } catch { body = { raw: text } }
      return { ok: true as const, status: res.status, body, setCookieHeader: res.headers.get('set-cookie'), documentCookie: doc.cookie }
    } catch (err) {
      return { ok: false as const, error: String(err), documentCookie: doc.cookie }
    }
  }, { url, init })
}

const json = (body: unknown): FetchInit => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body)
})

/** One request as the service's HTTP server received it (a passive 'request' listener). */
interface WireRequest { method: string, path: string, host: string, origin: string | undefined, cookie: string, status: number | undefined }

/**
 * What the browser actually put on the wire, read at the server: Playwright's view of a request
 * that fails CORS has only the provisional headers (no Cookie, no Origin), so it cannot be trusted.
 */
function recordWire (app: App): WireRequest[] {
  const log: WireRequest[] = []
  app.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const entry: WireRequest = {
      method: req.method ?? '',
      path: new URL(req.url ?? '/', 'http://x').pathname,
      host: req.headers.host ?? '',
      origin: req.headers.origin,
      cookie: req.headers.cookie ?? '',
      status: undefined
    }
    log.push(entry)
    res.on('finish', () => { entry.status = res.statusCode })
  })
  return log
}

/** Runs `action`, then waits for the service to have answered the matching request. */
async function observe<T> (wire: WireRequest[], method: string, path: string, action: () => Promise<T>) {
  const from = wire.length
  const result = await action()
  const deadline = Date.now() + 10_000
  let seen: WireRequest | undefined
  while (Date.now() < deadline) {
    seen = wire.slice(from).find((r) => r.method === method && r.path === path && r.status !== undefined)
    if (seen !== undefined) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return { result, seen, cookie: seen?.cookie ?? '', origin: seen?.origin, status: seen?.status }
}

async function refreshCookieOf (url: string) {
  return (await context.cookies(url)).find((c) => c.name === 'refresh_token')
}

/** Every refresh token row, in a comparable form: any rotation or revocation changes it. */
async function tokenRows (app: App) {
  const rows = await app.db.select().from(refreshTokens).orderBy(refreshTokens.createdAt, refreshTokens.id)
  return rows.map((r) => ({
    id: r.id,
    sessionId: r.sessionId,
    rotatedAt: r.rotatedAt?.toISOString() ?? null,
    revokedAt: r.revokedAt?.toISOString() ?? null
  }))
}

function expectError (test: Test, r: FetchResult, status: number, code: string, message?: string) {
  test.ok(r.ok, `fetch resolved (${r.ok ? r.status : r.error})`)
  if (!r.ok) return
  test.equal(r.status, status, `status ${status}`)
  test.equal(r.body.code, code, `code ${code}`)
  if (message !== undefined) test.equal(r.body.message, message)
}

function okBody (test: Test, r: FetchResult, status: number): Record<string, unknown> {
  test.ok(r.ok, `fetch resolved (${r.ok ? r.status : r.error})`)
  if (!r.ok) return {}
  test.equal(r.status, status, `status ${status} (${JSON.stringify(r.body)})`)
  return r.body
}

const cookieNamed = (header: string, name: string) =>
  header.split(';').map((p) => p.trim()).find((p) => p.startsWith(`${name}=`))?.slice(name.length + 1)

// ---------------------------------------------------------------------------------------------

t.test('same origin: HttpOnly Strict cookie on /api/auth, rotation on refresh, reuse detected', async (t) => {
  const { app, wire, base } = await listeningApp(t, { REFRESH_REUSE_GRACE_SECONDS: '0' })

  // A document rendered from an API response runs under helmet's CSP: it cannot even fetch.
  const raw = await newPage(t)
  await raw.goto(`${base}/health/live`)
  const blocked = await pageFetch(raw, '/health/live')
  t.notOk(blocked.ok, 'CSP default-src none on API responses blocks fetch from such a document')

  const page = await spaPage(t, base)
  const email = uniqueEmail('browser')
  const signed = await pageFetch(page, '/api/auth/signup', json({ email, password: PASSWORD }))
  const body = okBody(t, signed, 201)
  const accessToken = String(body.accessToken)
  t.match(accessToken, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'access token in the body')
  t.equal(body.tokenType, 'Bearer')
  t.equal(signed.ok && signed.setCookieHeader, null, 'Set-Cookie is not readable by the page')
  t.equal(signed.documentCookie, '', 'document.cookie is empty: the refresh cookie is HttpOnly')

  const cookie = await refreshCookieOf(`${base}/api/auth/refresh`)
  t.ok(cookie, 'the browser stored refresh_token')
  if (cookie === undefined) return
  t.equal(cookie.httpOnly, true, 'httpOnly')
  t.equal(cookie.sameSite, 'Strict', 'SameSite=Strict')
  t.equal(cookie.path, '/api/auth', 'Path=/api/auth')
  t.equal(cookie.domain, '127.0.0.1', 'host-only cookie for the service host')
  t.equal(cookie.secure, false, 'not Secure with COOKIE_SECURE=false')
  const days = (cookie.expires * 1000 - Date.now()) / 86_400_000
  t.ok(days > 6.9 && days <= 7.01, `persistent, Max-Age about 7 days (${days.toFixed(3)})`)
  t.notOk(JSON.stringify(body).includes(cookie.value), 'the refresh token is not in the body')
  t.match(cookie.value, /^[\w-]{43,}$/, 'opaque token, at least 256 bits of base64url')
  const stored = await app.db.select().from(refreshTokens)
  t.equal(stored.length, 1, 'one refresh token row')
  t.notOk(JSON.stringify(stored).includes(cookie.value), 'the database holds only a hash of it')

  // Scoped to /api/auth: the browser's jar and the wire agree.
  t.same((await context.cookies(`${base}/api/x`)).map((c) => c.name), [], 'no cookie for /api/x')
  t.same((await context.cookies(`${base}/health/live`)).map((c) => c.name), [], 'no cookie for /health/live')
  const live = await observe(wire, 'GET', '/health/live', () => pageFetch(page, '/health/live'))
  t.equal(cookieNamed(live.cookie, 'refresh_token'), undefined, 'GET /health/live carries no refresh_token')
  const userId = String((body.user as { id: string }).id)
  const tasks = await observe(wire, 'GET', `/api/${userId}/tasks`, () =>
    pageFetch(page, `/api/${userId}/tasks`, { headers: { authorization: `Bearer ${accessToken}` } }))
  t.equal(tasks.result.ok && tasks.result.status, 200, 'the rest of the API works on the Bearer token')
  t.equal(cookieNamed(tasks.cookie, 'refresh_token'), undefined, 'GET /api/:userId/tasks carries no refresh_token')

  const me = await observe(wire, 'GET', '/api/auth/me', () =>
    pageFetch(page, '/api/auth/me', { headers: { authorization: `Bearer ${accessToken}` } }))
  const meBody = okBody(t, me.result, 200)
  t.equal(meBody.email, email, 'GET /api/auth/me with the Bearer token')
  t.equal(cookieNamed(me.cookie, 'refresh_token'), cookie.value, 'under /api/auth the browser does send the cookie')

  // Refresh rotates the cookie.
  const rotated = await observe(wire, 'POST', '/api/auth/refresh', () =>
    pageFetch(page, '/api/auth/refresh', { method: 'POST', credentials: 'same-origin' }))
  t.equal(cookieNamed(rotated.cookie, 'refresh_token'), cookie.value, 'refresh sent the cookie')
  t.equal(rotated.origin, base, 'with the page\'s own Origin (CSRF rule lets it through)')
  const refreshed = okBody(t, rotated.result, 200)
  t.type(refreshed.accessToken, 'string', 'new access token')
  t.not(refreshed.accessToken, accessToken)
  const next = await refreshCookieOf(`${base}/api/auth/refresh`)
  t.ok(next, 'a cookie is still set')
  t.not(next?.value, cookie.value, 'the cookie value rotated')
  t.equal(next?.httpOnly, true)
  t.equal(next?.sameSite, 'Strict')
  t.equal(next?.path, '/api/auth')
  t.equal(rotated.result.documentCookie, '', 'still invisible to scripts')

  // The old value presented again (grace is 0 here): reuse, the family is revoked, the cookie dropped.
  await context.addCookies([{ ...cookie }])
  t.equal((await refreshCookieOf(`${base}/api/auth/refresh`))?.value, cookie.value, 'the old cookie is back in the jar')
  const reused = await pageFetch(page, '/api/auth/refresh', { method: 'POST', credentials: 'same-origin' })
  expectError(t, reused, 401, 'REFRESH_TOKEN_REUSED')
  t.equal(await refreshCookieOf(`${base}/api/auth/refresh`), undefined, 'the 401 cleared the cookie in the browser')
  const rows = await tokenRows(app)
  t.equal(rows.length, 2, 'two tokens in the family')
  t.ok(rows.every((r) => r.revokedAt !== null), 'every refresh token of the user is revoked')
  const events = await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'refresh_token_reused'))
  t.equal(events.length, 1, 'a refresh_token_reused event was recorded')

  // The successor is dead too.
  if (next !== undefined) await context.addCookies([{ ...next }])
  expectError(t, await pageFetch(page, '/api/auth/refresh', { method: 'POST', credentials: 'same-origin' }), 401, 'REFRESH_TOKEN_INVALID')
})

t.test('logout from the browser clears the cookie and revokes the session at once', async (t) => {
  const { app, wire, base } = await listeningApp(t)
  const page = await spaPage(t, base)
  const body = okBody(t, await pageFetch(page, '/api/auth/signup', json({ email: uniqueEmail('logout'), password: PASSWORD })), 201)
  const accessToken = String(body.accessToken)
  const auth = { authorization: `Bearer ${accessToken}` }
  const cookie = await refreshCookieOf(`${base}/api/auth/logout`)
  t.ok(cookie, 'session cookie present')

  const out = await observe(wire, 'POST', '/api/auth/logout', () =>
    pageFetch(page, '/api/auth/logout', { method: 'POST', headers: auth, credentials: 'same-origin' }))
  t.equal(cookieNamed(out.cookie, 'refresh_token'), cookie?.value, 'the browser sent the cookie along with the Bearer token')
  t.same(okBody(t, out.result, 200), { message: 'Logged out' })
  t.equal(await refreshCookieOf(`${base}/api/auth/refresh`), undefined, 'cookie cleared in the browser')

  expectError(t, await pageFetch(page, '/api/auth/me', { headers: auth }), 401, 'SESSION_REVOKED')
  expectError(t, await pageFetch(page, '/api/auth/refresh', { method: 'POST', credentials: 'same-origin' }), 401,
    'REFRESH_TOKEN_INVALID', 'Refresh cookie missing')
  const [session] = await app.db.select().from(sessions)
  t.not(session?.revokedAt ?? null, null, 'the session is revoked in the database')
  t.ok((await tokenRows(app)).every((r) => r.revokedAt !== null), 'its refresh token is revoked')

  // With the cookie alone (an expired access token, say), logout still ends the session.
  const second = okBody(t, await pageFetch(page, '/api/auth/login', json({ email: String((body.user as { email: string }).email), password: PASSWORD })), 200)
  t.ok(await refreshCookieOf(`${base}/api/auth/refresh`), 'new session cookie after login')
  t.same(okBody(t, await pageFetch(page, '/api/auth/logout', { method: 'POST', credentials: 'same-origin' }), 200), { message: 'Logged out' })
  t.equal(await refreshCookieOf(`${base}/api/auth/refresh`), undefined, 'cookie cleared')
  expectError(t, await pageFetch(page, '/api/auth/me', { headers: { authorization: `Bearer ${String(second.accessToken)}` } }), 401, 'SESSION_REVOKED')
})

t.test('cross-site: fetch, form POST and link from another site never use the session', async (t) => {
  const { app, wire, base } = await listeningApp(t) // CORS_ORIGINS empty
  const victim = await spaPage(t, base)
  okBody(t, await pageFetch(victim, '/api/auth/signup', json({ email: uniqueEmail('victim'), password: PASSWORD })), 201)
  const cookie = await refreshCookieOf(`${base}/api/auth/refresh`)
  t.ok(cookie, 'the victim holds a session cookie for the service')
  const before = await tokenRows(app)
  t.equal(before.length, 1)

  const attacker = await sitePage(t, siteA.origin)

  // 1. fetch with credentials: 'include'.
  const viaFetch = await observe(wire, 'POST', '/api/auth/refresh', () =>
    pageFetch(attacker, `${base}/api/auth/refresh`, { method: 'POST', credentials: 'include' }))
  t.equal(viaFetch.result.ok, false, `the attacker page cannot read the answer (${viaFetch.result.ok ? '' : viaFetch.result.error})`)
  t.equal(cookieNamed(viaFetch.cookie, 'refresh_token'), undefined, 'SameSite=Strict: no cookie on the cross-site fetch')
  t.equal(viaFetch.origin, siteA.origin, 'the browser sent the attacker\'s Origin')
  t.ok(viaFetch.seen, 'the request did reach the service')
  t.equal(viaFetch.status, 403, 'the service answered 403 CSRF_REJECTED (Origin not allowed)')
  t.same(await tokenRows(app), before, 'no rotation in the database')
  t.equal((await refreshCookieOf(`${base}/api/auth/refresh`))?.value, cookie?.value, 'the victim\'s cookie is untouched')

  // 2. the classic auto-submitted form (top-level cross-site POST navigation).
  const viaForm = await observe(wire, 'POST', '/api/auth/refresh', () =>
    attacker.goto(`${siteA.origin}/form?action=${encodeURIComponent(`${base}/api/auth/refresh`)}`, { waitUntil: 'commit' }))
  await attacker.waitForLoadState()
  t.equal(cookieNamed(viaForm.cookie, 'refresh_token'), undefined, 'SameSite=Strict: no cookie on the cross-site form POST')
  t.equal(viaForm.origin, siteA.origin, 'form POST carries the attacker\'s Origin')
  t.ok(viaForm.seen, 'the form POST did reach the service')
  t.ok(viaForm.status !== undefined && viaForm.status >= 400, `the service refused it (${viaForm.status})`)
  t.match(await attacker.textContent('body'), /"code":"(CSRF_REJECTED|UNSUPPORTED_MEDIA_TYPE)"/, 'with a contract error')
  t.same(await tokenRows(app), before, 'no rotation in the database')
  t.equal((await refreshCookieOf(`${base}/api/auth/refresh`))?.value, cookie?.value, 'the victim\'s cookie is untouched')

  // 3. a cross-site top-level GET navigation: Lax would send the cookie here, Strict does not.
  await attacker.goto(`${siteA.origin}/link?href=${encodeURIComponent(`${base}/api/auth/me`)}`)
  const viaLink = await observe(wire, 'GET', '/api/auth/me', () => attacker.click('#go'))
  await attacker.waitForLoadState()
  t.ok(viaLink.seen, 'the navigation reached the service')
  t.equal(cookieNamed(viaLink.cookie, 'refresh_token'), undefined, 'Strict, not Lax: no cookie on a cross-site link navigation')

  // Control: the same browser, same-origin, still refreshes (and that rotation is visible in the DB).
  okBody(t, await pageFetch(victim, '/api/auth/refresh', { method: 'POST', credentials: 'same-origin' }), 200)
  const after = await tokenRows(app)
  t.equal(after.length, 2, 'control: a legitimate refresh does add a row')
  t.not(after[0]?.rotatedAt ?? null, null, 'control: and marks the old one rotated')
})

t.test('CORS with credentials: listed origins can read, others cannot; the cookie stays same-site', async (t) => {
  const { app, wire, base, port } = await listeningApp(t, { CORS_ORIGINS: siteA.origin })
  const email = uniqueEmail('cors')
  await injectSignup(app, email)
  const loginCount = async () => (await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'login_success'))).length

  // A listed but cross-site origin (localhost page -> 127.0.0.1 service): CORS lets it read.
  const listed = await sitePage(t, siteA.origin)
  const login = await pageFetch(listed, `${base}/api/auth/login`, { ...json({ email, password: PASSWORD }), credentials: 'include' })
  const body = okBody(t, login, 200)
  t.type(body.accessToken, 'string', 'the listed origin read the token response')
  t.equal((body.user as { email?: string } | undefined)?.email, email)
  const me = await pageFetch(listed, `${base}/api/auth/me`, { headers: { authorization: `Bearer ${String(body.accessToken)}` } })
  t.equal(okBody(t, me, 200).email, email, 'Bearer call after a preflight with Authorization')
  // The browser refuses a SameSite=Strict cookie set by a cross-site response: such an app gets
  // no refresh cookie at all (see the report: CORS_ORIGINS only helps same-site origins).
  t.equal(await refreshCookieOf(`${base}/api/auth/refresh`), undefined, 'no refresh cookie stored from a cross-site response')

  // Even a listed cross-site origin cannot use a session the user has on the service origin.
  const own = await spaPage(t, base)
  okBody(t, await pageFetch(own, '/api/auth/login', json({ email, password: PASSWORD })), 200)
  t.ok(await refreshCookieOf(`${base}/api/auth/refresh`), 'session cookie from the service origin')
  const before = await tokenRows(app)
  const crossRefresh = await observe(wire, 'POST', '/api/auth/refresh', () =>
    pageFetch(listed, `${base}/api/auth/refresh`, { method: 'POST', credentials: 'include' }))
  t.equal(cookieNamed(crossRefresh.cookie, 'refresh_token'), undefined, 'the cookie is not attached cross-site')
  expectError(t, crossRefresh.result, 401, 'REFRESH_TOKEN_INVALID', 'Refresh cookie missing')
  t.same(await tokenRows(app), before, 'no rotation')

  // A non-listed origin: the preflight fails, the page reads nothing and the login never runs.
  const other = await sitePage(t, siteB.origin)
  const logins = await loginCount()
  const denied = await pageFetch(other, `${base}/api/auth/login`, { ...json({ email, password: PASSWORD }), credentials: 'include' })
  t.equal(denied.ok, false, `the non-listed origin cannot read the response (${denied.ok ? denied.status : denied.error})`)
  t.match(denied.ok ? '' : denied.error, /TypeError/)
  t.equal(await loginCount(), logins, 'the preflight stopped the POST: no login happened')
  const simple = await pageFetch(other, `${base}/health/live`)
  t.equal(simple.ok, false, 'even a simple GET is unreadable from a non-listed origin')

  // The supported deployment: a listed origin on the same site (localhost:A -> localhost:service).
  const sameSiteBase = `http://localhost:${port}`
  const ss = await pageFetch(listed, `${sameSiteBase}/api/auth/login`, { ...json({ email, password: PASSWORD }), credentials: 'include' })
  okBody(t, ss, 200)
  const ssCookie = await refreshCookieOf(`${sameSiteBase}/api/auth/refresh`)
  t.ok(ssCookie, 'same-site cross-origin login stores the cookie')
  t.equal(ssCookie?.sameSite, 'Strict')
  t.equal(ssCookie?.domain, 'localhost')
  const ssRefresh = await observe(wire, 'POST', '/api/auth/refresh', () =>
    pageFetch(listed, `${sameSiteBase}/api/auth/refresh`, { method: 'POST', credentials: 'include' }))
  t.equal(cookieNamed(ssRefresh.cookie, 'refresh_token'), ssCookie?.value, 'same-site: the cookie is attached')
  okBody(t, ssRefresh.result, 200)
  t.not((await refreshCookieOf(`${sameSiteBase}/api/auth/refresh`))?.value, ssCookie?.value, 'and rotated')

  // Same site but not listed: the cookie travels, so the Origin rule is what stops it.
  const rows = await tokenRows(app)
  const sibling = await observe(wire, 'POST', '/api/auth/refresh', () =>
    pageFetch(other, `${sameSiteBase}/api/auth/refresh`, { method: 'POST', credentials: 'include' }))
  t.ok(cookieNamed(sibling.cookie, 'refresh_token'), 'same-site sibling origin: the browser attaches the cookie')
  t.equal(sibling.result.ok, false, 'and cannot read the answer')
  t.equal(sibling.status, 403, 'the service answers 403 CSRF_REJECTED')
  t.same(await tokenRows(app), rows, 'no rotation')
})
