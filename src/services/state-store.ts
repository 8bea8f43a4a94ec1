import { EventEmitter } from 'node:events'
import type { Redis } from 'ioredis'
import type { Telemetry } from './telemetry.ts'
import { withTimeout } from './with-timeout.ts'

/** Carries messages between instances: Redis pub/sub, PostgreSQL LISTEN/NOTIFY, or in-process. */
export interface Broadcast {
  publish: (channel: string, message: string) => Promise<void>
  /** Calls `handler` for every message on `channel`, this instance's own included. */
  subscribe: (channel: string, handler: (message: string) => void) => Promise<void>
  close: () => Promise<void>
}

/**
 * The state an instance keeps that must hold across instances, behind one interface:
 *
 * - `redis`: the client the rate limits count on (@fastify/rate-limit's Redis store), when
 *   REDIS_URL is set; `available()` says whether it answers now. While it does not, limits count
 *   per instance (see plugins/rate-limit.ts) and `failed(err)` reports what a caller saw.
 * - `broadcast`: messages to every instance (revoked sessions): Redis pub/sub with Redis,
 *   otherwise PostgreSQL LISTEN/NOTIFY (or in-process, for the embedded database).
 * - `status()`: `ok` / `down` for readiness (`undefined` without Redis).
 *
 * What stays in PostgreSQL and why is in the README ("Several instances"): counters that lock
 * accounts must survive a Redis restart and agree with the audit log, so they live there.
 */
export interface StateStore {
  readonly kind: 'memory' | 'redis'
  readonly redis: Redis | undefined
  readonly broadcast: Broadcast
  available: () => boolean
  failed: (err: unknown) => void
  status: () => 'ok' | 'down' | undefined
  close: () => Promise<void>
}

/** In-process messages: one instance (or several apps sharing one embedded database in tests). */
export function localBroadcast (): Broadcast {
  const bus = new EventEmitter()
  bus.setMaxListeners(0)
  const handlers: Array<[string, (m: string) => void]> = []
  return {
    publish: async (channel, message) => { bus.emit(channel, message) },
    subscribe: async (channel, handler) => {
      bus.on(channel, handler)
      handlers.push([channel, handler])
    },
    close: async () => { for (const [c, h] of handlers) bus.off(c, h) }
  }
}

/**
 * One app's view of a bus it does not own (the database's): its subscriptions end when it
 * closes, the bus stays for the others.
 */
export function scopedBroadcast (bus: Broadcast): Broadcast {
  const closers: Array<() => void> = []
  return {
    publish: (channel, message) => bus.publish(channel, message),
    subscribe: async (channel, handler) => {
      let open = true
      await bus.subscribe(channel, (m) => { if (open) handler(m) })
      closers.push(() => { open = false })
    },
    close: async () => { for (const c of closers) c() }
  }
}

/** No Redis: rate limits in process; messages through `broadcast` (PostgreSQL or in-process). */
export function memoryStateStore (broadcast: Broadcast): StateStore {
  return {
    kind: 'memory',
    redis: undefined,
    broadcast,
    available: () => false,
    failed: () => {},
    status: () => undefined,
    close: () => broadcast.close()
  }
}

/**
 * Redis through ioredis. Commands fail at once while Redis is unreachable (no offline queue), so a
 * caller never waits on it; the connection retries in the background. An outage is logged once
 * when it starts and once when it ends, and counted in `gatehouse_redis_outages_total`.
 */
export async function redisStateStore (url: string, telemetry: Telemetry): Promise<StateStore> {
  // Loaded only when configured: most single-instance deployments never need it.
  const { Redis } = await import('ioredis')
  const options = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    // A Redis that hangs (frozen, partitioned) must not hang requests: a command that takes longer
    // fails, and the caller counts in process instead.
    commandTimeout: 500,
    retryStrategy: (times: number) => Math.min(100 * times, 1000),
    lazyConnect: false
  }
  const client = new Redis(url, { ...options, connectionName: 'gatehouse' })
  const subscriber = new Redis(url, { ...options, connectionName: 'gatehouse-subscriber', enableOfflineQueue: true })
  const { log, metrics } = telemetry
  /** `starting` until the first connection or failure; an outage is the time spent `down`. */
  let state: 'starting' | 'up' | 'down' = 'starting'
  let closing = false
  metrics.redisUp.set(0)

  function down (err: unknown): void {
    if (closing || state === 'down') return
    state = 'down'
    metrics.redisUp.set(0)
    metrics.redisOutages.inc()
    log.error({ err }, 'Redis is unavailable: rate limits count per instance, and revocations reach other instances within SESSION_CHECK_TTL_SECONDS, until it is back')
    probe()
  }

  function up (): void {
    if (closing) return
    if (state === 'down') log.info({}, 'Redis is available again: rate limits and revocation messages are shared again')
    state = 'up'
    metrics.redisUp.set(1)
  }

  /**
   * While down on a connection that stayed open (an error reply such as OOM or READONLY, a
   * command timeout), no `ready` event will come: ping every second until Redis answers.
   */
  function probe (): void {
    const timer = setTimeout(() => {
      if (closing || state !== 'down') return
      if (client.status !== 'ready') return probe() // reconnecting: `ready` will tell
      client.ping().then(up, probe)
    }, 1000)
    timer.unref()
  }

  client.on('ready', up)
  client.on('error', down)
  client.on('close', () => { if (state === 'up') down(new Error('connection to Redis closed')) })
  subscriber.on('error', () => {}) // the client's events report the outage; this one reconnects on its own

  const handlers = new Map<string, Array<(m: string) => void>>()
  subscriber.on('message', (channel: string, message: string) => {
    for (const h of handlers.get(channel) ?? []) h(message)
  })
  // Every (re)connection subscribes every channel again: ioredis re-subscribes only channels a
  // server had confirmed, so one asked for while Redis was down would otherwise never be heard.
  subscriber.on('ready', () => {
    for (const channel of handlers.keys()) subscriber.subscribe(channel).catch(() => {})
  })

  return {
    kind: 'redis',
    redis: client,
    broadcast: {
      publish: async (channel, message) => { await client.publish(channel, message) },
      subscribe: async (channel, handler) => {
        const list = handlers.get(channel) ?? []
        list.push(handler)
        handlers.set(channel, list)
        // ioredis subscribes again after every reconnect. Waits a moment for the first
        // subscription, so an instance that is ready hears revocations; Redis down does not
        // hold the start-up (SESSION_CHECK_TTL_SECONDS bounds what it misses).
        if (list.length === 1) await withTimeout(subscriber.subscribe(channel), 2000).catch(() => {})
      },
      close: async () => {}
    },
    available: () => state === 'up',
    failed: down,
    status: () => (state === 'up' ? 'ok' : 'down'),
    async close () {
      closing = true
      client.disconnect()
      subscriber.disconnect()
    }
  }
}
