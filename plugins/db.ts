import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { connect, type Db, type DbHandle } from '../src/db/client.ts'

declare module 'fastify' {
  interface FastifyInstance {
    db: Db
    dbHandle: DbHandle
  }
}

export interface DbPluginOptions {
  /** A database the caller owns (tests): used as is, neither migrated nor closed here. */
  handle?: DbHandle
}

/**
 * The database: PostgreSQL via postgres.js when DATABASE_URL is set, otherwise embedded PGlite
 * under DATA_DIR. Migrations run before the app accepts traffic; the connection closes with the app.
 */
async function db (fastify: FastifyInstance, opts: DbPluginOptions) {
  let handle = opts.handle
  if (handle === undefined) {
    const { DATABASE_URL, DATA_DIR, DB_POOL_MAX } = fastify.config
    handle = await connect({ databaseUrl: DATABASE_URL, dataDir: DATA_DIR, poolMax: DB_POOL_MAX })
    const owned = handle
    fastify.addHook('onClose', async () => { await owned.close() })
    await handle.migrate()
    fastify.log.info({ driver: handle.kind }, 'database migrated')
    if (handle.kind === 'pglite' && fastify.config.NODE_ENV === 'production') {
      fastify.log.warn('DATABASE_URL is not set: running on the embedded PGlite database, which is meant for development (one connection, main thread, no horizontal scaling)')
    }
  }
  fastify.decorate('db', handle.db)
  fastify.decorate('dbHandle', handle)
}

export default fp(db, { name: 'db', fastify: '5.x' })
