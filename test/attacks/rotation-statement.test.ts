/**
 * The one-statement rotation (account-store's `rotateLiveRefreshToken`) under forced
 * interleavings: a refresh that has taken its snapshot and then waits for the user row lock
 * while another transaction holds it. On PostgreSQL the test waits until the refresh really is
 * waiting for a lock (pg_stat_activity); on PGlite (one connection) the holder's transaction
 * blocks every other query, which gives the same order.
 */
import { and, eq, isNotNull, isNull, sql } from 'drizzle-orm'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { authEvents, refreshTokens, sessions, users } from '../../src/db/schema.ts'
import { transaction } from '../../src/db/transaction.ts'
import type { Tx } from '../../src/db/client.ts'
import { assertError, bearer, buildTestApp, login, refreshCookieIn, rowsOf, signup, signupAdmin, testClock, within } from '../helper.ts'

const onPostgres = process.env.TEST_DATABASE_URL !== undefined && process.env.TEST_DATABASE_URL !== ''

const refresh = (app: App, cookie: string) =>
  app.inject({ method: 'POST', url: '/api/auth/refresh', cookies: { refresh_token: cookie } })

/** Waits until `n` other statements wait for a row lock (PostgreSQL), or lets queued requests reach the database (PGlite). */
async function waitingForLocks (app: App, n: number): Promise<void> {
  if (!onPostgres) {
    await new Promise((resolve) => setTimeout(resolve, 300))
    return
  }
  const took = await within(5000, async () => {
    const [row] = rowsOf<{ n: number }>(await app.db.execute(sql`
      select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`))
    return (row?.n ?? 0) >= n
  })
  if (took === 0) throw new Error(`fewer than ${n} statements waiting for a lock`)
}

/** Runs `fn` holding the user's row lock (as revocations, logins and admin writes do) until `release` resolves. */
async function holdingUser (app: App, userId: string, fn: (tx: Tx) => Promise<void>, release: () => Promise<void>) {
  await transaction(app.db, async (tx) => {
    await app.services.store.lockUser(tx, userId)
    await fn(tx)
    await release()
  })
}

t.test('two racing refreshes of one cookie held up by a user lock past the grace window: both get the one successor, nothing is revoked', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const s = await signup(app)
  const cookie = refreshCookieIn(s.res)

  let pending: Array<Promise<Awaited<ReturnType<typeof refresh>>>> = []
  await holdingUser(app, s.user.id, async () => {}, async () => {
    // Two tabs refresh at the same instant; the database keeps them waiting 11 s (longer than
    // REFRESH_REUSE_GRACE_SECONDS, 10; with a window of 1 or 2 s a far shorter wait does it).
    // The rotation's rotated_at is the first one's arrival, so the second must be judged by its
    // arrival too, not by the time its fallback classification runs after the wait.
    pending = [refresh(app, cookie), refresh(app, cookie)]
    await waitingForLocks(app, 2)
    clock.advance(11_000)
  })
  const [a, b] = await Promise.all(pending)
  t.equal(a?.statusCode, 200, `first: ${a?.statusCode} ${a?.body}`)
  t.equal(b?.statusCode, 200, `second: ${b?.statusCode} ${b?.body}`)
  t.equal(refreshCookieIn(b ?? { cookies: [] }), refreshCookieIn(a ?? { cookies: [] }), 'one and the same successor')
  t.equal((await app.db.select().from(sessions).where(isNull(sessions.revokedAt))).length, 1, 'the session lives on')
  t.same(await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'refresh_token_reused')), [], 'no reuse recorded')
})

t.test('a logout-all committed while the refresh waits for the user lock: refused, nothing rotated or recorded', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const cookie = refreshCookieIn(s.res)

  let pending: Promise<Awaited<ReturnType<typeof refresh>>> | undefined
  await holdingUser(app, s.user.id, async (tx) => {
    // revoke() as logout-all runs it: the user lock (held), the sessions, then the tokens.
    t.equal((await app.services.store.revokeAllSessions(tx, s.user.id, 'logout_all')).length, 1)
  }, async () => {
    pending = refresh(app, cookie) // its snapshot sees the session and the token still live
    await waitingForLocks(app, 1)
  })
  assertError(t, await (pending ?? refresh(app, cookie)), 401, 'REFRESH_TOKEN_INVALID')
  t.same(await app.db.select().from(refreshTokens).where(isNotNull(refreshTokens.parentId)), [], 'no successor')
  t.same(await app.db.select().from(refreshTokens).where(isNotNull(refreshTokens.rotatedAt)), [], 'the token was not marked rotated')
  t.same(await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'refresh')), [], 'no refresh recorded')
})

t.test('an admin deactivation committed while the refresh waits for the user lock: refused, nothing rotated', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const s = await signup(app)
  const cookie = refreshCookieIn(s.res)

  let pending: Promise<Awaited<ReturnType<typeof refresh>>> | undefined
  await transaction(app.db, async (tx) => {
    const updated = await app.services.store.updateStatus(tx, admin.user.id, s.user.id, { isActive: false }, 'deactivated_by_admin')
    t.match(updated, { kind: 'updated', revoked: 1 })
    pending = refresh(app, cookie)
    await waitingForLocks(app, 1)
  })
  assertError(t, await (pending ?? refresh(app, cookie)), 401, 'REFRESH_TOKEN_INVALID')
  t.same(await app.db.select().from(refreshTokens).where(isNotNull(refreshTokens.parentId)), [], 'no successor')
  t.same(await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'refresh')), [], 'no refresh recorded')
  const [user] = await app.db.select().from(users).where(eq(users.id, s.user.id))
  t.equal(user?.isActive, false)
})

t.test('parallel refreshes of two sessions racing an admin deactivation and a logout-all: no 500, one successor per parent, a refresh event per rotation', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const s = await signup(app)
  const other = refreshCookieIn(await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: s.email, password: s.password } }))
  const cookies = [refreshCookieIn(s.res), other]

  const [deactivate, logoutAll, ...refreshes] = await Promise.all([
    app.inject({ method: 'PATCH', url: `/api/admin/users/${s.user.id}`, headers: bearer(admin.accessToken), payload: { isActive: false } }),
    app.inject({ method: 'POST', url: '/api/auth/logout-all', headers: bearer(s.accessToken) }),
    ...Array.from({ length: 12 }, (_, i) => refresh(app, cookies[i % 2] ?? ''))
  ])
  t.equal(deactivate?.statusCode, 200, `deactivation: ${deactivate?.body}`)
  t.ok(logoutAll?.statusCode === 200 || logoutAll?.statusCode === 401, `logout-all: ${logoutAll?.statusCode}`)
  for (const r of refreshes) t.ok(r.statusCode === 200 || r.statusCode === 401, `refresh: ${r.statusCode} ${r.statusCode === 500 ? r.body : ''}`)

  const userTokens = await app.db.select().from(refreshTokens).where(eq(refreshTokens.userId, s.user.id))
  t.same(userTokens.filter((r) => r.rotatedAt === null && r.revokedAt === null), [], 'no live token is left')
  const children = userTokens.filter((r) => r.parentId !== null)
  t.equal(new Set(children.map((r) => r.parentId)).size, children.length, 'at most one successor per parent')
  const rotations = await app.db.select().from(authEvents).where(and(eq(authEvents.eventType, 'refresh'), eq(authEvents.userId, s.user.id)))
  t.equal(rotations.filter((e) => e.metadata?.replayedWithinGrace !== true).length, children.length, 'a refresh event for each rotation, and only for one')
  for (const i of [0, 1]) {
    const successors = new Set(refreshes.filter((r, j) => j % 2 === i && r.statusCode === 200).map((r) => refreshCookieIn(r)))
    t.ok(successors.size <= 1, `session ${i}: every 200 carries the one successor`)
  }
})

t.test('a login whose password checked out while an admin deactivated the account: 403, no session, no login recorded', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const s = await signup(app)

  let pending: ReturnType<typeof login> | undefined
  await transaction(app.db, async (tx) => {
    const updated = await app.services.store.updateStatus(tx, admin.user.id, s.user.id, { isActive: false }, 'deactivated_by_admin')
    t.match(updated, { kind: 'updated', revoked: 1 })
    pending = login(app, s.email)
    await waitingForLocks(app, 1)
  })
  assertError(t, await (pending ?? login(app, s.email)), 403, 'ACCOUNT_DISABLED')
  t.same(await app.db.select().from(sessions).where(and(eq(sessions.userId, s.user.id), isNull(sessions.revokedAt))), [], 'no live session')
  t.same(await app.db.select().from(authEvents).where(and(eq(authEvents.userId, s.user.id), eq(authEvents.eventType, 'login_success'))), [], 'no login recorded')
  const [refused] = await app.db.select().from(authEvents).where(and(eq(authEvents.userId, s.user.id), eq(authEvents.eventType, 'login_failure')))
  t.match(refused, { success: false, failureReason: 'account_disabled', email: s.email }, 'the refusal is recorded')
})
