/**
 * Email verification: the link mailed at signup and on request (read from the mail, over a real
 * SMTP server where the mail is the point), single use and expiring; a resend answers the same
 * whatever the email and mails within its limits; REQUIRE_EMAIL_VERIFICATION keeps an account
 * without a session until its address is proven; a completed reset and the bootstrapped admin
 * count as verified.
 */
import { and, eq, isNull } from 'drizzle-orm'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { authEvents, emailOutbox, emailVerificationTokens, refreshTokens, sessions, users } from '../../src/db/schema.ts'
import { hashOpaqueToken } from '../../src/services/opaque-tokens.ts'
import {
  assertError, bearer, buildTestApp, dumpDatabase, isVerificationMail, login, PASSWORD, readMail, refreshCookieIn, round, setUser, signup,
  testClock, tokenInMail, uniqueEmail, type Test
} from '../helper.ts'
import { type Received, startSmtp } from '../smtp.ts'

const HOUR = 3_600_000
const NEW_PASSWORD = 'Brand-New-Passw0rd'
const VERIFIED_BODY = { message: 'Email address verified' }
const RESEND_BODY = { message: 'If that address has an account waiting for verification, a new link is on its way' }
const USER_KEYS = ['createdAt', 'email', 'emailVerified', 'id', 'isActive', 'lastLoginAt', 'mfaEnabled', 'passwordMustChange', 'role']

const verify = (app: App, token: unknown, remoteAddress = '10.0.0.1', headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: '/api/auth/email/verify', payload: { token } as object, remoteAddress, headers })

/** Asks for a new link, and waits until the request has been carried out (it runs after the 202). */
async function resend (app: App, email: string, remoteAddress = '10.0.0.1') {
  const res = await app.inject({ method: 'POST', url: '/api/auth/email/verify/resend', payload: { email }, remoteAddress })
  await app.services.credentials.settled()
  return res
}

/** An app that mails through a real SMTP server on loopback; `deliver()` runs the outbox once. */
async function mailingApp (t: Test, env: Record<string, string> = {}, now?: () => Date) {
  const smtp = await startSmtp(t)
  const app = await buildTestApp(t, { now, env: { SMTP_HOST: '127.0.0.1', SMTP_PORT: String(smtp.port), APP_URL: 'https://app.example.com', ...env } })
  return { app, smtp, deliver: () => app.services.outbox.runOnce() }
}

/** A mail body as its reader sees it (quoted-printable undone). */
const textOf = (mail: Received | undefined) => (mail?.body ?? '').replace(/=\r?\n/g, '')
  .replace(/=([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)))

/** The token of the verification link in a mail received over SMTP. */
const linkIn = (mail: Received | undefined) => /https:\/\/app\.example\.com\/verify-email\?token=([A-Za-z0-9_-]+)/.exec(textOf(mail))?.[1] ?? ''

/** The tokens of the verification links mailed to `email` over SMTP, oldest first. */
const linksOver = (smtp: { messages: Received[] }, email: string) =>
  smtp.messages.filter((m) => m.rcptTo.includes(email) && linkIn(m) !== '').map(linkIn)

/** The tokens of the verification links mailed to `email` (the test inbox), oldest first. */
async function linksFor (app: App, email: string): Promise<string[]> {
  return (await readMail(app, { verification: true })).filter((m) => m.to === email && isVerificationMail(m)).map(tokenInMail)
}

const me = async (app: App, accessToken: string) => (await app.inject({ url: '/api/auth/me', headers: bearer(accessToken) })).json()
const userRow = async (app: App, id: string) => (await app.db.select().from(users).where(eq(users.id, id)))[0]
const tokenRows = (app: App, userId: string) =>
  app.db.select().from(emailVerificationTokens).where(eq(emailVerificationTokens.userId, userId)).orderBy(emailVerificationTokens.createdAt)
const eventsOf = (app: App, type: string) =>
  app.db.select().from(authEvents).where(eq(authEvents.eventType, type)).orderBy(authEvents.createdAt)

t.test('signup mails a link over SMTP; the link from the mail proves the address, once', async (t) => {
  const clock = testClock()
  const { app, smtp, deliver } = await mailingApp(t, {}, clock.now)
  const s = await signup(app, uniqueEmail(), PASSWORD, '10.0.0.7')
  t.match(s.user, { emailVerified: false }, 'not verified at signup')
  t.equal((await me(app, s.accessToken)).emailVerified, false)
  const queued = await dumpDatabase(app)

  t.same(await deliver(), round({ sent: 1 }), 'the verification mail')
  const mail = smtp.messages[0]
  t.same(mail?.rcptTo, [s.email])
  t.match(mail?.headers.get('subject'), /Confirm your email address/)
  const token = linkIn(mail)
  t.match(token, /^[A-Za-z0-9_-]{43}$/, 'the link is APP_URL/verify-email?token=<43 characters>')
  t.equal(Buffer.from(token, 'base64url').length, 32, 'the token carries 256 random bits')
  t.match(textOf(mail), /works once, for 24 hours/)
  t.match(textOf(mail), /Requested from IP 10\.0\.0\.7/)

  const [stored, ...more] = await tokenRows(app, s.user.id)
  t.equal(more.length, 0)
  t.equal(stored?.tokenHash, hashOpaqueToken(token), 'stored as its SHA-256')
  t.equal((stored?.expiresAt.getTime() ?? 0) - (stored?.createdAt.getTime() ?? 0), 24 * HOUR, 'valid 24 hours by default')
  t.match(stored, { usedAt: null, requestedIp: '10.0.0.7' })

  clock.advance(60_000)
  const res = await verify(app, token, '10.0.0.8', { 'user-agent': 'mail-client/1' })
  t.equal(res.statusCode, 200)
  t.same(res.json(), VERIFIED_BODY)
  t.equal((await me(app, s.accessToken)).emailVerified, true, '/me shows the address verified, in the same session')
  t.equal((await userRow(app, s.user.id))?.emailVerified, true)
  const [used] = await tokenRows(app, s.user.id)
  t.same(used?.usedAt, clock.now(), 'the token is spent')
  const [event, ...others] = await eventsOf(app, 'email_verified')
  t.equal(others.length, 0)
  t.match(event, { userId: s.user.id, email: s.email, ipAddress: '10.0.0.8', userAgent: 'mail-client/1', success: true, metadata: { via: 'link' } })

  const delivered = await dumpDatabase(app)
  for (const [when, dump] of [['queued', queued], ['delivered', delivered]] as const) {
    t.notOk(dump.includes(token), `no column of any table holds the token (${when})`)
    t.notOk(dump.includes('verify-email?token='), `nor the link (${when})`)
    t.ok(dump.includes(hashOpaqueToken(token)), `the dump is real: it holds the token's hash (${when})`)
  }

  clock.advance(60_000)
  assertError(t, await verify(app, token), 400, 'VERIFY_TOKEN_INVALID')
  t.same((await tokenRows(app, s.user.id))[0]?.usedAt, used?.usedAt, 'the second use changes nothing')
  t.equal((await eventsOf(app, 'email_verified')).length, 1)
})

t.test('racing verifications with one token: exactly one 200, one event', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const [token] = await linksFor(app, s.email)
  const results = await Promise.all([verify(app, token), verify(app, token), verify(app, token)])
  t.same(results.map((r) => r.statusCode).sort(), [200, 400, 400])
  for (const r of results.filter((x) => x.statusCode === 400)) assertError(t, r, 400, 'VERIFY_TOKEN_INVALID')
  t.equal((await eventsOf(app, 'email_verified')).length, 1)
  t.equal((await userRow(app, s.user.id))?.emailVerified, true)
})

t.test('a link expires after EMAIL_VERIFY_EXPIRE_HOURS (24 by default); a new one can be asked for', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const early = await signup(app)
  const late = await signup(app)
  const [earlyToken] = await linksFor(app, early.email)
  const [lateToken] = await linksFor(app, late.email)

  clock.advance(24 * HOUR - 1000)
  t.equal((await verify(app, earlyToken)).statusCode, 200, 'a second before expiry')
  clock.advance(1000)
  assertError(t, await verify(app, lateToken), 400, 'VERIFY_TOKEN_INVALID')
  t.equal((await userRow(app, late.user.id))?.emailVerified, false)
  t.equal((await tokenRows(app, late.user.id))[0]?.usedAt, null, 'an expired link is not spent')

  t.same((await resend(app, late.email)).json(), RESEND_BODY)
  const [, fresh] = await linksFor(app, late.email)
  t.equal((await verify(app, fresh)).statusCode, 200, 'the new link works')
  t.equal((await userRow(app, late.user.id))?.emailVerified, true)
})

t.test('EMAIL_VERIFY_EXPIRE_HOURS sets how long a link works, and the mail says so', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now, env: { EMAIL_VERIFY_EXPIRE_HOURS: '2' } })
  const a = await signup(app)
  const b = await signup(app)
  const [mail] = (await readMail(app, { verification: true })).filter((m) => m.to === a.email)
  t.match(mail?.text, /works once, for 2 hours/)
  const [row] = await tokenRows(app, a.user.id)
  t.equal((row?.expiresAt.getTime() ?? 0) - (row?.createdAt.getTime() ?? 0), 2 * HOUR)

  clock.advance(2 * HOUR - 1000)
  t.equal((await verify(app, tokenInMail(mail))).statusCode, 200)
  clock.advance(1000)
  assertError(t, await verify(app, (await linksFor(app, b.email))[0]), 400, 'VERIFY_TOKEN_INVALID')
})

t.test('tokens never issued answer 400 VERIFY_TOKEN_INVALID; bodies the schema refuses 400 VALIDATION_ERROR; never a 500', async (t) => {
  // Many guesses from one address: past the per-IP limit they would be 429 (tested below).
  const app = await buildTestApp(t, { env: { RATE_LIMIT_PASSWORD_MAX: '1000' } })
  const s = await signup(app)
  const [token = ''] = await linksFor(app, s.email)
  const flipped = `${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}`
  const unknown: Array<[string, string]> = [
    ['the right shape, never issued', 'x'.repeat(43)],
    ['one character changed', flipped],
    ['one character short', token.slice(0, 42)],
    ['one character more', `${token}A`],
    ['padded', `${token}=`],
    ['with a space', ` ${token}`],
    ['with a newline', `${token}\n`],
    ['short', 'short'],
    ['the longest the schema takes', 'a'.repeat(256)],
    ['its hash', hashOpaqueToken(token)],
    ['SQL', '\' or 1=1 --'],
    ['a path', '../../../etc/passwd'],
    ['non-ASCII', 'é'.repeat(43)],
    ['lone surrogates', '\ud800'.repeat(43)]
  ]
  for (const [name, bad] of unknown) {
    const res = await verify(app, bad)
    t.equal(res.statusCode, 400, name)
    t.equal(res.json().code, 'VERIFY_TOKEN_INVALID', name)
  }
  assertError(t, await verify(app, 'x'.repeat(43)), 400, 'VERIFY_TOKEN_INVALID')

  const post = (payload: string | object, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: '/api/auth/email/verify', payload, headers })
  const refused: Array<[string, string | object]> = [
    ['no token', {}],
    ['empty', { token: '' }],
    ['too long', { token: 'a'.repeat(257) }],
    ['a number', { token: 42 }],
    ['null', { token: null }],
    ['an array', { token: [token] }],
    ['an object', { token: { token } }],
    ['another field', { token, email: s.email }],
    ['a NUL', { token: `${token}\u0000` }],
    ['not JSON', '{"token": '],
    ['a JSON string', JSON.stringify(token)]
  ]
  for (const [name, body] of refused) {
    const res = await post(body, { 'content-type': 'application/json' })
    t.equal(res.statusCode, 400, name)
    t.equal(res.json().code, 'VALIDATION_ERROR', name)
  }
  assertError(t, await post({}), 400, 'VALIDATION_ERROR')
  assertError(t, await post(`token=${token}`, { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'UNSUPPORTED_MEDIA_TYPE')
  assertError(t, await post({ token: 'a'.repeat(20_000) }), 413, 'PAYLOAD_TOO_LARGE')

  t.equal((await eventsOf(app, 'email_verified')).length, 0, 'nothing verified by any of them')
  t.equal((await verify(app, token)).statusCode, 200, 'and the real link still works')
})

t.test('guessing tokens is limited per IP: RATE_LIMIT_PASSWORD_MAX verifications a window', async (t) => {
  const app = await buildTestApp(t, { env: { RATE_LIMIT_PASSWORD_MAX: '3' } })
  const s = await signup(app)
  const [token] = await linksFor(app, s.email)
  for (let i = 0; i < 3; i++) assertError(t, await verify(app, 'x'.repeat(43), '10.0.2.2'), 400, 'VERIFY_TOKEN_INVALID')
  const limited = await verify(app, token, '10.0.2.2')
  assertError(t, limited, 429, 'RATE_LIMITED')
  t.ok(Number(limited.headers['retry-after']) > 0)
  t.equal((await userRow(app, s.user.id))?.emailVerified, false, 'even the right token is not looked at')
  t.equal((await verify(app, token, '10.0.2.3')).statusCode, 200, 'another address is not limited')
})

t.test('resend refuses bad input with the contract\'s errors and records nothing', async (t) => {
  const app = await buildTestApp(t)
  const post = (payload: string | object, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: '/api/auth/email/verify/resend', payload, headers })
  for (const [name, body] of [
    ['no email', {}],
    ['not an email', { email: 'not-an-email' }],
    ['empty', { email: '' }],
    ['too long', { email: `${'x'.repeat(250)}@example.com` }],
    ['a number', { email: 42 }],
    ['another field', { email: uniqueEmail(), token: 'x' }],
    ['a NUL', { email: 'a\u0000b@example.com' }],
    ['not JSON', '{"email": ']
  ] as Array<[string, string | object]>) {
    const res = await post(body, { 'content-type': 'application/json' })
    t.equal(res.statusCode, 400, name)
    t.equal(res.json().code, 'VALIDATION_ERROR', name)
  }
  assertError(t, await post({ email: 'x' }), 400, 'VALIDATION_ERROR')
  assertError(t, await post('email=a@example.com', { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'UNSUPPORTED_MEDIA_TYPE')
  assertError(t, await post({ email: `${'a'.repeat(20_000)}@example.com` }), 413, 'PAYLOAD_TOO_LARGE')
  await app.services.credentials.settled()
  t.equal((await eventsOf(app, 'email_verification_requested')).length, 0)
  t.equal((await app.db.select().from(emailOutbox)).length, 0)
})

t.test('resend answers alike for unknown, verified, deactivated and waiting accounts; only the waiting one gets a link', async (t) => {
  const { app, smtp, deliver } = await mailingApp(t)
  const waiting = await signup(app)
  const verified = await signup(app)
  const disabled = await signup(app)
  const ghost = uniqueEmail('ghost')
  t.same(await deliver(), round({ sent: 3 }), 'the signups\' mails')
  t.equal((await verify(app, linksOver(smtp, verified.email)[0])).statusCode, 200)
  await setUser(app, disabled.user.id, { isActive: false })
  smtp.messages.length = 0

  const answers = [
    await resend(app, `  ${waiting.email.toUpperCase()} `, '10.0.3.3'),
    await resend(app, ghost, '10.0.3.3'),
    await resend(app, verified.email, '10.0.3.3'),
    await resend(app, disabled.email, '10.0.3.3')
  ]
  for (const r of answers) {
    t.equal(r.statusCode, 202)
    t.same(r.json(), RESEND_BODY)
    t.equal(r.body, answers[0]?.body, 'byte for byte the same answer')
  }
  t.same(await deliver(), round({ sent: 1 }))
  t.same(smtp.messages.map((m) => m.rcptTo), [[waiting.email]], 'one mail, to the account waiting for its address')
  t.equal(linksOver(smtp, waiting.email).length, 1)

  const events = await eventsOf(app, 'email_verification_requested')
  const seen = events.map((e) => [e.failureReason ?? 'mailed', e.success, e.userId, e.email, e.ipAddress]).sort()
  t.same(seen, [
    ['account_disabled', false, disabled.user.id, disabled.email, '10.0.3.3'],
    ['already_verified', false, verified.user.id, verified.email, '10.0.3.3'],
    ['mailed', true, waiting.user.id, waiting.email, '10.0.3.3'],
    ['unknown_email', false, null, ghost, '10.0.3.3']
  ])
  t.equal((await tokenRows(app, verified.user.id)).length, 1, 'no link made for the verified account')
  t.equal((await tokenRows(app, disabled.user.id)).length, 1, 'nor for the deactivated one')

  t.equal((await verify(app, linksOver(smtp, waiting.email)[0])).statusCode, 200, 'the new link works')
  t.equal((await userRow(app, waiting.user.id))?.emailVerified, true)
})

t.test('a resend leaves the earlier links working; once the address is verified, every other link is spent', async (t) => {
  const app = await buildTestApp(t)
  const older = await signup(app)
  const newer = await signup(app)
  await readMail(app, { verification: true }) // the signup mails arrive first
  for (const s of [older, newer]) await resend(app, s.email)
  const [olderFirst, olderSecond] = await linksFor(app, older.email)
  const [newerFirst, newerSecond] = await linksFor(app, newer.email)
  t.not(olderFirst, olderSecond, 'a resend mails a new token')

  t.equal((await verify(app, olderFirst)).statusCode, 200, 'the signup\'s link still works after a resend')
  assertError(t, await verify(app, olderSecond), 400, 'VERIFY_TOKEN_INVALID')
  t.equal((await verify(app, newerSecond)).statusCode, 200, 'the newest link works')
  assertError(t, await verify(app, newerFirst), 400, 'VERIFY_TOKEN_INVALID')

  t.equal((await eventsOf(app, 'email_verified')).length, 2, 'one event per account')
  const unused = await app.db.select().from(emailVerificationTokens).where(isNull(emailVerificationTokens.usedAt))
  t.equal(unused.length, 2, 'the refused links were not marked used')
})

t.test('a deactivated account\'s link verifies nothing until the account is active again', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const [token] = await linksFor(app, s.email)
  await setUser(app, s.user.id, { isActive: false })
  assertError(t, await verify(app, token), 400, 'VERIFY_TOKEN_INVALID')
  t.equal((await userRow(app, s.user.id))?.emailVerified, false)
  t.equal((await tokenRows(app, s.user.id))[0]?.usedAt, null, 'the link is not spent')
  t.equal((await eventsOf(app, 'email_verified')).length, 0)

  await setUser(app, s.user.id, { isActive: true })
  t.equal((await verify(app, token)).statusCode, 200)
  t.equal((await userRow(app, s.user.id))?.emailVerified, true)
})

t.test('at most RATE_LIMIT_VERIFY_EMAILS_PER_HOUR (3) mails an account an hour, the signup mail included', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const start = clock.now()
  const s = await signup(app)
  for (let i = 0; i < 3; i++) {
    clock.advance(60_000)
    const res = await resend(app, s.email, `10.0.4.${i}`)
    t.equal(res.statusCode, 202)
    t.same(res.json(), RESEND_BODY, 'past the limit still 202')
  }
  t.equal((await linksFor(app, s.email)).length, 3, 'the signup mail and two more')
  t.equal((await tokenRows(app, s.user.id)).length, 3)
  const requested = await eventsOf(app, 'email_verification_requested')
  t.same(requested.map((e) => [e.success, e.failureReason]), [[true, null], [true, null], [false, 'account_limit']])

  // An hour after the signup its mail leaves the window; the two resends are still in it.
  clock.set(new Date(start.getTime() + HOUR + 1))
  await resend(app, s.email)
  t.equal((await linksFor(app, s.email)).length, 4, 'a mail again')
  await resend(app, s.email)
  t.equal((await linksFor(app, s.email)).length, 4, 'and the limit again')
  t.equal((await verify(app, (await linksFor(app, s.email))[3])).statusCode, 200, 'the newest link works')
})

t.test('RATE_LIMIT_VERIFY_EMAILS_PER_HOUR=1: the signup mail uses the hour\'s allowance', async (t) => {
  const app = await buildTestApp(t, { env: { RATE_LIMIT_VERIFY_EMAILS_PER_HOUR: '1' } })
  const s = await signup(app)
  t.same((await resend(app, s.email)).json(), RESEND_BODY)
  t.equal((await linksFor(app, s.email)).length, 1)
  t.match(await eventsOf(app, 'email_verification_requested'), [{ success: false, failureReason: 'account_limit', userId: s.user.id }])
})

t.test('concurrent resends for one account mail no more than its limit', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const answers = await Promise.all(Array.from({ length: 6 }, (_, i) =>
    app.inject({ method: 'POST', url: '/api/auth/email/verify/resend', payload: { email: s.email }, remoteAddress: `10.0.7.${i}` })))
  await app.services.credentials.settled()
  t.same(answers.map((r) => r.statusCode), [202, 202, 202, 202, 202, 202])
  t.equal((await tokenRows(app, s.user.id)).length, 3)
  t.equal((await linksFor(app, s.email)).length, 3)
  const refused = (await eventsOf(app, 'email_verification_requested')).filter((e) => !e.success)
  t.same(refused.map((e) => e.failureReason), Array(4).fill('account_limit'))
})

t.test('a per-IP limit: RATE_LIMIT_VERIFY_IP_PER_HOUR mails an hour asked for from one address', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now, env: { RATE_LIMIT_VERIFY_IP_PER_HOUR: '2' } })
  const [a, b, c] = [await signup(app), await signup(app), await signup(app)]
  const ip = '10.0.5.5'
  const answers = []
  for (const email of [a.email, uniqueEmail('ghost'), b.email, c.email]) {
    clock.advance(1000)
    answers.push(await resend(app, email, ip))
  }
  t.same(answers.map((r) => [r.statusCode, r.json()]), Array(4).fill([202, RESEND_BODY]), 'past the limit still 202')
  t.equal((await linksFor(app, a.email)).length, 2)
  t.equal((await linksFor(app, b.email)).length, 2)
  t.equal((await linksFor(app, c.email)).length, 1, 'no mail past the address\'s limit')
  const fromIp = (await eventsOf(app, 'email_verification_requested')).filter((e) => e.ipAddress === ip)
  t.same(fromIp.map((e) => e.failureReason), [null, 'unknown_email', null, 'ip_limit'], 'a request that mails nothing does not count')
  t.match(fromIp[3], { success: false, email: c.email, userId: null })

  await resend(app, c.email, '10.0.5.6')
  t.equal((await linksFor(app, c.email)).length, 2, 'another address is not limited')
  clock.advance(HOUR + 1)
  const d = await signup(app)
  await resend(app, d.email, ip)
  t.equal((await linksFor(app, d.email)).length, 2, 'an hour later the address may ask again')
})

t.test('concurrent resends from one address mail no more than its limit', async (t) => {
  const app = await buildTestApp(t, { env: { RATE_LIMIT_VERIFY_IP_PER_HOUR: '2' } })
  const accounts = []
  for (let i = 0; i < 6; i++) accounts.push(await signup(app))
  const answers = await Promise.all(accounts.map((s) =>
    app.inject({ method: 'POST', url: '/api/auth/email/verify/resend', payload: { email: s.email }, remoteAddress: '10.0.8.8' })))
  await app.services.credentials.settled()
  t.ok(answers.every((r) => r.statusCode === 202))
  const events = await eventsOf(app, 'email_verification_requested')
  t.equal(events.filter((e) => e.success).length, 2, 'two mailed')
  t.same(events.filter((e) => !e.success).map((e) => e.failureReason), Array(4).fill('ip_limit'))
  const mails = (await readMail(app, { verification: true })).length
  t.equal(mails, 6 + 2, 'the six signup mails and two more')
})

t.test('REQUIRE_EMAIL_VERIFICATION=true: no session until the mailed link is followed', async (t) => {
  const { app, smtp, deliver } = await mailingApp(t, { REQUIRE_EMAIL_VERIFICATION: 'true' })
  const email = uniqueEmail()
  const res = await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email, password: PASSWORD }, remoteAddress: '10.0.6.6' })
  t.equal(res.statusCode, 201)
  const body = res.json()
  t.same(Object.keys(body).sort(), ['user', 'verificationRequired'])
  t.equal(body.verificationRequired, true)
  t.same(Object.keys(body.user).sort(), USER_KEYS)
  t.match(body.user, { email, emailVerified: false, role: 'user', isActive: true, lastLoginAt: null })
  t.equal(res.headers['set-cookie'], undefined, 'no cookie')
  t.equal(refreshCookieIn(res), '')

  const [row] = await app.db.select().from(users).where(eq(users.email, email))
  t.equal(row?.id, body.user.id, 'the account exists')
  t.equal((await app.db.select().from(sessions)).length, 0, 'and has no session')
  t.equal((await app.db.select().from(refreshTokens)).length, 0)
  t.match(await eventsOf(app, 'signup'), [{ userId: body.user.id, success: true, metadata: { verificationRequired: true } }])

  const refused = await login(app, email, PASSWORD)
  assertError(t, refused, 403, 'EMAIL_NOT_VERIFIED')
  t.equal(refused.headers['set-cookie'], undefined)
  assertError(t, await login(app, email, 'Wrong-Passw0rd-1'), 401, 'AUTH_INVALID_CREDENTIALS')
  t.same((await eventsOf(app, 'login_failure')).map((e) => e.failureReason).sort(), ['email_not_verified', 'invalid_password'])
  t.equal((await app.db.select().from(sessions)).length, 0, 'still no session')

  t.same(await deliver(), round({ sent: 1 }))
  t.equal((await verify(app, linksOver(smtp, email)[0])).statusCode, 200)
  const ok = await login(app, email, PASSWORD)
  t.equal(ok.statusCode, 200)
  t.same(Object.keys(ok.json()).sort(), ['accessToken', 'expiresIn', 'tokenType', 'user'])
  t.equal(ok.json().user.emailVerified, true)
  t.not(refreshCookieIn(ok), '', 'and the refresh cookie')
  t.equal((await me(app, ok.json().accessToken)).emailVerified, true)
})

t.test('logins refused for an unverified email do not count as wrong passwords: the owner cannot lock themselves out', async (t) => {
  const app = await buildTestApp(t, { env: { REQUIRE_EMAIL_VERIFICATION: 'true', RATE_LIMIT_LOGIN_EMAIL_FAILURES: '3' } })
  const email = uniqueEmail()
  await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email, password: PASSWORD }, remoteAddress: '10.0.7.1' })
  // From addresses the account never logged in from (no known-IP exemption), more times than the lockout allows.
  for (let i = 0; i < 5; i++) assertError(t, await login(app, email, PASSWORD, `10.0.7.${10 + i}`), 403, 'EMAIL_NOT_VERIFIED')
  t.equal((await verify(app, (await linksFor(app, email))[0])).statusCode, 200)
  t.equal((await login(app, email, PASSWORD, '10.0.7.99')).statusCode, 200, 'once verified, the login opens at once')
  // Wrong passwords still count.
  for (let i = 0; i < 3; i++) assertError(t, await login(app, email, 'Wrong-Passw0rd-1', `10.0.8.${i}`), 401, 'AUTH_INVALID_CREDENTIALS')
  assertError(t, await login(app, email, PASSWORD, '10.0.8.50'), 429, 'RATE_LIMITED')
})

t.test('a completed password reset proves the address, and opens login under REQUIRE_EMAIL_VERIFICATION', async (t) => {
  const { app, smtp, deliver } = await mailingApp(t, { REQUIRE_EMAIL_VERIFICATION: 'true' })
  const email = uniqueEmail()
  const created = await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email, password: PASSWORD } })
  const userId = created.json().user.id as string
  t.same(await deliver(), round({ sent: 1 }))
  const [signupLink] = linksOver(smtp, email)
  assertError(t, await login(app, email, PASSWORD), 403, 'EMAIL_NOT_VERIFIED')

  t.equal((await app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email }, remoteAddress: '10.0.9.9' })).statusCode, 202)
  await app.services.credentials.settled()
  t.same(await deliver(), round({ sent: 1 }))
  const resetToken = /https:\/\/app\.example\.com\/reset-password\?token=([A-Za-z0-9_-]+)/.exec(textOf(smtp.messages.at(-1)))?.[1] ?? ''
  t.match(resetToken, /^[A-Za-z0-9_-]{43}$/, 'the reset link, read from the mail')
  const done = await app.inject({ method: 'POST', url: '/api/auth/password/reset', payload: { token: resetToken, newPassword: NEW_PASSWORD }, remoteAddress: '10.0.9.9' })
  t.equal(done.statusCode, 200)

  t.equal((await userRow(app, userId))?.emailVerified, true)
  const ok = await login(app, email, NEW_PASSWORD)
  t.equal(ok.statusCode, 200, 'login is open')
  t.equal(ok.json().user.emailVerified, true)
  t.match(await eventsOf(app, 'email_verified'), [{ userId, email, ipAddress: '10.0.9.9', success: true, metadata: { via: 'password_reset' } }])
  assertError(t, await verify(app, signupLink), 400, 'VERIFY_TOKEN_INVALID')

  // A reset of an address already proven records no second verification.
  await app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email } })
  await app.services.credentials.settled()
  await deliver()
  const again = /reset-password\?token=([A-Za-z0-9_-]+)/.exec(textOf(smtp.messages.at(-1)))?.[1] ?? ''
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/password/reset', payload: { token: again, newPassword: 'Another-Passw0rd-2' } })).statusCode, 200)
  t.equal((await eventsOf(app, 'email_verified')).length, 1)
})

t.test('the bootstrapped admin is verified: no link mailed, login open under REQUIRE_EMAIL_VERIFICATION', async (t) => {
  const ADMIN = { ADMIN_EMAIL: 'Root@Example.com', ADMIN_PASSWORD: 'Bootstrap-Passw0rd-1' }
  const app = await buildTestApp(t, { env: { ...ADMIN, REQUIRE_EMAIL_VERIFICATION: 'true' } })
  const [admin] = await app.db.select().from(users)
  t.match(admin, { email: 'root@example.com', role: 'admin', emailVerified: true })
  t.equal((await app.db.select().from(emailVerificationTokens)).length, 0)
  t.same(await readMail(app, { verification: true }), [], 'no verification mail')

  const res = await login(app, 'root@example.com', ADMIN.ADMIN_PASSWORD)
  t.equal(res.statusCode, 200)
  t.match(res.json().user, { emailVerified: true, passwordMustChange: true })

  t.same((await resend(app, 'root@example.com')).json(), RESEND_BODY)
  t.same(await readMail(app, { verification: true }), [])
  t.match(await app.db.select().from(authEvents).where(and(eq(authEvents.eventType, 'email_verification_requested'), eq(authEvents.userId, admin?.id ?? ''))),
    [{ success: false, failureReason: 'already_verified' }])
})
