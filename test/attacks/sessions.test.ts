/**
 * Sessions under attack: a stolen, already-rotated refresh token presented at logout, hostile
 * text in the headers that end up in a security email, and revocation racing the session cache.
 */
import { and, eq, sql } from 'drizzle-orm'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { authEvents, sessions } from '../../src/db/schema.ts'
import {
  assertError, bearer, buildTestApp, login, readMail, refreshCookieIn, signup, testClock
} from '../helper.ts'

const refresh = (app: App, cookie: string, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: '/api/auth/refresh', cookies: { refresh_token: cookie }, headers })
const logout = (app: App, cookie: string) =>
  app.inject({ method: 'POST', url: '/api/auth/logout', cookies: { refresh_token: cookie } })
const events = async (app: App, type: string) => (await app.db.select().from(authEvents).where(eq(authEvents.eventType, type)))
const liveSessions = async (app: App, userId: string) =>
  (await app.db.select().from(sessions).where(and(eq(sessions.userId, userId)))).filter((s) => s.revokedAt === null).length

/** A user with two sessions; the first one's cookie has been rotated once. */
async function rotatedOnce (app: App) {
  const s = await signup(app)
  const other = await login(app, s.email)
  const stolen = refreshCookieIn(s.res)
  const rotated = await refresh(app, stolen)
  t.equal(rotated.statusCode, 200)
  return { s, other, stolen, current: refreshCookieIn(rotated) }
}

t.test('logout with a rotated cookie past the grace window is reuse: every session ends and the owner is alerted', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const { s, other, stolen, current } = await rotatedOnce(app)
  clock.advance(11_000) // REFRESH_REUSE_GRACE_SECONDS is 10

  const res = await logout(app, stolen)
  t.equal(res.statusCode, 200, 'the answer stays 200')
  t.equal(refreshCookieIn(res), '', 'with the cookie cleared')
  t.equal(await liveSessions(app, s.user.id), 0, 'the whole family is revoked, the other device included')
  assertError(t, await refresh(app, current), 401, 'REFRESH_TOKEN_INVALID')
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(other.json().accessToken) }), 401, 'SESSION_REVOKED')
  const [reuse] = await events(app, 'refresh_token_reused')
  t.match(reuse, { userId: s.user.id, success: false, failureReason: 'rotated_token_presented' })
  t.match(reuse?.metadata, { via: 'logout', revokedSessions: 2 })
  t.equal((await events(app, 'logout')).length, 0, 'not recorded as an ordinary logout')
  const alerts = (await readMail(app)).filter((m) => /Security alert/.test(m.subject))
  t.equal(alerts.length, 1)
})

t.test('logout with a cookie rotated within the grace window ends that session only, as a logout', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const { s, other, stolen, current } = await rotatedOnce(app)
  clock.advance(2000)
  t.equal((await logout(app, stolen)).statusCode, 200)
  assertError(t, await refresh(app, current), 401, 'REFRESH_TOKEN_INVALID')
  t.equal((await app.inject({ url: '/api/auth/me', headers: bearer(other.json().accessToken) })).statusCode, 200, 'the other device stays signed in')
  t.equal(await liveSessions(app, s.user.id), 1)
  t.equal((await events(app, 'refresh_token_reused')).length, 0)
  t.match((await events(app, 'logout'))[0]?.metadata, { via: 'refresh_cookie' })
})

t.test('logout with a live cookie ends its session; again with the same cookie changes nothing', async (t) => {
  const app = await buildTestApp(t)
  const { s, current } = await rotatedOnce(app)
  t.equal((await logout(app, current)).statusCode, 200)
  t.equal(await liveSessions(app, s.user.id), 1)
  t.equal((await logout(app, current)).statusCode, 200, 'idempotent')
  t.equal(await liveSessions(app, s.user.id), 1)
  t.equal((await events(app, 'logout')).length, 1)
  t.equal((await events(app, 'refresh_token_reused')).length, 0, 'a token of an ended session is not reuse')
})

t.test('the reuse alert describes the browser instead of quoting the User-Agent, and shows only IP addresses', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now, env: { TRUST_PROXY: 'true', REFRESH_REUSE_GRACE_SECONDS: '0' } })
  const phishing = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 ' +
    'URGENT: your account is locked. Restore it at https://evil.example/restore or call +1 555 0100'
  const cases: Array<[Record<string, string>, string]> = [
    [{ 'user-agent': phishing, 'x-forwarded-for': 'Visit evil.example now' }, 'Browser: Chrome 120 on Windows'],
    [{ 'user-agent': '<a href="https://evil.example">Click here to keep your account</a>' }, 'Browser: an unrecognised client'],
    [{ 'user-agent': 'curl/8.5.0\r\nBcc: victim@example.com' }, 'Browser: curl 8']
  ]
  for (const [headers, expected] of cases) {
    const { stolen } = await rotatedOnce(app)
    assertError(t, await refresh(app, stolen, headers), 401, 'REFRESH_TOKEN_REUSED')
    const alert = (await readMail(app)).filter((m) => /Security alert/.test(m.subject)).at(-1)
    t.ok(alert?.text.includes(expected), expected)
    for (const bad of ['evil', 'URGENT', 'http', 'Click', 'Bcc', '555']) t.notOk(alert?.text.includes(bad), `no "${bad}" from the headers`)
  }
  const alert = (await readMail(app)).find((m) => /Security alert/.test(m.subject))
  t.match(alert?.text, /Old token presented from IP: unknown/, 'a forged X-Forwarded-For that is no address is shown as unknown')
})

t.test('a revocation clears the session cache after it commits, so a racing request cannot re-cache "active"', async (t) => {
  // The revoking transaction is held open after its UPDATE (a trigger sleeps on its audit row).
  // A request in that gap reads the still-committed "active" state; were the cache cleared
  // before the commit, that state would be cached and the revoked token would work for
  // SESSION_CHECK_TTL_SECONDS. On PGlite, which runs one query at a time, the racing request
  // waits for the commit instead; the test holds on both.
  const app = await buildTestApp(t, { env: { SESSION_CHECK_TTL_SECONDS: '30' } })
  await app.db.execute(sql.raw(`create or replace function gatehouse_test_slow() returns trigger language plpgsql as $$
    begin if new.event_type = 'logout_all' then perform pg_sleep(0.6); end if; return new; end $$`))
  await app.db.execute(sql.raw('create trigger gatehouse_test_slow before insert on auth_events for each row execute function gatehouse_test_slow()'))
  t.teardown(async () => { await app.db.execute(sql.raw('drop trigger if exists gatehouse_test_slow on auth_events')) })

  const s = await signup(app)
  const me = () => app.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) })
  t.equal((await me()).statusCode, 200, 'cached as active')
  const revoking = app.inject({ method: 'POST', url: '/api/auth/logout-all', headers: bearer(s.accessToken) })
  await new Promise((resolve) => setTimeout(resolve, 250))
  const racing = await me()
  t.ok([200, 401].includes(racing.statusCode), 'the racing request sees either state')
  t.equal((await revoking).statusCode, 200)
  assertError(t, await me(), 401, 'SESSION_REVOKED')
})
