import { eq, ne } from 'drizzle-orm'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { authEvents, emailOutbox, passwordResetTokens, sessions, users } from '../../src/db/schema.ts'
import { loggerOptions } from '../../src/logger.ts'
import { assertError, bearer, buildTestApp, latestResetToken, login, logCapture, PASSWORD, round, setUser, signup, testClock, uniqueEmail, type Test } from '../helper.ts'
import { startHibp } from '../hibp-server.ts'
import { startSmtp } from '../smtp.ts'

const NEW_PASSWORD = 'Brand-New-Passw0rd'
const BREACHED = 'Summer2024!Aa'
const FORGOT_BODY = { message: 'If an account exists for that email, a reset link is on its way' }

/** Asks for a reset link, and waits until the request has been carried out (it runs after the 202). */
async function forgot (app: App, email: string, remoteAddress = '10.0.0.1') {
  const res = await app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email }, remoteAddress })
  await app.services.credentials.settled()
  return res
}
const reset = (app: App, token: string, newPassword = NEW_PASSWORD) =>
  app.inject({ method: 'POST', url: '/api/auth/password/reset', payload: { token, newPassword } })
const change = (app: App, accessToken: string, currentPassword: string, newPassword: string) =>
  app.inject({ method: 'POST', url: '/api/auth/password/change', headers: bearer(accessToken), payload: { currentPassword, newPassword } })

/** An app that mails through a real SMTP server on loopback; `deliver()` runs the outbox once. */
async function mailingApp (t: Test, env: Record<string, string> = {}, now?: () => Date) {
  const smtp = await startSmtp(t)
  const app = await buildTestApp(t, { now, env: { SMTP_HOST: '127.0.0.1', SMTP_PORT: String(smtp.port), APP_URL: 'https://app.example.com', ...env } })
  return { app, smtp, deliver: () => app.services.outbox.runOnce() }
}

/** The reset link's token, from a mail body that may be quoted-printable. */
const linkIn = (body: string) => {
  const text = body.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)))
  return /https:\/\/app\.example\.com\/reset-password\?token=([A-Za-z0-9_-]+)/.exec(text)?.[1]
}

t.test('forgot → email → reset → login, end to end over SMTP', async (t) => {
  const { app, smtp, deliver } = await mailingApp(t)
  const s = await signup(app)
  t.same(await deliver(), round({ sent: 1 }), 'the signup\'s verification mail (tested in email-verification.test.ts)')
  smtp.messages.length = 0
  const res = await forgot(app, `  ${s.email.toUpperCase()} `)
  t.equal(res.statusCode, 202)
  t.same(res.json(), FORGOT_BODY)
  t.same(await deliver(), round({ sent: 1 }))
  t.equal(smtp.messages.length, 1)
  const mail = smtp.messages[0]
  t.same(mail?.rcptTo, [s.email])
  t.match(mail?.headers.get('subject'), /Reset your Gatehouse password/)
  const token = linkIn(mail?.body ?? '')
  t.ok(token, 'the link carries the token')
  const [stored] = await app.db.select().from(passwordResetTokens)
  t.not(stored?.tokenHash, token, 'only a hash is stored')
  t.equal((stored?.expiresAt.getTime() ?? 0) - (stored?.createdAt.getTime() ?? 0), 30 * 60_000, '30 minutes')

  const done = await reset(app, token ?? '')
  t.equal(done.statusCode, 200)
  t.match(done.json(), { message: String })
  assertError(t, await login(app, s.email, PASSWORD), 401, 'AUTH_INVALID_CREDENTIALS')
  t.equal((await login(app, s.email, NEW_PASSWORD)).statusCode, 200, 'the new password works')

  t.same(await deliver(), round({ sent: 1 }), 'the notice')
  t.match(smtp.messages[1]?.headers.get('subject'), /password was reset/)
  const types = (await app.db.select().from(authEvents)).map((e) => e.eventType)
  t.ok(types.includes('password_reset_requested') && types.includes('password_reset'))
})

t.test('unknown, disabled and known emails get the same answer; only the known one gets mail', async (t) => {
  const { app, deliver } = await mailingApp(t)
  const known = await signup(app)
  const disabled = await signup(app)
  await setUser(app, disabled.user.id, { isActive: false })
  t.same(await deliver(), round({ sent: 2 }), 'the signups\' verification mails')
  const answers = [await forgot(app, known.email), await forgot(app, uniqueEmail('ghost')), await forgot(app, disabled.email)]
  for (const r of answers) {
    t.equal(r.statusCode, 202)
    t.same(r.json(), FORGOT_BODY)
  }
  const mails = await app.db.select().from(emailOutbox).where(ne(emailOutbox.kind, 'email_verification'))
  t.same(mails.map((m) => m.toAddress), [known.email])
  t.equal((await deliver()).sent, 1)
  const events = await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'password_reset_requested'))
  t.same(events.map((e) => e.failureReason).sort(), ['account_disabled', 'unknown_email', null].sort())
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email: 'not-an-email' } }), 400, 'VALIDATION_ERROR')
})

t.test('per-account and per-IP limits on reset emails', async (t) => {
  const app = await buildTestApp(t, { env: { RATE_LIMIT_FORGOT_MAX: '5' } })
  const s = await signup(app)
  for (let i = 0; i < 4; i++) t.equal((await forgot(app, s.email, `10.0.1.${i}`)).statusCode, 202)
  // Besides the signup's verification mail:
  t.equal((await app.db.select().from(emailOutbox).where(ne(emailOutbox.kind, 'email_verification'))).length, 3, 'at most 3 reset emails per account per hour')
  t.equal((await app.db.select().from(passwordResetTokens)).length, 3)
  for (let i = 0; i < 5; i++) await forgot(app, uniqueEmail(), '10.0.2.1')
  const limited = await forgot(app, s.email, '10.0.2.1')
  assertError(t, limited, 429, 'RATE_LIMITED')
  t.ok(Number(limited.headers['retry-after']) > 0)
})

t.test('reset tokens: single use, 30 minutes, invalidated by a later password change', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const s = await signup(app)
  const tokenFor = async () => {
    await forgot(app, s.email)
    return latestResetToken(app)
  }
  const first = await tokenFor()
  t.equal((await reset(app, first)).statusCode, 200)
  assertError(t, await reset(app, first, 'Another-Passw0rd-2'), 400, 'RESET_TOKEN_INVALID')

  clock.advance(1000)
  const expiring = await tokenFor()
  clock.advance(30 * 60_000 + 1)
  assertError(t, await reset(app, expiring), 400, 'RESET_TOKEN_INVALID')

  const stale = await tokenFor()
  clock.advance(1000)
  const session = await login(app, s.email, NEW_PASSWORD)
  t.equal((await change(app, session.json().accessToken, NEW_PASSWORD, 'Changed-Passw0rd-3')).statusCode, 200)
  assertError(t, await reset(app, stale, 'Yet-Another-Passw0rd-4'), 400, 'RESET_TOKEN_INVALID')
  assertError(t, await reset(app, 'x'.repeat(43)), 400, 'RESET_TOKEN_INVALID')
  assertError(t, await reset(app, 'short'), 400, 'RESET_TOKEN_INVALID')
  t.equal((await login(app, s.email, 'Changed-Passw0rd-3')).statusCode, 200)
})

t.test('two parallel resets with one token: one 200, one 400', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  await forgot(app, s.email)
  const token = await latestResetToken(app)
  const results = await Promise.all([reset(app, token, 'Racer-One-Passw0rd'), reset(app, token, 'Racer-Two-Passw0rd')])
  t.same(results.map((r) => r.statusCode).sort(), [200, 400])
  t.equal(results.find((r) => r.statusCode === 400)?.json().code, 'RESET_TOKEN_INVALID')
  const winner = results[0]?.statusCode === 200 ? 'Racer-One-Passw0rd' : 'Racer-Two-Passw0rd'
  t.equal((await login(app, s.email, winner)).statusCode, 200, 'the winner\'s password is set')
  t.equal((await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'password_reset'))).length, 1)
})

t.test('a reset ends every session and clears passwordMustChange', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const other = await login(app, s.email)
  await setUser(app, s.user.id, { passwordMustChange: true })
  await forgot(app, s.email)
  t.equal((await reset(app, await latestResetToken(app))).statusCode, 200)
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) }), 401, 'SESSION_REVOKED')
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(other.json().accessToken) }), 401, 'SESSION_REVOKED')
  const live = (await app.db.select().from(sessions).where(eq(sessions.userId, s.user.id))).filter((x) => x.revokedAt === null)
  t.equal(live.length, 0)
  const [user] = await app.db.select().from(users).where(eq(users.id, s.user.id))
  t.equal(user?.passwordMustChange, false)
  t.ok((await app.db.select().from(emailOutbox)).some((m) => m.kind === 'password_changed'), 'notice queued')
})

t.test('change: needs the current password, keeps this session, ends the others, queues a notice', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const other = await login(app, s.email)
  assertError(t, await change(app, s.accessToken, 'Wrong-Passw0rd-9', NEW_PASSWORD), 401, 'AUTH_INVALID_CREDENTIALS')
  const same = await change(app, s.accessToken, PASSWORD, PASSWORD)
  assertError(t, same, 400, 'PASSWORD_TOO_WEAK')
  t.match(same.json().message, /differ/)
  assertError(t, await change(app, s.accessToken, PASSWORD, 'weak'), 400, 'PASSWORD_TOO_WEAK')
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/password/change', headers: bearer(s.accessToken), payload: { newPassword: NEW_PASSWORD } }), 400, 'VALIDATION_ERROR')
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/password/change', payload: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD } }), 401, 'AUTH_REQUIRED')
  // Only the signup's verification mail waits:
  t.equal((await app.db.select().from(emailOutbox).where(ne(emailOutbox.kind, 'email_verification'))).length, 0, 'nothing queued by failures')

  const ok = await change(app, s.accessToken, PASSWORD, NEW_PASSWORD)
  t.equal(ok.statusCode, 200)
  t.equal((await app.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) })).statusCode, 200, 'this session stays')
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(other.json().accessToken) }), 401, 'SESSION_REVOKED')
  t.equal((await login(app, s.email, NEW_PASSWORD)).statusCode, 200)
  const [mail, ...more] = await app.db.select().from(emailOutbox).where(ne(emailOutbox.kind, 'email_verification'))
  t.match(mail, { kind: 'password_changed', toAddress: s.email })
  t.equal(more.length, 0)
  const events = await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'password_change'))
  t.same(events.map((e) => e.success).sort(), [false, true])
})

t.test('breached passwords are refused at signup, change and reset; HIBP down passes with a warning', async (t) => {
  const hibp = await startHibp(t, { [BREACHED]: 1234 })
  const logs = logCapture()
  const app = await buildTestApp(t, {
    // Long enough for a loaded CI machine to answer in time; the slow mode below outlasts it.
    env: { HIBP_ENABLED: 'true', HIBP_API_URL: hibp.url, HIBP_TIMEOUT_MS: '1000' },
    logger: loggerOptions('warn', logs.stream)
  })
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email: uniqueEmail(), password: BREACHED } }), 400, 'PASSWORD_BREACHED')
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email: uniqueEmail(), password: 'short' } }), 400, 'PASSWORD_TOO_WEAK')
  t.equal((await app.db.select().from(users)).length, 0)
  const s = await signup(app)
  assertError(t, await change(app, s.accessToken, PASSWORD, BREACHED), 400, 'PASSWORD_BREACHED')
  await forgot(app, s.email)
  const token = await latestResetToken(app)
  assertError(t, await reset(app, token, BREACHED), 400, 'PASSWORD_BREACHED')
  assertError(t, await reset(app, token, 'nodigits'), 400, 'PASSWORD_TOO_WEAK')
  t.equal((await reset(app, token)).statusCode, 200, 'the token survived the refused attempts')
  t.ok(hibp.state.requests.every((r) => r.padding === 'true'))

  hibp.state.mode = 'slow'
  hibp.state.slowMs = 5000
  const started = Date.now()
  const res = await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email: uniqueEmail(), password: 'Unchecked-Passw0rd-1' } })
  t.equal(res.statusCode, 201, 'fail-open: accepted')
  t.ok(Date.now() - started < 4000, 'within the timeout, not the API\'s 5 s')
  t.match(logs.text(), /Have I Been Pwned check unavailable/)
  t.notOk(logs.text().includes('Unchecked-Passw0rd-1'))
})

t.test('HIBP_FAIL_CLOSED=true refuses while the API is down', async (t) => {
  const hibp = await startHibp(t)
  hibp.state.mode = 'fail'
  const app = await buildTestApp(t, { env: { HIBP_ENABLED: 'true', HIBP_API_URL: hibp.url, HIBP_FAIL_CLOSED: 'true' } })
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email: uniqueEmail(), password: PASSWORD } }), 503, 'SERVICE_UNAVAILABLE')
})
