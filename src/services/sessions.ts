import { createHmac, hkdfSync } from 'node:crypto'
import { and, desc, eq, gt, inArray, isNull, ne } from 'drizzle-orm'
import type { Db, Queryable } from '../db/client.ts'
import { refreshTokens, sessions, users, type SessionRow, type UserRow } from '../db/schema.ts'
import { AppError } from '../errors.ts'
import type { AuditLog, RequestContext } from './audit.ts'
import { hashOpaqueToken, newOpaqueToken, OPAQUE_TOKEN_FORMAT } from './opaque-tokens.ts'
import type { Outbox } from './outbox.ts'

export type Amr = 'pwd' | 'otp'

export interface SessionState {
  /** false when the session is revoked or expired, or the user deactivated or gone. */
  active: boolean
  role: 'user' | 'admin'
  passwordMustChange: boolean
}

/** A refresh token as handed to the client, and when it stops working. */
export interface IssuedRefreshToken {
  token: string
  expiresAt: Date
}

export interface PublicSession {
  id: string
  createdAt: string
  lastUsedAt: string
  ipAddress: string | null
  userAgent: string | null
  current: boolean
}


/**
 * Sessions and their refresh-token families (RFC 9700 §4.14).
 *
 * One login = one session = one family. Every refresh rotates the token. The successor is
 * derived from its parent with a keyed hash (HMAC), so when a client presents the parent again
 * within the grace window (racing tabs, a retried request) it receives the very same successor
 * without the service ever storing a token in the clear: no second branch can exist. A rotated
 * token presented later is reuse: every session of the user is revoked and the user is alerted.
 *
 * `state(sid)` answers `authenticate` on every request; it is cached per instance for
 * `checkTtlSeconds`, so a logout reaches every instance within that time without a database
 * round-trip on every request.
 */
export function createSessionService (deps: {
  db: Db
  now: () => Date
  audit: AuditLog
  outbox: Outbox
  /** Secret the successor derivation key is derived from (JWT_SECRET). */
  secret: string
  refreshDays: number
  graceSeconds: number
  checkTtlSeconds: number
}) {
  const { db, now, audit } = deps
  const successorKey = Buffer.from(hkdfSync('sha256', deps.secret, 'gatehouse', 'refresh-token successor v1', 32))
  const successorOf = (token: string) => createHmac('sha256', successorKey).update(token).digest('base64url')
  const lifetimeMs = deps.refreshDays * 86_400_000
  const cache = new Map<string, { state: SessionState, until: number }>()
  const MAX_CACHE = 100_000

  async function insertToken (tx: Queryable, session: SessionRow, token: string, parentId: string | null, ctx: RequestContext, t: Date) {
    const expiresAt = new Date(t.getTime() + lifetimeMs)
    await tx.insert(refreshTokens).values({
      sessionId: session.id,
      userId: session.userId,
      tokenHash: hashOpaqueToken(token),
      parentId,
      createdAt: t,
      expiresAt,
      ipAddress: ctx.ip
    })
    return expiresAt
  }

  /**
   * Revokes the user's live sessions (all, only `only`, or all but `except`) and their refresh
   * tokens; returns the revoked session ids.
   */
  async function revokeWhere (tx: Queryable, userId: string, reason: string, scope: { only?: string, except?: string } = {}): Promise<string[]> {
    const t = now()
    const revoked = await tx.update(sessions).set({ revokedAt: t, revokedReason: reason }).where(and(
      eq(sessions.userId, userId),
      isNull(sessions.revokedAt),
      scope.only === undefined ? undefined : eq(sessions.id, scope.only),
      scope.except === undefined ? undefined : ne(sessions.id, scope.except)
    )).returning({ id: sessions.id })
    if (revoked.length > 0) {
      await tx.update(refreshTokens).set({ revokedAt: t })
        .where(and(inArray(refreshTokens.sessionId, revoked.map((r) => r.id)), isNull(refreshTokens.revokedAt)))
    }
    return revoked.map((r) => r.id)
  }

  /**
   * Every writer of a user's sessions locks the user row first, so a revocation and a
   * rotation (whose reuse path revokes every session) can never deadlock on session rows.
   */
  async function lockedRevoke (tx: Queryable | undefined, userId: string, reason: string, scope: { only?: string, except?: string } = {}) {
    const run = async (q: Queryable) => {
      await q.select({ id: users.id }).from(users).where(eq(users.id, userId)).for('no key update')
      return revokeWhere(q, userId, reason, scope)
    }
    return tx === undefined ? db.transaction(run) : run(tx)
  }

  function forget (ids: string[]): void {
    for (const id of ids) cache.delete(id)
  }

  type RotateOutcome =
    | { kind: 'ok', session: SessionRow, user: UserRow, refresh: IssuedRefreshToken }
    | { kind: 'invalid' }
    | { kind: 'reused', revoked: string[] }

  const service = {
    /** Starts a session (a login) and its first refresh token, in the caller's transaction. */
    async create (userId: string, ctx: RequestContext, amr: Amr[], tx: Queryable) {
      const t = now()
      const [session] = await tx.insert(sessions).values({
        userId,
        amr,
        ipAddress: ctx.ip,
        userAgent: ctx.userAgent?.slice(0, 512) ?? null,
        createdAt: t,
        lastUsedAt: t,
        expiresAt: new Date(t.getTime() + lifetimeMs)
      }).returning()
      if (session === undefined) throw new Error('session insert returned no row')
      const token = newOpaqueToken()
      const expiresAt = await insertToken(tx, session, token, null, ctx, t)
      return { session, refresh: { token, expiresAt } }
    },

    /**
     * Exchanges a refresh token for its successor. Serialised per user and session with row
     * locks (user → session → token, the order every writer uses), so parallel refreshes with
     * one token all see the first rotation and get its successor.
     */
    async rotate (token: string, ctx: RequestContext) {
      if (!OPAQUE_TOKEN_FORMAT.test(token)) throw new AppError('REFRESH_TOKEN_INVALID')
      const hash = hashOpaqueToken(token)
      const [found] = await db.select({ userId: refreshTokens.userId, sessionId: refreshTokens.sessionId })
        .from(refreshTokens).where(eq(refreshTokens.tokenHash, hash))
      if (found === undefined) throw new AppError('REFRESH_TOKEN_INVALID')

      const outcome = await db.transaction(async (tx): Promise<RotateOutcome> => {
        const t = now()
        const [user] = await tx.select().from(users).where(eq(users.id, found.userId)).for('no key update')
        const [session] = await tx.select().from(sessions).where(eq(sessions.id, found.sessionId)).for('update')
        const [row] = await tx.select().from(refreshTokens).where(eq(refreshTokens.tokenHash, hash)).for('update')
        if (user === undefined || session === undefined || row === undefined) return { kind: 'invalid' }
        if (!user.isActive || session.revokedAt !== null || session.expiresAt <= t || row.revokedAt !== null || row.expiresAt <= t) {
          return { kind: 'invalid' }
        }

        const successor = successorOf(token)
        if (row.rotatedAt === null) {
          const expiresAt = await insertToken(tx, session, successor, row.id, ctx, t)
          await tx.update(refreshTokens).set({ rotatedAt: t }).where(eq(refreshTokens.id, row.id))
          const [updated] = await tx.update(sessions).set({ lastUsedAt: t, expiresAt }).where(eq(sessions.id, session.id)).returning()
          await audit.record({ type: 'refresh', ctx, userId: user.id, email: user.email, success: true, metadata: { sessionId: session.id } }, tx)
          return { kind: 'ok', session: updated ?? session, user, refresh: { token: successor, expiresAt } }
        }

        // Already rotated. Within the grace window, and while its successor is still the live
        // token, this is a racing tab or a retry: hand out the same successor again.
        const [child] = await tx.select().from(refreshTokens).where(eq(refreshTokens.parentId, row.id))
        const inGrace = deps.graceSeconds > 0 && t.getTime() - row.rotatedAt.getTime() <= deps.graceSeconds * 1000
        if (inGrace && child !== undefined && child.rotatedAt === null && child.revokedAt === null &&
          child.expiresAt > t && child.tokenHash === hashOpaqueToken(successor)) {
          await tx.update(sessions).set({ lastUsedAt: t }).where(eq(sessions.id, session.id))
          await audit.record({
            type: 'refresh', ctx, userId: user.id, email: user.email, success: true, metadata: { sessionId: session.id, replayedWithinGrace: true }
          }, tx)
          return { kind: 'ok', session, user, refresh: { token: successor, expiresAt: child.expiresAt } }
        }

        // Reuse of a rotated token: someone holds a copy. Revoke every session of the user.
        const revoked = await revokeWhere(tx, user.id, 'refresh_token_reused')
        const firstUseIp = child?.ipAddress ?? null
        await audit.record({
          type: 'refresh_token_reused', ctx, userId: user.id, email: user.email, success: false,
          failureReason: 'rotated_token_presented',
          metadata: { sessionId: session.id, reuseIp: ctx.ip, rotatedByIp: firstUseIp, rotatedAt: row.rotatedAt.toISOString(), revokedSessions: revoked.length }
        }, tx)
        await deps.outbox.enqueue(tx, 'refresh_token_reused', {
          to: user.email,
          subject: 'Security alert: your Gatehouse sessions were signed out',
          text: [
            'Someone presented a sign-in token of your account that had already been used.',
            'This can mean a copy of it was stolen, so every session of your account has been signed out.',
            '',
            `When: ${t.toISOString()}`,
            `Token last renewed from IP: ${firstUseIp ?? 'unknown'}`,
            `Old token presented from IP: ${ctx.ip}`,
            `Browser: ${ctx.userAgent ?? 'unknown'}`,
            '',
            'Sign in again. If you do not recognise this activity, change your password.'
          ].join('\n')
        })
        return { kind: 'reused', revoked }
      })

      if (outcome.kind === 'invalid') throw new AppError('REFRESH_TOKEN_INVALID')
      if (outcome.kind === 'reused') {
        forget(outcome.revoked)
        throw new AppError('REFRESH_TOKEN_REUSED', 'Refresh token reuse detected: all sessions have been revoked')
      }
      return outcome
    },

    /** The session a refresh token belongs to (any state), for logout by cookie. */
    async findByToken (token: string): Promise<SessionRow | undefined> {
      if (!OPAQUE_TOKEN_FORMAT.test(token)) return undefined
      const [row] = await db.select({ session: sessions }).from(refreshTokens)
        .innerJoin(sessions, eq(sessions.id, refreshTokens.sessionId))
        .where(eq(refreshTokens.tokenHash, hashOpaqueToken(token)))
      return row?.session
    },

    /** Revokes one session of the user; returns whether it was live. */
    async revoke (userId: string, sessionId: string, reason: string, tx?: Queryable): Promise<boolean> {
      const revoked = await lockedRevoke(tx, userId, reason, { only: sessionId })
      forget([sessionId])
      return revoked.length > 0
    },

    /** Revokes every session of the user but `keepSessionId`; returns how many were live. */
    async revokeOthers (userId: string, keepSessionId: string, reason: string, tx?: Queryable): Promise<number> {
      const revoked = await lockedRevoke(tx, userId, reason, { except: keepSessionId })
      forget(revoked)
      return revoked.length
    },

    /** Drops this instance's cached state of a session (after a change made here). */
    forgetSession (sessionId: string): void {
      forget([sessionId])
    },

    /** Revokes every session of the user; returns how many were live. */
    async revokeAll (userId: string, reason: string, tx?: Queryable): Promise<number> {
      const revoked = await lockedRevoke(tx, userId, reason)
      forget(revoked)
      return revoked.length
    },

    /** The user's live sessions, most recently used first. */
    async list (userId: string, currentSessionId: string): Promise<PublicSession[]> {
      const rows = await db.select().from(sessions)
        .where(and(eq(sessions.userId, userId), isNull(sessions.revokedAt), gt(sessions.expiresAt, now())))
        .orderBy(desc(sessions.lastUsedAt), desc(sessions.createdAt))
      return rows.map((s) => ({
        id: s.id,
        createdAt: s.createdAt.toISOString(),
        lastUsedAt: s.lastUsedAt.toISOString(),
        ipAddress: s.ipAddress,
        userAgent: s.userAgent,
        current: s.id === currentSessionId
      }))
    },

    async state (sessionId: string): Promise<SessionState> {
      const nowMs = now().getTime()
      const hit = cache.get(sessionId)
      if (hit !== undefined && hit.until > nowMs) return hit.state

      const [row] = await db
        .select({
          revokedAt: sessions.revokedAt,
          expiresAt: sessions.expiresAt,
          isActive: users.isActive,
          role: users.role,
          passwordMustChange: users.passwordMustChange
        })
        .from(sessions)
        .innerJoin(users, eq(users.id, sessions.userId))
        .where(eq(sessions.id, sessionId))
      const state: SessionState = row === undefined
        ? { active: false, role: 'user', passwordMustChange: false }
        : {
            active: row.revokedAt === null && row.expiresAt.getTime() > nowMs && row.isActive,
            role: row.role,
            passwordMustChange: row.passwordMustChange
          }
      if (deps.checkTtlSeconds > 0) {
        if (cache.size >= MAX_CACHE) cache.clear()
        cache.set(sessionId, { state, until: nowMs + deps.checkTtlSeconds * 1000 })
      }
      return state
    }
  }
  return service
}
export type SessionService = ReturnType<typeof createSessionService>
