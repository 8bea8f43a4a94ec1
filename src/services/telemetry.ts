import { createMetrics, type Metrics } from './metrics.ts'

/**
 * What services report to operators, handed to them by the factory in one dependency instead
 * of a callback per feature: `log` is pino's interface (the app passes its logger), `metrics`
 * the instance's Prometheus instruments.
 */
export interface Log {
  info: (obj: object, msg: string) => void
  warn: (obj: object, msg: string) => void
  error: (obj: object, msg: string) => void
}

export interface Telemetry {
  log: Log
  metrics: Metrics
}

const ignore = () => {}
/** For services used outside the app (scripts, unit tests): logs nowhere, counts into a registry nobody reads. */
export function silentTelemetry (): Telemetry {
  return { log: { info: ignore, warn: ignore, error: ignore }, metrics: createMetrics() }
}
