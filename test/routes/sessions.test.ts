import { and, eq, isNull, ne } from 'drizzle-orm'
import t from 'tap'
import { authEvents, emailOutbox, refreshTokens, sessions } from '../../src/db/schema.ts'
import type { App } from '../../src/app.ts'
import { localBroadcast } from '../../src/services/state-store.ts'
import { assertError, bearer, buildTestApp, PASSWORD, readMail, revokeSessionsOf, testClock, uniqueEmail, within } from '../helper.ts'

interface Cookie { name: string, value: string, path?: string, maxAge?: number, httpOnly?: boolean, sameSite?: string, secure?: boolean, domain?: string, expires?: Date }
const refreshCookieOf = (res: { cookies: unknown[] }) => (res.cookies as Cookie[]).find((c) => c.name === 'refresh_token')
const sidOf = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString()).sid as string

async function session (app: App, email = uniqueEmail(), ip = '10.0.0.1') {
  const res = await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email, password: PASSWORD }, remoteAddress: ip })
  const cookie = refreshCookieOf(res)
  if (res.statusCode !== 201 || cookie === undefined) throw new Error(`signup failed: ${res.body}`)
  return { email, cookie: cookie.value, accessToken: res.json().accessToken as string, userId: res.json().user.id as string }
}

const refresh = (app: App, cookie: string, extra: { headers?: Record<string, string>, remoteAddress?: string } = {}) =>
  app.inject({ method: 'POST', url: '/api/auth/refresh', cookies: { refresh_token: cookie }, ...extra })

t.test('signup and login set the refresh cookie with the contract attributes; the token is stored hashed', async (t) => {
  const app = await buildTestApp(t)
  const email = uniqueEmail()
  const res = await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email, password: PASSWORD } })
  const cookie = refreshCookieOf(res)
  t.ok(cookie, 'cookie set')
  t.match(cookie, { httpOnly: true, sameSite: 'Strict', path: '/api/auth', secure: true, maxAge: 7 * 86400 })
  t.match(cookie?.value, /^[A-Za-z0-9_-]{43}$/, '256 bits, base64url')
  t.notOk('refreshToken' in res.json(), 'never in the body')
  const header = String(res.headers['set-cookie'])
  t.match(header, /HttpOnly/)
  t.match(header, /SameSite=Strict/)
  t.match(header, /Path=\/api\/auth/)
  t.match(header, /Max-Age=604800/)
  t.match(header, /Secure/)

  const rows = await app.db.select().from(refreshTokens)
  t.equal(rows.length, 1)
  t.match(rows[0]?.tokenHash, /^[0-9a-f]{64}$/)
  t.not(rows[0]?.tokenHash, cookie?.value, 'only a hash is stored')
  t.notOk(JSON.stringify(rows).includes(cookie?.value ?? 'x'))

  const login = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password: PASSWORD } })
  t.match(refreshCookieOf(login), { httpOnly: true, sameSite: 'Strict', path: '/api/auth' })
  t.not(refreshCookieOf(login)?.value, cookie?.value, 'a new family per login')
  t.equal((await app.db.select().from(sessions)).length, 2)
})

t.test('COOKIE_SECURE=false drops Secure; COOKIE_DOMAIN and REFRESH_TOKEN_EXPIRE_DAYS apply', async (t) => {
  const app = await buildTestApp(t, { env: { COOKIE_SECURE: 'false', COOKIE_DOMAIN: 'example.com', REFRESH_TOKEN_EXPIRE_DAYS: '2' } })
  const res = await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email: uniqueEmail(), password: PASSWORD } })
  const cookie = refreshCookieOf(res)
  t.equal(cookie?.secure, undefined)
  t.notMatch(String(res.headers['set-cookie']), /Secure/)
  t.equal(cookie?.domain, 'example.com')
  t.equal(cookie?.maxAge, 2 * 86400)
})

t.test('refresh rotates: new cookie, new access token for the same session, the old token is then reuse', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const s = await session(app)
  clock.advance(60_000)
  const res = await refresh(app, s.cookie, { headers: { 'user-agent': 'ua' }, remoteAddress: '10.0.0.7' })
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.same(Object.keys(body).sort(), ['accessToken', 'expiresIn', 'tokenType', 'user'])
  t.equal(body.user.id, s.userId)
  t.equal(sidOf(body.accessToken), sidOf(s.accessToken), 'same session')
  const next = refreshCookieOf(res)
  t.match(next, { httpOnly: true, sameSite: 'Strict', path: '/api/auth', maxAge: 7 * 86400 })
  t.not(next?.value, s.cookie, 'rotated')
  t.equal((await app.inject({ url: '/api/auth/me', headers: bearer(body.accessToken) })).statusCode, 200)

  const rows = await app.db.select().from(refreshTokens).orderBy(refreshTokens.createdAt)
  t.equal(rows.length, 2)
  t.equal(rows[1]?.parentId, rows[0]?.id, 'successor links to its parent')
  t.ok(rows[0]?.rotatedAt, 'parent marked rotated')
  const [sess] = await app.db.select().from(sessions)
  t.equal(sess?.lastUsedAt.toISOString(), clock.now().toISOString())
  t.equal(sess?.expiresAt.toISOString(), new Date(clock.now().getTime() + 7 * 86_400_000).toISOString(), 'the session lives on from this refresh')
  t.equal(rows[1]?.ipAddress, '10.0.0.7', 'the successor records where it was issued')
  t.equal(rows[1]?.expiresAt.toISOString(), sess?.expiresAt.toISOString())
  const [event] = await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'refresh'))
  t.match(event, {
    userId: s.userId, email: s.email, ipAddress: '10.0.0.7', userAgent: 'ua', success: true, failureReason: null,
    metadata: { sessionId: sidOf(s.accessToken) }, createdAt: clock.now()
  })
  const metrics = (await app.inject({ url: '/metrics' })).body
  t.match(metrics, /gatehouse_auth_events_total\{type="refresh",outcome="success"\} 1\n/, 'counted once')

  clock.advance(11_000) // past the 10 s grace window
  const reuse = await refresh(app, s.cookie)
  assertError(t, reuse, 401, 'REFRESH_TOKEN_REUSED')
  t.match(refreshCookieOf(reuse), { value: '' }, 'the dead cookie is cleared')
})

t.test('within the grace window a rotated token gets the same successor; after it, reuse', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const s = await session(app)
  const first = await refresh(app, s.cookie)
  const successor = refreshCookieOf(first)?.value
  clock.advance(9_000)
  const again = await refresh(app, s.cookie)
  t.equal(again.statusCode, 200, 'idempotent within grace')
  t.equal(refreshCookieOf(again)?.value, successor, 'the same successor value')
  t.not(again.json().accessToken, first.json().accessToken, 'a fresh access token')
  t.equal((await app.db.select().from(refreshTokens)).length, 2, 'no second branch')

  // The successor is used: the parent's successor has moved on, so even within grace it is reuse.
  const moved = await refresh(app, successor ?? '')
  t.equal(moved.statusCode, 200)
  assertError(t, await refresh(app, s.cookie), 401, 'REFRESH_TOKEN_REUSED')
  const live = await app.db.select().from(sessions).where(isNull(sessions.revokedAt))
  t.equal(live.length, 0, 'family revoked')
})

t.test('exactly at the edge of the grace window, and grace 0', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const s = await session(app)
  await refresh(app, s.cookie)
  clock.advance(10_000)
  t.equal((await refresh(app, s.cookie)).statusCode, 200, '10 s after: still inside')
  clock.advance(1)
  assertError(t, await refresh(app, s.cookie), 401, 'REFRESH_TOKEN_REUSED')

  const strict = await buildTestApp(t, { now: clock.now, env: { REFRESH_REUSE_GRACE_SECONDS: '0' } })
  const s2 = await session(strict)
  t.equal((await refresh(strict, s2.cookie)).statusCode, 200)
  assertError(t, await refresh(strict, s2.cookie), 401, 'REFRESH_TOKEN_REUSED')
})

t.test('20 parallel refreshes with one cookie all succeed with one and the same successor', async (t) => {
  const app = await buildTestApp(t)
  const s = await session(app)
  const results = await Promise.all(Array.from({ length: 20 }, () => refresh(app, s.cookie)))
  t.same(results.map((r) => r.statusCode), Array(20).fill(200), 'all 200, no 500')
  const values = new Set(results.map((r) => refreshCookieOf(r)?.value))
  t.equal(values.size, 1, 'one successor')
  const tokens = await app.db.select().from(refreshTokens)
  t.equal(tokens.length, 2, 'one parent, one child: never a second branch')
  t.equal(tokens.filter((r) => r.rotatedAt === null && r.revokedAt === null).length, 1, 'one live token')
  const [successor] = values
  t.equal((await refresh(app, successor ?? '')).statusCode, 200, 'the shared successor works')
})

t.test('refreshes racing a logout-all: each rotates before it or is refused, and no token outlives it', async (t) => {
  const app = await buildTestApp(t)
  const s = await session(app)
  const other = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: s.email, password: PASSWORD } })
  const otherCookie = refreshCookieOf(other)?.value ?? ''
  const [logoutAll, ...refreshes] = await Promise.all([
    app.inject({ method: 'POST', url: '/api/auth/logout-all', headers: bearer(s.accessToken) }),
    ...Array.from({ length: 10 }, (_, i) => refresh(app, i % 2 === 0 ? s.cookie : otherCookie))
  ])
  t.equal(logoutAll?.statusCode, 200)
  for (const r of refreshes) t.ok(r.statusCode === 200 || r.statusCode === 401, `refresh: ${r.statusCode}`)
  const live = await app.db.select().from(refreshTokens).where(and(isNull(refreshTokens.revokedAt), isNull(refreshTokens.rotatedAt)))
  t.same(live, [], 'no live refresh token is left')
  t.same(await app.db.select().from(sessions).where(isNull(sessions.revokedAt)), [], 'no live session is left')
  for (const r of refreshes.filter((r) => r.statusCode === 200)) {
    assertError(t, await refresh(app, refreshCookieOf(r)?.value ?? ''), 401, 'REFRESH_TOKEN_INVALID')
  }
  const children = await app.db.select().from(refreshTokens)
  t.equal(new Set(children.map((r) => r.parentId).filter((p) => p !== null)).size, children.filter((r) => r.parentId !== null).length,
    'at most one successor per parent')
})

t.test('reuse of a stale token revokes every session of the user, records both IPs and queues the alert', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const email = uniqueEmail()
  const a = await session(app, email, '10.0.0.1')
  const loginB = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password: PASSWORD }, remoteAddress: '10.0.0.2' })
  const b = { cookie: refreshCookieOf(loginB)?.value ?? '', accessToken: loginB.json().accessToken as string }
  const other = await session(app)

  await refresh(app, a.cookie, { remoteAddress: '10.0.0.3' }) // the legitimate rotation
  clock.advance(60_000)
  const stolen = await refresh(app, a.cookie, { remoteAddress: '203.0.113.9' }) // the attacker's copy
  assertError(t, stolen, 401, 'REFRESH_TOKEN_REUSED')

  const mine = await app.db.select().from(sessions).where(eq(sessions.userId, a.userId))
  t.equal(mine.length, 2)
  t.ok(mine.every((x) => x.revokedAt !== null && x.revokedReason === 'refresh_token_reused'), 'all of the user\'s sessions revoked')
  const liveTokens = await app.db.select().from(refreshTokens).where(and(eq(refreshTokens.userId, a.userId), isNull(refreshTokens.revokedAt)))
  t.equal(liveTokens.length, 0, 'every refresh token of the user revoked')
  assertError(t, await refresh(app, b.cookie), 401, 'REFRESH_TOKEN_INVALID')
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(b.accessToken) }), 401, 'SESSION_REVOKED')
  t.equal((await refresh(app, other.cookie)).statusCode, 200, 'other users untouched')

  const [event] = await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'refresh_token_reused'))
  t.match(event, { userId: a.userId, email, ipAddress: '203.0.113.9', success: false })
  t.match(event?.metadata, { reuseIp: '203.0.113.9', rotatedByIp: '10.0.0.3', revokedSessions: 2 })

  // Besides the two signups' verification mails:
  const mails = await app.db.select().from(emailOutbox).where(ne(emailOutbox.kind, 'email_verification'))
  t.equal(mails.length, 1, 'one alert queued')
  t.match(mails[0], { toAddress: email, kind: 'refresh_token_reused', status: 'pending', attempts: 0 })
  const [alert] = await readMail(app)
  t.equal(alert?.to, email)
  t.match(alert?.text, /203\.0\.113\.9/)
  t.match(alert?.text, /10\.0\.0\.3/)
})

t.test('invalid refresh cookies', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/refresh' }), 401, 'REFRESH_TOKEN_INVALID')
  assertError(t, await refresh(app, 'garbage'), 401, 'REFRESH_TOKEN_INVALID')
  assertError(t, await refresh(app, 'A'.repeat(43)), 401, 'REFRESH_TOKEN_INVALID')
  assertError(t, await refresh(app, `${'A'.repeat(43)}\u0000`), 401, 'REFRESH_TOKEN_INVALID')

  const s = await session(app)
  clock.advance(7 * 86_400_000 + 1000)
  assertError(t, await refresh(app, s.cookie), 401, 'REFRESH_TOKEN_INVALID')

  const s2 = await session(app)
  await revokeSessionsOf(app, s2.userId, clock.now())
  assertError(t, await refresh(app, s2.cookie), 401, 'REFRESH_TOKEN_INVALID')
  // Only the two signups' verification mails are queued:
  t.equal((await app.db.select().from(emailOutbox).where(ne(emailOutbox.kind, 'email_verification'))).length, 0, 'no alerts for merely invalid tokens')
})

t.test('CSRF: a cookie request from a foreign Origin is rejected; allowed and absent Origins pass', async (t) => {
  const app = await buildTestApp(t, { env: { CORS_ORIGINS: 'https://app.example.com' } })
  const s = await session(app)
  const evil = await refresh(app, s.cookie, { headers: { origin: 'https://evil.example.com' } })
  assertError(t, evil, 403, 'CSRF_REJECTED')
  assertError(t, await refresh(app, s.cookie, { headers: { origin: 'null' } }), 403, 'CSRF_REJECTED')
  t.equal((await app.db.select().from(refreshTokens)).filter((r) => r.rotatedAt !== null).length, 0, 'nothing rotated')

  const allowed = await refresh(app, s.cookie, { headers: { origin: 'https://app.example.com' } })
  t.equal(allowed.statusCode, 200)
  t.equal(allowed.headers['access-control-allow-origin'], 'https://app.example.com')
  t.equal(allowed.headers['access-control-allow-credentials'], 'true')
  const own = await refresh(app, refreshCookieOf(allowed)?.value ?? '', { headers: { origin: 'http://localhost:3000' } })
  t.equal(own.statusCode, 200, 'the service\'s own origin (PUBLIC_URL, by default http://localhost:PORT)')
  const none = await refresh(app, refreshCookieOf(own)?.value ?? '')
  t.equal(none.statusCode, 200, 'no Origin (non-browser client)')

  const logoutEvil = await app.inject({ method: 'POST', url: '/api/auth/logout', cookies: { refresh_token: refreshCookieOf(none)?.value ?? '' }, headers: { origin: 'https://evil.example.com' } })
  assertError(t, logoutEvil, 403, 'CSRF_REJECTED')
})

t.test('logout by Bearer: cookie cleared, the access token answers SESSION_REVOKED, the refresh token is dead', async (t) => {
  const app = await buildTestApp(t)
  const s = await session(app)
  const res = await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(s.accessToken) })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { message: 'Logged out' })
  const cleared = refreshCookieOf(res)
  t.equal(cleared?.value, '')
  t.match(String(res.headers['set-cookie']), /Path=\/api\/auth/)
  t.match(String(res.headers['set-cookie']), /Expires=Thu, 01 Jan 1970|Max-Age=0/)
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) }), 401, 'SESSION_REVOKED')
  assertError(t, await refresh(app, s.cookie), 401, 'REFRESH_TOKEN_INVALID')
  const [event] = await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'logout'))
  t.match(event, { userId: s.userId, success: true })
})

t.test('logout by cookie alone, and with an expired Bearer next to a valid cookie', async (t) => {
  const app = await buildTestApp(t)
  const s = await session(app)
  const res = await app.inject({ method: 'POST', url: '/api/auth/logout', cookies: { refresh_token: s.cookie } })
  t.equal(res.statusCode, 200)
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) }), 401, 'SESSION_REVOKED')
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout', cookies: { refresh_token: s.cookie } })).statusCode, 200, 'idempotent')

  const s2 = await session(app)
  const both = await app.inject({ method: 'POST', url: '/api/auth/logout', headers: { authorization: 'Bearer expired.or.bad' }, cookies: { refresh_token: s2.cookie } })
  t.equal(both.statusCode, 200, 'the cookie is enough')
  assertError(t, await refresh(app, s2.cookie), 401, 'REFRESH_TOKEN_INVALID')

  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/logout' }), 401, 'AUTH_REQUIRED')
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/logout', cookies: { refresh_token: 'A'.repeat(43) } }), 401, 'REFRESH_TOKEN_INVALID')
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/logout', headers: { authorization: 'Bearer bad' } }), 401, 'TOKEN_INVALID')
})

t.test('a logout on one instance is refused by another within a second, by message; within SESSION_CHECK_TTL_SECONDS when the message is lost', async (t) => {
  const clock = testClock(new Date())
  const env = { SESSION_CHECK_TTL_SECONDS: '5' }
  const a = await buildTestApp(t, { now: clock.now, env })
  const b = await buildTestApp(t, { now: clock.now, env, db: a.dbHandle }) // a second instance, same database
  // A third instance that hears no messages (a lost broadcast): only its cache TTL bounds it.
  const deaf = await buildTestApp(t, { now: clock.now, env, db: { ...a.dbHandle, broadcast: localBroadcast() } })

  const s = await session(a)
  for (const other of [b, deaf]) t.equal((await other.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) })).statusCode, 200, 'the session is cached')
  t.equal((await a.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(s.accessToken) })).statusCode, 200)
  assertError(t, await a.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) }), 401, 'SESSION_REVOKED')

  const refusedBy = await within(1000, async () => (await b.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) })).statusCode === 401)
  t.ok(refusedBy, `the other instance refuses it after ${refusedBy} ms, its cache notwithstanding`)

  clock.advance(4_000)
  t.equal((await deaf.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) })).statusCode, 200, 'without the message: still cached')
  clock.advance(1_001)
  assertError(t, await deaf.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) }), 401, 'SESSION_REVOKED')
})

t.test('logout-all revokes every session of the user and reports how many', async (t) => {
  const app = await buildTestApp(t)
  const email = uniqueEmail()
  const a = await session(app, email)
  const b = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password: PASSWORD } })
  const other = await session(app)
  const res = await app.inject({ method: 'POST', url: '/api/auth/logout-all', headers: bearer(a.accessToken) })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { message: 'Logged out of every session', revoked: 2 })
  t.equal(refreshCookieOf(res)?.value, '', 'cookie cleared')
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(b.json().accessToken) }), 401, 'SESSION_REVOKED')
  assertError(t, await refresh(app, refreshCookieOf(b)?.value ?? ''), 401, 'REFRESH_TOKEN_INVALID')
  t.equal((await app.inject({ url: '/api/auth/me', headers: bearer(other.accessToken) })).statusCode, 200)
  const [event] = await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'logout_all'))
  t.match(event, { userId: a.userId, metadata: { revoked: 2 } })
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/logout-all' }), 401, 'AUTH_REQUIRED')
})

t.test('sessions list marks the current one; delete ends only one\'s own', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const email = uniqueEmail()
  const a = await session(app, email, '10.0.0.1')
  clock.advance(1000)
  const b = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password: PASSWORD }, remoteAddress: '10.0.0.2', headers: { 'user-agent': 'phone' } })
  const bToken = b.json().accessToken as string
  const other = await session(app)

  const list = await app.inject({ url: '/api/auth/sessions', headers: bearer(a.accessToken) })
  t.equal(list.statusCode, 200)
  const items = list.json().items as Array<Record<string, unknown>>
  t.equal(items.length, 2)
  t.same(Object.keys(items[0] ?? {}).sort(), ['createdAt', 'current', 'id', 'ipAddress', 'lastUsedAt', 'userAgent'])
  t.same(items.map((i) => i.current), [false, true], 'most recently used first; current marked')
  t.match(items[0], { id: sidOf(bToken), ipAddress: '10.0.0.2', userAgent: 'phone' })

  assertError(t, await app.inject({ method: 'DELETE', url: `/api/auth/sessions/${sidOf(other.accessToken)}`, headers: bearer(a.accessToken) }), 404, 'NOT_FOUND')
  t.equal((await app.inject({ url: '/api/auth/me', headers: bearer(other.accessToken) })).statusCode, 200, 'another user\'s session untouched')
  assertError(t, await app.inject({ method: 'DELETE', url: '/api/auth/sessions/not-a-uuid', headers: bearer(a.accessToken) }), 400, 'VALIDATION_ERROR')
  assertError(t, await app.inject({ method: 'DELETE', url: '/api/auth/sessions/00000000-0000-4000-8000-000000000000', headers: bearer(a.accessToken) }), 404, 'NOT_FOUND')

  const del = await app.inject({ method: 'DELETE', url: `/api/auth/sessions/${sidOf(bToken)}`, headers: bearer(a.accessToken) })
  t.equal(del.statusCode, 204)
  t.equal(del.body, '')
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(bToken) }), 401, 'SESSION_REVOKED')
  assertError(t, await app.inject({ method: 'DELETE', url: `/api/auth/sessions/${sidOf(bToken)}`, headers: bearer(a.accessToken) }), 404, 'NOT_FOUND')
  const after = await app.inject({ url: '/api/auth/sessions', headers: bearer(a.accessToken) })
  t.equal(after.json().items.length, 1, 'active sessions only')
  assertError(t, await app.inject({ url: '/api/auth/sessions' }), 401, 'AUTH_REQUIRED')
})

t.test('logout from a foreign Origin with Bearer and cookie revokes nothing', async (t) => {
  const app = await buildTestApp(t, { env: { CORS_ORIGINS: 'https://app.example.com' } })
  const s = await session(app)
  const res = await app.inject({
    method: 'POST', url: '/api/auth/logout', headers: { ...bearer(s.accessToken), origin: 'https://evil.example.com' }, cookies: { refresh_token: s.cookie }
  })
  assertError(t, res, 403, 'CSRF_REJECTED')
  t.equal((await app.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) })).statusCode, 200, 'the session is still live')
})
