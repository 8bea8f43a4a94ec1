import { execFileSync, spawnSync } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { eq } from 'drizzle-orm'
import { Secret, TOTP } from 'otpauth'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { authEvents, backupCodes, emailOutbox, sessions, users } from '../../src/db/schema.ts'
import { assertError, bearer, buildTestApp, login, PASSWORD, signup, testClock, type Test } from '../helper.ts'

/**
 * Codes from implementations independent of the service's (otpauth): oathtool (Debian's
 * oath-toolkit), which CI installs and requires, and an RFC 6238 reference written here with
 * node:crypto, checked against the RFC's test vectors and against oathtool.
 */
const HAVE_OATHTOOL = spawnSync('oathtool', ['--version']).status === 0
if (!HAVE_OATHTOOL && process.env.CI === 'true') throw new Error('oathtool is required in CI (apt-get install oathtool)')

function rfc6238 (key: Buffer, at: Date, digits = 6): string {
  const counter = Buffer.alloc(8)
  counter.writeBigUInt64BE(BigInt(Math.floor(at.getTime() / 1000 / 30)))
  const mac = createHmac('sha1', key).update(counter).digest()
  const offset = (mac[mac.length - 1] ?? 0) & 0x0f
  const binary = mac.readUInt32BE(offset) & 0x7fffffff
  return String(binary % 10 ** digits).padStart(digits, '0')
}

function oathtool (secret: string, at: Date): string {
  if (!HAVE_OATHTOOL) return rfc6238(Buffer.from(Secret.fromBase32(secret).bytes), at)
  const when = at.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')
  return execFileSync('oathtool', ['--totp', '-b', secret, '--now', when], { encoding: 'utf8' }).trim()
}

/** And from otpauth, for a given step offset. */
const otp = (secret: string, at: Date) => TOTP.generate({ secret: Secret.fromBase32(secret), timestamp: at.getTime() })
const STEP = 30_000
const claims = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString())

type Clock = ReturnType<typeof testClock>

/** Signs up and turns MFA on; returns the secret and backup codes. */
async function enrolled (t: Test, app: App, clock: Clock) {
  const s = await signup(app)
  const setup = await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/setup', headers: bearer(s.accessToken), payload: { password: PASSWORD } })
  t.equal(setup.statusCode, 200)
  const secret = setup.json().secret as string
  const confirm = await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/confirm', headers: bearer(s.accessToken), payload: { code: oathtool(secret, clock.now()) } })
  t.equal(confirm.statusCode, 200)
  clock.advance(STEP) // the confirm code's step is spent
  return { ...s, secret, backupCodes: confirm.json().backupCodes as string[] }
}

async function challenge (app: App, email: string) {
  const res = await login(app, email)
  const body = res.json()
  if (body.mfaRequired !== true) throw new Error(`expected an MFA challenge: ${res.body}`)
  return body.mfaToken as string
}

const answer = (app: App, payload: Record<string, unknown>, remoteAddress = '10.0.0.1') =>
  app.inject({ method: 'POST', url: '/api/auth/login/mfa', payload, remoteAddress })

t.test('the reference implementations agree: RFC 6238 test vectors, oathtool, otpauth', async (t) => {
  const key = Buffer.from('12345678901234567890')
  // RFC 6238 Appendix B, SHA1 (8 digits).
  t.equal(rfc6238(key, new Date(59_000), 8), '94287082')
  t.equal(rfc6238(key, new Date(1111111109_000), 8), '07081804')
  t.equal(rfc6238(key, new Date(2000000000_000), 8), '69279037')
  const secret = new Secret({ buffer: key.buffer.slice(key.byteOffset, key.byteOffset + key.length) as ArrayBuffer }).base32
  for (const at of [new Date(59_000), new Date('2026-06-01T12:00:00Z'), new Date()]) {
    t.equal(oathtool(secret, at), rfc6238(key, at))
    t.equal(otp(secret, at), rfc6238(key, at))
  }
  if (!HAVE_OATHTOOL) t.comment('oathtool is not installed: codes come from the node:crypto reference (CI uses oathtool)')
})

t.test('enrol → login → verify, with codes from oathtool and otpauth', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const s = await signup(app)
  const h = bearer(s.accessToken)

  t.same((await app.inject({ url: '/api/auth/mfa', headers: h })).json(), { enabled: false, backupCodesRemaining: 0 })
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/setup', headers: h, payload: { password: 'Wrong-Passw0rd-1' } }), 401, 'AUTH_INVALID_CREDENTIALS')
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/confirm', headers: h, payload: { code: '123456' } }), 400, 'VALIDATION_ERROR')

  const setup = await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/setup', headers: h, payload: { password: PASSWORD } })
  t.equal(setup.statusCode, 200)
  const { secret, otpauthUri } = setup.json()
  t.match(secret, /^[A-Z2-7]{32}$/, '160 bits in base32')
  const uri = new URL(otpauthUri)
  t.equal(uri.protocol, 'otpauth:')
  t.equal(uri.host, 'totp')
  t.equal(decodeURIComponent(uri.pathname), `/Gatehouse:${s.email}`)
  t.equal(uri.searchParams.get('issuer'), 'Gatehouse')
  t.equal(uri.searchParams.get('secret'), secret)
  t.equal(uri.searchParams.get('algorithm'), 'SHA1')
  t.equal(uri.searchParams.get('digits'), '6')
  t.equal(uri.searchParams.get('period'), '30')

  const [pending] = await app.db.select().from(users).where(eq(users.id, s.user.id))
  t.equal(pending?.mfaEnabled, false, 'pending until confirmed')
  t.ok(pending?.totpPendingSecretEnc, 'stored')
  t.notOk(JSON.stringify(pending).includes(secret), 'the secret is not stored in plain text')

  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/confirm', headers: h, payload: { code: otp(secret, new Date(clock.now().getTime() + 5 * STEP)) } }), 401, 'MFA_INVALID_CODE')
  const confirm = await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/confirm', headers: h, payload: { code: oathtool(secret, clock.now()) } })
  t.equal(confirm.statusCode, 200)
  const codes = confirm.json().backupCodes as string[]
  t.equal(codes.length, 10)
  t.equal(new Set(codes).size, 10)
  for (const c of codes) t.match(c, /^[0-9a-z]{5}-[0-9a-z]{5}$/)

  const [row] = await app.db.select().from(users).where(eq(users.id, s.user.id))
  t.equal(row?.mfaEnabled, true)
  t.equal(row?.totpPendingSecretEnc, null)
  t.notOk(JSON.stringify(row).includes(secret), 'the confirmed secret is not stored in plain text either')
  t.notOk(JSON.stringify(row).includes(Buffer.from(Secret.fromBase32(secret).bytes).toString('hex')), 'nor its bytes')
  const stored = await app.db.select().from(backupCodes).where(eq(backupCodes.userId, s.user.id))
  t.equal(stored.length, 10)
  t.notOk(stored.some((b) => codes.some((c) => b.codeHash.includes(c) || b.codeHash.includes(c.replace('-', '')))), 'backup codes stored only as keyed hashes')
  t.same((await app.inject({ url: '/api/auth/mfa', headers: h })).json(), { enabled: true, backupCodesRemaining: 10 })
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/setup', headers: h, payload: { password: PASSWORD } }), 409, 'MFA_ALREADY_ENABLED')

  // Login now needs the second factor: a challenge, no cookie, no session yet.
  clock.advance(STEP)
  const sessionsBefore = (await app.db.select().from(sessions)).length
  const first = await login(app, s.email)
  t.equal(first.statusCode, 200)
  t.same(Object.keys(first.json()).sort(), ['expiresIn', 'mfaRequired', 'mfaToken'])
  t.match(first.json(), { mfaRequired: true, expiresIn: 300 })
  t.equal(first.headers['set-cookie'], undefined, 'no cookie before the second factor')
  t.equal((await app.db.select().from(sessions)).length, sessionsBefore, 'no session yet')

  const done = await answer(app, { mfaToken: first.json().mfaToken, code: oathtool(secret, clock.now()) })
  t.equal(done.statusCode, 200)
  t.same(claims(done.json().accessToken).amr, ['pwd', 'otp'])
  t.match(String(done.headers['set-cookie']), /refresh_token=.+HttpOnly.+SameSite=Strict/)
  const [session] = await app.db.select().from(sessions).where(eq(sessions.id, claims(done.json().accessToken).sid))
  t.same(session?.amr, ['pwd', 'otp'])
  const refreshed = await app.inject({ method: 'POST', url: '/api/auth/refresh', cookies: { refresh_token: /refresh_token=([^;]+)/.exec(String(done.headers['set-cookie']))?.[1] ?? '' } })
  t.same(claims(refreshed.json().accessToken).amr, ['pwd', 'otp'], 'refresh keeps amr')

  clock.advance(STEP)
  const second = await challenge(app, s.email)
  t.equal((await answer(app, { mfaToken: second, code: otp(secret, clock.now()) })).statusCode, 200, 'otpauth codes work too')
  const types = (await app.db.select().from(authEvents)).map((e) => e.eventType)
  t.ok(types.includes('mfa_enabled'))
  t.ok(types.includes('mfa_failure'))
})

t.test('window: ±1 step accepted, ±2 refused, and never an older step than the last one used', async (t) => {
  const clock = testClock(new Date('2026-06-01T12:00:10Z'))
  const app = await buildTestApp(t, { now: clock.now })
  const u = await enrolled(t, app, clock)
  clock.advance(10 * STEP)
  const at = (steps: number) => oathtool(u.secret, new Date(clock.now().getTime() + steps * STEP))

  assertError(t, await answer(app, { mfaToken: await challenge(app, u.email), code: at(-2) }), 401, 'MFA_INVALID_CODE')
  assertError(t, await answer(app, { mfaToken: await challenge(app, u.email), code: at(2) }), 401, 'MFA_INVALID_CODE')
  t.equal((await answer(app, { mfaToken: await challenge(app, u.email), code: at(-1) })).statusCode, 200, 'one step behind')
  t.equal((await answer(app, { mfaToken: await challenge(app, u.email), code: at(1) })).statusCode, 200, 'one step ahead')
  assertError(t, await answer(app, { mfaToken: await challenge(app, u.email), code: at(0) }), 401, 'MFA_INVALID_CODE')

  // The last second of a step and the first of the next.
  clock.set(new Date('2026-06-01T13:00:29.999Z'))
  const edge = oathtool(u.secret, new Date('2026-06-01T13:00:29Z'))
  clock.set(new Date('2026-06-01T13:00:59.999Z'))
  t.equal((await answer(app, { mfaToken: await challenge(app, u.email), code: edge })).statusCode, 200, 'previous step, at the end of this one')
  clock.set(new Date('2026-06-01T13:01:30.000Z'))
  const later = oathtool(u.secret, new Date('2026-06-01T13:01:00Z'))
  t.equal((await answer(app, { mfaToken: await challenge(app, u.email), code: later })).statusCode, 200)
})

t.test('replay: the same code twice, and two logins racing with one code', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const u = await enrolled(t, app, clock)
  const code = oathtool(u.secret, clock.now())
  t.equal((await answer(app, { mfaToken: await challenge(app, u.email), code })).statusCode, 200)
  const replay = await answer(app, { mfaToken: await challenge(app, u.email), code })
  assertError(t, replay, 401, 'MFA_INVALID_CODE')
  const [event] = await app.db.select().from(authEvents).where(eq(authEvents.failureReason, 'replayed_code'))
  t.match(event, { eventType: 'mfa_failure', userId: u.user.id })

  for (let round = 0; round < 3; round++) {
    clock.advance(STEP)
    const fresh = oathtool(u.secret, clock.now())
    const [a, b] = [await challenge(app, u.email), await challenge(app, u.email)]
    const results = await Promise.all([answer(app, { mfaToken: a, code: fresh }), answer(app, { mfaToken: b, code: fresh })])
    t.same(results.map((r) => r.statusCode).sort(), [200, 401], `round ${round}: one wins`)
  }
})

t.test('backup codes: single use, 5 parallel uses give exactly one 200, typing is forgiving', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const u = await enrolled(t, app, clock)
  const [code, second, third] = u.backupCodes as [string, string, string]
  const tokens = await Promise.all(Array.from({ length: 5 }, () => challenge(app, u.email)))
  const results = await Promise.all(tokens.map((mfaToken) => answer(app, { mfaToken, backupCode: code })))
  t.same(results.map((r) => r.statusCode).sort(), [200, 401, 401, 401, 401])
  t.same(claims(results.find((r) => r.statusCode === 200)?.json().accessToken).amr, ['pwd', 'otp'])
  assertError(t, await answer(app, { mfaToken: await challenge(app, u.email), backupCode: code }), 401, 'MFA_INVALID_CODE')
  t.equal((await answer(app, { mfaToken: await challenge(app, u.email), backupCode: ` ${second.toUpperCase().replace('-', '')} ` })).statusCode, 200)
  t.equal((await answer(app, { mfaToken: await challenge(app, u.email), backupCode: third.replace('-', ' ') })).statusCode, 200)
  t.same((await app.inject({ url: '/api/auth/mfa', headers: bearer(u.accessToken) })).json(), { enabled: true, backupCodesRemaining: 7 })
  t.equal((await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'backup_code_used'))).length, 3)
})

t.test('the mfaToken: 5 wrong codes exhaust it, it expires after 5 minutes, it works once', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const u = await enrolled(t, app, clock)
  const token = await challenge(app, u.email)
  for (let i = 0; i < 5; i++) assertError(t, await answer(app, { mfaToken: token, code: '000000' }), 401, 'MFA_INVALID_CODE')
  assertError(t, await answer(app, { mfaToken: token, code: oathtool(u.secret, clock.now()) }), 401, 'MFA_TOKEN_INVALID')
  t.equal((await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'mfa_failure'))).length, 5)

  const expiring = await challenge(app, u.email)
  clock.advance(5 * 60_000 + 1)
  assertError(t, await answer(app, { mfaToken: expiring, code: oathtool(u.secret, clock.now()) }), 401, 'MFA_TOKEN_INVALID')

  const once = await challenge(app, u.email)
  t.equal((await answer(app, { mfaToken: once, code: oathtool(u.secret, clock.now()) })).statusCode, 200)
  clock.advance(STEP)
  assertError(t, await answer(app, { mfaToken: once, code: oathtool(u.secret, clock.now()) }), 401, 'MFA_TOKEN_INVALID')
  assertError(t, await answer(app, { mfaToken: 'garbage', code: '123456' }), 401, 'MFA_TOKEN_INVALID')
})

t.test('token confusion is refused both ways', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const u = await enrolled(t, app, clock)
  const mfaToken = await challenge(app, u.email)
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(mfaToken) }), 401, 'TOKEN_INVALID')
  assertError(t, await app.inject({ url: `/api/${u.user.id}/tasks`, headers: bearer(mfaToken) }), 401, 'TOKEN_INVALID')
  assertError(t, await answer(app, { mfaToken: u.accessToken, code: oathtool(u.secret, clock.now()) }), 401, 'MFA_TOKEN_INVALID')
  t.equal((await answer(app, { mfaToken, code: oathtool(u.secret, clock.now()) })).statusCode, 200, 'the real one still works')
})

t.test('regenerate and disable', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const u = await enrolled(t, app, clock)
  const h = bearer(u.accessToken)
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/mfa/backup-codes', headers: h, payload: { code: '000000' } }), 401, 'MFA_INVALID_CODE')
  const regen = await app.inject({ method: 'POST', url: '/api/auth/mfa/backup-codes', headers: h, payload: { code: oathtool(u.secret, clock.now()) } })
  t.equal(regen.statusCode, 200)
  const fresh = regen.json().backupCodes as string[]
  t.equal(fresh.length, 10)
  assertError(t, await answer(app, { mfaToken: await challenge(app, u.email), backupCode: u.backupCodes[0] }), 401, 'MFA_INVALID_CODE')
  t.equal((await answer(app, { mfaToken: await challenge(app, u.email), backupCode: fresh[0] })).statusCode, 200, 'new codes work')

  clock.advance(STEP)
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/mfa/disable', headers: h, payload: { password: 'Wrong-Passw0rd-1', code: oathtool(u.secret, clock.now()) } }), 401, 'AUTH_INVALID_CREDENTIALS')
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/mfa/disable', headers: h, payload: { password: PASSWORD, code: '000000' } }), 401, 'MFA_INVALID_CODE')
  const off = await app.inject({ method: 'POST', url: '/api/auth/mfa/disable', headers: h, payload: { password: PASSWORD, code: oathtool(u.secret, clock.now()) } })
  t.equal(off.statusCode, 200)
  const [row] = await app.db.select().from(users).where(eq(users.id, u.user.id))
  t.match(row, { mfaEnabled: false, totpSecretEnc: null })
  t.equal((await app.db.select().from(backupCodes)).length, 0)
  const [mail] = await app.db.select().from(emailOutbox).where(eq(emailOutbox.kind, 'mfa_disabled'))
  t.equal(mail?.toAddress, u.email)
  t.equal((await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'mfa_disabled'))).length, 1)
  const plain = await login(app, u.email)
  t.ok(plain.json().accessToken, 'login without a second factor again')
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/mfa/disable', headers: h, payload: { password: PASSWORD, code: '123456' } }), 400, 'VALIDATION_ERROR')
})

t.test('bad input at /login/mfa, and its per-IP limit', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now, env: { RATE_LIMIT_MFA_MAX: '5' } })
  const u = await enrolled(t, app, clock)
  const mfaToken = await challenge(app, u.email)
  assertError(t, await answer(app, { mfaToken }, '10.5.0.1'), 400, 'VALIDATION_ERROR')
  assertError(t, await answer(app, { mfaToken, code: '123456', backupCode: u.backupCodes[0] }, '10.5.0.2'), 400, 'VALIDATION_ERROR')
  assertError(t, await answer(app, { mfaToken, code: '12345a' }, '10.5.0.3'), 400, 'VALIDATION_ERROR')
  assertError(t, await answer(app, { mfaToken, code: 123456 }, '10.5.0.4'), 400, 'VALIDATION_ERROR')
  for (let i = 0; i < 5; i++) await answer(app, { mfaToken: 'x', code: '000000' }, '10.6.0.1')
  const limited = await answer(app, { mfaToken, code: oathtool(u.secret, clock.now()) }, '10.6.0.1')
  assertError(t, limited, 429, 'RATE_LIMITED')
  t.ok(Number(limited.headers['retry-after']) > 0)
})
