/**
 * Live secrets stay out of what an attacker with read access gets: the database (a backup, a
 * replica) and the logs. Stored ciphertext cannot be forged with a truncated tag.
 */
import { createDecipheriv } from 'node:crypto'
import { eq, ne, sql } from 'drizzle-orm'
import t from 'tap'
import { emailOutbox, users } from '../../src/db/schema.ts'
import { loggerOptions } from '../../src/logger.ts'
import { hashOpaqueToken } from '../../src/services/opaque-tokens.ts'
import {
  assertError, buildTestApp, dumpDatabase, enrolMfa, logCapture, mfaChallenge, readMail, signup, testClock, tokenInMail, totpCode
} from '../helper.ts'

t.test('a reset link is never readable in the database: sealed while queued, erased once delivered', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  await app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email: s.email } })
  await app.services.credentials.settled()
  const queued = await dumpDatabase(app)
  // The signup's verification mail is queued too: this test is about the reset email.
  const [pending, ...more] = await app.db.select().from(emailOutbox).where(ne(emailOutbox.kind, 'email_verification'))
  t.equal(more.length, 0)
  t.match(pending, { status: 'pending', kind: 'password_reset', toAddress: s.email, textBody: null })
  t.match(pending?.bodySealed, /^v1\./, 'the body is stored sealed')

  const token = tokenInMail((await readMail(app)).at(-1))
  t.match(token, /^[A-Za-z0-9_-]{43}$/, 'the user got the link')
  const delivered = await dumpDatabase(app)
  for (const [when, dump] of [['queued', queued], ['delivered', delivered]] as const) {
    t.notOk(dump.includes(token), `no column of any table holds the token (${when})`)
    t.notOk(dump.includes('reset-password?token='), `nor the link (${when})`)
    t.ok(dump.includes(hashOpaqueToken(token)), `the dump is real: it holds the token's hash (${when})`)
  }
  const [sent] = await app.db.select().from(emailOutbox).where(ne(emailOutbox.kind, 'email_verification'))
  t.match(sent, { status: 'sent', kind: 'password_reset', toAddress: s.email, bodySealed: null, textBody: null })
  t.ok(sent?.createdAt instanceof Date && sent.sentAt instanceof Date, 'recipient, template, status and times stay for audit')
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/password/reset', payload: { token, newPassword: 'Brand-New-Passw0rd' } })).statusCode, 200, 'and the link works')
})

t.test('a sealed email body opens only for its own row and key', async (t) => {
  const app = await buildTestApp(t)
  const a = await signup(app)
  const b = await signup(app)
  for (const s of [a, b]) await app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email: s.email } })
  await app.services.credentials.settled()
  // The two signups' verification mails are queued too: they keep their own bodies.
  const [first, second, ...more] = await app.db.select().from(emailOutbox).where(ne(emailOutbox.kind, 'email_verification')).orderBy(emailOutbox.toAddress)
  t.equal(more.length, 0)
  // Swap the sealed bodies: each now sits on a row (and recipient) it was not sealed for.
  await app.db.update(emailOutbox).set({ bodySealed: second?.bodySealed }).where(eq(emailOutbox.id, first?.id ?? ''))
  await app.db.update(emailOutbox).set({ bodySealed: first?.bodySealed }).where(eq(emailOutbox.id, second?.id ?? ''))
  t.same(await readMail(app), [], 'neither is delivered, to anyone')
  t.same((await readMail(app, { verification: true })).map((m) => m.to).sort(), [a.email, b.email].sort(), 'only the untouched verification mails went out')
  const rows = await app.db.select().from(emailOutbox).where(ne(emailOutbox.kind, 'email_verification'))
  t.same(rows.map((r) => r.status), ['failed', 'failed'])
  t.ok(rows.every((r) => r.bodySealed === null), 'and the bodies are erased')
})

t.test('a failed query is logged with its SQLSTATE and statement, never its parameters', async (t) => {
  const logs = logCapture()
  const secret = 'https://app.example.com/reset-password?token=Zm9vYmFyLXNlY3JldC10b2tlbi12YWx1ZS0xMjM0NTY'
  const app = await buildTestApp(t, {
    logger: loggerOptions('info', logs.stream),
    setup: (app) => {
      app.get('/test/failing-query', async () => app.db.execute(sql`select ${secret}::uuid`))
    }
  })
  const res = await app.inject({ url: '/test/failing-query' })
  assertError(t, res, 500, 'INTERNAL_ERROR')
  t.notOk(res.body.includes(secret))
  const line = logs.lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'request failed')
  t.match(line?.err, { type: 'DrizzleQueryError', message: 'Failed query: select $1::uuid' })
  t.match(line?.err.cause, { code: '22P02', message: /invalid input syntax for type uuid: "\[…\]"/ })
  t.notOk(logs.text().includes('Zm9vYmFy'), 'the parameter is in no log line')
  t.notOk(logs.text().includes('params'), 'no parameter list either')
})

t.test('a reset request whose insert fails logs no token hash', async (t) => {
  const logs = logCapture()
  const app = await buildTestApp(t, { logger: loggerOptions('info', logs.stream) })
  const s = await signup(app)
  await app.db.execute(sql.raw(`create or replace function gatehouse_test_refuse() returns trigger language plpgsql as $$ begin raise exception 'refused by test'; end $$`))
  await app.db.execute(sql.raw('create trigger gatehouse_test_refuse before insert on password_reset_tokens for each row execute function gatehouse_test_refuse()'))
  t.teardown(async () => {
    await app.db.execute(sql.raw('drop trigger if exists gatehouse_test_refuse on password_reset_tokens'))
  })
  const res = await app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email: s.email } })
  t.equal(res.statusCode, 202, 'the caller sees the usual answer')
  await app.services.credentials.settled()
  const line = logs.lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'password reset request failed')
  t.match(line?.err.cause, { code: 'P0001', message: 'refused by test' })
  t.notMatch(logs.text(), /[0-9a-f]{64}/, 'no SHA-256 hex digest (the token hash) in the logs')
  t.notOk(logs.text().includes(s.user.id), 'nor the other parameters')
})

t.test('a TOTP secret with a truncated GCM tag does not decrypt, so its codes log nobody in', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const s = await enrolMfa(app, clock)
  const [row] = await app.db.select({ enc: users.totpSecretEnc }).from(users).where(eq(users.id, s.user.id))
  const [v, iv, ct, tag] = (row?.enc ?? '').split('.')
  const shortTag = Buffer.from(tag ?? '', 'base64url').subarray(0, 4).toString('base64url')

  // Why pinning matters: without authTagLength, Node accepts a 4-byte prefix of a valid tag,
  // which an attacker who can write the column finds in 2^32 tries instead of 2^128.
  const key = Buffer.alloc(32)
  const probe = createDecipheriv('aes-256-gcm', key, Buffer.alloc(12))
  t.doesNotThrow(() => probe.setAuthTag(Buffer.alloc(4)), 'an unpinned decipher takes a 4-byte tag')

  await app.db.update(users).set({ totpSecretEnc: [v, iv, ct, shortTag].join('.') }).where(eq(users.id, s.user.id))
  const mfaToken = await mfaChallenge(app, s.email)
  const res = await app.inject({ method: 'POST', url: '/api/auth/login/mfa', payload: { mfaToken, code: totpCode(s.secret, clock.now()) } })
  assertError(t, res, 500, 'INTERNAL_ERROR')
  t.notOk('accessToken' in res.json(), 'no token')
})

t.test('query strings never reach the request log, in the URL or in a Referer', async (t) => {
  const logs = logCapture()
  const app = await buildTestApp(t, { logger: loggerOptions('info', logs.stream) })
  const token = 'bGl2ZS1yZXNldC10b2tlbi12YWx1ZS0wMTIzNDU2Nzg5YWJj'
  // The reset page on the service's own origin (APP_URL's default), and a request it makes.
  await app.inject({ url: `/reset-password?token=${token}` })
  await app.inject({ method: 'POST', url: '/api/auth/password/reset', payload: { token, newPassword: 'weak' }, headers: { referer: `http://localhost:3000/reset-password?token=${token}` } })
  const lines = logs.lines.map((l) => JSON.parse(l))
  t.ok(lines.some((l) => l.req?.url === '/reset-password?[…]'), 'the path is logged, the query is not')
  t.ok(lines.some((l) => l.req?.headers?.referer === 'http://localhost:3000/reset-password?[…]'))
  t.notOk(logs.text().includes(token), 'the token is in no log line')
})
