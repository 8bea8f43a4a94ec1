import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { AppError } from '../src/errors.ts'
import { clientKey } from '../src/services/client-key.ts'

/**
 * Per-IP limits (@fastify/rate-limit): a global limit on every route, and tighter per-route
 * limits that routes declare in `config.rateLimit` (login: 5/min per IP). Health routes opt out.
 * `request.ip` honours TRUST_PROXY, so behind a proxy the client address is what counts; IPv6
 * clients count per /64 (RATE_LIMIT_IPV6_PREFIX), since one client holds the whole prefix.
 * The store is in-process; REDIS_URL-backed sharing across instances comes with the Redis work.
 * @see https://github.com/fastify/fastify-rate-limit
 */
async function rateLimits (fastify: FastifyInstance) {
  const { RATE_LIMIT_ENABLED, RATE_LIMIT_MAX, RATE_LIMIT_WINDOW_SECONDS, RATE_LIMIT_IPV6_PREFIX } = fastify.config
  await fastify.register(rateLimit, {
    global: RATE_LIMIT_ENABLED,
    max: RATE_LIMIT_MAX,
    timeWindow: RATE_LIMIT_WINDOW_SECONDS * 1000,
    // Route-level limits count on their own key, separately from the global one.
    keyGenerator: (request) => clientKey(request.ip, RATE_LIMIT_IPV6_PREFIX),
    onExceeded: countRateLimited,
    errorResponseBuilder: (_request, context) =>
      new AppError('RATE_LIMITED', `Rate limit exceeded, retry in ${context.after}`)
  })
}

export default fp(rateLimits, { name: 'rate-limit', fastify: '5.x', dependencies: ['errors', 'telemetry'] })

/** Counts a refusal under the limit that made it: the route's own (its pattern), or the global one. */
export function countRateLimited (request: FastifyRequest): void {
  const own = typeof request.routeOptions.config.rateLimit === 'object'
  request.server.telemetry.metrics.rateLimited.inc({ limit: own ? `${request.method} ${request.routeOptions.url}` : 'global' })
}

/** A route's own per-IP limit, or `false` when rate limiting is switched off. */
export function routeRateLimit (enabled: boolean, max: number, windowSeconds: number) {
  return enabled ? { max, timeWindow: windowSeconds * 1000 } : false
}
