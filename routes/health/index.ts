import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { expectedMigrationCount } from '../../src/db/client.ts'
import { withTimeout } from '../../src/services/with-timeout.ts'

const Check = Type.Union([Type.Literal('ok'), Type.Literal('down')])
const ReadySchema = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')]),
  checks: Type.Object({
    db: Check,
    redis: Type.Optional(Type.Union([Type.Literal('ok'), Type.Literal('down')], { description: 'only with REDIS_URL; informational: the service stays ready without Redis' }))
  })
})

/**
 * Probes for load balancers and orchestrators: liveness never touches the database;
 * readiness pings it (and checks every migration is applied) under HEALTH_DB_TIMEOUT_MS,
 * and turns 503 as soon as the service starts shutting down. With REDIS_URL it also reports
 * `checks.redis`, without changing the status: the database is the only hard dependency. Neither is rate limited
 * or logged at info level.
 */
const healthRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const expected = expectedMigrationCount()
  const config = { rateLimit: false as const }

  fastify.get('/health/live', {
    logLevel: 'warn',
    config,
    schema: { tags: ['health'], response: { 200: Type.Object({ status: Type.Literal('ok') }) } }
  }, async () => ({ status: 'ok' as const }))

  // Probes that arrive together share one database check: a burst of them (every load
  // balancer, every few seconds, or a probe storm) is one query, not one each.
  let inFlight: Promise<boolean> | undefined
  const databaseUp = () => {
    inFlight ??= withTimeout(fastify.dbHandle.ping(), fastify.config.HEALTH_DB_TIMEOUT_MS)
      .then((applied) => applied >= expected)
      .finally(() => { inFlight = undefined })
    return inFlight
  }

  fastify.get('/health/ready', {
    logLevel: 'warn',
    config,
    schema: { tags: ['health'], response: { 200: ReadySchema, 503: ReadySchema } }
  }, async (request, reply) => {
    let up = false
    if (!fastify.isClosing()) {
      try {
        up = await databaseUp()
      } catch (err) {
        request.log.warn({ err }, 'readiness: database check failed')
      }
    }
    // Redis is not a hard dependency: reported, but never a reason to leave the pool.
    const redis = fastify.state.status()
    const extra = redis === undefined ? {} : { redis }
    if (up) return { status: 'ok' as const, checks: { db: 'ok' as const, ...extra } }
    return reply.code(503).send({ status: 'unavailable' as const, checks: { db: 'down' as const, ...extra } })
  })
}

export default healthRoutes
