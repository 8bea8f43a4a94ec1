import { createHmac, generateKeyPairSync, sign as cryptoSign } from 'node:crypto'
import t from 'tap'
import { assertError, bearer, buildTestApp, decodeJwt, deleteUser, JWT_SECRET, PASSWORD, revokeSession, setUser, signup, testClock, totpCode } from '../helper.ts'

/** An independent HS256 signer (node:crypto), to forge tokens the service must reject. */
const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')
function hs256 (header: object, payload: object, secret = JWT_SECRET) {
  const input = `${b64(header)}.${b64(payload)}`
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`
}

t.test('GET /api/auth/me returns the user for a valid token', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const res = await app.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) })
  t.equal(res.statusCode, 200)
  t.same(res.json(), s.user)
  t.notOk('passwordHash' in res.json())
})

t.test('missing, malformed and forged tokens', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const good = decodeJwt(s.accessToken)
  const now = Math.floor(Date.now() / 1000)
  const header = { alg: 'HS256', typ: 'at+jwt' }

  assertError(t, await app.inject({ url: '/api/auth/me' }), 401, 'AUTH_REQUIRED')

  const { privateKey } = generateKeyPairSync('ed25519')
  const edInput = `${b64({ alg: 'EdDSA', typ: 'at+jwt' })}.${b64(good)}`
  const edToken = `${edInput}.${cryptoSign(null, Buffer.from(edInput), privateKey).toString('base64url')}`

  const invalid: Array<[string, string]> = [
    ['garbage', 'Bearer not-a-jwt'],
    ['basic scheme', `Basic ${Buffer.from('a:b').toString('base64')}`],
    ['bearer without token', 'Bearer '],
    ['alg none', `Bearer ${b64({ alg: 'none', typ: 'at+jwt' })}.${b64(good)}.`],
    ['other secret', `Bearer ${hs256(header, good, 'another-secret-that-is-long-enough-0123456789')}`],
    ['asymmetric alg', `Bearer ${edToken}`],
    ['wrong issuer', `Bearer ${hs256(header, { ...good, iss: 'evil' })}`],
    ['wrong audience', `Bearer ${hs256(header, { ...good, aud: 'other-service' })}`],
    ['no typ (not an access token)', `Bearer ${hs256({ alg: 'HS256' }, good)}`],
    ['other typ', `Bearer ${hs256({ alg: 'HS256', typ: 'mfa+jwt' }, good)}`],
    ['missing sid', `Bearer ${hs256(header, { ...good, sid: undefined })}`],
    ['sid not a uuid', `Bearer ${hs256(header, { ...good, sid: 'abc' })}`],
    ['missing jti', `Bearer ${hs256(header, { ...good, jti: undefined })}`],
    ['tampered payload', `Bearer ${s.accessToken.split('.')[0]}.${b64({ ...good, role: 'admin' })}.${s.accessToken.split('.')[2]}`]
  ]
  for (const [name, authorization] of invalid) {
    const res = await app.inject({ url: '/api/auth/me', headers: { authorization } })
    t.equal(res.statusCode, 401, name)
    t.equal(res.json().code, 'TOKEN_INVALID', name)
  }

  const expired = hs256(header, { ...good, iat: now - 3600, exp: now - 60 })
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(expired) }), 401, 'TOKEN_EXPIRED')

  const forgedOk = hs256(header, { ...good, jti: 'another-jti' })
  t.equal((await app.inject({ url: '/api/auth/me', headers: bearer(forgedOk) })).statusCode, 200, 'control: our own signer passes')
})

t.test('a revoked session or a deactivated user answers SESSION_REVOKED', async (t) => {
  const app = await buildTestApp(t)
  const a = await signup(app)
  const b = await signup(app)
  await revokeSession(app, decodeJwt(a.accessToken).sid, new Date())
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(a.accessToken) }), 401, 'SESSION_REVOKED')

  await setUser(app, b.user.id, { isActive: false })
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(b.accessToken) }), 401, 'SESSION_REVOKED')

  await deleteUser(app, b.user.id)
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(b.accessToken) }), 401, 'SESSION_REVOKED')
})

t.test('the session check is cached for SESSION_CHECK_TTL_SECONDS, then sees the revocation', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now, env: { SESSION_CHECK_TTL_SECONDS: '5' } })
  const s = await signup(app)
  t.equal((await app.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) })).statusCode, 200)
  await revokeSession(app, decodeJwt(s.accessToken).sid, clock.now())
  clock.advance(4_000)
  t.equal((await app.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) })).statusCode, 200, 'within the TTL: cached')
  clock.advance(1_001)
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) }), 401, 'SESSION_REVOKED')
})

t.test('me stays open while the account must change its password', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  await setUser(app, s.user.id, { passwordMustChange: true })
  const res = await app.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) })
  t.equal(res.statusCode, 200)
  t.equal(res.json().passwordMustChange, true)
  assertError(t, await app.inject({ url: `/api/${s.user.id}/tasks`, headers: bearer(s.accessToken) }), 403, 'PASSWORD_CHANGE_REQUIRED')
})

t.test('with a session cache, me answers from it: a change behind the service shows after the TTL, a change through it at once', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now, env: { SESSION_CHECK_TTL_SECONDS: '5' } })
  const s = await signup(app)
  const me = async () => (await app.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) })).json()
  t.match(await me(), { id: s.user.id, role: 'user', mfaEnabled: false })

  // Behind the service's back (another tool writing the row): the cache answers until its TTL.
  await setUser(app, s.user.id, { role: 'admin' })
  t.match(await me(), { role: 'user' }, 'served from the cache, no database read')
  clock.advance(5_001)
  t.match(await me(), { role: 'admin' }, 'read again after SESSION_CHECK_TTL_SECONDS')

  // Through the service: MFA turned on drops the cached state at once.
  const setup = await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/setup', headers: bearer(s.accessToken), payload: { password: PASSWORD } })
  const code = totpCode(setup.json().secret, clock.now())
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/confirm', headers: bearer(s.accessToken), payload: { code } })).statusCode, 200)
  t.match(await me(), { mfaEnabled: true }, 'at once, TTL notwithstanding')
})
