/**
 * Retention: audit events and finished emails are pruned after their days; pending email never;
 * one instance prunes at a time.
 */
import { eq, sql } from 'drizzle-orm'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { authEvents, emailOutbox, webauthnChallenges } from '../../src/db/schema.ts'
import { buildTestApp, openTestDb, readMail, rowsOf, signup, testClock } from '../helper.ts'

const DAY = 86_400_000
const counts = async (app: App) => ({
  events: (await app.db.select().from(authEvents)).length,
  outbox: (await app.db.select().from(emailOutbox)).map((r) => r.status).sort()
})

t.test('events after AUTH_EVENTS_RETENTION_DAYS, finished emails after OUTBOX_RETENTION_DAYS; pending email stays', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const s = await signup(app)
  await app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email: s.email } })
  await readMail(app) // delivered: sent, the reset email and the signup's verification mail
  await app.services.outbox.enqueue(app.db, 'password_changed', { to: s.email, subject: 'Queued', text: 'waits' })
  t.same(await counts(app), { events: 2, outbox: ['pending', 'sent', 'sent'] })

  clock.advance(6 * DAY)
  t.same(await app.services.retention.runOnce(), { skipped: false, authEvents: 0, outbox: 0, webauthnChallenges: 0 }, 'nothing is old enough yet')
  clock.advance(2 * DAY)
  t.same(await app.services.retention.runOnce(), { skipped: false, authEvents: 0, outbox: 2, webauthnChallenges: 0 }, 'the sent emails (the reset and the signup\'s verification mail), after 7 days')
  t.same(await counts(app), { events: 2, outbox: ['pending'] }, 'the pending one stays, however old')
  clock.advance(83 * DAY)
  t.same(await app.services.retention.runOnce(), { skipped: false, authEvents: 2, outbox: 0, webauthnChallenges: 0 }, 'the events, after 90 days')
  t.same(await counts(app), { events: 0, outbox: ['pending'] })
})

t.test('expired WebAuthn challenges go (anyone may ask for login options)', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const options = () => app.inject({ method: 'POST', url: '/api/auth/passkeys/login/options', payload: {} })
  for (let i = 0; i < 3; i++) t.equal((await options()).statusCode, 200)
  const challenges = async () => (await app.db.select().from(webauthnChallenges)).length
  t.equal(await challenges(), 3)
  clock.advance(4 * 60_000)
  t.match(await app.services.retention.runOnce(), { webauthnChallenges: 0 }, 'still usable for a minute')
  await options()
  clock.advance(2 * 60_000)
  t.match(await app.services.retention.runOnce(), { webauthnChallenges: 3 }, 'the three expired ones')
  t.equal(await challenges(), 1, 'the newer one stays until it expires')
})

t.test('the app runs retention itself every RETENTION_INTERVAL_MINUTES, starting when ready', async (t) => {
  const db = await openTestDb()
  t.teardown(() => db.drop())
  const clock = testClock(new Date())
  const first = await buildTestApp(t, { db, now: clock.now })
  await signup(first)
  await first.close()
  clock.advance(100 * DAY)
  const second = await buildTestApp(t, { db, now: clock.now, env: { RETENTION_INTERVAL_MINUTES: '60' } })
  let left = 1
  for (let i = 0; i < 100 && left > 0; i++) {
    left = (await second.db.select().from(authEvents).where(eq(authEvents.eventType, 'signup'))).length
    if (left > 0) await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.equal(left, 0, 'the old signup event is gone without any call')
})

if (process.env.TEST_DATABASE_URL !== undefined && process.env.TEST_DATABASE_URL !== '') {
  t.test('one instance prunes at a time: another skips its round while the lock is held', async (t) => {
    const clock = testClock(new Date())
    const app = await buildTestApp(t, { now: clock.now })
    await signup(app)
    clock.advance(100 * DAY)
    const { default: postgres } = await import('postgres')
    // Another instance, in the middle of its round, holds the lock on this test's database.
    const [row] = rowsOf(await app.db.execute(sql`select current_database() as name`))
    const target = new URL(process.env.TEST_DATABASE_URL ?? '')
    target.pathname = `/${String(row?.name)}`
    const peer = postgres(target.toString(), { max: 1, onnotice: () => {} })
    t.teardown(() => peer.end())
    const held = await peer.reserve()
    await held`select pg_advisory_lock(7245310022)`
    t.same(await app.services.retention.runOnce(), { skipped: true })
    t.equal((await app.db.select().from(authEvents)).length, 1, 'nothing pruned by the skipping instance')
    await held`select pg_advisory_unlock(7245310022)`
    held.release()
    t.same(await app.services.retention.runOnce(), { skipped: false, authEvents: 1, outbox: 0, webauthnChallenges: 0 })
  })
}
