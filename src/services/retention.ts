import { and, inArray, lt, sql, type SQL } from 'drizzle-orm'
import { type Db, type Queryable, rowsOf } from '../db/client.ts'
import { authEvents, emailOutbox, webauthnChallenges } from '../db/schema.ts'
import { transaction } from '../db/transaction.ts'
import type { Telemetry } from './telemetry.ts'

export interface RetentionSettings {
  authEventsDays: number
  outboxDays: number
  /** Rows deleted per statement (and transaction): bounds lock time and memory. */
  batchSize?: number
}

/** Arbitrary constant key of the retention job's advisory lock. */
const RETENTION_LOCK_KEY = 7_245_310_022

/**
 * Prunes what is kept only for a while: audit events older than `authEventsDays`, outbox rows
 * that are finished (sent, failed or expired) and older than `outboxDays` (pending email is never
 * pruned), and expired WebAuthn challenges (anyone may ask for login options, so they would otherwise
 * pile up). It deletes in batches, each in a transaction holding an advisory lock: while one
 * instance prunes, another that tries skips its round.
 */
export function createRetention (deps: { db: Db, now: () => Date, telemetry: Telemetry, settings: RetentionSettings }) {
  const { db, now } = deps
  const batchSize = deps.settings.batchSize ?? 5000

  /** One batch; undefined when another instance holds the lock. */
  async function batch (table: typeof authEvents | typeof emailOutbox | typeof webauthnChallenges, old: SQL | undefined): Promise<number | undefined> {
    return transaction(db, async (tx: Queryable) => {
      const [lock] = rowsOf<{ locked: boolean }>(await tx.execute(sql`select pg_try_advisory_xact_lock(${RETENTION_LOCK_KEY}) as locked`))
      if (lock?.locked !== true) return undefined
      const doomed = tx.select({ id: table.id }).from(table).where(old).limit(batchSize)
      const deleted = await tx.delete(table).where(inArray(table.id, doomed)).returning({ id: table.id })
      return deleted.length
    })
  }

  async function prune (table: typeof authEvents | typeof emailOutbox | typeof webauthnChallenges, old: SQL | undefined): Promise<number | undefined> {
    let total = 0
    for (;;) {
      const n = await batch(table, old)
      if (n === undefined) return total === 0 ? undefined : total
      total += n
      if (n < batchSize) return total
    }
  }

  return {
    async runOnce (): Promise<{ skipped: true } | { skipped: false, authEvents: number, outbox: number, webauthnChallenges: number }> {
      const t = now().getTime()
      const events = await prune(authEvents, lt(authEvents.createdAt, new Date(t - deps.settings.authEventsDays * 86_400_000)))
      if (events === undefined) return { skipped: true }
      const outbox = await prune(emailOutbox, and(
        inArray(emailOutbox.status, ['sent', 'failed', 'expired']),
        lt(emailOutbox.createdAt, new Date(t - deps.settings.outboxDays * 86_400_000))
      )) ?? 0
      const challenges = await prune(webauthnChallenges, lt(webauthnChallenges.expiresAt, new Date(t))) ?? 0
      if (events + outbox + challenges > 0) deps.telemetry.log.info({ authEvents: events, outbox, webauthnChallenges: challenges }, 'retention: pruned old rows')
      return { skipped: false, authEvents: events, outbox, webauthnChallenges: challenges }
    }
  }
}
export type Retention = ReturnType<typeof createRetention>
