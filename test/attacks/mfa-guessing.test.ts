/**
 * An attacker who has the password guesses the second factor: every correct password gives a
 * fresh mfaToken, and IPs are cheap. The account, not the token or the IP, bounds the guesses.
 */
import { eq } from 'drizzle-orm'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { authEvents, mfaChallenges } from '../../src/db/schema.ts'
import { assertError, buildTestApp, enrolMfa, mfaChallenge, readMail, testClock, totpCode } from '../helper.ts'

const LIMIT = { RATE_LIMIT_MFA_ACCOUNT_FAILURES: '3', RATE_LIMIT_MFA_ACCOUNT_WINDOW_MINUTES: '15' }

const answer = (app: App, mfaToken: string, code: string, remoteAddress = '10.0.0.1') =>
  app.inject({ method: 'POST', url: '/api/auth/login/mfa', payload: { mfaToken, code }, remoteAddress })

/** A code that is certainly wrong now (not within ±1 step of the right one). */
const wrongCode = (right: string) => String((Number(right) + 500_000) % 1_000_000).padStart(6, '0')

const failures = async (app: App) => (await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'mfa_failure'))).length

t.test('wrong codes are limited per account across fresh mfaTokens and IPs; the owner is told once', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now, env: LIMIT })
  const victim = await enrolMfa(app, clock)
  const bad = () => wrongCode(totpCode(victim.secret, clock.now()))

  for (let i = 1; i <= 3; i++) {
    const ip = `198.51.100.${i}`
    assertError(t, await answer(app, await mfaChallenge(app, victim.email, ip), bad(), ip), 401, 'MFA_INVALID_CODE')
  }
  const locked = await answer(app, await mfaChallenge(app, victim.email, '198.51.100.9'), totpCode(victim.secret, clock.now()), '198.51.100.9')
  assertError(t, locked, 429, 'RATE_LIMITED')
  t.ok(Number(locked.headers['retry-after']) > 0 && Number(locked.headers['retry-after']) <= 900, 'Retry-After within the window')
  t.equal(await failures(app), 3, 'the refused answer was not even checked')

  const alerts = (await readMail(app)).filter((m) => m.to === victim.email && /someone knows your/i.test(m.subject))
  t.equal(alerts.length, 1, 'one security email')
  t.match(alerts[0]?.text, /wrong two-step verification code 3 times/)
  t.match(alerts[0]?.text, /change it now/)
  assertError(t, await answer(app, await mfaChallenge(app, victim.email), bad()), 429, 'RATE_LIMITED')
  t.equal((await readMail(app)).filter((m) => /someone knows your/i.test(m.subject)).length, 1, 'still one: not one per refused try')

  clock.advance(15 * 60_000 + 1000)
  const res = await answer(app, await mfaChallenge(app, victim.email), totpCode(victim.secret, clock.now()))
  t.equal(res.statusCode, 200, 'after the window the owner logs in')
})

t.test('correct codes do not count against the account', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now, env: LIMIT })
  const user = await enrolMfa(app, clock)
  assertError(t, await answer(app, await mfaChallenge(app, user.email), wrongCode(totpCode(user.secret, clock.now()))), 401, 'MFA_INVALID_CODE')
  for (let i = 0; i < 5; i++) {
    const res = await answer(app, await mfaChallenge(app, user.email), totpCode(user.secret, clock.now()))
    t.equal(res.statusCode, 200, `login ${i + 1}`)
    clock.advance(30_000)
  }
  assertError(t, await answer(app, await mfaChallenge(app, user.email), wrongCode(totpCode(user.secret, clock.now()))), 401, 'MFA_INVALID_CODE')
})

t.test('20 parallel guesses with one mfaToken: exactly 5 are checked, the rest find the token exhausted', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const user = await enrolMfa(app, clock)
  const mfaToken = await mfaChallenge(app, user.email)
  const bad = wrongCode(totpCode(user.secret, clock.now()))
  const results = await Promise.all(Array.from({ length: 20 }, () => answer(app, mfaToken, bad)))
  const codes = results.map((r) => r.json().code as string)
  t.equal(codes.filter((c) => c === 'MFA_INVALID_CODE').length, 5)
  t.equal(codes.filter((c) => c === 'MFA_TOKEN_INVALID').length, 15)
  t.equal(await failures(app), 5)
  const [challenge] = await app.db.select().from(mfaChallenges)
  t.equal(challenge?.failedAttempts, 5)
  assertError(t, await answer(app, mfaToken, totpCode(user.secret, clock.now())), 401, 'MFA_TOKEN_INVALID')
})

t.test('parallel guesses over many mfaTokens never get past the account limit', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now, env: LIMIT })
  const user = await enrolMfa(app, clock)
  const tokens = await Promise.all(Array.from({ length: 8 }, (_, i) => mfaChallenge(app, user.email, `203.0.113.${i + 1}`)))
  const bad = wrongCode(totpCode(user.secret, clock.now()))
  const results = await Promise.all(tokens.flatMap((token, i) => [answer(app, token, bad, `203.0.113.${i + 1}`), answer(app, token, bad, `203.0.113.${i + 1}`)]))
  const codes = results.map((r) => r.json().code as string)
  t.equal(codes.filter((c) => c === 'MFA_INVALID_CODE').length, 3, 'exactly the limit is checked')
  t.equal(codes.filter((c) => c === 'RATE_LIMITED').length, 13)
  t.equal(await failures(app), 3)
})
