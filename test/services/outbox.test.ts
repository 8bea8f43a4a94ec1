/**
 * The durable email outbox against a real SMTP server on loopback (smtp-server), delivered by
 * the app's own nodemailer SMTP mailer (SMTP_HOST set). Delivery is driven with
 * `outbox.runOnce()` and an injected clock, except where the app's worker is under test.
 */
import { asc, sql } from 'drizzle-orm'
import t from 'tap'
import type { App } from '../../src/app.ts'
import type { DbHandle } from '../../src/db/client.ts'
import { emailOutbox } from '../../src/db/schema.ts'
import { loggerOptions } from '../../src/logger.ts'
import { buildTestApp, logCapture, openTestDb, round, testClock, type Test } from '../helper.ts'
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
  t.same(await app.services.outbox.runOnce(), round({ sent: 1 }))
  t.equal(smtp.messages.length, 1, 'one message received')
  checkDelivered(t, smtp.messages[0], 'alice@example.com', 'Your refresh token was reused', 'Someone reused an old token.\nAll sessions were revoked.')

  const row = await onlyRow(t, app.db)
  t.equal(row.status, 'sent')
  t.equal(row.attempts, 1)
  t.equal(row.lastError, null)
  t.equal(row.sentAt?.getTime(), clock.now().getTime(), 'sent_at is the (injected) time of delivery')

  for (const step of [0, LEASE_MS + 1, 24 * 3600_000]) {
    clock.advance(step)
    t.same(await app.services.outbox.runOnce(), round({}), `nothing more after +${step} ms`)
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
  t.same(await outbox.runOnce(), round({ retry: 1 }))
  let row = await onlyRow(t, app.db)
  t.equal(row.status, 'pending', 'still pending after a failure')
  t.equal(row.attempts, 1)
  t.match(row.lastError, /ECONNREFUSED/, 'last_error says why')
  t.equal(row.nextAttemptAt.getTime(), clock.now().getTime() + BASE_MS, 'next attempt after the base delay')
  t.equal(row.sentAt, null)

  // Before the backoff has elapsed: nothing is tried.
  clock.advance(BASE_MS - 1000)
  t.same(await outbox.runOnce(), round({}), 'not due yet')
  row = await onlyRow(t, app.db)
  t.equal(row.attempts, 1, 'attempts not incremented before the delay')

  // Second attempt (server still down): the delay doubles.
  clock.advance(1000)
  t.same(await outbox.runOnce(), round({ retry: 1 }))
  row = await onlyRow(t, app.db)
  t.equal(row.status, 'pending')
  t.equal(row.attempts, 2)
  t.match(row.lastError, /ECONNREFUSED/)
  t.equal(row.nextAttemptAt.getTime(), clock.now().getTime() + 2 * BASE_MS, 'delay doubles after the second failure')

  clock.advance(2 * BASE_MS - 1000)
  t.same(await outbox.runOnce(), round({}), 'not due yet after the second failure')
  t.equal((await onlyRow(t, app.db)).attempts, 2)

  // The server comes back on the same port.
  const smtp = await startSmtp(t, { port })
  t.equal(smtp.port, port)
  t.same(await outbox.runOnce(), round({}), 'still waits for its backoff although the server is up')
  t.equal(smtp.messages.length, 0)

  clock.advance(1000)
  t.same(await outbox.runOnce(), round({ sent: 1 }))
  t.equal(smtp.messages.length, 1)
  checkDelivered(t, smtp.messages[0], 'bob@example.com', 'Password changed', 'Your password was changed.')
  row = await onlyRow(t, app.db)
  t.equal(row.status, 'sent')
  t.equal(row.attempts, 3)
  t.equal(row.lastError, null, 'last_error cleared on delivery')
  t.equal(row.sentAt?.getTime(), clock.now().getTime())

  for (let i = 0; i < 3; i++) {
    clock.advance(3600_000)
    t.same(await outbox.runOnce(), round({}))
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
    t.same(await app2.services.outbox.runOnce(), round({ sent: 1 }))
    t.equal(smtp.messages.length, 1)
    checkDelivered(t, smtp.messages[0], 'carol@example.com', 'Reset your password', 'Use the link to reset.')
    const row = await onlyRow(t, db.db)
    t.equal(row.status, 'sent')
    t.equal(row.attempts, 1)
    t.same(await app2.services.outbox.runOnce(), round({}))
    t.equal(smtp.messages.length, 1, 'exactly once')
  })

  t.test('a failed attempt before the restart: the next app keeps the backoff and delivers', async (t) => {
    const db = await ownDb(t)
    const port = await deadPort(t)
    const clock = testClock()
    const app1 = await buildTestApp(t, { env: smtpEnv(port), now: clock.now, db })
    await enqueue(app1, 'dave@example.com', 'MFA disabled', 'Two-factor authentication was turned off.')
    t.same(await app1.services.outbox.runOnce(), round({ retry: 1 }))
    const failedAt = clock.now().getTime()
    await app1.close()

    const smtp = await startSmtp(t, { port })
    const app2 = await buildTestApp(t, { env: smtpEnv(port), now: clock.now, db })
    let row = await onlyRow(t, db.db)
    t.equal(row.status, 'pending')
    t.equal(row.attempts, 1)
    t.match(row.lastError, /ECONNREFUSED/)
    t.equal(row.nextAttemptAt.getTime(), failedAt + BASE_MS)

    t.same(await app2.services.outbox.runOnce(), round({}), 'not before the backoff')
    clock.advance(BASE_MS)
    t.same(await app2.services.outbox.runOnce(), round({ sent: 1 }))
    t.equal(smtp.messages.length, 1)
    checkDelivered(t, smtp.messages[0], 'dave@example.com', 'MFA disabled', 'Two-factor authentication was turned off.')
    row = await onlyRow(t, db.db)
    t.equal(row.status, 'sent')
    t.equal(row.attempts, 2)
    t.equal(row.lastError, null)
    clock.advance(3600_000)
    t.same(await app2.services.outbox.runOnce(), round({}))
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

    t.same(await app2.services.outbox.runOnce(), round({}), 'another worker does not take it')
    clock.advance(LEASE_MS - 1000)
    t.same(await app2.services.outbox.runOnce(), round({}), 'nor just before the lease ends')

    smtp.release()
    t.same(await inFlight, round({ sent: 1 }))
    t.equal(smtp.messages.length, 1)
    row = await onlyRow(t, db.db)
    t.equal(row.status, 'sent')
    t.equal(row.attempts, 1)
    clock.advance(LEASE_MS)
    t.same(await app2.services.outbox.runOnce(), round({}), 'a sent row is never taken again')
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

    t.same(await app.services.outbox.runOnce(), round({}), 'not while the lease runs')
    clock.advance(LEASE_MS - 1)
    t.same(await app.services.outbox.runOnce(), round({}), 'not 1 ms before the lease ends')
    t.equal(smtp.messages.length, 0)
    let row = await onlyRow(t, app.db)
    t.equal(row.attempts, 1, 'no attempt counted while leased')
    t.equal(row.status, 'pending')

    clock.advance(1)
    t.same(await app.services.outbox.runOnce(), round({ sent: 1 }), 'delivered once the lease has expired')
    t.equal(smtp.messages.length, 1)
    checkDelivered(t, smtp.messages[0], 'frank@example.com', 'Orphaned claim', 'Its first sender crashed.')
    row = await onlyRow(t, app.db)
    t.equal(row.status, 'sent')
    t.equal(row.attempts, 2)
    clock.advance(LEASE_MS * 2)
    t.same(await app.services.outbox.runOnce(), round({}))
    t.equal(smtp.messages.length, 1, 'exactly once')
  })
  t.end()
})

t.test('rolling upgrade: a row written by an instance of the previous release is accepted and delivered, then erased', async (t) => {
  const smtp = await startSmtp(t)
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { env: smtpEnv(smtp.port), now: clock.now })
  // The previous release's insert: a plain text body, max_attempts, no expires_at.
  await app.db.execute(sql`insert into email_outbox (to_address, subject, text_body, kind, max_attempts, next_attempt_at, created_at)
    values ('old@example.com', 'From the old release', 'plain body', 'password_changed', 8, ${clock.now().toISOString()}::timestamptz, ${clock.now().toISOString()}::timestamptz)`)
  const [queued] = await rows(app.db)
  t.ok(queued !== undefined && queued.expiresAt > clock.now(), 'expires_at got its default')
  t.same(await app.services.outbox.runOnce(), round({ sent: 1 }))
  checkDelivered(t, smtp.messages[0], 'old@example.com', 'From the old release', 'plain body')
  t.match((await rows(app.db))[0], { status: 'sent', textBody: null, bodySealed: null })
})

t.test('a permanent rejection of the recipient (SMTP 5xx) fails at once, keeps the error and erases the body', async (t) => {
  const smtp = await startSmtp(t, { reject: (n) => `no such mailbox (try ${n})` })
  const clock = testClock()
  const app = await buildTestApp(t, { env: smtpEnv(smtp.port), now: clock.now })
  await enqueue(app, 'grace@example.com', 'Never arrives', 'Refused for good.')

  t.same(await app.services.outbox.runOnce(), round({ failed: 1 }))
  const row = await onlyRow(t, app.db)
  t.match(row, { status: 'failed', attempts: 1, sentAt: null, bodySealed: null, textBody: null, claimId: null, toAddress: 'grace@example.com' })
  t.match(row.lastError, /no such mailbox \(try 1\)/)
  clock.advance(24 * 3600_000)
  t.same(await app.services.outbox.runOnce(), round({}), 'never tried again')
  t.equal(smtp.messages.length, 0)
})

t.test('transient failures (SMTP 4xx, the server down) keep retrying, at most OUTBOX_BACKOFF_MAX_SECONDS apart, until delivered', async (t) => {
  let refusing = true
  const smtp = await startSmtp(t, { reject: () => (refusing ? 'try again later' : undefined), rejectCode: 451 })
  const clock = testClock()
  const app = await buildTestApp(t, { env: smtpEnv(smtp.port), now: clock.now })
  await enqueue(app, 'heidi@example.com', 'Eventually', 'Worth the wait.')

  // Far past the old limit of 8 attempts: a reuse alert or a reset link is not dropped after an hour.
  const gaps: number[] = []
  for (let attempt = 1; attempt <= 12; attempt++) {
    t.same(await app.services.outbox.runOnce(), round({ retry: 1 }), `attempt ${attempt} refused with 451`)
    const row = await onlyRow(t, app.db)
    t.equal(row.status, 'pending')
    gaps.push(row.nextAttemptAt.getTime() - clock.now().getTime())
    clock.set(row.nextAttemptAt)
  }
  t.same(gaps.slice(0, 6), [30_000, 60_000, 120_000, 240_000, 480_000, 900_000], 'exponential from 30 s, capped at 15 minutes')
  t.ok(gaps.slice(5).every((g) => g === 900_000), 'and stays at the cap')

  refusing = false
  t.same(await app.services.outbox.runOnce(), round({ sent: 1 }))
  const row = await onlyRow(t, app.db)
  t.match(row, { status: 'sent', attempts: 13, bodySealed: null, lastError: null })
  t.equal(smtp.messages.length, 1, 'delivered exactly once')
})

t.test('an email that is no longer useful is dropped as expired, not sent late', async (t) => {
  const port = await deadPort(t)
  const clock = testClock()
  const app = await buildTestApp(t, { env: smtpEnv(port), now: clock.now })
  const expiresAt = new Date(clock.now().getTime() + 30 * 60_000) // a reset link's lifetime
  await app.services.outbox.enqueue(app.db, 'password_reset', { to: 'ivan@example.com', subject: 'Reset', text: 'https://app/reset?token=x' }, { expiresAt })

  t.same(await app.services.outbox.runOnce(), round({ retry: 1 }))
  for (let i = 0; i < 10; i++) {
    const row = await onlyRow(t, app.db)
    if (row.status !== 'pending') break
    clock.set(row.nextAttemptAt)
    await app.services.outbox.runOnce()
  }
  const row = await onlyRow(t, app.db)
  t.match(row, { status: 'expired', bodySealed: null, textBody: null, sentAt: null })
  t.ok(row.lastError, 'the last error says why it never went out')

  const smtp = await startSmtp(t, { port })
  clock.advance(3600_000)
  t.same(await app.services.outbox.runOnce(), round({}))
  t.equal(smtp.messages.length, 0, 'the server back up never gets the dead link')
})

t.test('the backlog and the age of the oldest pending email are logged as they grow, and once when cleared', async (t) => {
  const port = await deadPort(t)
  const clock = testClock()
  const logs = logCapture()
  const app = await buildTestApp(t, { env: smtpEnv(port), now: clock.now, logger: loggerOptions('info', logs.stream) })
  await enqueue(app, 'a@example.com', 'One', 'first')
  clock.advance(90_000)
  await enqueue(app, 'b@example.com', 'Two', 'second')
  await app.services.outbox.runOnce()
  const growing = logs.lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'email outbox backlog is growing')
  t.equal(growing.length, 1)
  t.match(growing[0], { level: 40, pending: 2, oldestPendingSeconds: 90 })
  t.notMatch(logs.text(), /first|second/, 'bodies are never logged')

  const smtp = await startSmtp(t, { port })
  clock.advance(3600_000)
  await app.services.outbox.runOnce()
  t.equal(smtp.messages.length, 2)
  t.ok(logs.lines.some((l) => JSON.parse(l).msg === 'email outbox backlog cleared'))
})

t.test('a worker that lost its claim changes nothing', async (t) => {
  // Worker A's send hangs past its lease; worker B takes the row over and delivers it.
  const setup = async (t: Test, outcome: 'succeeds' | 'fails') => {
    const db = await ownDb(t)
    const clock = testClock()
    const smtp = await startSmtp(t)
    let startedA: () => void = () => {}
    const aStarted = new Promise<void>((resolve) => { startedA = resolve })
    let finishA: () => void = () => {}
    const slowMailer = {
      send: () => {
        startedA()
        return new Promise<void>((ok, fail) => { finishA = () => (outcome === 'succeeds' ? ok() : fail(new Error('connection reset'))) })
      }
    }
    const appA = await buildTestApp(t, { db, now: clock.now, mailer: slowMailer })
    const appB = await buildTestApp(t, { db, env: smtpEnv(smtp.port), now: clock.now })
    await enqueue(appB, 'judy@example.com', 'Once', 'only once')
    const roundA = appA.services.outbox.runOnce()
    await aStarted
    clock.advance(LEASE_MS + 1)
    t.same(await appB.services.outbox.runOnce(), round({ sent: 1 }), 'B delivers after A\'s lease ran out')
    const sentAt = (await onlyRow(t, db.db)).sentAt
    finishA()
    await roundA
    const row = await onlyRow(t, db.db)
    t.match(row, { status: 'sent', claimId: null, bodySealed: null })
    t.same(row.sentAt, sentAt, 'B\'s completion stands')
    t.equal(smtp.messages.length, 1)
  }
  t.test('a late failure does not set a sent row back to pending', (t) => setup(t, 'fails'))
  t.test('a late success does not mark it sent a second time', (t) => setup(t, 'succeeds'))
  t.end()
})

t.test('a batch finishes inside its lease: a send that could not end before the lease does is not started', async (t) => {
  const clock = testClock()
  const delivered: string[] = []
  // Each send takes 50 s of the 120 s lease; a send may take up to 30 s (OutboxSettings.sendTimeoutMs).
  const mailer = { send: async (mail: { subject: string }) => { clock.advance(50_000); delivered.push(mail.subject) } }
  const app = await buildTestApp(t, { now: clock.now, mailer })
  for (const subject of ['one', 'two', 'three']) {
    await enqueue(app, 'kim@example.com', subject, subject)
    clock.advance(1)
  }
  t.same(await app.services.outbox.runOnce(), round({ sent: 2, released: 1 }), 'the third would have ended after the lease')
  const third = (await rows(app.db)).find((r) => r.subject === 'three')
  t.match(third, { status: 'pending', attempts: 0, claimId: null })
  t.ok(third !== undefined && third.nextAttemptAt <= clock.now(), 'released, due at once')
  t.same(await app.services.outbox.runOnce(), round({ sent: 1 }))
  t.same(delivered, ['one', 'two', 'three'])
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
  t.same(again, [round({}), round({})])
  t.equal(smtp.messages.length, 5, 'still five')
})
