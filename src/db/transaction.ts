import { PgTransaction } from 'drizzle-orm/pg-core'
import type { Db, Queryable, Tx } from './client.ts'

const hooksOf = new WeakMap<object, Array<() => void>>()

/**
 * `db.transaction` that also runs the hooks registered with `afterCommit` once it has
 * committed (and never when it rolls back). Services open their transactions with it.
 */
export async function transaction<T> (db: Db, fn: (tx: Tx) => Promise<T>): Promise<T> {
  const hooks: Array<() => void> = []
  const result = await db.transaction(async (tx) => {
    hooksOf.set(tx, hooks)
    return fn(tx)
  })
  for (const hook of hooks) hook()
  return result
}

/**
 * Runs `hook` when `q`'s changes are visible to everyone: after the commit of a transaction
 * opened with `transaction()`, or at once when `q` is the database itself (autocommit).
 */
export function afterCommit (q: Queryable, hook: () => void): void {
  if (!(q instanceof PgTransaction)) {
    hook()
    return
  }
  const hooks = hooksOf.get(q)
  if (hooks === undefined) throw new Error('afterCommit: open the transaction with transaction() from src/db/transaction.ts')
  hooks.push(hook)
}
