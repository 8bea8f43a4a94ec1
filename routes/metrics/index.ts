import { timingSafeEqual } from 'node:crypto'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { AppError } from '../../src/errors.ts'
import { errors } from '../../src/schemas/common.ts'

/**
 * GET /metrics: the Prometheus text format. With METRICS_TOKEN set, a Bearer token is required.
 * Neither rate limited nor logged at info (scrapers poll it). Absent with METRICS_ENABLED=false.
 */
const metricsRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { METRICS_ENABLED, METRICS_TOKEN } = fastify.config
  if (!METRICS_ENABLED) return
  const { registry } = fastify.telemetry.metrics
  const expected = METRICS_TOKEN === undefined ? undefined : Buffer.from(`Bearer ${METRICS_TOKEN}`)

  fastify.get('/metrics', {
    logLevel: 'warn',
    config: { rateLimit: false },
    schema: {
      tags: ['operations'],
      summary: 'Prometheus metrics (text format)',
      ...(expected === undefined ? {} : { security: [{ bearerAuth: [] }] }),
      response: { 200: Type.String({ description: 'Prometheus text exposition format' }), ...errors(401) }
    }
  }, async (request, reply) => {
    if (expected !== undefined) {
      const header = request.headers.authorization
      if (header === undefined || header === '') throw new AppError('AUTH_REQUIRED')
      const given = Buffer.from(header)
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new AppError('TOKEN_INVALID', 'Invalid metrics token')
    }
    return reply.type(registry.contentType).send(await registry.metrics())
  })
}

export default metricsRoutes
