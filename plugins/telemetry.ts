import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { createMetrics } from '../src/services/metrics.ts'
import type { Telemetry } from '../src/services/telemetry.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** The one telemetry dependency: the app's logger and its Prometheus metrics. */
    telemetry: Telemetry
  }
}

/**
 * Creates the instance's metrics (process metrics too when METRICS_ENABLED) and times every
 * response by route pattern, method and status class. Registered before the plugins that count.
 */
async function telemetry (fastify: FastifyInstance) {
  const enabled = fastify.config.METRICS_ENABLED
  const metrics = createMetrics({ processMetrics: enabled })
  fastify.decorate('telemetry', { log: fastify.log, metrics })
  if (!enabled) return
  fastify.addHook('onResponse', async (request, reply) => {
    metrics.httpRequestDuration.observe({
      route: request.routeOptions.url ?? 'unmatched',
      method: request.method,
      status_class: `${Math.floor(reply.statusCode / 100)}xx`
    }, reply.elapsedTime / 1000)
  })
}

export default fp(telemetry, { name: 'telemetry', fastify: '5.x' })
