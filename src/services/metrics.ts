import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'

/** What the outbox gauges read at scrape time. */
export interface OutboxBacklog {
  pending: number
  oldestPendingSeconds: number
}

/**
 * Prometheus metrics of one app instance, on a registry of its own (several apps can live in
 * one process, as in tests). Services count through these instruments; `GET /metrics` renders
 * the registry. Label values are bounded sets (route patterns, event types, outcomes), never
 * ids, emails or addresses.
 */
export function createMetrics (opts: { processMetrics?: boolean } = {}) {
  const registry = new Registry()
  if (opts.processMetrics === true) collectDefaultMetrics({ register: registry })
  let backlog: () => Promise<OutboxBacklog> = async () => ({ pending: 0, oldestPendingSeconds: 0 })

  return {
    registry,
    httpRequestDuration: new Histogram({
      name: 'gatehouse_http_request_duration_seconds',
      help: 'HTTP request duration by route pattern, method and status class',
      labelNames: ['route', 'method', 'status_class'] as const,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry]
    }),
    authEvents: new Counter({
      name: 'gatehouse_auth_events_total',
      help: 'Authentication events recorded in the audit log, by type and outcome',
      labelNames: ['type', 'outcome'] as const,
      registers: [registry]
    }),
    rateLimited: new Counter({
      name: 'gatehouse_rate_limited_total',
      help: 'Requests refused with 429, by the limit that refused them',
      labelNames: ['limit'] as const,
      registers: [registry]
    }),
    hibpChecks: new Counter({
      name: 'gatehouse_hibp_checks_total',
      help: 'Have I Been Pwned checks by outcome (ok, breached, unavailable)',
      labelNames: ['outcome'] as const,
      registers: [registry]
    }),
    outboxDeliveries: new Counter({
      name: 'gatehouse_outbox_deliveries_total',
      help: 'Email delivery attempts by outcome (sent, retry, failed, expired, released)',
      labelNames: ['outcome'] as const,
      registers: [registry]
    }),
    outboxPending: new Gauge({
      name: 'gatehouse_outbox_pending',
      help: 'Emails waiting to be delivered',
      registers: [registry],
      async collect () { this.set((await backlog()).pending) }
    }),
    outboxOldestPending: new Gauge({
      name: 'gatehouse_outbox_oldest_pending_seconds',
      help: 'Age of the oldest email waiting to be delivered (0 when none)',
      registers: [registry],
      async collect () { this.set((await backlog()).oldestPendingSeconds) }
    }),
    redisUp: new Gauge({
      name: 'gatehouse_redis_up',
      help: '1 while Redis (REDIS_URL) answers, 0 while it does not (limits then count per instance)',
      registers: [registry]
    }),
    redisOutages: new Counter({
      name: 'gatehouse_redis_outages_total',
      help: 'Times Redis became unreachable (counted once per outage, not per failed request)',
      registers: [registry]
    }),
    /** The outbox tells the gauges how to read its backlog. */
    observeOutbox (read: () => Promise<OutboxBacklog>): void {
      backlog = read
    }
  }
}
export type Metrics = ReturnType<typeof createMetrics>
