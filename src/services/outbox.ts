import { randomUUID } from 'node:crypto'
import { and, asc, count, eq, inArray, lte, min, sql } from 'drizzle-orm'
import type { Db, Queryable } from '../db/client.ts'
import { emailOutbox } from '../db/schema.ts'
import { isPermanentFailure, type Email, type Mailer } from './mailer.ts'
import type { Sealer } from './sealing.ts'
import type { Telemetry } from './telemetry.ts'
import { withTimeout } from './with-timeout.ts'

export type EmailKind = 'refresh_token_reused' | 'password_reset' | 'password_changed' | 'mfa_disabled' | 'mfa_failures' | 'email_verification' | 'passkey_added' | 'passkey_removed'

export interface OutboxSettings {
  backoffBaseSeconds: number
  /** Retries of transient failures are never further apart than this. */
  backoffMaxSeconds: number
  /** An email that has not gone out after this long is dropped as expired (unless it says otherwise). */
  maxAgeHours: number
  /** A claimed email is due again after this long if its sender died mid-delivery. */
  leaseSeconds: number
  /** The longest one send may take; a send that could not finish inside the lease is not started. */
  sendTimeoutMs?: number
  batchSize?: number
}

type Row = typeof emailOutbox.$inferSelect

/** Says why nothing more will be tried; the body (which may hold a live link) goes with it. */
const ended = (status: 'sent' | 'failed' | 'expired', t: Date, lastError: string | null) =>
  ({ status, claimId: null, bodySealed: null, textBody: null, lastError, ...(status === 'sent' ? { sentAt: t } : {}) })

const describeError = (err: unknown) => String((err as Error)?.message ?? err).slice(0, 1000)

/**
 * The durable email outbox. `enqueue` writes in the caller's transaction, so an email exists
 * exactly when the change that causes it commits; its body is sealed with the row id as context.
 *
 * The worker claims due rows with FOR UPDATE SKIP LOCKED (safe with several instances), under a
 * claim id and a lease. Every completion is conditional on still holding the claim, so a worker
 * whose lease ran out can neither mark a row sent twice nor set a sent row back to pending; and
 * a worker starts a send only when it can finish inside its lease, releasing the rest of its
 * batch otherwise. Transient failures retry with exponential backoff capped at
 * `backoffMaxSeconds` until the email expires; a permanent rejection fails it at once.
 */
export function createOutbox (deps: { db: Db, now: () => Date, mailer: Mailer, sealer: Sealer, settings: OutboxSettings, telemetry: Telemetry }) {
  const { db, now, settings, sealer } = deps
  const { log } = deps.telemetry
  const batchSize = settings.batchSize ?? 10
  const sendTimeoutMs = settings.sendTimeoutMs ?? 30_000
  const leaseMs = settings.leaseSeconds * 1000
  let reportedBacklog = 0
  let checkedAt = Number.NEGATIVE_INFINITY

  function backoffMs (attempts: number): number {
    return Math.min(settings.backoffBaseSeconds * 1000 * 2 ** Math.max(0, attempts - 1), settings.backoffMaxSeconds * 1000)
  }

  async function claim (claimId: string, t: Date) {
    const due = db.select({ id: emailOutbox.id }).from(emailOutbox)
      .where(and(eq(emailOutbox.status, 'pending'), lte(emailOutbox.nextAttemptAt, t)))
      .orderBy(asc(emailOutbox.nextAttemptAt))
      .limit(batchSize)
      .for('update', { skipLocked: true })
    return db.update(emailOutbox)
      .set({ attempts: sql`${emailOutbox.attempts} + 1`, claimId, nextAttemptAt: new Date(t.getTime() + leaseMs) })
      .where(and(inArray(emailOutbox.id, due), eq(emailOutbox.status, 'pending')))
      .returning()
  }

  /** Applies `set` to the row only while this worker's claim holds; returns whether it did. */
  async function complete (row: Row, claimId: string, set: Partial<Row>): Promise<boolean> {
    const done = await db.update(emailOutbox).set(set)
      .where(and(eq(emailOutbox.id, row.id), eq(emailOutbox.claimId, claimId), eq(emailOutbox.status, 'pending')))
      .returning({ id: emailOutbox.id })
    if (done.length === 0) log.warn({ emailId: row.id }, 'email outbox: claim lost before completion; another worker owns the row now')
    return done.length === 1
  }

  /** Gives claimed rows back untouched (not attempted), due at once. */
  async function release (rows: Row[], claimId: string): Promise<void> {
    if (rows.length === 0) return
    await db.update(emailOutbox)
      .set({ claimId: null, nextAttemptAt: now(), attempts: sql`${emailOutbox.attempts} - 1` })
      .where(and(inArray(emailOutbox.id, rows.map((r) => r.id)), eq(emailOutbox.claimId, claimId), eq(emailOutbox.status, 'pending')))
  }

  /** How many emails wait, and for how long the oldest has. */
  async function backlog (): Promise<{ pending: number, oldestPendingSeconds: number }> {
    const [row] = await db.select({ pending: count(), oldest: min(emailOutbox.createdAt) }).from(emailOutbox)
      .where(eq(emailOutbox.status, 'pending'))
    const oldestPendingSeconds = row?.oldest == null ? 0 : Math.max(0, Math.round((now().getTime() - new Date(row.oldest).getTime()) / 1000))
    return { pending: row?.pending ?? 0, oldestPendingSeconds }
  }
  deps.telemetry.metrics.observeOutbox(backlog)

  /**
   * Logs the backlog when it has grown, and once when it has drained. Looked at after a round
   * that claimed email or while a backlog was last seen, at most once a minute: not a count
   * query on every round.
   */
  async function reportBacklog (claimed: number): Promise<void> {
    const t = now().getTime()
    if ((claimed === 0 && reportedBacklog === 0) || t - checkedAt < 60_000) return
    checkedAt = t
    const { pending, oldestPendingSeconds } = await backlog()
    if (pending > reportedBacklog) {
      log.warn({ pending, oldestPendingSeconds }, 'email outbox backlog is growing')
      reportedBacklog = pending
    } else if (pending === 0 && reportedBacklog > 0) {
      log.info({ pending }, 'email outbox backlog cleared')
      reportedBacklog = 0
    }
  }

  async function deliver (row: Row, claimId: string): Promise<'sent' | 'retry' | 'failed' | 'expired'> {
    const t = now()
    if (row.expiresAt <= t) {
      await complete(row, claimId, ended('expired', t, row.lastError ?? 'expired before it could be delivered'))
      return 'expired'
    }
    let text: string
    try {
      text = row.bodySealed !== null ? sealer.open(row.bodySealed, row.id) : row.textBody ?? ''
    } catch (err) {
      log.error({ err, emailId: row.id }, 'email outbox: body cannot be opened (was MFA_ENCRYPTION_KEY changed?)')
      await complete(row, claimId, ended('failed', t, 'body cannot be decrypted with the current key'))
      return 'failed'
    }
    try {
      await withTimeout(deps.mailer.send({ to: row.toAddress, subject: row.subject, text }), sendTimeoutMs, 'send')
    } catch (err) {
      const at = now()
      const lastError = describeError(err)
      if (isPermanentFailure(err)) {
        log.warn({ err, emailId: row.id, kind: row.kind }, 'email refused permanently by the SMTP server')
        await complete(row, claimId, ended('failed', at, lastError))
        return 'failed'
      }
      log.warn({ err, emailId: row.id, kind: row.kind, attempts: row.attempts }, 'email delivery failed; will retry')
      const next = new Date(at.getTime() + backoffMs(row.attempts))
      await complete(row, claimId, next >= row.expiresAt
        ? ended('expired', at, lastError)
        : { claimId: null, lastError, nextAttemptAt: next })
      return next >= row.expiresAt ? 'expired' : 'retry'
    }
    return await complete(row, claimId, ended('sent', now(), null)) ? 'sent' : 'retry'
  }

  return {
    /**
     * Queues an email in the caller's transaction. `expiresAt`: when it stops being useful
     * (default: OUTBOX_MAX_AGE_HOURS from now).
     */
    async enqueue (tx: Queryable, kind: EmailKind, email: Email, opts: { expiresAt?: Date } = {}): Promise<void> {
      const t = now()
      const id = randomUUID()
      await tx.insert(emailOutbox).values({
        id,
        kind,
        toAddress: email.to,
        subject: email.subject,
        bodySealed: sealer.seal(email.text, id),
        nextAttemptAt: t,
        expiresAt: opts.expiresAt ?? new Date(t.getTime() + settings.maxAgeHours * 3_600_000),
        createdAt: t
      })
    },

    /** Delivers what is due now; returns what became of the rows this round claimed. */
    async runOnce (): Promise<{ sent: number, failed: number, retry: number, expired: number, released: number }> {
      const claimId = randomUUID()
      const claimedAt = now()
      const rows = await claim(claimId, claimedAt)
      const outcome = { sent: 0, failed: 0, retry: 0, expired: 0, released: 0 }
      const leaseEnd = claimedAt.getTime() + leaseMs
      for (const [i, row] of rows.entries()) {
        if (now().getTime() + sendTimeoutMs > leaseEnd) {
          const rest = rows.slice(i)
          await release(rest, claimId)
          outcome.released = rest.length
          break
        }
        outcome[await deliver(row, claimId)]++
      }
      for (const [kind, n] of Object.entries(outcome)) if (n > 0) deps.telemetry.metrics.outboxDeliveries.inc({ outcome: kind }, n)
      await reportBacklog(rows.length)
      return outcome
    },

    backoffMs
  }
}
export type Outbox = ReturnType<typeof createOutbox>
