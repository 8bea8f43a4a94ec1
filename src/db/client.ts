import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { type SQL, sql } from 'drizzle-orm'
import { integer, pgSchema, type PgDatabase, type PgQueryResultHKT, type PgTransaction } from 'drizzle-orm/pg-core'
import type { ExtractTablesWithRelations } from 'drizzle-orm'
import * as schema from './schema.ts'
import { type Broadcast, localBroadcast } from '../services/state-store.ts'

/** Both drivers (postgres.js and PGlite) fit this type; services only see it. */
export type Db = PgDatabase<PgQueryResultHKT, typeof schema>
export type Tx = PgTransaction<PgQueryResultHKT, typeof schema, ExtractTablesWithRelations<typeof schema>>
/** Query helpers accept the database or an open transaction. */
export type Queryable = Db | Tx

export interface DbHandle {
  db: Db
  kind: 'postgres' | 'pglite'
  /** Runs the drizzle migrations (serialised across instances on PostgreSQL). */
  migrate: () => Promise<void>
  /**
   * How many migrations the database has applied (the readiness check); throws when it is
   * unreachable. On PostgreSQL it runs on a connection of its own, so a pool saturated by
   * requests never delays the probe.
   */
  ping: () => Promise<number>
  /** Closes the connection(s); queries fail afterwards. */
  close: () => Promise<void>
  /**
   * Messages to every app on this database: PostgreSQL LISTEN/NOTIFY (every instance), or, on
   * the embedded database, in-process (only one process can open it).
   */
  broadcast: Broadcast
  /** PGlite only: the whole database as a gzipped tarball (for `connectPglite({ from })`). */
  snapshot?: () => Promise<Blob>
}

/**
 * Finds `drizzle/` (the generated migrations) by walking up from this file, so the same
 * code works from `src/db` under tsx and from `dist/` (the bundle) after a build.
 */
export function migrationsFolder (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const candidate = join(dir, 'drizzle')
    if (existsSync(join(candidate, 'meta', '_journal.json'))) return candidate
    const parent = dirname(dir)
    if (parent === dir) throw new Error('drizzle/ migrations folder not found')
    dir = parent
  }
}

/** Arbitrary constant key for the migration advisory lock. */
const MIGRATION_LOCK_KEY = 7_245_310_021

export async function connectPostgres (url: string, opts: { max?: number } = {}): Promise<DbHandle> {
  const { default: postgres } = await import('postgres')
  const { drizzle } = await import('drizzle-orm/postgres-js')
  const { migrate } = await import('drizzle-orm/postgres-js/migrator')
  const client = postgres(url, {
    max: opts.max ?? 10,
    onnotice: () => {},
    connect_timeout: 10,
    connection: { application_name: 'gatehouse' }
  })
  const db = drizzle(client, { schema }) as unknown as Db
  const listening: Array<{ unlisten: () => Promise<void> }> = []
  // The readiness probe's own connection, opened at the first probe and kept.
  let probe: ReturnType<typeof postgres> | undefined
  return {
    db,
    kind: 'postgres',
    async ping () {
      probe ??= postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 10, connection: { application_name: 'gatehouse-health' } })
      const [row] = await probe<Array<{ n: number }>>`select count(*)::int as n from drizzle.__drizzle_migrations`
      return row?.n ?? 0
    },
    broadcast: {
      publish: async (channel, message) => { await client.notify(channel, message) },
      // postgres.js listens on a connection of its own and listens again after a reconnect.
      subscribe: async (channel, handler) => { listening.push(await client.listen(channel, handler)) },
      close: async () => { await Promise.all(listening.splice(0).map((l) => l.unlisten().catch(() => {}))) }
    },
    async migrate () {
      // Several instances may start at once: one migrates, the others wait for it. The lock is
      // held on a connection of its own, so migrating works whatever the pool size (with a pool
      // of one, a lock taken from the pool would leave the migrator waiting forever).
      const lock = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 10, connection: { application_name: 'gatehouse-migrate-lock' } })
      try {
        await lock`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`
        try {
          await migrate(drizzle(client, { schema }), { migrationsFolder: migrationsFolder() })
        } finally {
          await lock`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`
        }
      } finally {
        await lock.end({ timeout: 5 })
      }
    },
    close: async () => {
      await Promise.all(listening.splice(0).map((l) => l.unlisten().catch(() => {})))
      await Promise.all([client.end({ timeout: 5 }), probe?.end({ timeout: 5 })])
    }
  }
}

/**
 * Embedded PostgreSQL (PGlite): `dataDir` on disk, or in memory when undefined; `from` starts
 * an in-memory database from a snapshot.
 */
export async function connectPglite (dataDir?: string, opts: { from?: Blob } = {}): Promise<DbHandle> {
  const { PGlite } = await import('@electric-sql/pglite')
  const { drizzle } = await import('drizzle-orm/pglite')
  const { migrate } = await import('drizzle-orm/pglite/migrator')
  if (dataDir !== undefined) mkdirSync(dataDir, { recursive: true })
  const client = opts.from !== undefined
    ? new PGlite({ loadDataDir: opts.from })
    : new PGlite(dataDir === undefined ? undefined : resolve(dataDir))
  await client.waitReady
  const db = drizzle(client, { schema })
  return {
    db: db as unknown as Db,
    kind: 'pglite',
    broadcast: localBroadcast(),
    migrate: () => migrate(db, { migrationsFolder: migrationsFolder() }),
    ping: () => appliedMigrationCount(db as unknown as Db),
    close: async () => { if (!client.closed) await client.close() },
    snapshot: () => client.dumpDataDir('gzip')
  }
}

export async function connect (opts: { databaseUrl?: string, dataDir: string, poolMax?: number }): Promise<DbHandle> {
  return opts.databaseUrl !== undefined
    ? connectPostgres(opts.databaseUrl, { max: opts.poolMax })
    : connectPglite(join(opts.dataDir, 'pglite'))
}

/** The rows of `db.execute()`: postgres.js returns an array, PGlite `{ rows }`. */
export function rowsOf<T = Record<string, unknown>> (result: unknown): T[] {
  return Array.isArray(result) ? result : (result as { rows: T[] }).rows
}

/** drizzle's own bookkeeping table; declared here, not in schema.ts, so drizzle-kit leaves it alone. */
const appliedMigrations = pgSchema('drizzle').table('__drizzle_migrations', { id: integer('id') })

/** How many migrations drizzle/ holds (read once). */
export function expectedMigrationCount (): number {
  const journal = JSON.parse(readFileSync(join(migrationsFolder(), 'meta', '_journal.json'), 'utf8')) as { entries: unknown[] }
  return journal.entries.length
}

/** How many migrations the database has applied; throws when the database is unreachable. */
export async function appliedMigrationCount (db: Queryable): Promise<number> {
  const [row] = await db.select({ n: sql<number>`count(*)::int` }).from(appliedMigrations)
  return row?.n ?? 0
}

interface PreparingSession {
  prepareQuery: (query: { sql: string, params: unknown[] }, fields: undefined, name: string, arrayMode: boolean) => { execute: () => Promise<unknown> }
}
/**
 * `q.execute(query)` as a named prepared statement: PostgreSQL parses and plans it once per
 * connection instead of on every call (drizzle prepares only queries given a name, and raw
 * statements never). For the hot statements of the request paths (the one-statement rotation and
 * login). The name must be unique to the statement's text. Goes through drizzle's session, as
 * drizzle's own `.prepare(name)` does, so it runs on either driver and inside a transaction.
 */
export function executePrepared (q: Queryable, name: string, query: SQL): Promise<unknown> {
  const { session, dialect } = q as unknown as { session: PreparingSession, dialect: { sqlToQuery: (s: SQL) => { sql: string, params: unknown[] } } }
  return session.prepareQuery(dialect.sqlToQuery(query), undefined, name, false).execute()
}
