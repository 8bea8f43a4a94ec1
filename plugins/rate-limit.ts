import { createRequire } from 'node:module'
import rateLimit, { type FastifyRateLimitStore, type FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { AppError } from '../src/errors.ts'
import { clientKey } from '../src/services/client-key.ts'
import type { StateStore } from '../src/services/state-store.ts'

// The plugin's own stores (CommonJS, not in its exports' types): counting on Redis, and in process.
const require = createRequire(import.meta.url)
type StoreFn = new (...args: unknown[]) => FastifyRateLimitStore & { read?: FastifyRateLimitStore['incr'] }
const RedisStore = require('@fastify/rate-limit/store/RedisStore.js') as StoreFn
const LocalStore = require('@fastify/rate-limit/store/LocalStore.js') as StoreFn

type Incr = FastifyRateLimitStore['incr']
type ChildOptions = Parameters<FastifyRateLimitStore['child']>[0]

/**
 * Counts on Redis while it answers and in process while it does not: an outage turns the shared
 * limits into per-instance limits (never into no limits), and the first failure of an outage is
 * reported to the state store, which logs it once and counts it.
 */
function sharedStore (state: StateStore): FastifyRateLimitStoreCtor {
  class SharedStore {
    readonly shared: FastifyRateLimitStore & { read?: Incr }
    readonly local: FastifyRateLimitStore & { read?: Incr }
    constructor (opts: { continueExceeding?: boolean, exponentialBackoff?: boolean } | { shared: SharedStore['shared'], local: SharedStore['local'] }) {
      if ('shared' in opts) {
        this.shared = opts.shared
        this.local = opts.local
      } else {
        this.shared = new RedisStore(opts.continueExceeding, opts.exponentialBackoff, state.redis, 'gatehouse:rate-limit:')
        this.local = new LocalStore(opts.continueExceeding, opts.exponentialBackoff, 10_000)
      }
    }

    run (method: 'incr' | 'read', ...[key, callback, timeWindow, max]: Parameters<Incr>): void {
      const local = this.local[method]
      const shared = this.shared[method]
      if (local === undefined || shared === undefined) throw new Error(`rate-limit store without ${method}`)
      if (!state.available()) {
        local.call(this.local, key, callback, timeWindow, max)
        return
      }
      shared.call(this.shared, key, (err, result) => {
        if (err === null) {
          callback(null, result)
          return
        }
        state.failed(err)
        local.call(this.local, key, callback, timeWindow, max)
      }, timeWindow, max)
    }

    incr (...args: Parameters<Incr>): void { this.run('incr', ...args) }
    read (...args: Parameters<Incr>): void { this.run('read', ...args) }
    child (routeOptions: ChildOptions): SharedStore {
      return new SharedStore({ shared: this.shared.child(routeOptions), local: this.local.child(routeOptions) })
    }
  }
  return SharedStore as unknown as FastifyRateLimitStoreCtor
}

/**
 * Per-IP limits (@fastify/rate-limit): a global limit on every route, and tighter per-route
 * limits that routes declare in `config.rateLimit` (login: 5/min per IP). Health routes opt out.
 * `request.ip` honours TRUST_PROXY, so behind a proxy the client address is what counts; IPv6
 * clients count per /64 (RATE_LIMIT_IPV6_PREFIX), since one client holds the whole prefix.
 * With REDIS_URL the counters live in Redis, shared by every instance (falling back to per-instance
 * counting while Redis is down); without it, in process.
 * @see https://github.com/fastify/fastify-rate-limit
 */
async function rateLimits (fastify: FastifyInstance) {
  const { RATE_LIMIT_ENABLED, RATE_LIMIT_MAX, RATE_LIMIT_WINDOW_SECONDS, RATE_LIMIT_IPV6_PREFIX } = fastify.config
  await fastify.register(rateLimit, {
    ...(fastify.state.redis === undefined ? {} : { store: sharedStore(fastify.state) }),
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

export default fp(rateLimits, { name: 'rate-limit', fastify: '5.x', dependencies: ['errors', 'telemetry', 'state'] })

/** Counts a refusal under the limit that made it: the route's own (its pattern), or the global one. */
export function countRateLimited (request: FastifyRequest): void {
  const own = typeof request.routeOptions.config.rateLimit === 'object'
  request.server.telemetry.metrics.rateLimited.inc({ limit: own ? `${request.method} ${request.routeOptions.url}` : 'global' })
}

/** A route's own per-IP limit, or `false` when rate limiting is switched off. */
export function routeRateLimit (enabled: boolean, max: number, windowSeconds: number) {
  return enabled ? { max, timeWindow: windowSeconds * 1000 } : false
}
