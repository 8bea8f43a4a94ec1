import { and, asc, eq, inArray, lte, sql } from 'drizzle-orm'
import type { Db, Queryable } from '../db/client.ts'
import { emailOutbox } from '../db/schema.ts'
import type { Email, Mailer } from './mailer.ts'

export type EmailKind = 'refresh_token_reused' | 'password_reset' | 'password_changed' | 'mfa_disabled'

export interface OutboxSettings {
  maxAttempts: number
  backoffBaseSeconds: number
  /** A claimed email is due again after this long if its sender died mid-delivery. */
  leaseSeconds: number
  batchSize?: number
}

/**
 * The durable email outbox. `enqueue` writes in the caller's transaction, so an email exists
 * exactly when the change that causes it commits. The worker claims due rows with
 * FOR UPDATE SKIP LOCKED (safe with several instances), pushes `next_attempt_at` forward by a
 * lease while it sends, and then marks the row sent, or schedules a retry with exponential
 * backoff, or gives up after `maxAttempts` and marks it failed.
 */
export function createOutbox (deps: { db: Db, now: () => Date, mailer: Mailer, settings: OutboxSettings, onError?: (err: unknown, id: string) => void }) {
  const { db, now, settings } = deps
  const batchSize = settings.batchSize ?? 10

  function backoffMs (attempts: number): number {
    return Math.min(settings.backoffBaseSeconds * 1000 * 2 ** Math.max(0, attempts - 1), 3_600_000)
  }

  async function claim () {
    const t = now()
    const due = db.select({ id: emailOutbox.id }).from(emailOutbox)
      .where(and(eq(emailOutbox.status, 'pending'), lte(emailOutbox.nextAttemptAt, t)))
      .orderBy(asc(emailOutbox.nextAttemptAt))
      .limit(batchSize)
      .for('update', { skipLocked: true })
    return db.update(emailOutbox)
      .set({ attempts: sql`${emailOutbox.attempts} + 1`, nextAttemptAt: new Date(t.getTime() + settings.leaseSeconds * 1000) })
      .where(and(inArray(emailOutbox.id, due), eq(emailOutbox.status, 'pending')))
      .returning()
  }

  return {
    async enqueue (tx: Queryable, kind: EmailKind, email: Email): Promise<void> {
      const t = now()
      await tx.insert(emailOutbox).values({
        kind,
        toAddress: email.to,
        subject: email.subject,
        textBody: email.text,
        maxAttempts: settings.maxAttempts,
        nextAttemptAt: t,
        createdAt: t
      })
    },

    /** Delivers what is due now; returns how many were sent and how many failed this round. */
    async runOnce (): Promise<{ sent: number, failed: number }> {
      const rows = await claim()
      let sent = 0
      let failed = 0
      for (const row of rows) {
        try {
          await deps.mailer.send({ to: row.toAddress, subject: row.subject, text: row.textBody })
          await db.update(emailOutbox).set({ status: 'sent', sentAt: now(), lastError: null }).where(eq(emailOutbox.id, row.id))
          sent++
        } catch (err) {
          failed++
          deps.onError?.(err, row.id)
          const giveUp = row.attempts >= row.maxAttempts
          await db.update(emailOutbox).set({
            status: giveUp ? 'failed' : 'pending',
            lastError: String((err as Error).message ?? err).slice(0, 1000),
            nextAttemptAt: new Date(now().getTime() + backoffMs(row.attempts))
          }).where(eq(emailOutbox.id, row.id))
        }
      }
      return { sent, failed }
    },

    backoffMs
  }
}
export type Outbox = ReturnType<typeof createOutbox>

/** Runs `outbox.runOnce` every `intervalMs` until stopped; one round at a time. */
export function startOutboxWorker (outbox: Outbox, intervalMs: number, onError: (err: unknown) => void) {
  let stopped = false
  let running: Promise<unknown> = Promise.resolve()
  let timer: NodeJS.Timeout | undefined
  const tick = () => {
    running = outbox.runOnce().catch(onError).finally(() => {
      if (!stopped) timer = setTimeout(tick, intervalMs)
    })
  }
  timer = setTimeout(tick, 0)
  return {
    async stop () {
      stopped = true
      clearTimeout(timer)
      await running
    }
  }
}
