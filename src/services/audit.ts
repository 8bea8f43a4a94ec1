import { sql } from 'drizzle-orm'
import { authEvents } from '../db/schema.ts'
import type { Queryable } from '../db/client.ts'
import { afterCommit } from '../db/transaction.ts'
import type { Telemetry } from './telemetry.ts'

/** Every event type of the contract (docs/API.md, "Event"); features still to come record the rest. */
export const EVENT_TYPES = [
  'signup', 'login_success', 'login_failure', 'mfa_failure', 'logout', 'logout_all', 'refresh',
  'refresh_token_reused', 'password_change', 'password_reset_requested', 'password_reset',
  'mfa_enabled', 'mfa_disabled', 'backup_code_used', 'rate_limited', 'admin_user_updated',
  'admin_sessions_revoked', 'email_verification_requested', 'email_verified', 'client_created',
  'client_updated', 'client_secret_rotated', 'client_deleted', 'client_auth_failure',
  'passkey_registered', 'passkey_removed', 'passkey_clone_suspected'
] as const
export type EventType = typeof EVENT_TYPES[number]

/**
 * `insert into auth_events (…)` with the columns in the order the single-statement writers (the
 * one-statement login and refresh, in the account store) select their values in: the event's
 * type, user id, email, IP, user agent, success, failure reason, metadata and time.
 */
export const INSERT_EVENT = sql.raw('insert into auth_events (event_type, user_id, email, ip_address, user_agent, success, failure_reason, metadata, created_at)')

/** Who made the request; routes pass it down as plain values, never the request. */
export interface RequestContext {
  ip: string
  userAgent: string | null
}

export interface AuthEvent {
  type: EventType
  ctx: RequestContext
  userId?: string | null
  email?: string | null
  success: boolean
  failureReason?: string | null
  metadata?: Record<string, unknown>
}

/**
 * The audit log: every authentication event, written in the caller's transaction when given,
 * and counted in `gatehouse_auth_events_total` once that transaction has committed.
 */
export function createAuditLog (deps: { db: Queryable, now: () => Date, telemetry: Telemetry }) {
  const { authEvents: counter } = deps.telemetry.metrics
  return {
    async record (event: AuthEvent, tx: Queryable = deps.db): Promise<void> {
      await tx.insert(authEvents).values({
        eventType: event.type,
        userId: event.userId ?? null,
        email: event.email ?? null,
        ipAddress: event.ctx.ip,
        userAgent: event.ctx.userAgent?.slice(0, 512) ?? null,
        success: event.success,
        failureReason: event.failureReason ?? null,
        metadata: event.metadata ?? null,
        createdAt: deps.now()
      })
      afterCommit(tx, () => counter.inc({ type: event.type, outcome: event.success ? 'success' : 'failure' }))
    },

    /** Counts an event a single statement wrote with its own change (the rotation), once committed. */
    count (type: EventType, success: boolean): void {
      counter.inc({ type, outcome: success ? 'success' : 'failure' })
    }
  }
}
export type AuditLog = ReturnType<typeof createAuditLog>
