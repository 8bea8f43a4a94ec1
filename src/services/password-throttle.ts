import { and, desc, eq, gt, inArray, or, sql } from 'drizzle-orm'
import type { Db } from '../db/client.ts'
import { authEvents } from '../db/schema.ts'
import { AppError } from '../errors.ts'
import type { AuditLog, RequestContext } from './audit.ts'
import type { Telemetry } from './telemetry.ts'

export interface PasswordThrottleSettings {
  /** Wrong passwords for one account within the window that lock it (for unknown IPs). */
  maxFailures: number
  windowMinutes: number
  /** An IP that signed up or logged into the account within this many days is never locked out. */
  knownIpDays: number
}

/**
 * The per-account brute-force guard for every place a password is checked: login, and the
 * re-checks of a signed-in user (password change, TOTP setup, MFA disable), so a stolen session
 * cannot be used to guess the password from many addresses. It counts the account's wrong
 * passwords in the audit log, across instances; an IP that signed up or logged into the account
 * recently is exempt, so an attacker hammering the account cannot lock its owner out.
 */
export function createPasswordThrottle (deps: { db: Db, now: () => Date, audit: AuditLog, telemetry: Telemetry, settings: PasswordThrottleSettings }) {
  const { db, now } = deps
  const { maxFailures, windowMinutes, knownIpDays } = deps.settings
  // Only wrong passwords count: not a refused login with the right one (a deactivated account, an
  // unverified email) nor a failed passkey, or the owner could lock themselves out.
  const wrongPassword = or(
    and(eq(authEvents.eventType, 'login_failure'), inArray(authEvents.failureReason, ['invalid_password', 'unknown_email'])),
    and(eq(authEvents.eventType, 'password_change'), eq(authEvents.failureReason, 'invalid_current_password')),
    and(eq(authEvents.eventType, 'mfa_failure'), eq(authEvents.failureReason, 'invalid_password'))
  )

  // Every login runs this read: prepared once, not built again for each (drizzle's query building
  // was the largest part of a login's own CPU after Argon2).
  const recentFailures = db.select({ createdAt: authEvents.createdAt, userId: authEvents.userId })
    .from(authEvents)
    .where(and(eq(authEvents.email, sql.placeholder('email')), eq(authEvents.success, false), wrongPassword, gt(authEvents.createdAt, sql.placeholder('since'))))
    .orderBy(desc(authEvents.createdAt))
    .limit(maxFailures)
    .prepare('gatehouse_recent_password_failures')

  /** Seconds until the account opens again for this IP, or 0. */
  async function lockedFor (email: string, ip: string): Promise<{ retryAfter: number, userId: string | null }> {
    const t = now().getTime()
    const recent = await recentFailures.execute({ email, since: new Date(t - windowMinutes * 60_000).toISOString() })
    const nth = recent[maxFailures - 1]
    const open = { retryAfter: 0, userId: null }
    if (nth === undefined) return open

    if (knownIpDays > 0) {
      const [known] = await db.select({ id: authEvents.id })
        .from(authEvents)
        .where(and(
          eq(authEvents.email, email),
          eq(authEvents.ipAddress, ip),
          inArray(authEvents.eventType, ['login_success', 'signup']),
          eq(authEvents.success, true),
          gt(authEvents.createdAt, new Date(t - knownIpDays * 86_400_000))
        ))
        .limit(1)
      if (known !== undefined) return open
    }
    // The account the failures were against (login does not look the user up before this check).
    const userId = recent.find((r) => r.userId !== null)?.userId ?? null
    return { retryAfter: Math.max(1, Math.ceil((nth.createdAt.getTime() + windowMinutes * 60_000 - t) / 1000)), userId }
  }

  return {
    lockedFor,

    /** Throws 429 (and records `rate_limited`) while the account is locked for this IP. */
    async assertOpen (email: string, ctx: RequestContext, userId: string | null = null): Promise<void> {
      const locked = await lockedFor(email, ctx.ip)
      const { retryAfter } = locked
      if (retryAfter === 0) return
      deps.telemetry.metrics.rateLimited.inc({ limit: 'account_password' })
      await deps.audit.record({ type: 'rate_limited', ctx, userId: userId ?? locked.userId, email, success: false, failureReason: 'account_login_failures' })
      throw new AppError('RATE_LIMITED', 'Too many wrong passwords for this account, please try again later', { retryAfter })
    }
  }
}
export type PasswordThrottle = ReturnType<typeof createPasswordThrottle>
