/**
 * What services report to operators, handed to them by the factory in one dependency instead
 * of a callback per feature. `log` is pino's interface (the app passes its logger); metrics
 * join it when they exist.
 */
export interface Log {
  info: (obj: object, msg: string) => void
  warn: (obj: object, msg: string) => void
  error: (obj: object, msg: string) => void
}

export interface Telemetry {
  log: Log
}

const ignore = () => {}
/** For services used outside the app (scripts, unit tests). */
export const silentTelemetry: Telemetry = { log: { info: ignore, warn: ignore, error: ignore } }
