import { and, count, desc, eq, gt, ilike, inArray, isNull, lt, lte, ne, or, sql } from 'drizzle-orm'
import { type Db, executePrepared, type Queryable, rowsOf, type Tx } from '../db/client.ts'
import { refreshTokens, sessions, users, type RefreshTokenRow, type SessionRow, type UserRow } from '../db/schema.ts'
import { afterCommit } from '../db/transaction.ts'
import { INSERT_EVENT, type RequestContext } from './audit.ts'
import { hashOpaqueToken } from './opaque-tokens.ts'
import type { Broadcast } from './state-store.ts'
import type { Telemetry } from './telemetry.ts'

export type Amr = 'pwd' | 'otp' | 'passkey'
export type Role = 'user' | 'admin'

/** What `GET /api/auth/me` shows of a user: the row without any secret. */
export type PublicUserRow = Pick<UserRow, 'id' | 'email' | 'emailVerified' | 'role' | 'isActive' | 'mfaEnabled' | 'passwordMustChange' | 'createdAt' | 'lastLoginAt'>

export interface SessionState {
  /** false when the session is revoked or expired, or the user deactivated or gone. */
  active: boolean
  /** The session's owner: a token is good only for the user its session belongs to. */
  userId: string | null
  role: Role
  passwordMustChange: boolean
  /**
   * The owner's row as `/me` shows it, cached with the state: every write to those columns
   * (role, isActive, passwordMustChange, MFA on or off) drops the user's states here and on every
   * instance; `lastLoginAt` of the user's other sessions may lag by `checkTtlSeconds`.
   */
  user: PublicUserRow | null
}

/** Which of a user's live sessions a revocation ends. */
export type SessionScope = { only: string } | { except: string } | 'all'

/** A refresh token found by its hash, before anything is locked. */
export interface FoundRefreshToken { hash: string, userId: string, sessionId: string }

declare const locked: unique symbol
/**
 * A refresh token with its session and user, as read under their row locks (user → session →
 * token) by `lockRefreshToken`, the only place that makes one: the writes that rotate a token
 * take it, so they cannot be called without the locks held.
 */
export interface LockedFamily {
  user: UserRow
  session: SessionRow
  row: RefreshTokenRow
  readonly [locked]: true
}

const MAX_CACHE = 100_000
/** The channel revoked (or changed) session ids travel on to every instance. */
export const REVOCATION_CHANNEL = 'gatehouse.sessions.changed'
/** Ids per message: PostgreSQL NOTIFY payloads must stay under 8000 bytes. */
const IDS_PER_MESSAGE = 150
const UUID_LIST = /^[0-9a-f-]{36}(,[0-9a-f-]{36})*$/

/** The columns of a `u` (users) row in a raw statement that `publicUserOf` reads. */
const PUBLIC_USER_COLUMNS = sql.raw(`u.id, u.email, u.email_verified, u.role, u.is_active, u.mfa_enabled, u.password_must_change,
  (extract(epoch from u.created_at) * 1000)::float8 as created_ms,
  (extract(epoch from u.last_login_at) * 1000)::float8 as last_login_ms`)
interface RawPublicUser {
  id: string
  email: string
  email_verified: boolean
  role: Role
  is_active: boolean
  mfa_enabled: boolean
  password_must_change: boolean
  created_ms: number
  last_login_ms: number | null
}
const publicUserOf = (row: RawPublicUser): PublicUserRow => ({
  id: row.id,
  email: row.email,
  emailVerified: row.email_verified,
  role: row.role,
  isActive: row.is_active,
  mfaEnabled: row.mfa_enabled,
  passwordMustChange: row.password_must_change,
  createdAt: new Date(Number(row.created_ms)),
  lastLoginAt: row.last_login_ms === null ? null : new Date(Number(row.last_login_ms))
})

/** A `text[]` from a raw query: parsed already (postgres.js), or PostgreSQL's `{a,b}` (when it is not). */
function parseTextArray (value: string[] | string): string[] {
  if (Array.isArray(value)) return value
  const inner = value.replace(/^\{|\}$/g, '')
  return inner === '' ? [] : inner.split(',').map((v) => v.replace(/^"|"$/g, ''))
}

/**
 * The one owner of the `users`, `sessions` and `refresh_tokens` tables (after supabase/auth's
 * `internal/models`): callers say what they want (`revokeAllSessions(tx, userId, reason)`),
 * never the SQL, and no other module imports these tables.
 *
 * **Lock order: user row → session rows → refresh-token rows.** Every write to a user's sessions
 * or refresh tokens goes through `lockUser` first (a revocation, a login, a rotation, whose reuse
 * path revokes every session), so two of them serialise on the user row and can never deadlock on
 * session rows. The functions that take a `Tx` and write sessions take that lock themselves.
 *
 * The per-instance cache of session state (`sessionState`) lives here too, and every write that
 * changes what it holds (a revocation, a role, a deactivation, passwordMustChange) drops the
 * affected entries once its transaction has committed: dropped earlier, a request racing the
 * transaction could read the old state and cache it again. The ids are also broadcast, so every
 * other instance drops them within moments; `checkTtlSeconds` bounds the staleness when a message
 * is lost.
 */
export function createAccountStore (deps: { db: Db, now: () => Date, checkTtlSeconds: number, broadcast?: Broadcast, telemetry?: Telemetry }) {
  const { db, now } = deps
  const cache = new Map<string, { state: SessionState, until: number }>()
  /** Bumped by every invalidation: a state read that overlapped one is not cached. */
  let invalidations = 0

  function forgetHere (ids: string[]): void {
    if (ids.length === 0) return
    invalidations++
    for (const id of ids) cache.delete(id)
  }

  let lastPublishWarning = 0
  /** Drops the ids here and tells every other instance to drop them too. */
  function forget (ids: string[]): void {
    if (ids.length === 0) return
    forgetHere(ids)
    if (deps.broadcast === undefined) return
    for (let i = 0; i < ids.length; i += IDS_PER_MESSAGE) {
      deps.broadcast.publish(REVOCATION_CHANNEL, ids.slice(i, i + IDS_PER_MESSAGE).join(',')).catch((err: unknown) => {
        // At most one line a minute: during an outage every revocation would fail alike.
        const t = Date.now()
        if (t - lastPublishWarning < 60_000) return
        lastPublishWarning = t
        deps.telemetry?.log.warn({ err }, 'revocation messages not sent: other instances drop these sessions within SESSION_CHECK_TTL_SECONDS')
      })
    }
  }

  /** Starts listening for other instances' revocations; resolves once subscribed. */
  async function listen (): Promise<void> {
    if (deps.broadcast === undefined || deps.checkTtlSeconds === 0) return
    await deps.broadcast.subscribe(REVOCATION_CHANNEL, (message) => {
      if (UUID_LIST.test(message)) forgetHere(message.split(','))
    })
  }

  /** Takes the user row lock (the first lock of every session write); the row, or undefined. */
  async function lockUser (tx: Tx, userId: string): Promise<UserRow | undefined> {
    const [user] = await tx.select().from(users).where(eq(users.id, userId)).for('no key update')
    return user
  }

  /** Drops the cached state of every session of the user once `tx` commits (its user row changed). */
  async function forgetSessionsOf (tx: Queryable, userId: string): Promise<void> {
    const rows = await tx.select({ id: sessions.id }).from(sessions).where(and(eq(sessions.userId, userId), isNull(sessions.revokedAt)))
    afterCommit(tx, () => forget(rows.map((r) => r.id)))
  }

  /** Revokes the user's live sessions in `scope` and their refresh tokens, under the user lock. */
  async function revoke (tx: Tx, userId: string, reason: string, scope: SessionScope): Promise<string[]> {
    await lockUser(tx, userId)
    const t = now()
    const revoked = await tx.update(sessions).set({ revokedAt: t, revokedReason: reason }).where(and(
      eq(sessions.userId, userId),
      isNull(sessions.revokedAt),
      scope !== 'all' && 'only' in scope ? eq(sessions.id, scope.only) : undefined,
      scope !== 'all' && 'except' in scope ? ne(sessions.id, scope.except) : undefined
    )).returning({ id: sessions.id })
    const ids = revoked.map((r) => r.id)
    if (ids.length > 0) {
      await tx.update(refreshTokens).set({ revokedAt: t })
        .where(and(inArray(refreshTokens.sessionId, ids), isNull(refreshTokens.revokedAt)))
    }
    afterCommit(tx, () => forget(ids))
    return ids
  }

  /**
   * An admin action's locks: the acting admin's row and the target's, in id order (two admins
   * acting on each other cannot deadlock), and whether the actor is still an active admin now.
   */
  async function lockActorAndUser (tx: Tx, actorId: string, userId: string) {
    const rows = await tx.select().from(users).where(inArray(users.id, [actorId, userId])).orderBy(users.id).for('no key update')
    const actor = rows.find((r) => r.id === actorId)
    const user = rows.find((r) => r.id === userId)
    if (actor === undefined || !actor.isActive || actor.role !== 'admin') return { kind: 'actor_not_admin' as const }
    if (user === undefined) return { kind: 'not_found' as const }
    return { kind: 'ok' as const, actor, user }
  }

  const liveSession = () => and(isNull(sessions.revokedAt), gt(sessions.expiresAt, now()))
  const byEmail = db.select().from(users).where(eq(users.email, sql.placeholder('email'))).prepare('gatehouse_user_by_email')

  return {
    listen,

    // ---- users ---------------------------------------------------------------------------

    lockUser,
    lockActorAndUser,

    async userById (userId: string, q: Queryable = db): Promise<UserRow | undefined> {
      const [user] = await q.select().from(users).where(eq(users.id, userId))
      return user
    },

    /** The user's email, or null when the user is gone (the audit rows of an actor). */
    async emailOf (userId: string): Promise<string | null> {
      const [user] = await db.select({ email: users.email }).from(users).where(eq(users.id, userId))
      return user?.email ?? null
    },

    /** The user of that email (a prepared statement: login's hot read, built once). */
    async userByEmail (email: string): Promise<UserRow | undefined> {
      const [user] = await byEmail.execute({ email })
      return user
    },

    /** The user of that email, locked (user first, as always); undefined when there is none. */
    async lockUserByEmail (tx: Tx, email: string): Promise<UserRow | undefined> {
      const [user] = await tx.select().from(users).where(eq(users.email, email)).for('no key update')
      return user
    },

    /** A new user, or undefined when the email is taken (ON CONFLICT DO NOTHING: racing signups give one row). */
    async insertUser (tx: Tx, values: { email: string, passwordHash: string, role?: Role, passwordMustChange?: boolean, emailVerified?: boolean, lastLoginAt?: Date }): Promise<UserRow | undefined> {
      const t = now()
      const [user] = await tx.insert(users).values({ ...values, passwordChangedAt: t, createdAt: t, updatedAt: t })
        .onConflictDoNothing({ target: users.email }).returning()
      return user
    },

    /** Upgrades a password hash made with old parameters, only if it is still the one verified. */
    async upgradePasswordHash (userId: string, verified: string, rehash: string): Promise<void> {
      await db.update(users).set({ passwordHash: rehash }).where(and(eq(users.id, userId), eq(users.passwordHash, verified)))
    },

    /**
     * A new password (under the caller's user lock): clears passwordMustChange and lifts the
     * per-account MFA lock that whoever knew the old password may have been holding.
     */
    async setPassword (tx: Tx, userId: string, passwordHash: string, t: Date): Promise<void> {
      await tx.update(users).set({
        passwordHash, passwordChangedAt: t, passwordMustChange: false, updatedAt: t, mfaFailureCount: 0, mfaFailureWindowStart: null
      }).where(eq(users.id, userId))
      await forgetSessionsOf(tx, userId) // their cached passwordMustChange is stale now
    },

    /**
     * An admin's change of `isActive` and/or `role`. Locks the target and the acting admin
     * (in id order, so two admins acting on each other cannot deadlock) and goes ahead only if
     * the actor is still an active admin: of two admins demoting each other at once, one wins
     * and the other is refused, so an admin always remains. Deactivation revokes every session;
     * every cached state of the user's sessions is dropped on commit.
     */
    async updateStatus (tx: Tx, actorId: string, userId: string, patch: { isActive?: boolean, role?: Role }, reason: string) {
      const locked = await lockActorAndUser(tx, actorId, userId)
      if (locked.kind !== 'ok') return locked
      const before = locked.user
      const [after] = await tx.update(users).set({ ...patch, updatedAt: now() }).where(eq(users.id, userId)).returning()
      if (after === undefined) return { kind: 'not_found' as const }
      const revoked = patch.isActive === false ? await revoke(tx, userId, reason, 'all') : []
      await forgetSessionsOf(tx, userId)
      return { kind: 'updated' as const, actor: locked.actor, before, after, revoked: revoked.length }
    },

    /** Users whose email contains `q` (case-insensitive), oldest first, and how many match. */
    async searchUsers (query: { q?: string, limit: number, offset: number }): Promise<{ items: UserRow[], total: number }> {
      const where = query.q === undefined || query.q === ''
        ? undefined
        : ilike(users.email, `%${query.q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`)
      const [items, [total]] = await Promise.all([
        db.select().from(users).where(where).orderBy(users.createdAt, users.id).limit(query.limit).offset(query.offset),
        db.select({ n: count() }).from(users).where(where)
      ])
      return { items, total: total?.n ?? 0 }
    },

    /**
     * Marks the user's address as proven (a verification link, a completed reset), in the
     * caller's transaction; true when it was not yet. Drops the cached states (`/me` shows it).
     */
    async markEmailVerified (tx: Tx, userId: string): Promise<boolean> {
      const [changed] = await tx.update(users).set({ emailVerified: true, updatedAt: now() })
        .where(and(eq(users.id, userId), eq(users.emailVerified, false))).returning({ id: users.id })
      if (changed !== undefined) await forgetSessionsOf(tx, userId)
      return changed !== undefined
    },

    // ---- TOTP and the per-account MFA counters (columns of users) -------------------------

    /** Compare-and-set: the time step is accepted only if it is later than the last one accepted. */
    async claimTotpStep (q: Queryable, userId: string, step: number): Promise<boolean> {
      const rows = await q.update(users).set({ totpLastStep: step })
        .where(and(eq(users.id, userId), or(isNull(users.totpLastStep), lt(users.totpLastStep, step))))
        .returning({ id: users.id })
      return rows.length === 1
    },

    async setPendingTotp (userId: string, secretEnc: string): Promise<void> {
      await db.update(users).set({ totpPendingSecretEnc: secretEnc, updatedAt: now() }).where(eq(users.id, userId))
    },

    /** Turns MFA on with the pending secret; false when it was already on (a racing confirm). */
    async enableTotp (tx: Tx, userId: string, secretEnc: string): Promise<boolean> {
      const [enabled] = await tx.update(users)
        .set({ mfaEnabled: true, totpSecretEnc: secretEnc, totpPendingSecretEnc: null, updatedAt: now() })
        .where(and(eq(users.id, userId), eq(users.mfaEnabled, false)))
        .returning({ id: users.id })
      await forgetSessionsOf(tx, userId) // `/me` shows mfaEnabled
      return enabled !== undefined
    },

    async disableTotp (tx: Tx, userId: string, t: Date): Promise<void> {
      await tx.update(users).set({ mfaEnabled: false, totpSecretEnc: null, totpPendingSecretEnc: null, updatedAt: t }).where(eq(users.id, userId))
      await forgetSessionsOf(tx, userId) // `/me` shows mfaEnabled
    },

    /**
     * Claims one second-factor attempt of the account, atomically: the counter restarts when its
     * window has passed, and no row is updated once it is full. Returns the count, or the start
     * of the full window.
     */
    async claimMfaAttempt (userId: string, limit: { maxFailures: number, windowMs: number }): Promise<{ count: number } | { fullSince: Date | null }> {
      const t = now()
      const fresh = or(isNull(users.mfaFailureWindowStart), lte(users.mfaFailureWindowStart, new Date(t.getTime() - limit.windowMs)))
      const [claimed] = await db.update(users).set({
        mfaFailureWindowStart: sql`case when ${fresh} then ${t.toISOString()}::timestamptz else ${users.mfaFailureWindowStart} end`,
        mfaFailureCount: sql`case when ${fresh} then 1 else ${users.mfaFailureCount} + 1 end`
      }).where(and(eq(users.id, userId), or(fresh, lt(users.mfaFailureCount, limit.maxFailures))))
        .returning({ count: users.mfaFailureCount })
      if (claimed !== undefined) return claimed
      const [row] = await db.select({ start: users.mfaFailureWindowStart }).from(users).where(eq(users.id, userId))
      return { fullSince: row?.start ?? null }
    },

    /** A correct code gives its attempt back. */
    async releaseMfaAttempt (q: Queryable, userId: string): Promise<void> {
      await q.update(users).set({ mfaFailureCount: sql`greatest(${users.mfaFailureCount} - 1, 0)` }).where(eq(users.id, userId))
    },

    /** Compare-and-set on mfa_alerted_at: true for the first caller in a window. */
    async claimMfaAlert (tx: Tx, userId: string, t: Date, windowMs: number): Promise<boolean> {
      const [first] = await tx.update(users).set({ mfaAlertedAt: t })
        .where(and(eq(users.id, userId), or(isNull(users.mfaAlertedAt), lte(users.mfaAlertedAt, new Date(t.getTime() - windowMs)))))
        .returning({ id: users.id })
      return first !== undefined
    },

    // ---- sessions ------------------------------------------------------------------------

    /**
     * Opens a session (a login) with its first refresh token (stored as a hash) and records the
     * event (`login_success` or `signup`), in one statement: the update of lastLoginAt takes the
     * user lock first and goes ahead only while the user is active (a deactivation that committed
     * meanwhile is seen), then the session, the token and the audit row are inserted. In the
     * caller's transaction when given one; on its own it is a transaction by itself, and one
     * round trip. Returns the updated user and the session's id; undefined when the user is gone
     * or deactivated.
     */
    async openSession (q: Queryable, userId: string, input: {
      ctx: RequestContext
      amr: Amr[]
      tokenHash: string
      expiresAt: Date
      record: { type: 'login_success' | 'signup', metadata: Record<string, unknown> | null }
    }): Promise<{ user: PublicUserRow, sessionId: string } | undefined> {
      const t = now().toISOString()
      const expiresAt = input.expiresAt.toISOString()
      const { ip } = input.ctx
      const userAgent = input.ctx.userAgent?.slice(0, 512) ?? null
      const amr = `{${input.amr.join(',')}}`
      const metadata = input.record.metadata === null ? null : JSON.stringify(input.record.metadata)
      const result = await executePrepared(q, 'gatehouse_open_session', sql`
        with u as (
          update users set last_login_at = ${t}::timestamptz where id = ${userId} and is_active
          returning id, email, email_verified, role, is_active, mfa_enabled, password_must_change, created_at, last_login_at
        ), s as (
          insert into sessions (user_id, amr, ip_address, user_agent, created_at, last_used_at, expires_at)
          select id, ${amr}::text[], ${ip}, ${userAgent}, ${t}::timestamptz, ${t}::timestamptz, ${expiresAt}::timestamptz from u
          returning id
        ), r as (
          insert into refresh_tokens (session_id, user_id, token_hash, parent_id, created_at, expires_at, ip_address)
          select s.id, ${userId}, ${input.tokenHash}, null, ${t}::timestamptz, ${expiresAt}::timestamptz, ${ip} from s
          returning id
        ), recorded as (
          ${INSERT_EVENT}
          select ${input.record.type}, u.id, u.email, ${ip}, ${userAgent}, true, null, ${metadata}::jsonb, ${t}::timestamptz from u
          returning id
        )
        select s.id as session_id, ${PUBLIC_USER_COLUMNS} from s, u, r`)
      const [row] = rowsOf<RawPublicUser & { session_id: string }>(result)
      return row === undefined ? undefined : { user: publicUserOf(row), sessionId: row.session_id }
    },

    /** Revokes every live session of the user; returns the revoked session ids. */
    revokeAllSessions: (tx: Tx, userId: string, reason: string) => revoke(tx, userId, reason, 'all'),

    /** Revokes one live session of the user; returns whether it was live. */
    async revokeSession (tx: Tx, userId: string, sessionId: string, reason: string): Promise<boolean> {
      return (await revoke(tx, userId, reason, { only: sessionId })).length > 0
    },

    /** Revokes every live session of the user but `keepSessionId`; returns the revoked ids. */
    revokeOtherSessions: (tx: Tx, userId: string, keepSessionId: string, reason: string) => revoke(tx, userId, reason, { except: keepSessionId }),

    /** Whether the session is live now (for a check under the caller's user lock). */
    async isSessionLive (tx: Tx, sessionId: string): Promise<boolean> {
      const [live] = await tx.select({ id: sessions.id }).from(sessions).where(and(eq(sessions.id, sessionId), liveSession()))
      return live !== undefined
    },

    /** The user's live sessions, most recently used first. */
    async liveSessions (userId: string): Promise<SessionRow[]> {
      return db.select().from(sessions).where(and(eq(sessions.userId, userId), liveSession()))
        .orderBy(desc(sessions.lastUsedAt), desc(sessions.createdAt))
    },

    /**
     * What the guard needs of an access token's session, cached per instance for
     * `checkTtlSeconds` (0: never cached).
     */
    async sessionState (sessionId: string): Promise<SessionState> {
      const nowMs = now().getTime()
      const hit = cache.get(sessionId)
      if (hit !== undefined && hit.until > nowMs) return hit.state
      const seen = invalidations
      const [row] = await db
        .select({
          revokedAt: sessions.revokedAt,
          expiresAt: sessions.expiresAt,
          user: {
            id: users.id,
            email: users.email,
            emailVerified: users.emailVerified,
            role: users.role,
            isActive: users.isActive,
            mfaEnabled: users.mfaEnabled,
            passwordMustChange: users.passwordMustChange,
            createdAt: users.createdAt,
            lastLoginAt: users.lastLoginAt
          }
        })
        .from(sessions)
        .innerJoin(users, eq(users.id, sessions.userId))
        .where(eq(sessions.id, sessionId))
      const state: SessionState = row === undefined
        ? { active: false, userId: null, role: 'user', passwordMustChange: false, user: null }
        : {
            active: row.revokedAt === null && row.expiresAt.getTime() > nowMs && row.user.isActive,
            userId: row.user.id,
            role: row.user.role,
            passwordMustChange: row.user.passwordMustChange,
            user: row.user
          }
      if (deps.checkTtlSeconds > 0 && seen === invalidations) {
        if (cache.size >= MAX_CACHE) cache.clear()
        cache.set(sessionId, { state, until: nowMs + deps.checkTtlSeconds * 1000 })
      }
      return state
    },

    // ---- refresh tokens ------------------------------------------------------------------

    async findRefreshToken (hash: string): Promise<FoundRefreshToken | undefined> {
      const [found] = await db.select({ userId: refreshTokens.userId, sessionId: refreshTokens.sessionId })
        .from(refreshTokens).where(eq(refreshTokens.tokenHash, hash))
      return found === undefined ? undefined : { hash, ...found }
    },

    /** Locks a presented token with its user and session, in the one order: user → session → token. */
    async lockRefreshToken (tx: Tx, found: FoundRefreshToken): Promise<LockedFamily | undefined> {
      const user = await lockUser(tx, found.userId)
      const [session] = await tx.select().from(sessions).where(eq(sessions.id, found.sessionId)).for('update')
      const [row] = await tx.select().from(refreshTokens).where(eq(refreshTokens.tokenHash, found.hash)).for('update')
      return user === undefined || session === undefined || row === undefined ? undefined : { user, session, row } as LockedFamily
    },

    async childToken (tx: Tx, parentId: string): Promise<RefreshTokenRow | undefined> {
      const [child] = await tx.select().from(refreshTokens).where(eq(refreshTokens.parentId, parentId))
      return child
    },

    /**
     * Rotates a locked live token: its successor (by hash) is inserted, the parent marked
     * rotated, the session's last use and expiry moved on. Returns the updated session.
     */
    async rotateRefreshToken (tx: Tx, family: LockedFamily, successor: string, ctx: RequestContext, expiresAt: Date): Promise<SessionRow> {
      const { session, row: parent } = family
      const t = now()
      await tx.insert(refreshTokens).values({
        sessionId: session.id, userId: session.userId, tokenHash: hashOpaqueToken(successor), parentId: parent.id, createdAt: t, expiresAt, ipAddress: ctx.ip
      })
      await tx.update(refreshTokens).set({ rotatedAt: t }).where(eq(refreshTokens.id, parent.id))
      const [updated] = await tx.update(sessions).set({ lastUsedAt: t, expiresAt }).where(eq(sessions.id, session.id)).returning()
      return updated ?? session
    },

    /**
     * The common refresh in one statement, so one round trip and no BEGIN/COMMIT: a live token
     * is rotated (its successor inserted, the parent marked rotated, the session's last use and
     * expiry moved on) and the audit row `refresh` written, under the same locks and in the same
     * order as `lockRefreshToken` (user → session → token: each CTE's check waits for the one
     * before it, and PostgreSQL re-reads a locked row before its conditions are checked, so a
     * concurrent rotation, revocation or deactivation is seen). Returns undefined, having
     * written nothing, when the token is not the live token of a live session of an active user:
     * the caller then classifies it under `lockRefreshToken` (the grace window, reuse, ended,
     * unknown). The audit row's columns are audit.ts's `auth_events`; the statement writes it so
     * that the refresh and its record commit together.
     */
    async rotateLiveRefreshToken (input: {
      hash: string
      successorHash: string
      expiresAt: Date
      ctx: RequestContext
      /** The request's time: rotated_at, last use, and the limits the token and session must be within. */
      t: Date
    }): Promise<{ user: PublicUserRow, session: Pick<SessionRow, 'id' | 'amr'> } | undefined> {
      const t = input.t.toISOString()
      const expiresAt = input.expiresAt.toISOString()
      const ip = input.ctx.ip
      const userAgent = input.ctx.userAgent?.slice(0, 512) ?? null
      const result = await executePrepared(db, 'gatehouse_rotate_live_refresh_token', sql`
        with found as materialized (
          select id, session_id, user_id from refresh_tokens where token_hash = ${input.hash}
        ), u as materialized (
          select id, email, email_verified, role, is_active, mfa_enabled, password_must_change, created_at, last_login_at
          from users where id = (select user_id from found) and is_active
          for no key update
        ), s as materialized (
          select id from sessions
          where id = (select session_id from found) and exists (select 1 from u)
            and revoked_at is null and expires_at > ${t}::timestamptz
          for update
        ), parent as materialized (
          select id from refresh_tokens
          where id = (select id from found) and exists (select 1 from s)
            and rotated_at is null and revoked_at is null and expires_at > ${t}::timestamptz
          for update
        ), rotated as (
          update refresh_tokens set rotated_at = ${t}::timestamptz
          where id = (select id from parent)
          returning id, session_id, user_id
        ), successor as (
          insert into refresh_tokens (session_id, user_id, token_hash, parent_id, created_at, expires_at, ip_address)
          select session_id, user_id, ${input.successorHash}, id, ${t}::timestamptz, ${expiresAt}::timestamptz, ${ip} from rotated
          returning id
        ), touched as (
          update sessions set last_used_at = ${t}::timestamptz, expires_at = ${expiresAt}::timestamptz
          where id = (select session_id from rotated)
          returning id, amr
        ), recorded as (
          ${INSERT_EVENT}
          select 'refresh', u.id, u.email, ${ip}, ${userAgent}, true, null, jsonb_build_object('sessionId', touched.id), ${t}::timestamptz
          from touched, u
          returning id
        )
        select touched.id as session_id, touched.amr, ${PUBLIC_USER_COLUMNS} from touched, u, successor`)
      const [row] = rowsOf<RawPublicUser & { session_id: string, amr: string[] | string }>(result)
      if (row === undefined) return undefined
      return { session: { id: row.session_id, amr: parseTextArray(row.amr) }, user: publicUserOf(row) }
    },

    /** A refresh within the grace window: only the session's last use moves. */
    async touchSession (tx: Tx, family: LockedFamily): Promise<void> {
      await tx.update(sessions).set({ lastUsedAt: now() }).where(eq(sessions.id, family.session.id))
    }
  }
}
export type AccountStore = ReturnType<typeof createAccountStore>
