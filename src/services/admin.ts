import { and, count, countDistinct, desc, eq, gte, inArray, isNotNull, lt, max, type SQL, sql } from 'drizzle-orm'
import type { Db } from '../db/client.ts'
import { authEvents } from '../db/schema.ts'
import { transaction } from '../db/transaction.ts'
import { AppError } from '../errors.ts'
import type { AccountStore, Role } from './account-store.ts'
import { type PublicUser, toPublicUser } from './accounts.ts'
import type { AuditLog, RequestContext } from './audit.ts'
import { type PublicSession, toPublicSession } from './sessions.ts'

/** The acting admin, as the guard established it. */
export interface Actor { userId: string, ctx: RequestContext }

export interface EventFilters {
  userId?: string
  email?: string
  type?: string
  ip?: string
  since?: Date
  before?: Date
  /** With `before`: the id of the last event seen, so events sharing its time are not skipped. */
  beforeId?: string
  limit: number
}

/** The contract's Event object, plus `metadata` (what the event is about: sessions, changes, the target of an admin action). */
export interface PublicEvent {
  id: string
  userId: string | null
  email: string | null
  eventType: string
  ipAddress: string | null
  userAgent: string | null
  success: boolean
  failureReason: string | null
  createdAt: string
  metadata: Record<string, unknown> | null
}

/**
 * The failures the suspicious-patterns report counts: someone proving an identity and failing
 * (a password, a second factor, a service client's secret). Refusals that follow from them
 * (rate_limited) and notices (refresh_token_reused) are not counted again.
 */
export const AUTH_FAILURE_TYPES = ['login_failure', 'mfa_failure', 'client_auth_failure'] as const

/** Rows per list in the suspicious-patterns report, worst first. */
const REPORT_ROWS = 100

/**
 * The admin half of the contract: users (find, deactivate, change role), their sessions, the
 * audit log and the suspicious-patterns report. Every write is recorded as an event whose
 * `userId`/`email` name the acting admin and whose metadata names the target.
 */
export function createAdminService (deps: { db: Db, now: () => Date, store: AccountStore, audit: AuditLog }) {
  const { db, now, store, audit } = deps


  /**
   * The audit-log query for `filters`, newest first, ties by id. Each filter has an index on
   * (column, created_at, id), which serves both the filter and the order: a backward index scan
   * that stops after `limit` rows, with no sort, however large the log (plans in the README).
   * `before` alone is the contract's "strictly older"; with `beforeId` it is a (createdAt, id)
   * cursor that skips nothing.
   */
  function eventsQuery (f: EventFilters) {
    const where: Array<SQL | undefined> = [
      f.userId === undefined ? undefined : eq(authEvents.userId, f.userId),
      f.email === undefined ? undefined : eq(authEvents.email, f.email),
      f.type === undefined ? undefined : eq(authEvents.eventType, f.type),
      f.ip === undefined ? undefined : eq(authEvents.ipAddress, f.ip),
      f.since === undefined ? undefined : gte(authEvents.createdAt, f.since),
      f.before === undefined
        ? undefined
        : f.beforeId === undefined
          ? lt(authEvents.createdAt, f.before)
          : sql`(${authEvents.createdAt}, ${authEvents.id}) < (${f.before.toISOString()}::timestamptz, ${f.beforeId}::uuid)`
    ]
    return db.select().from(authEvents).where(and(...where)).orderBy(desc(authEvents.createdAt), desc(authEvents.id)).limit(f.limit)
  }

  /**
   * Authentication failures in the last `windowMinutes`, aggregated in SQL: by IP and by email
   * (at least `threshold` failures), IPs failing against at least `threshold` distinct
   * accounts (credential stuffing) and accounts failing from at least `threshold` distinct IPs
   * (password spraying against one account, or a botnet). Worst first, at most 100 rows each.
   * Each reads the partial index of failures by time, so only the window is scanned.
   */
  function suspiciousQueries (query: { windowMinutes: number, threshold: number }) {
    const since = new Date(now().getTime() - query.windowMinutes * 60_000)
    const failures = and(eq(authEvents.success, false), inArray(authEvents.eventType, [...AUTH_FAILURE_TYPES]), gte(authEvents.createdAt, since))
    const n = count()
    const lastAt = max(authEvents.createdAt)
    const distinctEmails = countDistinct(authEvents.email)
    const distinctIps = countDistinct(authEvents.ipAddress)
    const ip = sql<string>`${authEvents.ipAddress}`
    const email = sql<string>`${authEvents.email}`
    return {
      byIp: db.select({ ip, failures: n, lastAt }).from(authEvents).where(and(failures, isNotNull(authEvents.ipAddress)))
        .groupBy(authEvents.ipAddress).having(gte(n, query.threshold)).orderBy(desc(n), desc(lastAt)).limit(REPORT_ROWS),
      byEmail: db.select({ email, failures: n, lastAt }).from(authEvents).where(and(failures, isNotNull(authEvents.email)))
        .groupBy(authEvents.email).having(gte(n, query.threshold)).orderBy(desc(n), desc(lastAt)).limit(REPORT_ROWS),
      stuffing: db.select({ ip, distinctEmails, failures: n }).from(authEvents).where(and(failures, isNotNull(authEvents.ipAddress)))
        .groupBy(authEvents.ipAddress).having(gte(distinctEmails, query.threshold)).orderBy(desc(distinctEmails), desc(n)).limit(REPORT_ROWS),
      spraying: db.select({ email, distinctIps, failures: n }).from(authEvents).where(and(failures, isNotNull(authEvents.email)))
        .groupBy(authEvents.email).having(gte(distinctIps, query.threshold)).orderBy(desc(distinctIps), desc(n)).limit(REPORT_ROWS)
    }
  }

  return {
    async listUsers (query: { q?: string, limit: number, offset: number }): Promise<{ items: PublicUser[], total: number }> {
      const { items, total } = await store.searchUsers(query)
      return { items: items.map(toPublicUser), total }
    },

    /**
     * `isActive` and/or `role`. Deactivation revokes every session at once (and the user's access
     * tokens fail the session check). An admin cannot deactivate or demote itself, so there is
     * always someone left to undo a mistake.
     */
    async updateUser (actor: Actor, targetId: string, patch: { isActive?: boolean, role?: Role }): Promise<PublicUser> {
      // Ids compare in their canonical (lower-case) form: an upper-case spelling of one's own id
      // is still oneself.
      const userId = targetId.toLowerCase()
      // The acting admin's email for a refusal; a success reads it from the row it locked.
      const refused = async (failureReason: string) => audit.record({
        type: 'admin_user_updated', ctx: actor.ctx, userId: actor.userId, email: await store.emailOf(actor.userId), success: false, failureReason,
        metadata: { targetUserId: userId, requested: patch }
      })
      if (userId === actor.userId.toLowerCase() && (patch.isActive === false || patch.role === 'user')) {
        await refused('own_account')
        throw new AppError('FORBIDDEN', 'An admin cannot deactivate or demote itself')
      }
      const result = await transaction(db, async (tx) => {
        const updated = await store.updateStatus(tx, actor.userId, userId, patch, 'deactivated_by_admin')
        if (updated.kind !== 'updated') return updated.kind
        const { before, after, revoked } = updated
        const email = updated.actor.email
        const changes: Record<string, { from: unknown, to: unknown }> = {}
        if (patch.isActive !== undefined) changes.isActive = { from: before.isActive, to: after.isActive }
        if (patch.role !== undefined) changes.role = { from: before.role, to: after.role }
        await audit.record({
          type: 'admin_user_updated', ctx: actor.ctx, userId: actor.userId, email, success: true,
          metadata: { targetUserId: after.id, targetEmail: after.email, changes, revokedSessions: revoked }
        }, tx)
        return after
      })
      // Another admin's change took the actor's role or account away meanwhile.
      if (result === 'actor_not_admin') {
        await refused('not_admin')
        throw new AppError('ADMIN_REQUIRED')
      }
      if (result === 'not_found') {
        await refused('user_not_found')
        throw new AppError('NOT_FOUND', 'User not found')
      }
      return toPublicUser(result)
    },

    /** The user's live sessions (`current` is always false: none of them is the admin's request). */
    async userSessions (userId: string): Promise<PublicSession[]> {
      if (await store.userById(userId) === undefined) throw new AppError('NOT_FOUND', 'User not found')
      return (await store.liveSessions(userId)).map((s) => toPublicSession(s, null))
    },

    /** Incident response: every session of the user revoked at once (by an admin who still is one). */
    async revokeUserSessions (actor: Actor, targetId: string): Promise<number> {
      const userId = targetId.toLowerCase()
      const result = await transaction(db, async (tx) => {
        const locked = await store.lockActorAndUser(tx, actor.userId, userId)
        if (locked.kind !== 'ok') return locked.kind
        const ids = await store.revokeAllSessions(tx, userId, 'revoked_by_admin')
        await audit.record({
          type: 'admin_sessions_revoked', ctx: actor.ctx, userId: actor.userId, email: locked.actor.email, success: true,
          metadata: { targetUserId: locked.user.id, targetEmail: locked.user.email, revokedSessions: ids.length }
        }, tx)
        return ids.length
      })
      if (typeof result === 'number') return result
      await audit.record({
        type: 'admin_sessions_revoked', ctx: actor.ctx, userId: actor.userId, email: await store.emailOf(actor.userId), success: false,
        failureReason: result === 'not_found' ? 'user_not_found' : 'not_admin', metadata: { targetUserId: userId }
      })
      if (result === 'actor_not_admin') throw new AppError('ADMIN_REQUIRED')
      throw new AppError('NOT_FOUND', 'User not found')
    },

    eventsQuery,

    async events (filters: EventFilters): Promise<PublicEvent[]> {
      const rows = await eventsQuery(filters)
      return rows.map((e) => ({
        id: e.id,
        userId: e.userId,
        email: e.email,
        eventType: e.eventType,
        ipAddress: e.ipAddress,
        userAgent: e.userAgent,
        success: e.success,
        failureReason: e.failureReason,
        createdAt: e.createdAt.toISOString(),
        metadata: e.metadata ?? null
      }))
    },

    suspiciousQueries,

    /** The suspicious-patterns report (see suspiciousQueries). */
    async suspicious (query: { windowMinutes: number, threshold: number }) {
      const q = suspiciousQueries(query)
      const [byIp, byEmail, stuffing, spraying] = await Promise.all([q.byIp, q.byEmail, q.stuffing, q.spraying])
      // max() over a non-empty group is never null; the driver may hand it back as text.
      const iso = (d: Date | string | null) => new Date(d ?? 0).toISOString()
      return {
        windowMinutes: query.windowMinutes,
        threshold: query.threshold,
        byIp: byIp.map((r) => ({ ip: r.ip, failures: Number(r.failures), lastAt: iso(r.lastAt) })),
        byEmail: byEmail.map((r) => ({ email: r.email, failures: Number(r.failures), lastAt: iso(r.lastAt) })),
        stuffing: stuffing.map((r) => ({ ip: r.ip, distinctEmails: Number(r.distinctEmails), failures: Number(r.failures) })),
        spraying: spraying.map((r) => ({ email: r.email, distinctIps: Number(r.distinctIps), failures: Number(r.failures) }))
      }
    }
  }
}
export type AdminService = ReturnType<typeof createAdminService>
