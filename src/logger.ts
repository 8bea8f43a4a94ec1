import type { FastifyBaseLogger, FastifyServerOptions } from 'fastify'

/**
 * pino paths that never reach a log line: credentials in headers, and any field that could
 * hold a password, token, code or secret, at the top level or one/two levels down.
 */
const SECRET_FIELDS = [
  'password', 'currentPassword', 'newPassword', 'passwordHash', 'token', 'accessToken', 'refreshToken',
  'mfaToken', 'tokenHash', 'secret', 'totpSecret', 'totpSecretEnc', 'totpPendingSecretEnc', 'backupCode',
  'backupCodes', 'codeHash', 'otpauthUri', 'authorization', 'cookie', 'jwtSecret'
]
// `code` is not in the list: it names error codes (FST_ERR_…, ECONNREFUSED) that operators need.
// Request bodies, where TOTP codes travel, are never logged.
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  ...SECRET_FIELDS,
  ...SECRET_FIELDS.map((f) => `*.${f}`),
  ...SECRET_FIELDS.map((f) => `*.*.${f}`)
]

/** SQLSTATE codes are five characters of digits and capitals (22P02, 23505, 08006 …). */
const SQLSTATE = /^[0-9A-Z]{5}$/
/** Quoted text in a database message is where PostgreSQL echoes values ("invalid input … "x""). */
const redactQuoted = (message: string) => message.replace(/"[^"]*"|'[^']*'/g, '"[…]"')

const NEVER_LOGGED = new Set(['cause', 'params', 'parameters', 'args', 'query'])

interface LoggedError {
  type: string
  message: string
  code?: string
  stack: string
  [field: string]: unknown
}

/**
 * How errors reach the log: type, code, message and stack frames, and never the parameters of a
 * failed query (a reset link, a hash). drizzle wraps driver errors with the parameters in the
 * message; drivers keep them in fields; PostgreSQL echoes values inside quotes in its message.
 * So a database error keeps its SQLSTATE, the statement with its $n placeholders, and the names
 * of what failed (table, column, constraint), and loses every value.
 */
export function serializeError (err: unknown, depth = 0): LoggedError {
  if (err === null || typeof err !== 'object') return { type: typeof err, message: String(err), stack: '' }
  const e = err as Record<string, unknown> & { message?: unknown, stack?: unknown, cause?: unknown }
  const type = (e.constructor as { name?: string } | undefined)?.name ?? 'Error'
  const stack = typeof e.stack === 'string' ? e.stack.split('\n').filter((l) => /^\s+at /.test(l)).join('\n') : ''
  const code = typeof e.code === 'string' || typeof e.code === 'number' ? String(e.code) : undefined
  const fromDatabase = 'query' in e || (code !== undefined && SQLSTATE.test(code) && 'severity' in e)
  let message = typeof e.message === 'string' ? e.message : ''
  if (type === 'DrizzleQueryError' && typeof e.query === 'string') message = `Failed query: ${e.query}`
  else if (fromDatabase) message = redactQuoted(message)
  const out: LoggedError = { type, message, stack }
  if (code !== undefined) out.code = code
  if (fromDatabase) {
    for (const field of ['severity', 'table', 'column', 'constraint', 'routine'] as const) {
      if (typeof e[field] === 'string' && e[field] !== '') out[field] = e[field]
    }
  } else {
    // Other errors keep their own fields (statusCode, responseCode, command …) when they are plain values.
    for (const [k, v] of Object.entries(e)) {
      if (!(k in out) && !NEVER_LOGGED.has(k) && (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')) out[k] = v
    }
  }
  if (e.cause !== undefined && depth < 4) out.cause = serializeError(e.cause, depth + 1)
  return out
}

const withoutQuery = (url: string) => {
  const cut = url.search(/[?#]/)
  return cut === -1 ? url : `${url.slice(0, cut)}?[…]`
}

/** Fastify's logger options: pino with request serialisers that include headers, redacted. */
export function loggerOptions (level: string, stream?: NodeJS.WritableStream): FastifyServerOptions['logger'] {
  return {
    level,
    redact: { paths: REDACT_PATHS, censor: '[Redacted]' },
    ...(stream === undefined ? {} : { stream }),
    serializers: {
      err: serializeError,
      // Query strings are never logged, in the URL or in a Referer: they can carry a live token
      // (the reset page's ?token=… when the app shares the service's origin).
      req (req) {
        const referer = req.headers.referer
        return {
          method: req.method,
          url: withoutQuery(req.url),
          remoteAddress: req.ip,
          headers: referer === undefined ? req.headers : { ...req.headers, referer: withoutQuery(referer) }
        }
      }
    }
  }
}

type Bindings = Record<string, unknown>
type ChildOptions = { level?: string }

/**
 * A request's logger that becomes a pino child only when something is logged at an enabled level.
 * Fastify makes a child logger for every request (to bind its reqId); with the redaction paths
 * above, pino redacts those bindings on every child, which was the costliest part of a request that
 * logs nothing (every request at LOG_LEVEL=warn that succeeds). The level is the route's `logLevel`
 * when it has one, as with Fastify's own children.
 */
class RequestLogger {
  #parent: FastifyBaseLogger
  #bindings: Bindings
  #options: ChildOptions
  #child: FastifyBaseLogger | undefined
  #threshold: number

  constructor (parent: FastifyBaseLogger, bindings: Bindings, options: ChildOptions) {
    this.#parent = parent
    this.#bindings = bindings
    this.#options = options
    this.#threshold = levelValue(parent, options.level ?? parent.level)
  }

  #real (): FastifyBaseLogger {
    this.#child ??= this.#parent.child(this.#bindings, this.#options)
    return this.#child
  }

  #log (level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace', args: unknown[]): void {
    if (this.#child === undefined && levelValue(this.#parent, level) < this.#threshold) return
    ;(this.#real()[level] as (...a: unknown[]) => void)(...args)
  }

  get level (): string { return this.#child?.level ?? this.#options.level ?? this.#parent.level }
  set level (level: string) { this.#real().level = level }
  fatal (...args: unknown[]) { this.#log('fatal', args) }
  error (...args: unknown[]) { this.#log('error', args) }
  warn (...args: unknown[]) { this.#log('warn', args) }
  info (...args: unknown[]) { this.#log('info', args) }
  debug (...args: unknown[]) { this.#log('debug', args) }
  trace (...args: unknown[]) { this.#log('trace', args) }
  silent () {}
  child (bindings: Bindings, options?: ChildOptions) { return this.#real().child(bindings, options) }
  isLevelEnabled (level: string): boolean { return levelValue(this.#parent, level) >= levelValue(this.#parent, this.level) }
  bindings (): Bindings { return (this.#real() as unknown as { bindings: () => Bindings }).bindings() }
}

function levelValue (logger: FastifyBaseLogger, level: string): number {
  const values = (logger as unknown as { levels?: { values: Record<string, number> } }).levels?.values
  return values?.[level] ?? (level === 'silent' ? Number.POSITIVE_INFINITY : 0)
}

/** Fastify's `childLoggerFactory`: see RequestLogger. */
export const requestLogger: NonNullable<FastifyServerOptions['childLoggerFactory']> = (logger, bindings, options) =>
  new RequestLogger(logger, bindings, options as ChildOptions) as unknown as FastifyBaseLogger
