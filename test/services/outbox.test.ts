/**
 * The durable email outbox against a real SMTP server on loopback (smtp-server), delivered by
 * the app's own nodemailer SMTP mailer (SMTP_HOST set). Delivery is driven with
 * `outbox.runOnce()` and an injected clock, except where the app's worker is under test.
 */
import { asc } from 'drizzle-orm'
import t from 'tap'
import type { App } from '../../src/app.ts'
import type { DbHandle } from '../../src/db/client.ts'
import { emailOutbox } from '../../src/db/schema.ts'
import { buildTestApp, openTestDb, testClock, type Test } from '../helper.ts'
import { type Received, startSmtp } from '../smtp.ts'

const BASE_MS = 30_000 // OUTBOX_BACKOFF_BASE_SECONDS default
const LEASE_MS = 120_000 // OUTBOX_LEASE_SECONDS default
const FROM = 'Gatehouse <no-reply@localhost>' // SMTP_FROM default

/** A port on loopback where nothing listens (a server started, then closed). */
async function deadPort (test: Test): Promise<number> {
  const s = await startSmtp(test)
  await s.close()
  return s.port
}

const smtpEnv = (port: number, env: Record<string, string> = {}) => ({ SMTP_HOST: '127.0.0.1', SMTP_PORT: String(port), ...env })

async function rows (db: DbHandle['db']) {
  return db.select().from(emailOutbox).orderBy(asc(emailOutbox.createdAt), asc(emailOutbox.subject))
}

async function onlyRow (test: Test, db: DbHandle['db']) {
  const all = await rows(db)
  test.equal(all.length, 1, 'one outbox row')
  const row = all[0]
  if (row === undefined) throw new Error('no outbox row')
  return row
}

function enqueue (app: App, to: string, subject: string, text: string) {
  return app.services.outbox.enqueue(app.db, 'refresh_token_reused', { to, subject, text })
}

/** A database of the test's own, shared by several apps and dropped at the end. */
async function ownDb (test: Test) {
  const db = await openTestDb()
  test.teardown(() => db.drop())
  return db
}

function checkDelivered (test: Test, msg: Received | undefined, to: string, subject: string, text: string) {
  test.ok(msg, 'a message was received')
  if (msg === undefined) return
  test.same(msg.rcptTo, [to], 'envelope recipient')
  test.equal(msg.mailFrom, 'no-reply@localhost', 'envelope sender is SMTP_FROM')
  test.equal(msg.headers.get('to'), to, 'To header')
  test.equal(msg.headers.get('from'), FROM, 'From header')
  test.equal(msg.headers.get('subject'), subject, 'Subject header')
  test.equal(msg.body, text, 'body')
}

t.test('an enqueued email is delivered exactly once over SMTP', async (t) => {
  const smtp = await startSmtp(t)
  const clock = testClock()
  const app = await buildTestApp(t, { env: smtpEnv(smtp.port), now: clock.now })

  await enqueue(app, 'alice@example.com', 'Your refresh token was reused', 'Someone reused an old token.\nAll sessions were revoked.')
  const queued = await onlyRow(t, app.db)
  t.equal(queued.status, 'pending')
  t.equal(queued.attempts, 0)
  t.equal(queued.kind, 'refresh_token_reused')
  t.equal(queued.nextAttemptAt.getTime(), clock.now().getTime(), 'due at once')
  t.equal(smtp.messages.length, 0, 'nothing is sent by enqueue itself')

  clock.advance(1000)
  t.same(await app.services.outbox.runOnce(), { sent: 1, failed: 0 })
  t.equal(smtp.messages.length, 1, 'one message received')
  checkDelivered(t, smtp.messages[0], 'alice@example.com', 'Your refresh token was reused', 'Someone reused an old token.\nAll sessions were revoked.')

  const row = await onlyRow(t, app.db)
  t.equal(row.status, 'sent')
  t.equal(row.attempts, 1)
  t.equal(row.lastError, null)
  t.equal(row.sentAt?.getTime(), clock.now().getTime(), 'sent_at is the (injected) time of delivery')

  for (const step of [0, LEASE_MS + 1, 24 * 3600_000]) {
    clock.advance(step)
    t.same(await app.services.outbox.runOnce(), { sent: 0, failed: 0 }, `nothing more after +${step} ms`)
  }
  t.equal(smtp.messages.length, 1, 'still exactly one message')
  const after = await onlyRow(t, app.db)
  t.equal(after.status, 'sent')
  t.equal(after.attempts, 1)
})

t.test('SMTP server down: retried with exponential backoff, then delivered exactly once', async (t) => {
  const port = await deadPort(t)
  const clock = testClock()
  const app = await buildTestApp(t, { env: smtpEnv(port), now: clock.now })
  const outbox = app.services.outbox
  t.equal(outbox.backoffMs(1), BASE_MS)
  t.equal(outbox.backoffMs(2), 2 * BASE_MS)
  t.equal(outbox.backoffMs(3), 4 * BASE_MS)

  await enqueue(app, 'bob@example.com', 'Password changed', 'Your password was changed.')

  // First attempt: connection refused.
  t.same(await outbox.runOnce(), { sent: 0, failed: 1 })
  let row = await onlyRow(t, app.db)
  t.equal(row.status, 'pending', 'still pending after a failure')
  t.equal(row.attempts, 1)
  t.match(row.lastError, /ECONNREFUSED/, 'last_error says why')
  t.equal(row.nextAttemptAt.getTime(), clock.now().getTime() + BASE_MS, 'next attempt after the base delay')
  t.equal(row.sentAt, null)

  // Before the backoff has elapsed: nothing is tried.
  clock.advance(BASE_MS - 1000)
  t.same(await outbox.runOnce(), { sent: 0, failed: 0 }, 'not due yet')
  row = await onlyRow(t, app.db)
  t.equal(row.attempts, 1, 'attempts not incremented before the delay')

  // Second attempt (server still down): the delay doubles.
  clock.advance(1000)
  t.same(await outbox.runOnce(), { sent: 0, failed: 1 })
  row = await onlyRow(t, app.db)
  t.equal(row.status, 'pending')
  t.equal(row.attempts, 2)
  t.match(row.lastError, /ECONNREFUSED/)
  t.equal(row.nextAttemptAt.getTime(), clock.now().getTime() + 2 * BASE_MS, 'delay doubles after the second failure')

  clock.advance(2 * BASE_MS - 1000)
  t.same(await outbox.runOnce(), { sent: 0, failed: 0 }, 'not due yet after the second failure')
  t.equal((await onlyRow(t, app.db)).attempts, 2)

  // The server comes back on the same port.
  const smtp = await startSmtp(t, { port })
  t.equal(smtp.port, port)
  t.same(await outbox.runOnce(), { sent: 0, failed: 0 }, 'still waits for its backoff although the server is up')
  t.equal(smtp.messages.length, 0)

  clock.advance(1000)
  t.same(await outbox.runOnce(), { sent: 1, failed: 0 })
  t.equal(smtp.messages.length, 1)
  checkDelivered(t, smtp.messages[0], 'bob@example.com', 'Password changed', 'Your password was changed.')
  row = await onlyRow(t, app.db)
  t.equal(row.status, 'sent')
  t.equal(row.attempts, 3)
  t.equal(row.lastError, null, 'last_error cleared on delivery')
  t.equal(row.sentAt?.getTime(), clock.now().getTime())

  for (let i = 0; i < 3; i++) {
    clock.advance(3600_000)
    t.same(await outbox.runOnce(), { sent: 0, failed: 0 })
  }
  t.equal(smtp.messages.length, 1, 'delivered exactly once')
})

t.test('a restart in between loses nothing', async (t) => {
  t.test('enqueued by one app, delivered by the next one', async (t) => {
    const db = await ownDb(t)
    const smtp = await startSmtp(t)
    const clock = testClock()
    const app1 = await buildTestApp(t, { env: smtpEnv(smtp.port), now: clock.now, db })
    await enqueue(app1, 'carol@example.com', 'Reset your password', 'Use the link to reset.')
    await app1.close()
    t.equal(smtp.messages.length, 0, 'app 1 closed without delivering')
    t.equal((await onlyRow(t, db.db)).status, 'pending')

    clock.advance(5000)
    const app2 = await buildTestApp(t, { env: smtpEnv(smtp.port), now: clock.now, db })
    t.same(await app2.services.outbox.runOnce(), { sent: 1, failed: 0 })
    t.equal(smtp.messages.length, 1)
    checkDelivered(t, smtp.messages[0], 'carol@example.com', 'Reset your password', 'Use the link to reset.')
    const row = await onlyRow(t, db.db)
    t.equal(row.status, 'sent')
    t.equal(row.attempts, 1)
    t.same(await app2.services.outbox.runOnce(), { sent: 0, failed: 0 })
    t.equal(smtp.messages.length, 1, 'exactly once')
  })

  t.test('a failed attempt before the restart: the next app keeps the backoff and delivers', async (t) => {
    const db = await ownDb(t)
    const port = await deadPort(t)
    const clock = testClock()
    const app1 = await buildTestApp(t, { env: smtpEnv(port), now: clock.now, db })
    await enqueue(app1, 'dave@example.com', 'MFA disabled', 'Two-factor authentication was turned off.')
    t.same(await app1.services.outbox.runOnce(), { sent: 0, failed: 1 })
    const failedAt = clock.now().getTime()
    await app1.close()

    const smtp = await startSmtp(t, { port })
    const app2 = await buildTestApp(t, { env: smtpEnv(port), now: clock.now, db })
    let row = await onlyRow(t, db.db)
    t.equal(row.status, 'pending')
    t.equal(row.attempts, 1)
    t.match(row.lastError, /ECONNREFUSED/)
    t.equal(row.nextAttemptAt.getTime(), failedAt + BASE_MS)

    t.same(await app2.services.outbox.runOnce(), { sent: 0, failed: 0 }, 'not before the backoff')
    clock.advance(BASE_MS)
    t.same(await app2.services.outbox.runOnce(), { sent: 1, failed: 0 })
    t.equal(smtp.messages.length, 1)
    checkDelivered(t, smtp.messages[0], 'dave@example.com', 'MFA disabled', 'Two-factor authentication was turned off.')
    row = await onlyRow(t, db.db)
    t.equal(row.status, 'sent')
    t.equal(row.attempts, 2)
    t.equal(row.lastError, null)
    clock.advance(3600_000)
    t.same(await app2.services.outbox.runOnce(), { sent: 0, failed: 0 })
    t.equal(smtp.messages.length, 1, 'exactly once')
  })
  t.end()
})

t.test('claims are leased', async (t) => {
  t.test('a row being sent is not claimed again by another worker while the send is in flight', async (t) => {
    const db = await ownDb(t)
    const smtp = await startSmtp(t, { hold: true })
    const clock = testClock()
    const app1 = await buildTestApp(t, { env: smtpEnv(smtp.port), now: clock.now, db })
    const app2 = await buildTestApp(t, { env: smtpEnv(smtp.port), now: clock.now, db })
    await enqueue(app1, 'erin@example.com', 'Slow server', 'This one takes a while.')

    const inFlight = app1.services.outbox.runOnce()
    await smtp.arrived // app 1 has claimed the row and the server holds its DATA reply
    const claimedAt = clock.now().getTime()
    let row = await onlyRow(t, db.db)
    t.equal(row.status, 'pending')
    t.equal(row.attempts, 1, 'the claim counts the attempt')
    t.equal(row.nextAttemptAt.getTime(), claimedAt + LEASE_MS, 'the claim pushes next_attempt_at by the lease')

    t.same(await app2.services.outbox.runOnce(), { sent: 0, failed: 0 }, 'another worker does not take it')
    clock.advance(LEASE_MS - 1000)
    t.same(await app2.services.outbox.runOnce(), { sent: 0, failed: 0 }, 'nor just before the lease ends')

    smtp.release()
    t.same(await inFlight, { sent: 1, failed: 0 })
    t.equal(smtp.messages.length, 1)
    row = await onlyRow(t, db.db)
    t.equal(row.status, 'sent')
    t.equal(row.attempts, 1)
    clock.advance(LEASE_MS)
    t.same(await app2.services.outbox.runOnce(), { sent: 0, failed: 0 }, 'a sent row is never taken again')
    t.equal(smtp.messages.length, 1, 'exactly once')
  })

  t.test('a row claimed by a sender that died is delivered only after the lease expires', async (t) => {
    const smtp = await startSmtp(t)
    const clock = testClock()
    const app = await buildTestApp(t, { env: smtpEnv(smtp.port), now: clock.now })
    await enqueue(app, 'frank@example.com', 'Orphaned claim', 'Its first sender crashed.')
    // What a claim leaves behind when its process dies mid-delivery.
    const leaseEnd = new Date(clock.now().getTime() + LEASE_MS)
    await app.db.update(emailOutbox).set({ attempts: 1, nextAttemptAt: leaseEnd })

    t.same(await app.services.outbox.runOnce(), { sent: 0, failed: 0 }, 'not while the lease runs')
    clock.advance(LEASE_MS - 1)
    t.same(await app.services.outbox.runOnce(), { sent: 0, failed: 0 }, 'not 1 ms before the lease ends')
    t.equal(smtp.messages.length, 0)
    let row = await onlyRow(t, app.db)
    t.equal(row.attempts, 1, 'no attempt counted while leased')
    t.equal(row.status, 'pending')

    clock.advance(1)
    t.same(await app.services.outbox.runOnce(), { sent: 1, failed: 0 }, 'delivered once the lease has expired')
    t.equal(smtp.messages.length, 1)
    checkDelivered(t, smtp.messages[0], 'frank@example.com', 'Orphaned claim', 'Its first sender crashed.')
    row = await onlyRow(t, app.db)
    t.equal(row.status, 'sent')
    t.equal(row.attempts, 2)
    clock.advance(LEASE_MS * 2)
    t.same(await app.services.outbox.runOnce(), { sent: 0, failed: 0 })
    t.equal(smtp.messages.length, 1, 'exactly once')
  })
  t.end()
})

t.test('gives up after OUTBOX_MAX_ATTEMPTS and keeps the last error', async (t) => {
  // The server is up but refuses the recipient, with a different reply each time.
  const smtp = await startSmtp(t, { reject: (n) => `mailbox unavailable (try ${n})` })
  const clock = testClock()
  const app = await buildTestApp(t, { env: smtpEnv(smtp.port, { OUTBOX_MAX_ATTEMPTS: '2' }), now: clock.now })
  const outbox = app.services.outbox
  await enqueue(app, 'grace@example.com', 'Never arrives', 'Refused every time.')
  t.equal((await onlyRow(t, app.db)).maxAttempts, 2, 'max_attempts stored with the row')

  t.same(await outbox.runOnce(), { sent: 0, failed: 1 })
  let row = await onlyRow(t, app.db)
  t.equal(row.status, 'pending')
  t.equal(row.attempts, 1)
  t.match(row.lastError, /mailbox unavailable \(try 1\)/)
  t.equal(row.nextAttemptAt.getTime(), clock.now().getTime() + BASE_MS)

  clock.advance(BASE_MS)
  t.same(await outbox.runOnce(), { sent: 0, failed: 1 })
  row = await onlyRow(t, app.db)
  t.equal(row.status, 'failed', 'marked failed after the last attempt')
  t.equal(row.attempts, 2)
  t.match(row.lastError, /mailbox unavailable \(try 2\)/, 'the last error is kept')
  t.notMatch(row.lastError, /try 1/)
  t.equal(row.sentAt, null)

  for (let i = 0; i < 3; i++) {
    clock.advance(24 * 3600_000)
    t.same(await outbox.runOnce(), { sent: 0, failed: 0 }, 'no further attempts')
  }
  row = await onlyRow(t, app.db)
  t.equal(row.status, 'failed')
  t.equal(row.attempts, 2, 'attempts stay at the maximum')
  t.equal(smtp.messages.length, 0, 'nothing was ever accepted')
})

/** Waits until `check` is true, polling every 10 ms, failing after `ms`. */
async function until (check: () => boolean | Promise<boolean>, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await check()) return true
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return check()
}

t.test('the worker started by the app', async (t) => {
  t.test('delivers without any runOnce call, and stops on close', async (t) => {
    const smtp = await startSmtp(t)
    const app = await buildTestApp(t, { env: smtpEnv(smtp.port, { OUTBOX_POLL_INTERVAL_MS: '50' }) })
    await enqueue(app, 'heidi@example.com', 'From the worker', 'Delivered in the background.')

    t.ok(await until(async () => (await rows(app.db))[0]?.status === 'sent'), 'the worker delivered it')
    t.equal(smtp.messages.length, 1)
    checkDelivered(t, smtp.messages[0], 'heidi@example.com', 'From the worker', 'Delivered in the background.')
    const row = await onlyRow(t, app.db)
    t.equal(row.attempts, 1)
    t.ok(row.sentAt, 'sent_at set')

    await t.resolves(app.close(), 'app.close() stops the worker cleanly')
    // The database is the test file's, still open: an email queued now must stay queued.
    await enqueue(app, 'heidi@example.com', 'After close', 'Nobody should send this.')
    // A short wait of several poll intervals: a running worker would have sent it by then.
    await until(() => smtp.messages.length > 1, 300)
    t.equal(smtp.messages.length, 1, 'nothing sent after close')
    const left = (await rows(app.db)).find((r) => r.subject === 'After close')
    t.equal(left?.status, 'pending')
    t.equal(left?.attempts, 0, 'not even claimed')
  })

  t.test('close waits for the round in progress', async (t) => {
    const smtp = await startSmtp(t, { hold: true })
    const app = await buildTestApp(t, { env: smtpEnv(smtp.port, { OUTBOX_POLL_INTERVAL_MS: '50' }) })
    await enqueue(app, 'ivan@example.com', 'Mid-flight', 'Sent while the app closes.')
    await smtp.arrived // the worker is in the middle of sending
    let closed = false
    const closing = app.close().then(() => { closed = true })
    await new Promise((resolve) => setImmediate(resolve))
    t.equal(closed, false, 'close has not finished while the send is in flight')
    smtp.release()
    await closing
    const row = await onlyRow(t, app.db)
    t.equal(row.status, 'sent', 'the round finished (and recorded the delivery) before close resolved')
    t.equal(row.attempts, 1)
    t.equal(smtp.messages.length, 1)
  })
  t.end()
})

t.test('two workers on one database deliver each email exactly once', async (t) => {
  const db = await ownDb(t)
  const smtp = await startSmtp(t)
  const clock = testClock()
  const app1 = await buildTestApp(t, { env: smtpEnv(smtp.port), now: clock.now, db })
  const app2 = await buildTestApp(t, { env: smtpEnv(smtp.port), now: clock.now, db })
  const subjects = [1, 2, 3, 4, 5].map((i) => `Email number ${i}`)
  for (const [i, subject] of subjects.entries()) {
    await enqueue(i % 2 === 0 ? app1 : app2, `user${i + 1}@example.com`, subject, `Body of email ${i + 1}.`)
  }

  const results = await Promise.all([
    app1.services.outbox.runOnce(), app2.services.outbox.runOnce(),
    app1.services.outbox.runOnce(), app2.services.outbox.runOnce(),
    app1.services.outbox.runOnce(), app2.services.outbox.runOnce()
  ])
  t.equal(results.reduce((n, r) => n + r.sent, 0), 5, 'five sent in total across the workers')
  t.equal(results.reduce((n, r) => n + r.failed, 0), 0, 'none failed')
  t.equal(smtp.messages.length, 5, 'five messages received')
  t.same(smtp.messages.map((m) => m.headers.get('subject')).sort(), subjects, 'each email once')
  for (const [i, subject] of subjects.entries()) {
    const msg = smtp.messages.find((m) => m.headers.get('subject') === subject)
    checkDelivered(t, msg, `user${i + 1}@example.com`, subject, `Body of email ${i + 1}.`)
  }
  const all = await rows(db.db)
  t.equal(all.length, 5)
  t.ok(all.every((r) => r.status === 'sent' && r.attempts === 1), 'every row sent on its first attempt')

  clock.advance(LEASE_MS + 1)
  const again = await Promise.all([app1.services.outbox.runOnce(), app2.services.outbox.runOnce()])
  t.same(again, [{ sent: 0, failed: 0 }, { sent: 0, failed: 0 }])
  t.equal(smtp.messages.length, 5, 'still five')
})
