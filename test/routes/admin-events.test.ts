/**
 * The admin's view of the audit log: GET /api/admin/auth-events (filters, limit, paging, what
 * every flow records, the indexes that serve it) and GET /api/admin/security/suspicious (failures
 * aggregated by IP and by account within a window). Everything through HTTP; the query plan
 * through the query the route runs.
 */
import { type SQL, sql } from 'drizzle-orm'
import t from 'tap'
import type { App } from '../../src/app.ts'
import type { EventFilters, PublicEvent as Event } from '../../src/services/admin.ts'
import {
  assertError, bearer, buildTestApp, enrolMfa, latestResetToken, login, mfaChallenge, PASSWORD, refreshCookieIn, rowsOf, signup,
  signupAdmin, testClock, totpCode, uniqueEmail, type Test
} from '../helper.ts'

const WRONG = 'Wrong-Passw0rd-1'
/** The User-Agent of app.inject when a request sets none. */
const INJECT_UA = 'lightMyRequest'
const EVENT_KEYS = ['createdAt', 'email', 'eventType', 'failureReason', 'id', 'ipAddress', 'metadata', 'success', 'userAgent', 'userId']


/** What a test expects of an event (no id, no metadata). */
type Expected = Omit<Event, 'id' | 'metadata'>

type Query = Record<string, string | number>

const eventsUrl = (query: Query = {}) =>
  `/api/admin/auth-events?${new URLSearchParams(Object.entries(query).map(([k, v]): [string, string] => [k, String(v)]))}`

function getEvents (app: App, token: string, query: Query = {}) {
  return app.inject({ url: eventsUrl(query), headers: bearer(token) })
}

/** The items of a 200 answer (fails the test otherwise). */
async function events (test: Test, app: App, token: string, query: Query = {}): Promise<Event[]> {
  const res = await getEvents(app, token, query)
  test.equal(res.statusCode, 200, `GET ${eventsUrl(query)}: ${res.statusCode === 200 ? 'ok' : res.body}`)
  return (res.json() as { items: Event[] }).items
}

const project = ({ id: _id, metadata: _metadata, ...expected }: Event): Expected => expected

function suspicious (app: App, token: string, query = '') {
  return app.inject({ url: `/api/admin/security/suspicious${query}`, headers: bearer(token) })
}

/** A request with a client address and a User-Agent, optionally a Bearer token and the refresh cookie. */
function call (app: App, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string,
  opts: { payload?: Record<string, unknown>, token?: string, cookie?: string, ip: string, ua: string }) {
  return app.inject({
    method, url, payload: opts.payload, remoteAddress: opts.ip,
    headers: { 'user-agent': opts.ua, ...(opts.token === undefined ? {} : bearer(opts.token)) },
    ...(opts.cookie === undefined ? {} : { cookies: { refresh_token: opts.cookie } })
  })
}

t.test('the audit log and the report need an admin: 401 without a token, 403 ADMIN_REQUIRED for a user', async (t) => {
  const app = await buildTestApp(t)
  const user = await signup(app)
  const admin = await signupAdmin(app)
  for (const url of ['/api/admin/auth-events', '/api/admin/security/suspicious']) {
    assertError(t, await app.inject({ url }), 401, 'AUTH_REQUIRED')
    assertError(t, await app.inject({ url, headers: bearer(user.accessToken) }), 403, 'ADMIN_REQUIRED')
    t.equal((await app.inject({ url, headers: bearer(admin.accessToken) })).statusCode, 200, `${url}: an admin gets 200`)
  }
})

t.test('each filter of the audit log, alone and combined, returns exactly the matching events, newest first', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const expected: Expected[] = []
  const note = (e: Omit<Expected, 'createdAt' | 'userAgent'>) => expected.push({ ...e, userAgent: INJECT_UA, createdAt: clock.now().toISOString() })

  const admin = await signupAdmin(app, uniqueEmail('admin'), '10.0.0.1')
  note({ userId: admin.user.id, email: admin.email, eventType: 'signup', ipAddress: '10.0.0.1', success: true, failureReason: null })
  const users: Record<'a' | 'b', { id: string, email: string }> = { a: { id: '', email: '' }, b: { id: '', email: '' } }
  for (const [name, ip] of [['a', '10.3.0.1'], ['b', '10.3.0.2']] as const) {
    clock.advance(1000)
    const s = await signup(app, uniqueEmail(name), PASSWORD, ip)
    users[name] = { id: s.user.id, email: s.email }
    note({ userId: s.user.id, email: s.email, eventType: 'signup', ipAddress: ip, success: true, failureReason: null })
  }
  const ghost = uniqueEmail('ghost')
  const steps: Array<[string, string, string, boolean]> = [
    // who, ip, password, succeeds
    ['a', '10.3.0.1', PASSWORD, true],
    ['a', '10.3.0.9', WRONG, false],
    ['b', '10.3.0.9', WRONG, false],
    ['ghost', '10.3.0.9', PASSWORD, false],
    ['b', '2001:db8::abc', PASSWORD, true],
    ['a', '10.3.0.1', WRONG, false]
  ]
  for (const [who, ip, password, ok] of steps) {
    clock.advance(1000)
    const user = who === 'ghost' ? undefined : users[who as 'a' | 'b']
    const res = await login(app, user?.email ?? ghost, password, ip)
    t.equal(res.statusCode, ok ? 200 : 401)
    note({
      userId: user?.id ?? null, email: user?.email ?? ghost, eventType: ok ? 'login_success' : 'login_failure', ipAddress: ip, success: ok,
      failureReason: ok ? null : user === undefined ? 'unknown_email' : 'invalid_password'
    })
  }
  const newestFirst = expected.slice().reverse()
  const at = (i: number) => expected[i]!.createdAt

  const all = await events(t, app, admin.accessToken)
  t.same(all.map(project), newestFirst, 'no filter: every event, newest first')
  for (const e of all) t.same(Object.keys(e).sort(), EVENT_KEYS, 'the Event object and metadata, nothing else')
  t.ok(all.every((e) => e.metadata === null || typeof e.metadata === 'object'), 'metadata is an object or null')

  const cases: Array<[string, Query, (e: Expected) => boolean]> = [
    ['userId', { userId: users.a.id }, (e) => e.userId === users.a.id],
    ['userId, upper case', { userId: users.b.id.toUpperCase() }, (e) => e.userId === users.b.id],
    ['email, trimmed and lower-cased', { email: `  ${users.b.email.toUpperCase()} ` }, (e) => e.email === users.b.email],
    ['email of an unknown account', { email: ghost }, (e) => e.email === ghost],
    ['type', { type: 'login_failure' }, (e) => e.eventType === 'login_failure'],
    ['type with no event', { type: 'password_reset' }, () => false],
    ['ip', { ip: '10.3.0.9' }, (e) => e.ipAddress === '10.3.0.9'],
    ['ip, IPv6 in upper case', { ip: '2001:DB8::ABC' }, (e) => e.ipAddress === '2001:db8::abc'],
    ['since: at or after', { since: at(4) }, (e) => e.createdAt >= at(4)],
    ['before: strictly older', { before: at(4) }, (e) => e.createdAt < at(4)],
    ['since and before', { since: at(2), before: at(6) }, (e) => e.createdAt >= at(2) && e.createdAt < at(6)],
    ['userId and type', { userId: users.a.id, type: 'login_failure' }, (e) => e.userId === users.a.id && e.eventType === 'login_failure'],
    ['email and ip', { email: users.a.email, ip: '10.3.0.1' }, (e) => e.email === users.a.email && e.ipAddress === '10.3.0.1'],
    ['type, ip and since', { type: 'login_failure', ip: '10.3.0.9', since: at(5) },
      (e) => e.eventType === 'login_failure' && e.ipAddress === '10.3.0.9' && e.createdAt >= at(5)],
    ['userId and another user\'s email', { userId: users.a.id, email: users.b.email }, () => false]
  ]
  for (const [name, query, keep] of cases) {
    const want = newestFirst.filter(keep)
    const got = await events(t, app, admin.accessToken, query)
    t.same(got.map(project), want, `${name}: ${want.length} events`)
  }
  t.ok(newestFirst.filter((e) => e.userId === users.a.id).length >= 3, 'the cases select real subsets')

  const two = await events(t, app, admin.accessToken, { type: 'login_failure', limit: 2 })
  t.same(two.map(project), newestFirst.filter((e) => e.eventType === 'login_failure').slice(0, 2), 'limit with a filter: the newest matching')
})

t.test('limit defaults to 100 and goes up to 500; paging with before continues without overlap or gap', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now, env: { RATE_LIMIT_LOGIN_EMAIL_FAILURES: '10000' } })
  const admin = await signupAdmin(app)
  const ghost = uniqueEmail('ghost')
  for (let i = 0; i < 120; i++) {
    clock.advance(1000)
    t.equal((await login(app, ghost, WRONG, `10.7.${i % 4}.1`)).statusCode, 401)
  }
  const total = 121 // and the admin's signup

  const everything = await events(t, app, admin.accessToken, { limit: 500 })
  t.equal(everything.length, total, 'limit=500: every event')
  const times = everything.map((e) => e.createdAt)
  t.same(times, times.slice().sort().reverse(), 'newest first')
  t.equal(new Set(times).size, total, 'distinct times')

  const first = await events(t, app, admin.accessToken)
  t.equal(first.length, 100, 'the default limit is 100')
  t.same(first.map((e) => e.id), everything.slice(0, 100).map((e) => e.id), 'the newest 100')

  const second = await events(t, app, admin.accessToken, { before: first.at(-1)!.createdAt })
  t.equal(second.length, total - 100, 'the rest')
  const ids = [...first, ...second].map((e) => e.id)
  t.equal(new Set(ids).size, ids.length, 'no overlap')
  t.same(ids, everything.map((e) => e.id), 'no gap: the two pages are the whole log, in order')
  t.same(await events(t, app, admin.accessToken, { before: second.at(-1)!.createdAt }), [], 'and then nothing')

  const pagesOf7: string[] = []
  let before: string | undefined
  for (;;) {
    const page = await events(t, app, admin.accessToken, before === undefined ? { limit: 7 } : { limit: 7, before })
    if (page.length === 0) break
    t.ok(page.length <= 7)
    pagesOf7.push(...page.map((e) => e.id))
    before = page.at(-1)!.createdAt
  }
  t.same(pagesOf7, everything.map((e) => e.id), 'pages of 7 walk the whole log')

  const one = await events(t, app, admin.accessToken, { limit: 1 })
  t.same(one.map((e) => e.id), [everything[0]!.id], 'limit=1: the newest')
})

t.test('paging with before and beforeId skips none of the events that share a millisecond', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now, env: { RATE_LIMIT_LOGIN_EMAIL_FAILURES: '10000' } })
  const admin = await signupAdmin(app)
  clock.advance(1000)
  // Nine failures in one instant (the clock does not move), then one a second later.
  const ghost = uniqueEmail('ghost')
  for (let i = 0; i < 9; i++) t.equal((await login(app, ghost, WRONG, `10.8.0.${i + 1}`)).statusCode, 401)
  clock.advance(1000)
  t.equal((await login(app, ghost, WRONG, '10.8.1.1')).statusCode, 401)

  const everything = await events(t, app, admin.accessToken, { limit: 500 })
  t.equal(everything.length, 11, 'ten failures and the signup')
  const sameInstant = everything.slice(1, 10)
  t.equal(new Set(sameInstant.map((e) => e.createdAt)).size, 1, 'nine events share one millisecond')
  t.same(sameInstant.map((e) => e.id), sameInstant.map((e) => e.id).sort().reverse(), 'ties come by descending id')

  const walked: string[] = []
  let cursor: { before: string, beforeId: string } | undefined
  for (;;) {
    const page = await events(t, app, admin.accessToken, { limit: 4, ...cursor })
    if (page.length === 0) break
    walked.push(...page.map((e) => e.id))
    const last = page.at(-1)!
    cursor = { before: last.createdAt, beforeId: last.id }
  }
  t.same(walked, everything.map((e) => e.id), 'pages of 4 through the tie walk the whole log, in order, once')

  // `before` alone is the contract's "strictly older": it moves past the whole millisecond.
  const strict = await events(t, app, admin.accessToken, { before: everything[2]!.createdAt })
  t.same(strict.map((e) => e.id), [everything[10]!.id], 'before alone: only what is strictly older')
  assertError(t, await getEvents(app, admin.accessToken, { beforeId: everything[2]!.id }), 400, 'VALIDATION_ERROR')
})

t.test('bad query values get 400 VALIDATION_ERROR', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const bad: Query[] = [
    { userId: 'not-a-uuid' }, { userId: '123' }, { type: 'login' }, { type: 'LOGIN_SUCCESS' }, { type: '' },
    { since: 'yesterday' }, { since: '2026-13-01T00:00:00Z' }, { since: '2026-06-01' }, { before: 'not a date' }, { before: '' },
    { ip: '10.0.0.1;drop' }, { ip: '10.0.0.1 ' }, { ip: 'evil.example' }, { ip: '1' }, { ip: '1'.repeat(46) },
    { email: '' }, { email: 'x'.repeat(255) },
    { limit: 0 }, { limit: 501 }, { limit: -1 }, { limit: 1.5 }, { limit: 'many' },
    { unknown: 'x' }, { userID: '00000000-0000-4000-8000-000000000000' },
    // A leap second passes the date-time format but is no time Date can hold.
    { since: '2016-12-31T23:59:60Z' }, { before: '2016-12-31T23:59:60Z' },
    { beforeId: '00000000-0000-4000-8000-000000000000' }
  ]
  for (const query of bad) {
    const res = await getEvents(app, admin.accessToken, query)
    t.equal(res.statusCode, 400, `400 for ${JSON.stringify(query)}`)
    assertError(t, res, 400, 'VALIDATION_ERROR')
  }
  const good: Query[] = [{ limit: 1 }, { limit: 500 }, { since: '2026-06-01T12:00:00.000+02:00' }, { ip: '::1' }, { userId: '00000000-0000-4000-8000-000000000000' }]
  for (const query of good) {
    t.equal((await getEvents(app, admin.accessToken, query)).statusCode, 200, `200 for ${JSON.stringify(query)}`)
  }
})

t.test('a login with an unknown email records login_failure with the attempted address, the IP and the User-Agent', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const admin = await signupAdmin(app)
  clock.advance(5000)
  const res = await app.inject({
    method: 'POST', url: '/api/auth/login', remoteAddress: '198.51.100.23',
    payload: { email: '  Ghost.User+x@Example.COM ', password: PASSWORD }, headers: { 'user-agent': 'curl/8.4.0' }
  })
  assertError(t, res, 401, 'AUTH_INVALID_CREDENTIALS')
  const items = await events(t, app, admin.accessToken, { type: 'login_failure' })
  t.same(items.map((e) => ({ ...e, id: 'id' })), [{
    id: 'id', userId: null, email: 'ghost.user+x@example.com', eventType: 'login_failure', ipAddress: '198.51.100.23', userAgent: 'curl/8.4.0',
    success: false, failureReason: 'unknown_email', createdAt: clock.now().toISOString(), metadata: null
  }])
  const byEmail = await events(t, app, admin.accessToken, { email: 'GHOST.USER+X@example.com' })
  t.same(byEmail.map((e) => e.id), items.map((e) => e.id), 'found by the address as typed')
})

t.test('every flow records its event, successes and failures, with the IP, the User-Agent and the email', async (t) => {
  const clock = testClock()
  // Two wrong passwords lock an account for addresses it was never used from.
  const app = await buildTestApp(t, { now: clock.now, env: { RATE_LIMIT_LOGIN_EMAIL_FAILURES: '2' } })
  const admin = await signupAdmin(app, uniqueEmail('admin'), '10.0.0.1')
  const expected: Expected[] = [{
    userId: admin.user.id, email: admin.email, eventType: 'signup', ipAddress: '10.0.0.1', userAgent: INJECT_UA, success: true, failureReason: null,
    createdAt: clock.now().toISOString()
  }]
  const step = () => clock.advance(1000)

  // The user: every request from one address and browser.
  const ip = '10.5.0.1'
  const ua = 'Mozilla/5.0 (walk)'
  const email = uniqueEmail('walk')
  let password = PASSWORD
  const u = { id: '' }
  const expect = (eventType: string, success: boolean, failureReason: string | null = null,
    who: { id: string | null, email: string } = { id: u.id, email }, from = { ip, ua }) =>
    expected.push({ userId: who.id, email: who.email, eventType, ipAddress: from.ip, userAgent: from.ua, success, failureReason, createdAt: clock.now().toISOString() })
  const as = (extra: { payload?: Record<string, unknown>, token?: string, cookie?: string } = {}) => ({ ip, ua, ...extra })
  const loginOk = async () => {
    step()
    const res = await call(app, 'POST', '/api/auth/login', as({ payload: { email, password } }))
    t.equal(res.statusCode, 200, 'login')
    expect('login_success', true)
    return { token: res.json().accessToken as string, cookie: refreshCookieIn(res) }
  }

  step()
  const created = await call(app, 'POST', '/api/auth/signup', as({ payload: { email, password } }))
  t.equal(created.statusCode, 201)
  u.id = created.json().user.id
  expect('signup', true)

  step()
  t.equal((await call(app, 'POST', '/api/auth/login', as({ payload: { email, password: WRONG } }))).statusCode, 401)
  expect('login_failure', false, 'invalid_password')

  const first = await loginOk()
  step()
  const refreshed = await call(app, 'POST', '/api/auth/refresh', as({ cookie: first.cookie }))
  t.equal(refreshed.statusCode, 200, 'refresh')
  expect('refresh', true)
  clock.advance(60_000) // past the reuse grace
  assertError(t, await call(app, 'POST', '/api/auth/refresh', as({ cookie: first.cookie })), 401, 'REFRESH_TOKEN_REUSED')
  expect('refresh_token_reused', false, 'rotated_token_presented')

  const second = await loginOk()
  step()
  t.equal((await call(app, 'POST', '/api/auth/logout', as({ token: second.token }))).statusCode, 200, 'logout')
  expect('logout', true)

  const third = await loginOk()
  step()
  t.equal((await call(app, 'POST', '/api/auth/logout-all', as({ token: third.token }))).statusCode, 200, 'logout-all')
  expect('logout_all', true)

  const fourth = await loginOk()
  step()
  const badChange = await call(app, 'POST', '/api/auth/password/change', as({ token: fourth.token, payload: { currentPassword: WRONG, newPassword: 'Another-Horse-8' } }))
  assertError(t, badChange, 401, 'AUTH_INVALID_CREDENTIALS')
  expect('password_change', false, 'invalid_current_password')
  step()
  const change = await call(app, 'POST', '/api/auth/password/change', as({ token: fourth.token, payload: { currentPassword: password, newPassword: 'Another-Horse-8' } }))
  t.equal(change.statusCode, 200, 'password change')
  password = 'Another-Horse-8'
  expect('password_change', true)

  step()
  t.equal((await call(app, 'POST', '/api/auth/password/forgot', as({ payload: { email } }))).statusCode, 202)
  const resetToken = await latestResetToken(app) // the request is carried out after the answer
  expect('password_reset_requested', true)
  step()
  t.equal((await call(app, 'POST', '/api/auth/password/reset', as({ payload: { token: resetToken, newPassword: 'Third-Horse-77' } }))).statusCode, 200, 'reset')
  password = 'Third-Horse-77'
  // The link came to the mailbox: the reset also proves the address, never verified until now.
  expect('email_verified', true)
  expect('password_reset', true)

  const fifth = await loginOk()
  step()
  const setup = await call(app, 'POST', '/api/auth/mfa/totp/setup', as({ token: fifth.token, payload: { password } }))
  t.equal(setup.statusCode, 200, 'MFA setup')
  const secret = setup.json().secret as string
  const confirm = await call(app, 'POST', '/api/auth/mfa/totp/confirm', as({ token: fifth.token, payload: { code: totpCode(secret, clock.now()) } }))
  t.equal(confirm.statusCode, 200, 'MFA confirm')
  expect('mfa_enabled', true)
  const backupCode = (confirm.json().backupCodes as string[])[0]
  clock.advance(30_000) // the confirming code's step is spent

  step()
  const challenge = await call(app, 'POST', '/api/auth/login', as({ payload: { email, password } }))
  t.equal(challenge.json().mfaRequired, true, 'a challenge, and no event yet')
  const mfaToken = challenge.json().mfaToken as string
  const good = totpCode(secret, clock.now())
  const wrongCode = String((Number(good) + 500_000) % 1_000_000).padStart(6, '0')
  step()
  assertError(t, await call(app, 'POST', '/api/auth/login/mfa', as({ payload: { mfaToken, code: wrongCode } })), 401, 'MFA_INVALID_CODE')
  expect('mfa_failure', false, 'invalid_code')
  step()
  const viaBackup = await call(app, 'POST', '/api/auth/login/mfa', as({ payload: { mfaToken, backupCode } }))
  t.equal(viaBackup.statusCode, 200, 'login with a backup code')
  expect('backup_code_used', true)
  expect('login_success', true)
  clock.advance(30_000)
  const disable = await call(app, 'POST', '/api/auth/mfa/disable', as({ token: viaBackup.json().accessToken, payload: { password, code: totpCode(secret, clock.now()) } }))
  t.equal(disable.statusCode, 200, 'MFA disabled')
  expect('mfa_disabled', true)

  // A second user, attacked from an address it never used: locked after two wrong passwords.
  step()
  const victim = await signup(app, uniqueEmail('victim'), PASSWORD, '10.6.0.1')
  expected.push({ userId: victim.user.id, email: victim.email, eventType: 'signup', ipAddress: '10.6.0.1', userAgent: INJECT_UA, success: true, failureReason: null, createdAt: clock.now().toISOString() })
  const attacker = { ip: '203.0.113.50', ua: 'attack-bot/1' }
  for (let i = 0; i < 2; i++) {
    step()
    t.equal((await call(app, 'POST', '/api/auth/login', { ...attacker, payload: { email: victim.email, password: WRONG } })).statusCode, 401)
    expect('login_failure', false, 'invalid_password', { id: victim.user.id, email: victim.email }, attacker)
  }
  step()
  assertError(t, await call(app, 'POST', '/api/auth/login', { ...attacker, payload: { email: victim.email, password: PASSWORD } }), 429, 'RATE_LIMITED')
  // The lockout names the account the failures were against, so a userId filter finds it.
  expect('rate_limited', false, 'account_login_failures', { id: victim.user.id, email: victim.email }, attacker)

  // The admin acts on both users.
  const adminFrom = { ip: '10.0.0.2', ua: 'admin-console/2' }
  const asAdmin = { id: admin.user.id, email: admin.email }
  step()
  const revoke = await call(app, 'DELETE', `/api/admin/users/${victim.user.id}/sessions`, { ...adminFrom, token: admin.accessToken })
  t.same(revoke.json(), { revoked: 1 })
  expect('admin_sessions_revoked', true, null, asAdmin, adminFrom)
  step()
  const patch = await call(app, 'PATCH', `/api/admin/users/${u.id}`, { ...adminFrom, token: admin.accessToken, payload: { isActive: false } })
  t.equal(patch.statusCode, 200, 'deactivated')
  expect('admin_user_updated', true, null, asAdmin, adminFrom)

  const all = await events(t, app, admin.accessToken, { limit: 500 })
  const times = all.map((e) => e.createdAt)
  t.same(times, times.slice().sort().reverse(), 'newest first')
  const order = (a: Expected, b: Expected) => a.createdAt.localeCompare(b.createdAt) || a.eventType.localeCompare(b.eventType)
  t.same(all.map(project).sort(order), expected.sort(order), 'exactly the expected events')

  const types = new Set(all.map((e) => e.eventType))
  for (const type of ['signup', 'login_success', 'login_failure', 'logout', 'logout_all', 'refresh', 'refresh_token_reused', 'password_change',
    'password_reset_requested', 'password_reset', 'mfa_enabled', 'mfa_failure', 'backup_code_used', 'mfa_disabled', 'rate_limited',
    'admin_user_updated', 'admin_sessions_revoked']) {
    t.ok(types.has(type), `${type} recorded`)
    t.ok((await events(t, app, admin.accessToken, { type })).length > 0, `${type} found by the type filter`)
  }
  const changes = await events(t, app, admin.accessToken, { type: 'password_change' })
  t.same(changes.map((e) => e.success), [true, false], 'password_change: the success and the failure')

  const [revoked] = await events(t, app, admin.accessToken, { type: 'admin_sessions_revoked' })
  t.match(revoked?.metadata, { targetUserId: victim.user.id, targetEmail: victim.email, revokedSessions: 1 })
  const [updated] = await events(t, app, admin.accessToken, { type: 'admin_user_updated' })
  t.match(updated?.metadata, { targetUserId: u.id, targetEmail: email, changes: { isActive: { from: true, to: false } } })
  const [reused] = await events(t, app, admin.accessToken, { type: 'refresh_token_reused' })
  t.match(reused?.metadata, { reuseIp: ip, rotatedByIp: ip })
  const mine = await events(t, app, admin.accessToken, { userId: u.id })
  t.ok(mine.every((e) => e.ipAddress === ip && e.userAgent === ua && e.email === email), "the user's events carry its IP, browser and email")
})

interface PlanNode { 'Node Type': string, 'Index Name'?: string, Plans?: PlanNode[] }

/** Every node of a JSON plan. */
function nodesOf (node: PlanNode): PlanNode[] {
  return [node, ...(node.Plans ?? []).flatMap(nodesOf)]
}

/**
 * EXPLAIN of the query the route runs for `filters`, with sequential scans discouraged (the
 * tables are tiny); parameters stay parameters. Returns the plan's nodes and its text.
 */
async function planOf (app: App, filters: EventFilters): Promise<{ nodes: PlanNode[], text: string }> {
  const query = app.services.admin.eventsQuery(filters).toSQL()
  const explain = (format: string) => {
    const chunks: SQL[] = [sql.raw(`explain (format ${format}) `)]
    query.sql.split(/\$(\d+)/).forEach((part, i) => {
      chunks.push(i % 2 === 0 ? sql.raw(part) : sql`${sql.param(query.params[Number(part) - 1])}`)
    })
    return sql.join(chunks)
  }
  return app.db.transaction(async (tx) => {
    await tx.execute(sql`set local enable_seqscan = off`)
    const [json] = rowsOf(await tx.execute(explain('json')))
    const raw = json?.['QUERY PLAN']
    const plan = (typeof raw === 'string' ? JSON.parse(raw) : raw) as Array<{ Plan: PlanNode }>
    const text = rowsOf(await tx.execute(explain('text'))).map((r) => String(r['QUERY PLAN'])).join('\n')
    return { nodes: nodesOf(plan[0]!.Plan), text }
  })
}

t.test('every single filter of the audit log is served by its index, never a sequential scan', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const admin = await signupAdmin(app)
  for (let i = 0; i < 5; i++) {
    clock.advance(1000)
    await login(app, admin.email, i % 2 === 0 ? PASSWORD : WRONG, `10.8.0.${i}`)
  }
  const limit = 100
  const cases: Array<[string, EventFilters, string]> = [
    ['userId', { userId: admin.user.id, limit }, 'auth_events_user_id_created_at_idx'],
    ['email', { email: admin.email, limit }, 'auth_events_email_created_at_idx'],
    ['type', { type: 'login_failure', limit }, 'auth_events_event_type_created_at_idx'],
    ['ip', { ip: '10.8.0.1', limit }, 'auth_events_ip_created_at_idx'],
    ['since', { since: new Date(clock.now().getTime() - 3000), limit }, 'auth_events_created_at_idx'],
    ['no filter', { limit }, 'auth_events_created_at_idx']
  ]
  for (const [name, filters, index] of cases) {
    const { nodes, text } = await planOf(app, filters)
    t.comment(`plan for ${name}:\n${text}`)
    const scans = nodes.filter((n) => ['Index Scan', 'Index Only Scan', 'Bitmap Index Scan'].includes(n['Node Type']))
    t.ok(scans.some((n) => n['Index Name'] === index), `${name}: an index scan on ${index}`)
    t.notOk(nodes.some((n) => n['Node Type'] === 'Seq Scan'), `${name}: no sequential scan`)
  }
  const rows = await app.services.admin.eventsQuery({ type: 'login_failure', limit })
  t.equal(rows.length, 2, 'the query explained is the one that runs')
})

t.test('the report has windowMinutes 15 and threshold 5 by default; out-of-range values get 400', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const res = await suspicious(app, admin.accessToken)
  t.equal(res.statusCode, 200)
  t.same(res.json(), { windowMinutes: 15, threshold: 5, byIp: [], byEmail: [], stuffing: [], spraying: [] })
  t.same((await suspicious(app, admin.accessToken, '?windowMinutes=60&threshold=2')).json(),
    { windowMinutes: 60, threshold: 2, byIp: [], byEmail: [], stuffing: [], spraying: [] })
  for (const query of ['windowMinutes=0', 'windowMinutes=10081', 'windowMinutes=-5', 'windowMinutes=1.5', 'windowMinutes=soon',
    'threshold=0', 'threshold=100001', 'threshold=x', 'window=15', 'ip=10.0.0.1']) {
    assertError(t, await suspicious(app, admin.accessToken, `?${query}`), 400, 'VALIDATION_ERROR')
  }
  t.equal((await suspicious(app, admin.accessToken, '?windowMinutes=10080&threshold=100000')).statusCode, 200, 'the bounds are allowed')
})

/** An app for the report: every per-IP limit and the per-account lockout out of the way. */
async function reportApp (test: Test) {
  const clock = testClock()
  const app = await buildTestApp(test, { now: clock.now, env: { RATE_LIMIT_LOGIN_EMAIL_FAILURES: '1000' } })
  const admin = await signupAdmin(app)
  return { app, clock, admin }
}

t.test('one IP failing 6 times against one account is in byIp and byEmail, and is not credential stuffing', async (t) => {
  const { app, clock, admin } = await reportApp(t)
  const s = await signup(app, uniqueEmail(), PASSWORD, '10.0.0.1')
  for (let i = 0; i < 6; i++) {
    clock.advance(10_000)
    t.equal((await login(app, s.email, WRONG, '198.51.100.1')).statusCode, 401)
  }
  const lastAt = clock.now().toISOString()
  clock.advance(10_000)
  const res = await suspicious(app, admin.accessToken)
  t.equal(res.statusCode, 200)
  t.same(res.json(), {
    windowMinutes: 15, threshold: 5,
    byIp: [{ ip: '198.51.100.1', failures: 6, lastAt }],
    byEmail: [{ email: s.email, failures: 6, lastAt }],
    stuffing: [],
    spraying: []
  })
})

t.test('one IP failing against 6 distinct accounts, unknown ones included, is credential stuffing', async (t) => {
  const { app, clock, admin } = await reportApp(t)
  const targets = [
    (await signup(app)).email, (await signup(app)).email, (await signup(app)).email,
    uniqueEmail('ghost'), uniqueEmail('ghost'), uniqueEmail('ghost')
  ]
  for (const email of targets) {
    clock.advance(5000)
    t.equal((await login(app, email, WRONG, '203.0.113.7')).statusCode, 401)
  }
  const lastAt = clock.now().toISOString()
  t.same((await suspicious(app, admin.accessToken)).json(), {
    windowMinutes: 15, threshold: 5,
    byIp: [{ ip: '203.0.113.7', failures: 6, lastAt }],
    byEmail: [],
    stuffing: [{ ip: '203.0.113.7', distinctEmails: 6, failures: 6 }],
    spraying: []
  })
})

t.test('one account failing from 6 distinct IPs is spraying and in byEmail, and none of those IPs is in byIp', async (t) => {
  const { app, clock, admin } = await reportApp(t)
  const s = await signup(app, uniqueEmail(), PASSWORD, '10.0.0.1')
  for (let i = 1; i <= 6; i++) {
    clock.advance(5000)
    t.equal((await login(app, s.email, WRONG, `192.0.2.${i}`)).statusCode, 401)
  }
  const lastAt = clock.now().toISOString()
  t.same((await suspicious(app, admin.accessToken)).json(), {
    windowMinutes: 15, threshold: 5,
    byIp: [],
    byEmail: [{ email: s.email, failures: 6, lastAt }],
    stuffing: [],
    spraying: [{ email: s.email, distinctIps: 6, failures: 6 }]
  })
})

t.test('below the threshold nothing is reported, and the threshold parameter moves the cut', async (t) => {
  const { app, clock, admin } = await reportApp(t)
  const s = await signup(app, uniqueEmail(), PASSWORD, '10.0.0.1')
  for (let i = 0; i < 4; i++) {
    clock.advance(5000)
    await login(app, s.email, WRONG, '198.51.100.4')
  }
  const lastX = clock.now().toISOString()
  for (let i = 0; i < 3; i++) {
    clock.advance(5000)
    await login(app, uniqueEmail('ghost'), WRONG, '198.51.100.5')
  }
  const lastY = clock.now().toISOString()

  const empty = { byIp: [], byEmail: [], stuffing: [], spraying: [] }
  t.same((await suspicious(app, admin.accessToken)).json(), { windowMinutes: 15, threshold: 5, ...empty }, '4 and 3 failures: below the default 5')
  t.same((await suspicious(app, admin.accessToken, '?threshold=5')).json(), { windowMinutes: 15, threshold: 5, ...empty })
  t.same((await suspicious(app, admin.accessToken, '?threshold=4')).json(), {
    windowMinutes: 15, threshold: 4,
    byIp: [{ ip: '198.51.100.4', failures: 4, lastAt: lastX }],
    byEmail: [{ email: s.email, failures: 4, lastAt: lastX }],
    stuffing: [],
    spraying: []
  }, 'threshold 4: the IP and the account with 4')
  const three = (await suspicious(app, admin.accessToken, '?threshold=3')).json()
  t.same(three.byIp, [{ ip: '198.51.100.4', failures: 4, lastAt: lastX }, { ip: '198.51.100.5', failures: 3, lastAt: lastY }], 'threshold 3: worst first')
  t.same(three.stuffing, [{ ip: '198.51.100.5', distinctEmails: 3, failures: 3 }])
  t.same(three.byEmail, [{ email: s.email, failures: 4, lastAt: lastX }])
  t.same(three.spraying, [])
})

t.test('failures older than windowMinutes drop out of the report', async (t) => {
  const { app, clock, admin } = await reportApp(t)
  const s = await signup(app, uniqueEmail(), PASSWORD, '10.0.0.1')
  const start = clock.now().getTime()
  for (let i = 0; i < 6; i++) {
    clock.set(new Date(start + i * 60_000)) // one a minute: 0 … 5 minutes
    await login(app, s.email, WRONG, '198.51.100.9')
  }
  const lastAt = new Date(start + 5 * 60_000).toISOString()
  const byIp = async (query: string) => (await suspicious(app, admin.accessToken, query)).json().byIp

  t.same(await byIp(''), [{ ip: '198.51.100.9', failures: 6, lastAt }], 'all six within 15 minutes')
  clock.set(new Date(start + 17.5 * 60_000)) // the window starts at 2.5 minutes
  t.same(await byIp('?threshold=1'), [{ ip: '198.51.100.9', failures: 3, lastAt }], 'the three older ones dropped out')
  t.same(await byIp(''), [], 'and the IP is below the threshold')
  clock.set(new Date(start + 20 * 60_000 + 1000))
  t.same(await byIp('?threshold=1'), [], 'all six out of the window')
  t.same(await byIp('?windowMinutes=60'), [{ ip: '198.51.100.9', failures: 6, lastAt }], 'a wider window sees them again')
  t.same(await byIp('?windowMinutes=18&threshold=1'), [{ ip: '198.51.100.9', failures: 3, lastAt }], 'the window is windowMinutes long')
})

t.test('the report counts failed logins and second factors only, not successes or other failed events', async (t) => {
  const clock = testClock()
  // Every wrong password from an unknown address locks the account: the lockouts are events too.
  const app = await buildTestApp(t, { now: clock.now, env: { RATE_LIMIT_LOGIN_EMAIL_FAILURES: '1' } })
  const admin = await signupAdmin(app)
  const step = () => clock.advance(2000)

  // Successes: five logins from one IP.
  const happy = await signup(app, uniqueEmail(), PASSWORD, '10.20.0.1')
  for (let i = 0; i < 5; i++) { step(); t.equal((await login(app, happy.email, PASSWORD, '10.20.0.1')).statusCode, 200) }
  // Wrong current passwords: five failed password changes.
  const changer = await signup(app, uniqueEmail(), PASSWORD, '10.20.0.2')
  for (let i = 0; i < 5; i++) {
    step()
    const res = await app.inject({
      method: 'POST', url: '/api/auth/password/change', remoteAddress: '10.20.0.2', headers: bearer(changer.accessToken),
      payload: { currentPassword: WRONG, newPassword: 'Another-Horse-8' }
    })
    t.equal(res.statusCode, 401)
  }
  // Reset requests for an unknown address: five failed password_reset_requested.
  const ghost = uniqueEmail('ghost')
  for (let i = 0; i < 5; i++) {
    step()
    t.equal((await app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email: ghost }, remoteAddress: '10.20.0.3' })).statusCode, 202)
    await app.services.credentials.settled()
  }
  // One wrong password, then five refusals (rate_limited) from the same address.
  const locked = await signup(app, uniqueEmail(), PASSWORD, '10.20.0.4')
  step()
  t.equal((await login(app, locked.email, WRONG, '10.20.0.5')).statusCode, 401)
  for (let i = 0; i < 5; i++) { step(); t.equal((await login(app, locked.email, PASSWORD, '10.20.0.5')).statusCode, 429) }

  const types = await events(t, app, admin.accessToken, { limit: 500 })
  t.equal(types.filter((e) => !e.success && e.eventType === 'password_change').length, 5, 'the failed changes are recorded')
  t.equal(types.filter((e) => !e.success && e.eventType === 'password_reset_requested').length, 5, 'the failed reset requests are recorded')
  t.equal(types.filter((e) => e.eventType === 'rate_limited').length, 5, 'the refusals are recorded')
  t.same((await suspicious(app, admin.accessToken, '?threshold=2')).json(),
    { windowMinutes: 15, threshold: 2, byIp: [], byEmail: [], stuffing: [], spraying: [] }, 'none of them is counted')

  // Five wrong second factors: counted.
  const m = await enrolMfa(app, clock, '10.20.0.6')
  const mfaToken = await mfaChallenge(app, m.email, '10.20.0.6')
  const good = totpCode(m.secret, clock.now())
  for (let i = 1; i <= 5; i++) {
    step()
    const res = await app.inject({
      method: 'POST', url: '/api/auth/login/mfa', remoteAddress: '10.20.0.6',
      payload: { mfaToken, code: String((Number(good) + i * 100_000) % 1_000_000).padStart(6, '0') }
    })
    assertError(t, res, 401, 'MFA_INVALID_CODE')
  }
  const lastAt = clock.now().toISOString()
  t.same((await suspicious(app, admin.accessToken)).json(), {
    windowMinutes: 15, threshold: 5,
    byIp: [{ ip: '10.20.0.6', failures: 5, lastAt }],
    byEmail: [{ email: m.email, failures: 5, lastAt }],
    stuffing: [],
    spraying: []
  }, 'mfa_failure counts')
})
