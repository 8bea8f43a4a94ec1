/**
 * @gatehouse/client in real headless Chromium: the built `client/dist/gatehouse-client.js`,
 * served by a test app on another origin (http://localhost:<app port>, listed in CORS_ORIGINS),
 * talking to the real service (http://localhost:<service port>; the same site, so the
 * SameSite=Strict refresh cookie goes along).
 *
 * Each test has its own browser context (its own cookies, Web Locks, BroadcastChannels and
 * clock); tabs are pages of that context. "Time passes" on both sides at once: the pages' clock
 * jumps with Playwright's `clock.fastForward` (a laptop lid closed and opened: due timers fire
 * once) and the service's JWT clock (`Date.now` in this process) moves by the same amount, so the
 * service really answers TOKEN_EXPIRED for the old access tokens.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { and, eq, isNull } from 'drizzle-orm'
import type { Page } from 'playwright-core'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { refreshTokens, sessions, users } from '../../src/db/schema.ts'
import { enrolMfa, isVerificationMail, PASSWORD, readMail, testClock, tokenInMail, totpCode, uniqueEmail, type Test } from '../helper.ts'
import {
  newContext, openTab, refreshCookieIn, service as baseService, settle, signupIn, states, status, thrown, tokenOf, waitForStatus, type Window
} from './client-app.ts'

const MINUTE = 60_000

/** Another origin that records the Authorization headers it receives (where a token must never go). */
async function elsewhereServer (): Promise<{ origin: string, server: Server, authorizations: string[] }> {
  const authorizations: string[] = []
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.headers.authorization !== undefined) authorizations.push(req.headers.authorization)
    res.writeHead(200, {
      'access-control-allow-origin': '*', 'access-control-allow-headers': 'authorization, content-type', 'content-type': 'application/json'
    }).end('{}')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, authorizations }
}

const elsewhere = await elsewhereServer()
t.teardown(async () => {
  elsewhere.server.closeAllConnections()
  await new Promise<void>((resolve) => elsewhere.server.close(() => resolve()))
})

// ---------------------------------------------------------------------------------------------
// Fixtures

/** The service, and its refresh requests from a point on (a signed-out tab's page load asks once too). */
async function service (test: Test, opts: { now?: () => Date, env?: Record<string, string> } = {}) {
  const s = await baseService(test, opts)
  const refreshesFromNow = () => s.requestsFromNow((w) => w.method === 'POST' && w.path === '/api/auth/refresh')
  return { ...s, refreshesFromNow }
}

/** GET /api/auth/me through the client's fetch wrapper: the status, and the email or error code. */
const me = (page: Page, gatehouse: string) => page.evaluate(async (url) => {
  const res = await (globalThis as unknown as Window).gh.fetch(url)
  const body = await res.json()
  return { status: res.status, email: body['email'], code: body['code'] }
}, `${gatehouse}/api/auth/me`)

/** Every refresh token of the user's sessions: one row per login plus one per rotation. */
async function tokenRowsOf (app: App, email: string) {
  return app.db.select({ id: refreshTokens.id, rotatedAt: refreshTokens.rotatedAt, revokedAt: refreshTokens.revokedAt })
    .from(refreshTokens).innerJoin(sessions, eq(sessions.id, refreshTokens.sessionId)).innerJoin(users, eq(users.id, sessions.userId))
    .where(eq(users.email, email))
}

async function liveSessionsOf (app: App, email: string) {
  return app.db.select({ id: sessions.id }).from(sessions).innerJoin(users, eq(users.id, sessions.userId))
    .where(and(eq(users.email, email), isNull(sessions.revokedAt)))
}

/**
 * Moves the service's JWT clock (`Date.now` of this process, which fast-jwt reads) forward, as if
 * `ms` had passed; put back after the test.
 */
function serviceTimePasses (test: Test, ms: number) {
  const real = Date.now
  const already = (Date.now as { shifted?: number }).shifted ?? 0
  const shifted = Object.assign(() => real() + ms, { shifted: already + ms })
  Date.now = shifted
  test.teardown(() => { if (Date.now === shifted) Date.now = real })
}

// ---------------------------------------------------------------------------------------------

t.test('signup through the client: signed in, the token in memory only, the refresh cookie invisible to scripts', async (t) => {
  const { app, url } = await service(t)
  const context = await newContext(t)
  const tab = await openTab(context, url)
  t.equal(await status(tab), 'signed-out', 'a first visit has no session')

  const email = uniqueEmail()
  const result = await signupIn(tab, email)
  t.equal(result.verificationRequired, false)
  t.equal(result.user.email, email)
  t.equal(await status(tab), 'signed-in')
  t.same(await states(tab), ['loading', 'signed-out', 'signed-in'], 'onChange told the app each step')

  const seen = await tab.evaluate(() => {
    const g = globalThis as unknown as { document: { cookie: string }, localStorage: { length: number }, sessionStorage: { length: number } }
    return { cookie: g.document.cookie, local: g.localStorage.length, session: g.sessionStorage.length }
  })
  t.same(seen, { cookie: '', local: 0, session: 0 }, 'no cookie readable by scripts, nothing in web storage')
  const cookie = await refreshCookieIn(context, url)
  t.ok(cookie?.httpOnly, 'the browser holds the refresh cookie, HttpOnly')

  const token = await tokenOf(tab)
  t.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'getAccessToken gives the JWT')
  t.same(await me(tab, url), { status: 200, email, code: undefined }, 'fetch adds the Bearer token')
  t.equal((await tab.evaluate(() => (globalThis as unknown as Window).gh.getUser()))?.email, email)
  t.equal((await tokenRowsOf(app, email)).length, 1, 'no refresh yet: one token, the signup\'s')
})

t.test('errors are typed and carry the contract\'s code', async (t) => {
  const { url } = await service(t)
  const tab = await openTab(await newContext(t), url)
  const email = uniqueEmail()
  await signupIn(tab, email)
  t.same(await thrown(tab, 'signup', email, PASSWORD), { isGatehouseError: true, name: 'GatehouseError', code: 'EMAIL_TAKEN', status: 409 })
  t.same(await thrown(tab, 'login', email, 'Wrong-Password-1'), { isGatehouseError: true, name: 'GatehouseError', code: 'AUTH_INVALID_CREDENTIALS', status: 401 })
  t.same(await thrown(tab, 'signup', uniqueEmail(), 'short'), { isGatehouseError: true, name: 'GatehouseError', code: 'PASSWORD_TOO_WEAK', status: 400 })
  t.same(await thrown(tab, 'loginMfa', '123456'), { isGatehouseError: true, name: 'GatehouseError', code: 'MFA_NOT_PENDING', status: 0 })
  t.same(await thrown(tab, 'fetch', 'https://elsewhere.example/api'), { isGatehouseError: true, name: 'GatehouseError', code: 'ORIGIN_NOT_ALLOWED', status: 0 },
    'the token is never sent to an origin the app did not list')
  t.equal(await status(tab), 'signed-in', 'a failed call leaves the session alone')
})

t.test('a reload keeps the session through the cookie; a new tab takes the open tab\'s token without a rotation', async (t) => {
  const { app, url, refreshesFromNow } = await service(t)
  const context = await newContext(t)
  const tab = await openTab(context, url)
  const email = uniqueEmail()
  await signupIn(tab, email)
  const refreshes = refreshesFromNow()

  await tab.reload()
  await tab.evaluate(() => (globalThis as unknown as Window).gh.ready)
  t.equal(await status(tab), 'signed-in', 'signed in again after the reload')
  t.same(await me(tab, url), { status: 200, email, code: undefined })
  t.equal(refreshes().length, 1, 'the reload cost one refresh')
  t.equal((await tokenRowsOf(app, email)).length, 2, 'one rotation')

  const second = await openTab(context, url)
  t.equal(await status(second), 'signed-in', 'a second tab is signed in at once')
  t.equal(await tokenOf(second), await tokenOf(tab), 'with the token the first tab holds')
  t.equal(refreshes().length, 1, 'and no refresh of its own')
  t.equal((await tokenRowsOf(app, email)).length, 2)
})

t.test('three tabs wake at once with expired access tokens: one rotation, all stay signed in', async (t) => {
  const { app, url, refreshesFromNow } = await service(t)
  const context = await newContext(t, { clock: true })
  const tabs = [await openTab(context, url)]
  const email = uniqueEmail()
  await signupIn(tabs[0]!, email)
  tabs.push(await openTab(context, url), await openTab(context, url))
  const before = await tokenOf(tabs[0]!)
  for (const tab of tabs) t.equal(await tokenOf(tab), before, 'every tab holds the signup\'s token')
  const refreshes = refreshesFromNow()

  // The lid closes for 20 minutes: the access tokens (15) expire on both sides.
  serviceTimePasses(t, 20 * MINUTE)
  await context.clock.fastForward(20 * MINUTE)
  for (const tab of tabs) t.equal((await me(tab, url)).status, 200, 'every tab answers its next call')
  await settle()

  t.equal(refreshes().length, 1, 'one refresh request from all three tabs')
  const rows = await tokenRowsOf(app, email)
  t.equal(rows.length, 2, 'one rotation: the signup\'s token and its successor')
  t.equal(rows.filter((r) => r.revokedAt !== null).length, 0, 'nothing revoked (no reuse)')
  const after = await tokenOf(tabs[0]!)
  t.not(after, before, 'a new access token')
  for (const tab of tabs) {
    t.equal(await status(tab), 'signed-in')
    t.equal(await tokenOf(tab), after, 'the same new token in every tab')
  }
})

t.test('the fetch wrapper refreshes once on 401 TOKEN_EXPIRED and retries', async (t) => {
  const { url, wire } = await service(t)
  const tab = await openTab(await newContext(t), url)
  const email = uniqueEmail()
  await signupIn(tab, email)
  // Only the service's clock moves: the tab still believes its token is fresh.
  serviceTimePasses(t, 20 * MINUTE)
  const from = wire.length
  t.same(await me(tab, url), { status: 200, email, code: undefined }, 'the app sees only the retried answer')
  t.same(wire.slice(from).map((w) => `${w.method} ${w.path} ${w.status}`).filter((line) => !line.startsWith('OPTIONS')), [
    'GET /api/auth/me 401',
    'POST /api/auth/refresh 200',
    'GET /api/auth/me 200'
  ])
})

t.test('logout in one tab signs out every tab', async (t) => {
  const { app, url, refreshesFromNow } = await service(t)
  const context = await newContext(t)
  const tabs = [await openTab(context, url)]
  const email = uniqueEmail()
  await signupIn(tabs[0]!, email)
  tabs.push(await openTab(context, url), await openTab(context, url))
  for (const tab of tabs) t.equal(await status(tab), 'signed-in')
  const refreshes = refreshesFromNow()

  await tabs[1]!.evaluate(() => (globalThis as unknown as Window).gh.logout())
  for (const tab of tabs) await waitForStatus(tab, 'signed-out')
  for (const tab of tabs) {
    t.equal(await tokenOf(tab), null, 'no token left in any tab')
    t.equal((await states(tab)).at(-1), 'signed-out', 'onChange reported it')
  }
  t.same(await liveSessionsOf(app, email), [], 'the session is revoked on the server')
  t.equal(await refreshCookieIn(context, url), undefined, 'the cookie is gone')
  await settle()
  t.equal(refreshes().length, 0, 'nobody tried to refresh')

  // Signing in again in one tab signs in the others.
  await tabs[2]!.evaluate(({ email, password }) => (globalThis as unknown as Window).gh.login(email, password), { email, password: PASSWORD })
  for (const tab of tabs) await waitForStatus(tab, 'signed-in')
  t.pass('a login in one tab reached every tab')
})

t.test('a tab refreshing during another tab\'s logout ends signed out, not in a loop', async (t) => {
  const { app, url, refreshesFromNow, wire } = await service(t)
  const context = await newContext(t)
  const [a, b] = [await openTab(context, url), await openTab(context, url)]
  const email = uniqueEmail()
  await signupIn(a, email)
  await waitForStatus(b, 'signed-in')

  serviceTimePasses(t, 20 * MINUTE) // b's next call meets TOKEN_EXPIRED and refreshes
  const refreshes = refreshesFromNow()
  const [bCall] = await Promise.all([
    me(b, url),
    a.evaluate(() => (globalThis as unknown as Window).gh.logout())
  ])
  t.equal(bCall.status, 401, `b's call fails (${bCall.code}) instead of looping`)
  for (const tab of [a, b]) await waitForStatus(tab, 'signed-out')
  const count = wire.length
  await settle(1500)
  t.ok(refreshes().length <= 1, `at most one refresh (${refreshes().length})`)
  t.equal(wire.length, count, 'and then silence: no retry loop')
  t.same(await liveSessionsOf(app, email), [], 'the session stays revoked')
  for (const tab of [a, b]) {
    t.equal(await status(tab), 'signed-out')
    t.equal(await tokenOf(tab), null)
  }
})

t.test('MFA login through the client', async (t) => {
  const clock = testClock(new Date())
  const { app, url } = await service(t, { now: clock.now })
  const enrolled = await enrolMfa(app, clock)
  const context = await newContext(t)
  const [tab, other] = [await openTab(context, url), await openTab(context, url)]

  const first = await tab.evaluate(({ email, password }) => (globalThis as unknown as Window).gh.login(email, password), { email: enrolled.email, password: PASSWORD })
  t.same(first, { mfaRequired: true })
  t.equal(await status(tab), 'mfa-required')
  t.same(await thrown(tab, 'loginMfa', '000000'), { isGatehouseError: true, name: 'GatehouseError', code: 'MFA_INVALID_CODE', status: 401 })
  t.equal(await status(tab), 'mfa-required', 'a wrong code can be corrected')

  const user = await tab.evaluate((code) => (globalThis as unknown as Window).gh.loginMfa(code), totpCode(enrolled.secret, clock.now()))
  t.equal(user.email, enrolled.email)
  t.same((await states(tab)).slice(-3), ['signed-out', 'mfa-required', 'signed-in'])
  await waitForStatus(other, 'signed-in')
  t.pass('the other tab is signed in too')
  const claims = JSON.parse(Buffer.from((await tokenOf(tab))!.split('.')[1]!, 'base64url').toString())
  t.same(claims.amr, ['pwd', 'otp'], 'the token says two factors were used')
  t.same(await me(tab, url), { status: 200, email: enrolled.email, code: undefined })
})

t.test('offline, then online: the session recovers', async (t) => {
  const { app, url, refreshesFromNow } = await service(t)
  const context = await newContext(t, { clock: true })
  const tab = await openTab(context, url)
  const email = uniqueEmail()
  await signupIn(tab, email)

  const refreshes = refreshesFromNow()
  await context.setOffline(true)
  serviceTimePasses(t, 20 * MINUTE)
  await context.clock.fastForward(20 * MINUTE)
  t.same(await thrown(tab, 'getAccessToken'), { isGatehouseError: true, name: 'GatehouseError', code: 'NETWORK_ERROR', status: 0 },
    'offline, the expired token cannot be refreshed')
  t.equal(await status(tab), 'signed-in', 'but the tab is not signed out: the cookie still works')

  await context.setOffline(false)
  await tab.waitForFunction(async () => {
    const gh = (globalThis as unknown as Window).gh
    try { return await gh.getAccessToken() !== null } catch { return false }
  }, undefined, { timeout: 10_000 })
  t.same(await me(tab, url), { status: 200, email, code: undefined }, 'back online, calls work again')
  t.equal(await status(tab), 'signed-in')
  t.ok(refreshes().some((r) => r.status === 200), 'the refresh went through once online')
  t.equal((await tokenRowsOf(app, email)).filter((r) => r.revokedAt !== null).length, 0, 'nothing revoked')
})

t.test('logoutAll ends every session of the user, and the tabs with them', async (t) => {
  const { app, url } = await service(t)
  const email = uniqueEmail()
  const phone = await openTab(await newContext(t), url)
  await signupIn(phone, email)
  const context = await newContext(t)
  const [tab, other] = [await openTab(context, url), await openTab(context, url)]
  await tab.evaluate(({ email, password }) => (globalThis as unknown as Window).gh.login(email, password), { email, password: PASSWORD })
  await waitForStatus(other, 'signed-in')

  t.equal(await tab.evaluate(() => (globalThis as unknown as Window).gh.logoutAll()), 2, 'both sessions revoked')
  for (const page of [tab, other]) await waitForStatus(page, 'signed-out')
  t.same(await liveSessionsOf(app, email), [])
  const fromPhone = await me(phone, url)
  t.equal(fromPhone.status, 401, 'the other device\'s token stops working')
  t.equal(fromPhone.code, 'SESSION_REVOKED')
  await waitForStatus(phone, 'signed-out')
  t.pass('and that device\'s client signs out')
})

t.test('REQUIRE_EMAIL_VERIFICATION: signup through the client signs nobody in until the mailed link is used', async (t) => {
  const { app, url } = await service(t, { env: { REQUIRE_EMAIL_VERIFICATION: 'true' } })
  const context = await newContext(t)
  const tab = await openTab(context, url)
  const email = uniqueEmail()
  const result = await signupIn(tab, email)
  t.equal(result.verificationRequired, true)
  t.equal(result.user.email, email)
  t.equal(await status(tab), 'signed-out', 'no session yet')
  t.equal(await refreshCookieIn(context, url), undefined, 'and no cookie')
  const login = () => thrown(tab, 'login', email, PASSWORD)
  t.same(await login(), { isGatehouseError: true, name: 'GatehouseError', code: 'EMAIL_NOT_VERIFIED', status: 403 })

  await tab.evaluate((email) => (globalThis as unknown as Window & { gh: { resendVerification (e: string): Promise<void> } }).gh.resendVerification(email), email)
  const links = (await readMail(app, { verification: true })).filter((m) => m.to === email && isVerificationMail(m))
  t.equal(links.length, 2, 'the signup\'s mail and the one asked for again')
  await tab.evaluate((token) => (globalThis as unknown as Window & { gh: { verifyEmail (t: string): Promise<void> } }).gh.verifyEmail(token), tokenInMail(links[1]))
  t.equal(await login(), null, 'login works once the address is proven')
  t.equal(await status(tab), 'signed-in')
  t.equal((await tab.evaluate(() => (globalThis as unknown as Window).gh.getUser()) as { emailVerified?: boolean } | null)?.emailVerified, true)
  t.same(await thrown(tab, 'verifyEmail', tokenInMail(links[1])), { isGatehouseError: true, name: 'GatehouseError', code: 'VERIFY_TOKEN_INVALID', status: 400 },
    'a link works once')
})

t.test('the token goes only to the origins it is for: a <base href> pointing elsewhere is refused, not followed', async (t) => {
  const { url } = await service(t)
  const tab = await openTab(await newContext(t), url)
  await signupIn(tab, uniqueEmail())
  const result = await tab.evaluate(async (origin) => {
    const base = (globalThis as unknown as { document: { createElement (n: string): { href: string }, head: { prepend (e: unknown): void } } }).document
    const element = base.createElement('base')
    element.href = `${origin}/`
    base.head.prepend(element) // injected markup, no script needed
    try {
      await (globalThis as unknown as Window).gh.fetch('/api/things')
      return 'sent'
    } catch (err) {
      return (err as { code: string }).code
    }
  }, elsewhere.origin)
  t.equal(result, 'ORIGIN_NOT_ALLOWED', 'the relative URL is checked where fetch would send it')
  t.same(elsewhere.authorizations, [], 'and nothing reached the other origin')
})

t.test('another tab loading does not cancel the MFA step in progress', async (t) => {
  const clock = testClock(new Date())
  const { app, url } = await service(t, { now: clock.now })
  const enrolled = await enrolMfa(app, clock)
  const context = await newContext(t)
  const tab = await openTab(context, url)
  t.same(await tab.evaluate(({ email, password }) => (globalThis as unknown as Window).gh.login(email, password), { email: enrolled.email, password: PASSWORD }), { mfaRequired: true })
  await openTab(context, url) // the user opens the app in a second tab: its page-load check finds no session
  await settle(300)
  t.equal(await status(tab), 'mfa-required', 'the first tab still waits for the code')
  const user = await tab.evaluate((code) => (globalThis as unknown as Window).gh.loginMfa(code), totpCode(enrolled.secret, clock.now()))
  t.equal(user.email, enrolled.email, 'and the code completes the login')
})

t.test('a refresh whose answer was lost is retried inside the grace window: no reuse, nobody logged out', async (t) => {
  const { app, url } = await service(t)
  const email = uniqueEmail()
  const phone = await openTab(await newContext(t), url) // another device of the same user
  await signupIn(phone, email)
  const context = await newContext(t)
  const tab = await openTab(context, url)
  await tab.evaluate(({ email, password }) => (globalThis as unknown as Window).gh.login(email, password), { email, password: PASSWORD })
  const oldCookie = (await refreshCookieIn(context, url))!
  const answers: number[] = []
  let lose = true
  await context.route('**/api/auth/refresh', async (route) => {
    const response = await route.fetch() // the service rotates...
    answers.push(response.status())
    if (lose) {
      lose = false
      await context.addCookies([oldCookie]) // ...but the answer never reaches the browser (a dropped connection)
      await route.abort('connectionreset')
    } else {
      await route.fulfill({ response })
    }
  })
  serviceTimePasses(t, 20 * MINUTE)
  // The call meets TOKEN_EXPIRED; its refresh rotates on the server, and the answer is lost.
  t.same(await thrown(tab, 'fetch', `${url}/api/auth/me`), { isGatehouseError: true, name: 'GatehouseError', code: 'NETWORK_ERROR', status: 0 })
  const started = Date.now()
  while (answers.length < 2 && Date.now() - started < 8000) await settle(100)
  t.ok(Date.now() - started < 5000, `the client tried again on its own, soon (${Date.now() - started} ms)`)
  t.same(answers, [200, 200], 'the retry was a replay within the grace window, answered 200')
  t.same(await me(tab, url), { status: 200, email, code: undefined })
  t.equal(await status(tab), 'signed-in')
  t.equal((await liveSessionsOf(app, email)).length, 2, 'both sessions live: nothing was taken for reuse')
  t.same(await me(phone, url), { status: 200, email, code: undefined }, 'the other device is still signed in')
})
