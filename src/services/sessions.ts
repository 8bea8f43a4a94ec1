import { createHmac } from 'node:crypto'
import type { Db, Queryable, Tx } from '../db/client.ts'
import type { RefreshTokenRow, SessionRow, UserRow } from '../db/schema.ts'
import { afterCommit, transaction } from '../db/transaction.ts'
import { AppError } from '../errors.ts'
import type { AccountStore, Amr, FoundRefreshToken, LockedFamily, PublicUserRow } from './account-store.ts'
import type { AuditLog, RequestContext } from './audit.ts'
import { hashOpaqueToken, newOpaqueToken, OPAQUE_TOKEN_FORMAT } from './opaque-tokens.ts'
import type { Outbox } from './outbox.ts'
import { describeUserAgent, displayIp } from './user-agent.ts'

export type { Amr, SessionState } from './account-store.ts'

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

export const toPublicSession = (s: SessionRow, currentSessionId: string | null): PublicSession => ({
  id: s.id,
  createdAt: s.createdAt.toISOString(),
  lastUsedAt: s.lastUsedAt.toISOString(),
  ipAddress: s.ipAddress,
  userAgent: s.userAgent,
  current: s.id === currentSessionId
})

/**
 * Sessions and their refresh-token families (RFC 9700 §4.14): the policy. The rows, their locks
 * and the session-state cache belong to the account store.
 *
 * One login = one session = one family. Every refresh rotates the token. The successor is
 * derived from its parent with a keyed hash (HMAC), so when a client presents the parent again
 * within the grace window (racing tabs, a retried request) it receives the very same successor
 * without the service ever storing a token in the clear: no second branch can exist. A rotated
 * token presented later is reuse: every session of the user is revoked and the user is alerted.
 */
export function createSessionService (deps: {
  db: Db
  now: () => Date
  store: AccountStore
  audit: AuditLog
  outbox: Outbox
  /** The internal HMAC key successors are derived with (from JWT_SECRET, see the key ring). */
  successorKey: Buffer
  refreshDays: number
  graceSeconds: number
}) {
  const { db, now, audit, store } = deps
  const successorOf = (token: string) => createHmac('sha256', deps.successorKey).update(token).digest('base64url')
  const lifetimeMs = deps.refreshDays * 86_400_000

  /**
   * A presented refresh token, looked up and locked (user → session → token, the store's order)
   * and classified by the rules of RFC 9700 §4.14:
   * - `live`: the current token of a live session;
   * - `grace`: rotated within the grace window while its successor is still the live token
   *   (a racing tab or a retry), which gets that same successor;
   * - `reused`: rotated otherwise: a copy is in someone else's hands;
   * - `ended`: its session was logged out, revoked or expired, or its user deactivated;
   * - `unknown`: never issued.
   */
  type Found = { family: LockedFamily, user: UserRow, session: SessionRow, row: RefreshTokenRow }
  type Rotated = Found & { row: RefreshTokenRow & { rotatedAt: Date }, child: RefreshTokenRow | undefined }
  type Presented =
    | { kind: 'unknown' }
    | ({ kind: 'ended' } & Found)
    | ({ kind: 'live' } & Found)
    | ({ kind: 'grace' } & Rotated)
    | ({ kind: 'reused' } & Rotated)

  async function lookUp (token: string): Promise<FoundRefreshToken | undefined> {
    if (!OPAQUE_TOKEN_FORMAT.test(token)) return undefined
    return store.findRefreshToken(hashOpaqueToken(token))
  }

  async function classify (tx: Tx, token: string, found: FoundRefreshToken, t: Date): Promise<Presented> {
    const family = await store.lockRefreshToken(tx, found)
    if (family === undefined) return { kind: 'unknown' }
    const { user, session, row } = family
    if (!user.isActive || session.revokedAt !== null || session.expiresAt <= t || row.revokedAt !== null || row.expiresAt <= t) {
      return { kind: 'ended', family, user, session, row }
    }
    if (row.rotatedAt === null) return { kind: 'live', family, user, session, row }
    const child = await store.childToken(tx, row.id)
    const inGrace = deps.graceSeconds > 0 && t.getTime() - row.rotatedAt.getTime() <= deps.graceSeconds * 1000
    const childLive = child !== undefined && child.rotatedAt === null && child.revokedAt === null &&
      child.expiresAt > t && child.tokenHash === hashOpaqueToken(successorOf(token))
    const rotated: Rotated = { family, user, session, row: { ...row, rotatedAt: row.rotatedAt }, child }
    return inGrace && childLive ? { kind: 'grace', ...rotated } : { kind: 'reused', ...rotated }
  }

  /**
   * Reuse of a rotated token: someone holds a copy. Every session of the user is revoked, the
   * event recorded with both addresses, and the owner alerted, in the caller's transaction.
   */
  async function revokeFamily (tx: Tx, p: Extract<Presented, { kind: 'reused' }>, ctx: RequestContext, t: Date, via: 'refresh' | 'logout') {
    const { user, session, row, child } = p
    const revoked = await store.revokeAllSessions(tx, user.id, 'refresh_token_reused')
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

  return {
    /**
     * Starts a session (a login) and its first refresh token, updates the user's lastLoginAt and
     * records `login_success` (with the amr) or `signup`: one statement, in the caller's
     * transaction when given one. Throws ACCOUNT_DISABLED when the user was deactivated meanwhile.
     */
    async create (q: Queryable, userId: string, ctx: RequestContext, amr: Amr[], event: 'login_success' | 'signup' = 'login_success') {
      const token = newOpaqueToken()
      const expiresAt = new Date(now().getTime() + lifetimeMs)
      const opened = await store.openSession(q, userId, {
        ctx, amr, tokenHash: hashOpaqueToken(token), expiresAt, record: { type: event, metadata: event === 'signup' ? null : { amr } }
      })
      if (opened === undefined) throw new AppError('ACCOUNT_DISABLED')
      afterCommit(q, () => audit.count(event, true))
      return { user: opened.user, sessionId: opened.sessionId, refresh: { token, expiresAt } }
    },

    /**
     * Exchanges a refresh token for its successor. Serialised per user and session with row
     * locks (user → session → token), so parallel refreshes with one token all see the first
     * rotation and get its successor.
     */
    async rotate (token: string, ctx: RequestContext): Promise<{ session: Pick<SessionRow, 'id' | 'amr'>, user: PublicUserRow, refresh: IssuedRefreshToken }> {
      if (!OPAQUE_TOKEN_FORMAT.test(token)) throw new AppError('REFRESH_TOKEN_INVALID')
      // The common case, a live token, in one statement (one round trip); anything else (the
      // grace window, reuse, an ended session, a token never issued) by the rules below.
      // One clock reading for the whole request, taken when it arrives: a refresh that waited on
      // a lock is judged (the grace window) by when it was sent, as its racing twin was.
      const t = now()
      const successor = successorOf(token)
      const expiresAt = new Date(t.getTime() + lifetimeMs)
      const rotated = await store.rotateLiveRefreshToken({
        hash: hashOpaqueToken(token), successorHash: hashOpaqueToken(successor), expiresAt, ctx, t
      })
      if (rotated !== undefined) {
        audit.count('refresh', true)
        return { ...rotated, refresh: { token: successor, expiresAt } }
      }

      const found = await lookUp(token)
      if (found === undefined) throw new AppError('REFRESH_TOKEN_INVALID')

      const outcome = await transaction(db, async (tx): Promise<RotateOutcome> => {
        const p = await classify(tx, token, found, t)
        if (p.kind === 'unknown' || p.kind === 'ended') return { kind: 'invalid' }
        if (p.kind === 'reused') {
          await revokeFamily(tx, p, ctx, t, 'refresh')
          return { kind: 'reused' }
        }
        const { family, user, session } = p
        if (p.kind === 'live') {
          const updated = await store.rotateRefreshToken(tx, family, successor, ctx, expiresAt)
          await audit.record({ type: 'refresh', ctx, userId: user.id, email: user.email, success: true, metadata: { sessionId: session.id } }, tx)
          return { kind: 'ok', session: updated, user, refresh: { token: successor, expiresAt } }
        }
        // Within the grace window: hand out the same successor again.
        await store.touchSession(tx, family)
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
          await store.revokeSession(tx, p.user.id, p.session.id, 'logout')
          await audit.record({ type: 'logout', ctx, userId: p.user.id, email: p.user.email, success: true, metadata: { sessionId: p.session.id, via: 'refresh_cookie' } }, tx)
        }
        return p.kind !== 'unknown'
      })
    },

    /** Throws SESSION_REVOKED unless the session is live now (for a check under the caller's user lock). */
    async assertLive (tx: Tx, sessionId: string): Promise<void> {
      if (!await store.isSessionLive(tx, sessionId)) throw new AppError('SESSION_REVOKED')
    },

    /** The user's live sessions, most recently used first; `current` marks the caller's. */
    async list (userId: string, currentSessionId: string | null): Promise<PublicSession[]> {
      return (await store.liveSessions(userId)).map((s) => toPublicSession(s, currentSessionId))
    },

    state: (sessionId: string) => store.sessionState(sessionId)
  }
}
export type SessionService = ReturnType<typeof createSessionService>
