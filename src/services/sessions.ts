import { eq } from 'drizzle-orm'
import { sessions, users } from '../db/schema.ts'
import type { Queryable } from '../db/client.ts'
import type { RequestContext } from './audit.ts'

export type Amr = 'pwd' | 'otp'

export interface SessionState {
  /** false when the session is revoked or expired, or the user deactivated or gone. */
  active: boolean
  role: 'user' | 'admin'
  passwordMustChange: boolean
}

/**
 * Sessions: one per login. `state(sid)` is what `authenticate` asks on every request; its answer
 * is cached per instance for `checkTtlSeconds`, so a logout reaches every instance within that
 * time without a database round-trip on every request.
 */
export function createSessionService (deps: {
  db: Queryable
  now: () => Date
  refreshDays: number
  checkTtlSeconds: number
}) {
  const cache = new Map<string, { state: SessionState, until: number }>()
  const MAX_CACHE = 100_000

  return {
    async create (userId: string, ctx: RequestContext, amr: Amr[], tx: Queryable = deps.db) {
      const now = deps.now()
      const [row] = await tx.insert(sessions).values({
        userId,
        amr,
        ipAddress: ctx.ip,
        userAgent: ctx.userAgent?.slice(0, 512) ?? null,
        createdAt: now,
        lastUsedAt: now,
        expiresAt: new Date(now.getTime() + deps.refreshDays * 86_400_000)
      }).returning()
      if (row === undefined) throw new Error('session insert returned no row')
      return row
    },

    async state (sessionId: string): Promise<SessionState> {
      const nowMs = deps.now().getTime()
      const hit = cache.get(sessionId)
      if (hit !== undefined && hit.until > nowMs) return hit.state

      const [row] = await deps.db
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
    },

    /** Drops this instance's cached answer (after a change made through this instance). */
    forget (sessionId: string): void {
      cache.delete(sessionId)
    }
  }
}
export type SessionService = ReturnType<typeof createSessionService>
