/**
 * An attacker holds the password, or a session, or both; the owner resets the password. The
 * reset must win: no change in flight may undo it, no lock the attacker held may outlive it, no
 * challenge won with the old password may complete, and a stolen session must not become a way
 * to guess the password.
 */
import t from 'tap'
import type { App } from '../../src/app.ts'
import {
  assertError, bearer, buildTestApp, enrolMfa, latestResetToken, login, mfaChallenge, PASSWORD, signup, testClock, totpCode
} from '../helper.ts'

const ATTACKER_PASSWORD = 'Attackers-Passw0rd-1'
const OWNER_PASSWORD = 'Owners-New-Passw0rd-2'

const change = (app: App, accessToken: string, currentPassword: string, newPassword: string, remoteAddress = '10.0.0.1') =>
  app.inject({ method: 'POST', url: '/api/auth/password/change', headers: bearer(accessToken), payload: { currentPassword, newPassword }, remoteAddress })

async function resetPassword (app: App, email: string, newPassword: string) {
  await app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email } })
  return app.inject({ method: 'POST', url: '/api/auth/password/reset', payload: { token: await latestResetToken(app), newPassword } })
}

t.test('a password change in flight cannot undo the owner\'s reset', async (t) => {
  const app = await buildTestApp(t)
  const owner = await signup(app)
  const attacker = (await login(app, owner.email)).json() // a stolen session, and the password
  // Hold the attacker's change inside its hashing step, while the owner resets.
  const hasher = app.services.passwords
  const hash = hasher.hash
  let release: () => void = () => {}
  let held: () => void = () => {}
  const inHash = new Promise<void>((resolve) => { held = resolve })
  hasher.hash = async (password) => {
    if (password !== ATTACKER_PASSWORD) return hash(password)
    held()
    await new Promise<void>((resolve) => { release = resolve })
    return hash(password)
  }
  t.teardown(() => { hasher.hash = hash })

  const changing = change(app, attacker.accessToken, PASSWORD, ATTACKER_PASSWORD)
  await inHash
  t.equal((await resetPassword(app, owner.email, OWNER_PASSWORD)).statusCode, 200, 'the owner resets')
  release()
  assertError(t, await changing, 401, 'SESSION_REVOKED')
  t.equal((await login(app, owner.email, OWNER_PASSWORD)).statusCode, 200, 'the owner\'s password stands')
  assertError(t, await login(app, owner.email, ATTACKER_PASSWORD), 401, 'AUTH_INVALID_CREDENTIALS')
})

t.test('a reset lifts the MFA lock the attacker held, and voids every mfaToken won with the old password', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now, env: { RATE_LIMIT_MFA_ACCOUNT_FAILURES: '2' } })
  const owner = await enrolMfa(app, clock)
  const wrong = String((Number(totpCode(owner.secret, clock.now())) + 500_000) % 1_000_000).padStart(6, '0')
  for (let i = 0; i < 2; i++) {
    await app.inject({ method: 'POST', url: '/api/auth/login/mfa', payload: { mfaToken: await mfaChallenge(app, owner.email), code: wrong } })
  }
  const stale = await mfaChallenge(app, owner.email)
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/login/mfa', payload: { mfaToken: stale, backupCode: owner.backupCodes[0] } }), 429, 'RATE_LIMITED')

  t.equal((await resetPassword(app, owner.email, OWNER_PASSWORD)).statusCode, 200)
  clock.advance(30_000)
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/login/mfa', payload: { mfaToken: stale, code: totpCode(owner.secret, clock.now()) } }), 401, 'MFA_TOKEN_INVALID')
  const fresh = (await login(app, owner.email, OWNER_PASSWORD)).json().mfaToken as string
  const res = await app.inject({ method: 'POST', url: '/api/auth/login/mfa', payload: { mfaToken: fresh, code: totpCode(owner.secret, clock.now()) } })
  t.equal(res.statusCode, 200, 'the owner is in at once, not after the window')
})

t.test('a stolen session is no password oracle: re-checks count towards the per-account lock', async (t) => {
  const app = await buildTestApp(t, { env: { RATE_LIMIT_LOGIN_EMAIL_FAILURES: '3' } })
  const owner = await signup(app, undefined, undefined, '192.0.2.10') // the owner's known IP
  const stolen = (await login(app, owner.email, PASSWORD, '192.0.2.10')).json().accessToken as string
  const guess = (i: number, password: string) => change(app, stolen, password, 'Whatever-Passw0rd-9', `2001:db8:${i}::1`)
  assertError(t, await guess(1, 'Guess-Passw0rd-1'), 401, 'AUTH_INVALID_CREDENTIALS')
  assertError(t, await app.inject({
    method: 'POST', url: '/api/auth/mfa/totp/setup', headers: bearer(stolen), payload: { password: 'Guess-Passw0rd-2' }, remoteAddress: '2001:db8:2::1'
  }), 401, 'AUTH_INVALID_CREDENTIALS')
  assertError(t, await guess(3, 'Guess-Passw0rd-3'), 401, 'AUTH_INVALID_CREDENTIALS')
  const right = await guess(4, PASSWORD)
  assertError(t, right, 429, 'RATE_LIMITED')
  t.ok(Number(right.headers['retry-after']) > 0, 'even the right password gets no answer from a fresh address')
  assertError(t, await login(app, owner.email, PASSWORD, '198.51.100.1'), 429, 'RATE_LIMITED')
  t.equal((await login(app, owner.email, PASSWORD, '192.0.2.10')).statusCode, 200, 'the owner, from a known IP, is not locked out')
})

t.test('resets and changes of one account racing each other: one winner, no deadlock', async (t) => {
  const app = await buildTestApp(t, { env: { RATE_LIMIT_RESET_EMAILS_PER_HOUR: '10' } })
  const owner = await signup(app)
  const session = (await login(app, owner.email)).json().accessToken as string
  const tokens: string[] = []
  for (let i = 0; i < 3; i++) {
    await app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email: owner.email } })
    tokens.push(await latestResetToken(app))
  }
  const results = await Promise.all([
    ...tokens.map((token, i) => app.inject({ method: 'POST', url: '/api/auth/password/reset', payload: { token, newPassword: `Racing-Passw0rd-${i}` } })),
    change(app, session, PASSWORD, 'Racing-Passw0rd-c')
  ])
  const statuses = results.map((r) => r.statusCode)
  t.notOk(statuses.some((s) => s >= 500), `no 5xx (deadlock): ${statuses.join(',')}`)
  t.equal(statuses.filter((s) => s === 200).length, 1, 'exactly one new password')
})
