import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { memoryStateStore, redisStateStore, scopedBroadcast, type StateStore } from '../src/services/state-store.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** State shared across instances: Redis when REDIS_URL is set, else in process (src/services/state-store.ts). */
    state: StateStore
  }
}

/**
 * The instance's shared state: Redis (rate-limit counters, revocation messages) when REDIS_URL
 * is set; otherwise in-process counters, and revocation messages through the database
 * (PostgreSQL LISTEN/NOTIFY). Redis is never a hard dependency: while it is down the service
 * keeps serving (see the rate-limit plugin and /health/ready).
 */
async function state (fastify: FastifyInstance) {
  const { REDIS_URL } = fastify.config
  const store = REDIS_URL === undefined
    ? memoryStateStore(scopedBroadcast(fastify.dbHandle.broadcast))
    : await redisStateStore(REDIS_URL, fastify.telemetry)
  fastify.decorate('state', store)
  fastify.addHook('onClose', async () => { await store.close() })
}

export default fp(state, { name: 'state', fastify: '5.x', dependencies: ['db', 'telemetry'] })
