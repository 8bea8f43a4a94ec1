import { and, eq } from 'drizzle-orm'
import t from 'tap'
import { authEvents, sessions, users } from '../../src/db/schema.ts'
import { assertError, buildTestApp, decodeJwt, login, PASSWORD, setUser, signup, testClock, uniqueEmail } from '../helper.ts'

t.test('login returns the token response with the contract claims and records the event', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const { email, user } = await signup(app)
  clock.advance(60_000)
  const res = await app.inject({
    method: 'POST', url: '/api/auth/login', payload: { email: `  ${email.toUpperCase()} `, password: PASSWORD },
    remoteAddress: '10.2.2.2', headers: { 'user-agent': 'agent/1.0' }
  })
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.equal(body.user.id, user.id)
  t.equal(body.tokenType, 'Bearer')
  t.equal(body.expiresIn, 900)
  t.equal(body.user.lastLoginAt, clock.now().toISOString(), 'lastLoginAt updated')

  const header = JSON.parse(Buffer.from(body.accessToken.split('.')[0], 'base64url').toString())
  t.same(header, { alg: 'HS256', typ: 'at+jwt' })
  const claims = decodeJwt(body.accessToken)
  t.same(Object.keys(claims).sort(), ['amr', 'aud', 'exp', 'iat', 'iss', 'jti', 'role', 'sid', 'sub'])
  t.equal(claims.sub, user.id)
  t.equal(claims.role, 'user')
  t.same(claims.amr, ['pwd'])
  t.equal(claims.iss, 'gatehouse')
  t.equal(claims.aud, 'gatehouse')
  t.equal(claims.exp - claims.iat, 900)

  const rows = await app.db.select().from(sessions).where(eq(sessions.userId, user.id))
  t.equal(rows.length, 2, 'signup and login each made a session')
  const current = rows.find((s) => s.id === claims.sid)
  t.equal(current?.ipAddress, '10.2.2.2')
  t.equal(current?.userAgent, 'agent/1.0')

  const [event] = await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'login_success'))
  t.match(event, { userId: user.id, email, ipAddress: '10.2.2.2', userAgent: 'agent/1.0', success: true })

  const me = await app.inject({ url: '/api/auth/me', headers: { authorization: `Bearer ${body.accessToken}` } })
  t.equal(me.statusCode, 200)
  t.same(me.json(), body.user)
})

t.test('unknown email and wrong password get the same 401 body; both are audited', async (t) => {
  const app = await buildTestApp(t)
  const { email, user } = await signup(app)
  const wrong = await login(app, email, 'Wrong-Password-1')
  const unknown = await login(app, uniqueEmail('nobody'), PASSWORD)
  assertError(t, wrong, 401, 'AUTH_INVALID_CREDENTIALS')
  assertError(t, unknown, 401, 'AUTH_INVALID_CREDENTIALS')
  t.same(wrong.json(), unknown.json(), 'identical bodies')
  t.equal(wrong.json().message, 'Invalid email or password')

  const failures = await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'login_failure'))
  t.equal(failures.length, 2)
  t.same(failures.map((f) => f.failureReason).sort(), ['invalid_password', 'unknown_email'])
  t.equal(failures.find((f) => f.failureReason === 'invalid_password')?.userId, user.id)
  t.equal(failures.find((f) => f.failureReason === 'unknown_email')?.userId, null)
  const [row] = await app.db.select().from(users).where(eq(users.id, user.id))
  t.not(row?.lastLoginAt?.getTime(), undefined)
})

t.test('unknown emails cost an argon2 verification like real ones', async (t) => {
  const app = await buildTestApp(t)
  const { email } = await signup(app)
  // Count verifications: the dummy path must go through the same hasher (and its queue).
  const hasher = app.services.passwords
  let calls = 0
  const original = hasher.verify
  hasher.verify = async (stored, password) => { calls++; return original(stored, password) }
  t.teardown(() => { hasher.verify = original })
  await login(app, email, 'Wrong-Password-1')
  await login(app, uniqueEmail(), 'Wrong-Password-1')
  t.equal(calls, 2, 'one verification each')
})

t.test('a deactivated account with the right password gets 403 ACCOUNT_DISABLED', async (t) => {
  const app = await buildTestApp(t)
  const { email, user } = await signup(app)
  await setUser(app, user.id, { isActive: false })
  assertError(t, await login(app, email), 403, 'ACCOUNT_DISABLED')
  assertError(t, await login(app, email, 'Wrong-Password-1'), 401, 'AUTH_INVALID_CREDENTIALS')
  const [event] = await app.db.select().from(authEvents).where(eq(authEvents.failureReason, 'account_disabled'))
  t.equal(event?.userId, user.id)
})

t.test('bad input gets 400 VALIDATION_ERROR and writes nothing', async (t) => {
  const app = await buildTestApp(t)
  for (const payload of [{}, { email: 'x@example.com' }, { email: 'x@example.com', password: '' }, { email: 1, password: PASSWORD },
    { email: 'x@example.com', password: PASSWORD, extra: 1 }, { email: 'nope', password: PASSWORD }, { email: null, password: null }]) {
    const res = await app.inject({ method: 'POST', url: '/api/auth/login', payload })
    assertError(t, res, 400, 'VALIDATION_ERROR')
  }
  t.equal((await app.db.select().from(authEvents)).length, 0)
})

t.test('per-IP login limit: 5 per minute, then 429 RATE_LIMITED with Retry-After', async (t) => {
  const app = await buildTestApp(t, { env: { RATE_LIMIT_LOGIN_MAX: '5' } })
  const { email } = await signup(app)
  for (let i = 0; i < 5; i++) {
    const res = await login(app, email, 'Wrong-Password-1', '10.9.9.9')
    t.equal(res.statusCode, 401, `attempt ${i + 1}`)
  }
  const limited = await login(app, email, PASSWORD, '10.9.9.9')
  assertError(t, limited, 429, 'RATE_LIMITED')
  t.ok(Number(limited.headers['retry-after']) > 0, 'Retry-After set')
  t.ok(Number(limited.headers['retry-after']) <= 60)
  const other = await login(app, email, PASSWORD, '10.9.9.10')
  t.equal(other.statusCode, 200, 'another IP is not affected')
  await login(app, email, PASSWORD, '10.9.9.9')
  const events = await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'rate_limited'))
  t.equal(events.length, 1, 'one audit row per IP and window')
  t.match(events[0], { ipAddress: '10.9.9.9', email, success: false, failureReason: 'ip_login_limit' })
})

t.test('10 failures for one email in 15 minutes lock it, except from a known IP', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const { email } = await signup(app, undefined, undefined, '10.0.0.1') // 10.0.0.1: signed up from here
  await login(app, email, PASSWORD, '10.0.0.2').then((r) => t.equal(r.statusCode, 200)) // 10.0.0.2: logged in
  clock.advance(60_000)

  // An attacker spreads 10 failures over many IPs (so the per-IP limit never trips).
  for (let i = 0; i < 10; i++) {
    const res = await login(app, email, `Wrong-Password-${i}`, `172.16.0.${i + 1}`)
    t.equal(res.statusCode, 401)
    clock.advance(30_000)
  }
  const locked = await login(app, email, PASSWORD, '172.16.1.1')
  assertError(t, locked, 429, 'RATE_LIMITED')
  const retryAfter = Number(locked.headers['retry-after'])
  t.ok(retryAfter > 0 && retryAfter <= 15 * 60, `Retry-After ${retryAfter}`)
  t.equal(retryAfter, 15 * 60 - 10 * 30, 'until the oldest counted failure leaves the window')

  t.equal((await login(app, email, PASSWORD, '10.0.0.2')).statusCode, 200, 'known login IP passes')
  t.equal((await login(app, email, PASSWORD, '10.0.0.1')).statusCode, 200, 'signup IP passes')
  const otherAccount = await signup(app)
  t.equal((await login(app, otherAccount.email, PASSWORD, '172.16.1.1')).statusCode, 200, 'other accounts unaffected')

  const limited = await app.db.select().from(authEvents)
    .where(and(eq(authEvents.eventType, 'rate_limited'), eq(authEvents.email, email)))
  t.equal(limited.length, 1)
  t.equal(limited[0]?.failureReason, 'account_login_failures')

  clock.advance(retryAfter * 1000)
  t.equal((await login(app, email, PASSWORD, '172.16.1.1')).statusCode, 200, 'opens again after Retry-After')
})

t.test('an IP known longer than 30 days ago is not exempt', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const { email } = await signup(app, undefined, undefined, '10.0.0.1')
  clock.advance(31 * 86_400_000)
  for (let i = 0; i < 10; i++) await login(app, email, 'Wrong-Password-1', `172.16.0.${i + 1}`)
  assertError(t, await login(app, email, PASSWORD, '10.0.0.1'), 429, 'RATE_LIMITED')
})

t.test('login rehashes a password made with other argon2 parameters', async (t) => {
  const app = await buildTestApp(t)
  const { email, user } = await signup(app)
  const { hash } = await import('@node-rs/argon2')
  const old = await hash(PASSWORD, { algorithm: 2, memoryCost: 9216, timeCost: 1, parallelism: 1 })
  await setUser(app, user.id, { passwordHash: old })
  t.equal((await login(app, email)).statusCode, 200)
  const [row] = await app.db.select().from(users).where(eq(users.id, user.id))
  t.match(row?.passwordHash, /^\$argon2id\$v=19\$m=8192,t=1,p=1\$/, 'upgraded to the current parameters')
  t.equal((await login(app, email)).statusCode, 200, 'still logs in')
})

t.test('a password typed with composed or decomposed accents is the same password (NFKC)', async (t) => {
  const app = await buildTestApp(t)
  const composed = 'Caf\u00e9-Passw0rd'
  const decomposed = 'Cafe\u0301-Passw0rd'
  t.not(composed, decomposed, 'two different strings')
  const s = await signup(app, uniqueEmail(), composed)
  t.equal((await login(app, s.email, decomposed)).statusCode, 200, 'signed up composed, logs in decomposed')
  t.equal((await login(app, s.email, 'Cafe-Passw0rd')).statusCode, 401, 'without the accent it is another password')
})
