import { eq } from 'drizzle-orm'
import t from 'tap'
import { authEvents, sessions, users } from '../../src/db/schema.ts'
import { assertError, buildTestApp, PASSWORD, uniqueEmail } from '../helper.ts'

const post = (app: Awaited<ReturnType<typeof buildTestApp>>, payload: unknown, extra: Record<string, unknown> = {}) =>
  app.inject({ method: 'POST', url: '/api/auth/signup', payload: payload as object, remoteAddress: '10.1.1.1', ...extra })

t.test('signup creates the account, a session and returns the token response', async (t) => {
  const app = await buildTestApp(t)
  const email = uniqueEmail()
  const res = await post(app, { email, password: PASSWORD }, { headers: { 'user-agent': 'tap-test' } })
  t.equal(res.statusCode, 201)
  const body = res.json()
  t.same(Object.keys(body).sort(), ['accessToken', 'expiresIn', 'tokenType', 'user'])
  t.equal(body.tokenType, 'Bearer')
  t.equal(body.expiresIn, 15 * 60)
  t.match(body.user, {
    email, emailVerified: false, role: 'user', isActive: true, mfaEnabled: false, passwordMustChange: false
  })
  t.same(Object.keys(body.user).sort(), ['createdAt', 'email', 'emailVerified', 'id', 'isActive', 'lastLoginAt', 'mfaEnabled', 'passwordMustChange', 'role'])
  t.match(body.user.id, /^[0-9a-f-]{36}$/)
  t.ok(!Number.isNaN(Date.parse(body.user.createdAt)))

  const [row] = await app.db.select().from(users).where(eq(users.email, email))
  t.ok(row, 'user row written')
  t.match(row?.passwordHash, /^\$argon2id\$v=19\$m=8192,t=1,p=1\$/, 'argon2id hash, not the password')
  t.notMatch(row?.passwordHash ?? '', PASSWORD)

  const [session] = await app.db.select().from(sessions).where(eq(sessions.userId, body.user.id))
  t.equal(session?.ipAddress, '10.1.1.1')
  t.equal(session?.userAgent, 'tap-test')
  t.same(session?.amr, ['pwd'])
  const payload = JSON.parse(Buffer.from(body.accessToken.split('.')[1], 'base64url').toString())
  t.equal(payload.sid, session?.id, 'token carries the session id')

  const events = await app.db.select().from(authEvents).where(eq(authEvents.userId, body.user.id))
  t.same(events.map((e) => [e.eventType, e.success, e.email, e.ipAddress]), [['signup', true, email, '10.1.1.1']])
})

t.test('email is trimmed, lower-cased, validated and unique whatever its case', async (t) => {
  const app = await buildTestApp(t)
  const res = await post(app, { email: '  Mixed.Case@Example.COM  ', password: PASSWORD })
  t.equal(res.statusCode, 201)
  t.equal(res.json().user.email, 'mixed.case@example.com')

  for (const variant of ['mixed.case@example.com', 'MIXED.CASE@EXAMPLE.COM', ' mixed.case@example.com']) {
    const dup = await post(app, { email: variant, password: PASSWORD })
    assertError(t, dup, 409, 'EMAIL_TAKEN')
  }
  const rows = await app.db.select().from(users)
  t.equal(rows.length, 1)

  for (const email of ['not-an-email', 'a@', '@b.com', 'a b@c.com', '', `${'x'.repeat(250)}@example.com`]) {
    const bad = await post(app, { email, password: PASSWORD })
    assertError(t, bad, 400, 'VALIDATION_ERROR')
    t.match(bad.json().message, /email/, `message names the field for ${JSON.stringify(email).slice(0, 30)}`)
  }
  t.equal((await app.db.select().from(users)).length, 1, 'nothing written by rejected signups')
})

t.test('password policy', async (t) => {
  const app = await buildTestApp(t)
  const table: Array<[string, boolean, RegExp?]> = [
    ['Short1a', false, /at least 8/],
    ['alllowercase1', false, /upper-case/],
    ['ALLUPPERCASE1', false, /lower-case/],
    ['NoDigitsHere', false, /digit/],
    ['Aa1' + 'x'.repeat(126), false, /at most 128/],
    ['Aa1' + 'x'.repeat(125), true],
    ['Abcdefg1', true],
    ['Ünïcödé1pass', true],
    ['Пароль123', true],
    ['😀😀😀😀Aa1x', true]
  ]
  for (const [password, ok, why] of table) {
    const res = await post(app, { email: uniqueEmail(), password })
    if (ok) {
      t.equal(res.statusCode, 201, `accepts ${password.slice(0, 20)}`)
    } else {
      assertError(t, res, 400, 'PASSWORD_TOO_WEAK')
      if (why) t.match(res.json().message, why)
    }
  }
  t.equal((await app.db.select().from(users)).length, table.filter(([, ok]) => ok).length)
})

t.test('bad input gets 400 in the contract shape and writes nothing', async (t) => {
  const app = await buildTestApp(t)
  const cases: Array<[string, unknown]> = [
    ['missing password', { email: uniqueEmail() }],
    ['missing email', { password: PASSWORD }],
    ['empty object', {}],
    ['array body', [{ email: uniqueEmail(), password: PASSWORD }]],
    ['number email', { email: 12345, password: PASSWORD }],
    ['number password', { email: uniqueEmail(), password: 12345678 }],
    ['null email', { email: null, password: PASSWORD }],
    ['null password', { email: uniqueEmail(), password: null }],
    ['extra field', { email: uniqueEmail(), password: PASSWORD, role: 'admin' }],
    ['object password', { email: uniqueEmail(), password: { $gt: '' } }],
    ['huge password', { email: uniqueEmail(), password: 'Aa1' + 'x'.repeat(5000) }],
    ['NUL in email', { email: 'a\u0000b@example.com', password: PASSWORD }],
    ['NUL in password', { email: uniqueEmail(), password: 'Abcdefg1\u0000' }]
  ]
  for (const [name, payload] of cases) {
    const res = await post(app, payload)
    t.equal(res.statusCode, 400, name)
    t.equal(res.json().code, 'VALIDATION_ERROR', name)
  }
  const nullBody = await app.inject({ method: 'POST', url: '/api/auth/signup', headers: { 'content-type': 'application/json' }, payload: 'null' })
  assertError(t, nullBody, 400, 'VALIDATION_ERROR')
  const res = await post(app, { email: uniqueEmail(), password: PASSWORD, isAdmin: true })
  t.match(res.json().message, /additional|must NOT have/, 'says why')
  t.equal((await app.db.select().from(users)).length, 0)
  t.equal((await app.db.select().from(authEvents)).length, 0)
})

t.test('two simultaneous signups of one email: one 201, one 409, no 500', async (t) => {
  const app = await buildTestApp(t)
  for (let round = 0; round < 3; round++) {
    const email = uniqueEmail('race')
    const results = await Promise.all([
      post(app, { email, password: PASSWORD }),
      post(app, { email: email.toUpperCase(), password: PASSWORD }),
      post(app, { email: ` ${email}`, password: PASSWORD })
    ])
    const codes = results.map((r) => r.statusCode).sort()
    t.same(codes, [201, 409, 409], `round ${round}`)
    const rows = await app.db.select().from(users).where(eq(users.email, email))
    t.equal(rows.length, 1)
  }
})
