import { createHmac, hkdfSync } from 'node:crypto'
import { and, desc, eq, gt, inArray, isNull, ne } from 'drizzle-orm'
import type { Db, Queryable } from '../db/client.ts'
import { refreshTokens, sessions, users, type RefreshTokenRow, type SessionRow, type UserRow } from '../db/schema.ts'
import { afterCommit, transaction } from '../db/transaction.ts'
import { AppError } from '../errors.ts'
import type { AuditLog, RequestContext } from './audit.ts'
import { hashOpaqueToken, newOpaqueToken, OPAQUE_TOKEN_FORMAT } from './opaque-tokens.ts'
import type { Outbox } from './outbox.ts'
import { describeUserAgent, displayIp } from './user-agent.ts'

export type Amr = 'pwd' | 'otp'

export interface SessionState {
  /** false when the session is revoked or expired, or the user deactivated or gone. */
  active: boolean
  /** The session's owner: a token is good only for the user its session belongs to. */
  userId: string | null
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
   * tokens; returns the revoked session ids. Cached states are dropped once `tx` commits.
   */
  async function revokeWhere (tx: Queryable, userId: string, reason: string, scope: { only?: string, except?: string } = {}): Promise<string[]> {
    const t = now()
    const revoked = await tx.update(sessions).set({ revokedAt: t, revokedReason: reason }).where(and(
      eq(sessions.userId, userId),
      isNull(sessions.revokedAt),
      scope.only === undefined ? undefined : eq(sessions.id, scope.only),
      scope.except === undefined ? undefined : ne(sessions.id, scope.except)
    )).returning({ id: sessions.id })
    const ids = revoked.map((r) => r.id)
    if (ids.length > 0) {
      await tx.update(refreshTokens).set({ revokedAt: t })
        .where(and(inArray(refreshTokens.sessionId, ids), isNull(refreshTokens.revokedAt)))
    }
    // Cleared after the commit: cleared earlier, a request racing the transaction could read the
    // old state and cache it again.
    afterCommit(tx, () => forget(ids))
    return ids
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
    return tx === undefined ? transaction(db, run) : run(tx)
  }

  /** Bumped by every invalidation: a state read that overlapped one is not cached. */
  let invalidations = 0
  function forget (ids: string[]): void {
    if (ids.length === 0) return
    invalidations++
    for (const id of ids) cache.delete(id)
  }

  /**
   * A presented refresh token, looked up and locked (user → session → token, the order every
   * writer uses) and classified by the rules of RFC 9700 §4.14:
   * - `live`: the current token of a live session;
   * - `grace`: rotated within the grace window while its successor is still the live token
   *   (a racing tab or a retry), which gets that same successor;
   * - `reused`: rotated otherwise: a copy is in someone else's hands;
   * - `ended`: its session was logged out, revoked or expired, or its user deactivated;
   * - `unknown`: never issued.
   */
  type Found = { user: UserRow, session: SessionRow, row: RefreshTokenRow }
  type Rotated = Found & { row: RefreshTokenRow & { rotatedAt: Date }, child: RefreshTokenRow | undefined }
  type Presented =
    | { kind: 'unknown' }
    | ({ kind: 'ended' } & Found)
    | ({ kind: 'live' } & Found)
    | ({ kind: 'grace' } & Rotated)
    | ({ kind: 'reused' } & Rotated)

  async function lookUp (token: string): Promise<{ hash: string, userId: string, sessionId: string } | undefined> {
    if (!OPAQUE_TOKEN_FORMAT.test(token)) return undefined
    const hash = hashOpaqueToken(token)
    const [found] = await db.select({ userId: refreshTokens.userId, sessionId: refreshTokens.sessionId })
      .from(refreshTokens).where(eq(refreshTokens.tokenHash, hash))
    return found === undefined ? undefined : { hash, ...found }
  }

  async function classify (tx: Queryable, token: string, found: { hash: string, userId: string, sessionId: string }, t: Date): Promise<Presented> {
    const [user] = await tx.select().from(users).where(eq(users.id, found.userId)).for('no key update')
    const [session] = await tx.select().from(sessions).where(eq(sessions.id, found.sessionId)).for('update')
    const [row] = await tx.select().from(refreshTokens).where(eq(refreshTokens.tokenHash, found.hash)).for('update')
    if (user === undefined || session === undefined || row === undefined) return { kind: 'unknown' }
    if (!user.isActive || session.revokedAt !== null || session.expiresAt <= t || row.revokedAt !== null || row.expiresAt <= t) {
      return { kind: 'ended', user, session, row }
    }
    if (row.rotatedAt === null) return { kind: 'live', user, session, row }
    const [child] = await tx.select().from(refreshTokens).where(eq(refreshTokens.parentId, row.id))
    const inGrace = deps.graceSeconds > 0 && t.getTime() - row.rotatedAt.getTime() <= deps.graceSeconds * 1000
    const childLive = child !== undefined && child.rotatedAt === null && child.revokedAt === null &&
      child.expiresAt > t && child.tokenHash === hashOpaqueToken(successorOf(token))
    const rotated: Rotated = { user, session, row: { ...row, rotatedAt: row.rotatedAt }, child }
    return inGrace && childLive ? { kind: 'grace', ...rotated } : { kind: 'reused', ...rotated }
  }

  /**
   * Reuse of a rotated token: someone holds a copy. Every session of the user is revoked, the
   * event recorded with both addresses, and the owner alerted, in the caller's transaction.
   */
  async function revokeFamily (tx: Queryable, p: Extract<Presented, { kind: 'reused' }>, ctx: RequestContext, t: Date, via: 'refresh' | 'logout') {
    const { user, session, row, child } = p
    const revoked = await revokeWhere(tx, user.id, 'refresh_token_reused')
    const firstUseIp = child?.ipAddress ?? null
    await audit.record({
      type: 'refresh_token_reused', ctx, userId: user.id, email: user.email, success: false,
      failureReason: 'rotated_token_presented',
      metadata: { sessionId: session.id, via, reuseIp: ctx.ip, rotatedByIp: firstUseIp, rotatedAt: row.rotatedAt.toISOString(), revokedSessions: revoked.length }
    }, tx)
    await deps.outbox.enqueue(tx, 'refresh_token_reused', {
      to: user.email,
      subject: 'Security alert: your Gatehouse sessions were signed out',
      text: [
        'Someone presented a sign-in token of your account that had already been used.',
        'This can mean a copy of it was stolen, so every session of your account has been signed out.',
        '',
        `When: ${t.toISOString()}`,
        `Token last renewed from IP: ${displayIp(firstUseIp)}`,
        `Old token presented from IP: ${displayIp(ctx.ip)}`,
        `Browser: ${describeUserAgent(ctx.userAgent)}`,
        '',
        'Sign in again. If you do not recognise this activity, change your password.'
      ].join('\n')
    })
    return revoked
  }

  type RotateOutcome =
    | { kind: 'ok', session: SessionRow, user: UserRow, refresh: IssuedRefreshToken }
    | { kind: 'invalid' }
    | { kind: 'reused' }

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
      const found = await lookUp(token)
      if (found === undefined) throw new AppError('REFRESH_TOKEN_INVALID')

      const outcome = await transaction(db, async (tx): Promise<RotateOutcome> => {
        const t = now()
        const p = await classify(tx, token, found, t)
        if (p.kind === 'unknown' || p.kind === 'ended') return { kind: 'invalid' }
        if (p.kind === 'reused') {
          await revokeFamily(tx, p, ctx, t, 'refresh')
          return { kind: 'reused' }
        }
        const { user, session, row } = p
        const successor = successorOf(token)
        if (p.kind === 'live') {
          const expiresAt = await insertToken(tx, session, successor, row.id, ctx, t)
          await tx.update(refreshTokens).set({ rotatedAt: t }).where(eq(refreshTokens.id, row.id))
          const [updated] = await tx.update(sessions).set({ lastUsedAt: t, expiresAt }).where(eq(sessions.id, session.id)).returning()
          await audit.record({ type: 'refresh', ctx, userId: user.id, email: user.email, success: true, metadata: { sessionId: session.id } }, tx)
          return { kind: 'ok', session: updated ?? session, user, refresh: { token: successor, expiresAt } }
        }
        // Within the grace window: hand out the same successor again.
        await tx.update(sessions).set({ lastUsedAt: t }).where(eq(sessions.id, session.id))
        await audit.record({
          type: 'refresh', ctx, userId: user.id, email: user.email, success: true, metadata: { sessionId: session.id, replayedWithinGrace: true }
        }, tx)
        return { kind: 'ok', session, user, refresh: { token: successor, expiresAt: p.child?.expiresAt ?? session.expiresAt } }
      })

      if (outcome.kind === 'invalid') throw new AppError('REFRESH_TOKEN_INVALID')
      if (outcome.kind === 'reused') throw new AppError('REFRESH_TOKEN_REUSED', 'Refresh token reuse detected: all sessions have been revoked')
      return outcome
    },

    /**
     * Logout by refresh cookie, by the refresh rules: a live or in-grace token ends its session
     * (event `logout`); a rotated token past the grace window is reuse and revokes the family
     * like a refresh would. A token of a session that has already ended changes nothing. Returns
     * false only for a token that was never issued.
     */
    async endByRefreshToken (token: string, ctx: RequestContext): Promise<boolean> {
      const found = await lookUp(token)
      if (found === undefined) return false
      return transaction(db, async (tx) => {
        const t = now()
        const p = await classify(tx, token, found, t)
        if (p.kind === 'reused') await revokeFamily(tx, p, ctx, t, 'logout')
        if (p.kind === 'live' || p.kind === 'grace') {
          await revokeWhere(tx, p.user.id, 'logout', { only: p.session.id })
          await audit.record({ type: 'logout', ctx, userId: p.user.id, email: p.user.email, success: true, metadata: { sessionId: p.session.id, via: 'refresh_cookie' } }, tx)
        }
        return p.kind !== 'unknown'
      })
    },

    /** Revokes one session of the user; returns whether it was live. */
    async revoke (userId: string, sessionId: string, reason: string, tx?: Queryable): Promise<boolean> {
      const revoked = await lockedRevoke(tx, userId, reason, { only: sessionId })
      return revoked.length > 0
    },

    /** Revokes every session of the user but `keepSessionId`; returns how many were live. */
    async revokeOthers (userId: string, keepSessionId: string, reason: string, tx?: Queryable): Promise<number> {
      const revoked = await lockedRevoke(tx, userId, reason, { except: keepSessionId })
      return revoked.length
    },

    /** Throws SESSION_REVOKED unless the session is live now (for a check under the caller's locks). */
    async assertLive (tx: Queryable, sessionId: string): Promise<void> {
      const [live] = await tx.select({ id: sessions.id }).from(sessions)
        .where(and(eq(sessions.id, sessionId), isNull(sessions.revokedAt), gt(sessions.expiresAt, now())))
      if (live === undefined) throw new AppError('SESSION_REVOKED')
    },

    /** Drops this instance's cached state of a session (after a change made here). */
    forgetSession (sessionId: string): void {
      forget([sessionId])
    },

    /** Revokes every session of the user; returns how many were live. */
    async revokeAll (userId: string, reason: string, tx?: Queryable): Promise<number> {
      const revoked = await lockedRevoke(tx, userId, reason)
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
      const seen = invalidations

      const [row] = await db
        .select({
          userId: sessions.userId,
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
        ? { active: false, userId: null, role: 'user', passwordMustChange: false }
        : {
            active: row.revokedAt === null && row.expiresAt.getTime() > nowMs && row.isActive,
            userId: row.userId,
            role: row.role,
            passwordMustChange: row.passwordMustChange
          }
      if (deps.checkTtlSeconds > 0 && seen === invalidations) {
        if (cache.size >= MAX_CACHE) cache.clear()
        cache.set(sessionId, { state, until: nowMs + deps.checkTtlSeconds * 1000 })
      }
      return state
    }
  }
  return service
}
export type SessionService = ReturnType<typeof createSessionService>
