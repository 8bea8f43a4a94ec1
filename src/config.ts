import { isIP } from 'node:net'
import { createKeyRing, KeyMaterialError } from './services/key-ring.ts'
import Type, { type Static } from 'typebox'
import Value from 'typebox/value'
import { assertPasswordPolicy } from './services/password-policy.ts'

/**
 * Every setting of the service, parsed once from the environment.
 * Names follow docs/API.md, "Configuration", which marks the contract's names and the additions.
 * This module never touches the file system or the network: loadConfig is pure.
 */
const Bool = (def: boolean) => Type.Boolean({ default: def })
const Int = (def: number, minimum: number, maximum: number) => Type.Integer({ default: def, minimum, maximum })
const OptStr = (opts: { minLength?: number, maxLength?: number } = {}) => Type.Optional(Type.String({ minLength: 1, maxLength: 4096, ...opts }))

export const ConfigSchema = Type.Object({
  NODE_ENV: Type.Union([Type.Literal('development'), Type.Literal('production'), Type.Literal('test')], { default: 'development' }),
  HOST: Type.String({ default: '127.0.0.1', minLength: 1 }),
  PORT: Int(3000, 0, 65535),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { default: 'info' }),

  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  DATA_DIR: Type.String({ default: './data', minLength: 1 }),
  DB_POOL_MAX: Int(10, 1, 1000),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),

  JWT_SECRET: OptStr(),
  JWT_PRIVATE_KEY: OptStr({ maxLength: 16384 }),
  JWT_PUBLIC_KEYS: OptStr({ maxLength: 65536 }),
  JWT_ISSUER: Type.String({ default: 'gatehouse', minLength: 1, maxLength: 512 }),
  JWT_AUDIENCE: Type.String({ default: 'gatehouse', minLength: 1, maxLength: 512 }),
  ACCESS_TOKEN_EXPIRE_MINUTES: Int(15, 1, 1440),
  CLIENT_TOKEN_EXPIRE_MINUTES: Int(15, 1, 1440),
  REQUIRE_EMAIL_VERIFICATION: Bool(false),
  EMAIL_VERIFY_EXPIRE_HOURS: Int(24, 1, 720),
  REFRESH_TOKEN_EXPIRE_DAYS: Int(7, 1, 365),
  REFRESH_REUSE_GRACE_SECONDS: Int(10, 0, 300),
  SESSION_CHECK_TTL_SECONDS: Int(5, 0, 300),

  COOKIE_SECURE: Bool(true),
  COOKIE_DOMAIN: OptStr({ maxLength: 253 }),
  CORS_ORIGINS: Type.Array(Type.String({ pattern: '^https?://[^/\\s]+$' }), { default: [] }),
  TRUST_PROXY: Type.Union([Type.Boolean(), Type.Integer({ minimum: 1, maximum: 100 }), Type.Array(Type.String({ minLength: 1 }))], { default: false }),
  APP_URL: Type.String({ default: 'http://localhost:3000', pattern: '^https?://[^/?#\\s]+(/[^?#\\s]*)?$' }),
  /** WebAuthn relying party: its ID (a host name; default APP_URL's), its name, the origins passkeys are used from (default APP_URL's). */
  WEBAUTHN_RP_ID: Type.Optional(Type.String({ pattern: '^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$', maxLength: 253 })),
  WEBAUTHN_RP_NAME: Type.String({ default: 'Gatehouse', minLength: 1, maxLength: 64 }),
  WEBAUTHN_ORIGINS: Type.Array(Type.String({ pattern: '^https?://[^/\\s]+$' }), { default: [] }),
  /** The service's own external base URL; default http://localhost:PORT (resolved in loadConfig). */
  PUBLIC_URL: Type.Optional(Type.String({ pattern: '^https?://[^/?#\\s]+(/[^?#\\s]*)?$' })),
  BODY_LIMIT_BYTES: Int(16 * 1024, 1024, 1024 * 1024),

  SMTP_HOST: OptStr({ maxLength: 253 }),
  SMTP_PORT: Int(587, 1, 65535),
  SMTP_USER: OptStr(),
  SMTP_PASSWORD: OptStr(),
  SMTP_FROM: Type.String({ default: 'Gatehouse <no-reply@localhost>', minLength: 3 }),
  SMTP_SECURE: Bool(false),
  /** Unset: required unless SMTP_HOST is a loopback address (resolved in loadConfig). */
  SMTP_REQUIRE_TLS: Type.Optional(Type.Boolean()),
  /** Print emails (reset links included) to stdout instead of sending them; production needs it said explicitly. */
  MAIL_STDOUT: Bool(false),
  OUTBOX_POLL_INTERVAL_MS: Int(1000, 0, 3_600_000),
  OUTBOX_BACKOFF_BASE_SECONDS: Int(30, 1, 86400),
  OUTBOX_BACKOFF_MAX_SECONDS: Int(900, 1, 86400),
  OUTBOX_MAX_AGE_HOURS: Int(72, 1, 24 * 365),
  OUTBOX_LEASE_SECONDS: Int(120, 60, 86400),

  ADMIN_EMAIL: OptStr({ maxLength: 254 }),
  ADMIN_PASSWORD: OptStr({ maxLength: 128 }),

  HIBP_ENABLED: Bool(true),
  HIBP_API_URL: Type.String({ default: 'https://api.pwnedpasswords.com', pattern: '^https?://' }),
  HIBP_TIMEOUT_MS: Int(2000, 50, 60000),
  HIBP_FAIL_CLOSED: Bool(false),
  HIBP_CACHE_TTL_SECONDS: Int(300, 0, 86400),
  MFA_ENCRYPTION_KEY: OptStr(),
  MFA_ISSUER: Type.String({ default: 'Gatehouse', minLength: 1, maxLength: 100 }),

  ARGON2_MEMORY_COST: Int(19456, 8192, 1048576),
  ARGON2_TIME_COST: Int(2, 1, 20),
  ARGON2_PARALLELISM: Int(1, 1, 16),
  ARGON2_MAX_CONCURRENCY: Int(4, 1, 256),

  RATE_LIMIT_ENABLED: Bool(true),
  RATE_LIMIT_MAX: Int(300, 1, 1_000_000),
  RATE_LIMIT_WINDOW_SECONDS: Int(60, 1, 86400),
  RATE_LIMIT_LOGIN_MAX: Int(5, 1, 100_000),
  RATE_LIMIT_LOGIN_WINDOW_SECONDS: Int(60, 1, 86400),
  RATE_LIMIT_SIGNUP_MAX: Int(10, 1, 100_000),
  RATE_LIMIT_SIGNUP_WINDOW_SECONDS: Int(3600, 1, 86400),
  RATE_LIMIT_LOGIN_EMAIL_FAILURES: Int(10, 1, 10_000),
  RATE_LIMIT_LOGIN_EMAIL_WINDOW_MINUTES: Int(15, 1, 1440),
  RATE_LIMIT_KNOWN_IP_DAYS: Int(30, 0, 365),
  RATE_LIMIT_MFA_MAX: Int(5, 1, 100_000),
  RATE_LIMIT_MFA_WINDOW_SECONDS: Int(60, 1, 86400),
  RATE_LIMIT_MFA_ACCOUNT_FAILURES: Int(10, 1, 10_000),
  RATE_LIMIT_MFA_ACCOUNT_WINDOW_MINUTES: Int(15, 1, 1440),
  RATE_LIMIT_IPV6_PREFIX: Int(64, 32, 128),
  RATE_LIMIT_CLIENT_AUTH_FAILURES: Int(10, 1, 10_000),
  RATE_LIMIT_CLIENT_AUTH_WINDOW_MINUTES: Int(15, 1, 1440),
  RATE_LIMIT_FORGOT_MAX: Int(5, 1, 100_000),
  RATE_LIMIT_FORGOT_WINDOW_SECONDS: Int(900, 1, 86400),
  RATE_LIMIT_RESET_EMAILS_PER_HOUR: Int(3, 1, 100),
  RATE_LIMIT_VERIFY_EMAILS_PER_HOUR: Int(3, 1, 100),
  RATE_LIMIT_VERIFY_IP_PER_HOUR: Int(20, 1, 100_000),
  RATE_LIMIT_PASSWORD_MAX: Int(10, 1, 100_000),
  RATE_LIMIT_PASSWORD_WINDOW_SECONDS: Int(900, 1, 86400),

  AUTH_EVENTS_RETENTION_DAYS: Int(90, 1, 3650),
  OUTBOX_RETENTION_DAYS: Int(7, 1, 3650),
  RETENTION_INTERVAL_MINUTES: Int(60, 0, 10_080),

  METRICS_ENABLED: Bool(true),
  /** When set, GET /metrics needs `Authorization: Bearer <token>`. */
  METRICS_TOKEN: OptStr({ minLength: 16, maxLength: 512 }),

  HEALTH_DB_TIMEOUT_MS: Int(1000, 50, 30000),
  SHUTDOWN_DRAIN_MS: Int(5000, 0, 60000)
})

export type Config = Static<typeof ConfigSchema>
export type ConfigKey = keyof Config

export class ConfigError extends Error {
  override name = 'ConfigError'
}

const LIST_KEYS = new Set<ConfigKey>(['CORS_ORIGINS', 'WEBAUTHN_ORIGINS'])
const KEYS = Object.keys(ConfigSchema.properties) as ConfigKey[]

function parseBoolean (raw: string): boolean | string {
  const v = raw.trim().toLowerCase()
  if (['true', '1', 'yes', 'on'].includes(v)) return true
  if (['false', '0', 'no', 'off'].includes(v)) return false
  return raw
}

/** A host name that can only mean this machine: localhost or a loopback address. */
export function isLoopbackHost (host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1')
  if (h === 'localhost' || h.endsWith('.localhost')) return true
  if (isIP(h) === 4) return h.startsWith('127.')
  if (isIP(h) === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1' || /^::ffff:127\./.test(h)
  return false
}

function isAddressOrCidr (entry: string): boolean {
  if (['loopback', 'linklocal', 'uniquelocal'].includes(entry)) return true
  const [addr, bits, ...rest] = entry.split('/')
  if (rest.length > 0 || addr === undefined) return false
  const family = isIP(addr)
  if (family === 0) return false
  if (bits === undefined) return true
  if (!/^\d{1,3}$/.test(bits)) return false
  return Number(bits) <= (family === 4 ? 32 : 128)
}

/**
 * TRUST_PROXY as Fastify takes it. Only `true` and `false` are booleans: a number is a hop count
 * (`1` trusts one proxy, not every address), anything else a list of addresses/CIDRs.
 */
function parseTrustProxy (raw: string): unknown {
  const v = raw.trim().toLowerCase()
  if (v === 'true') return true
  if (v === 'false') return false
  if (/^\d+$/.test(v)) {
    if (Number(v) === 0) throw new ConfigError('Invalid configuration: TRUST_PROXY=0 is not a hop count; use false to trust no proxy')
    return Number(v)
  }
  const list = raw.split(',').map((s) => s.trim()).filter(Boolean)
  const bad = list.find((e) => !isAddressOrCidr(e))
  if (bad !== undefined) throw new ConfigError(`Invalid configuration: TRUST_PROXY has "${bad}", which is not true/false, a hop count, an IP address or a CIDR`)
  return list
}

/** A URL as an error line may show it: without its password. */
function withoutPassword (value: string): string {
  return value.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*):[^@\s]*@/i, '$1:***@')
}

function describe (key: string, message: string, value: unknown): string {
  const secret = /SECRET|PASSWORD|KEY/.test(key)
  const shown = secret || value === undefined ? '' : ` (got ${JSON.stringify(typeof value === 'string' ? withoutPassword(value) : value).slice(0, 80)})`
  return `Invalid configuration: ${key} ${message}${shown}`
}

/**
 * Parses and validates the environment. Throws ConfigError with one line naming the
 * first bad variable. Empty strings count as unset.
 */
export function loadConfig (env: Record<string, string | undefined>): Config {
  const raw: Record<string, unknown> = {}
  for (const key of KEYS) {
    const value = env[key]
    if (value === undefined || value.trim() === '') continue
    if (LIST_KEYS.has(key)) raw[key] = value.split(',').map((s) => s.trim()).filter(Boolean)
    else if (key === 'TRUST_PROXY') raw[key] = parseTrustProxy(value)
    else if ((ConfigSchema.properties[key] as { type?: unknown }).type === 'boolean') raw[key] = parseBoolean(value)
    else raw[key] = value.trim()
  }
  const converted = Value.Default(ConfigSchema, Value.Convert(ConfigSchema, raw)) as Record<string, unknown>
  for (const error of Value.Errors(ConfigSchema, converted)) {
    const key = error.instancePath.split('/')[1] ?? '(unknown)'
    throw new ConfigError(describe(key, error.message, env[key]))
  }
  const config = converted as Config

  if (config.JWT_SECRET !== undefined && Buffer.byteLength(config.JWT_SECRET) < 32) {
    throw new ConfigError('Invalid configuration: JWT_SECRET must be at least 32 bytes')
  }
  if (config.NODE_ENV === 'production' && config.JWT_SECRET === undefined) {
    throw new ConfigError('Invalid configuration: JWT_SECRET is required in production (at least 32 bytes)')
  }
  if (config.MFA_ENCRYPTION_KEY !== undefined && Buffer.byteLength(config.MFA_ENCRYPTION_KEY) < 32) {
    throw new ConfigError('Invalid configuration: MFA_ENCRYPTION_KEY must be at least 32 bytes')
  }
  if (config.NODE_ENV === 'production' && config.MFA_ENCRYPTION_KEY === undefined) {
    throw new ConfigError('Invalid configuration: MFA_ENCRYPTION_KEY is required in production (at least 32 bytes)')
  }
  try {
    // The key material is checked here, so a bad key stops start-up with one line naming it.
    createKeyRing({ secret: 'x'.repeat(32), privateKeyPem: config.JWT_PRIVATE_KEY, publicKeysPem: config.JWT_PUBLIC_KEYS })
  } catch (err) {
    if (err instanceof KeyMaterialError) throw new ConfigError(err.message)
    throw err
  }
  if (config.NODE_ENV === 'production' && config.SMTP_HOST === undefined && !config.MAIL_STDOUT) {
    throw new ConfigError('Invalid configuration: SMTP_HOST is required in production (emails carry reset links); set MAIL_STDOUT=true to print them to stdout instead')
  }
  if (config.SMTP_HOST !== undefined && config.MAIL_STDOUT) {
    throw new ConfigError('Invalid configuration: MAIL_STDOUT=true and SMTP_HOST are both set; choose one way to deliver email')
  }
  if (config.AUTH_EVENTS_RETENTION_DAYS < config.RATE_LIMIT_KNOWN_IP_DAYS) {
    // The known-IP exemption reads successful logins from the audit log.
    throw new ConfigError('Invalid configuration: AUTH_EVENTS_RETENTION_DAYS must be at least RATE_LIMIT_KNOWN_IP_DAYS (the known-IP exemption reads the audit log)')
  }
  config.SMTP_REQUIRE_TLS ??= config.SMTP_HOST === undefined || !isLoopbackHost(config.SMTP_HOST)
  config.PUBLIC_URL ??= `http://localhost:${config.PORT}`
  config.WEBAUTHN_RP_ID ??= new URL(config.APP_URL).hostname
  if (config.WEBAUTHN_ORIGINS.length === 0) config.WEBAUTHN_ORIGINS = [new URL(config.APP_URL).origin]
  for (const origin of config.WEBAUTHN_ORIGINS) {
    // WebAuthn §5.1.3/§13.4.9: a browser only uses the RP ID from its own host or a parent domain of it.
    const host = new URL(origin).hostname
    if (host !== config.WEBAUTHN_RP_ID && !host.endsWith(`.${config.WEBAUTHN_RP_ID}`)) {
      throw new ConfigError(`Invalid configuration: WEBAUTHN_ORIGINS: ${origin} is not on WEBAUTHN_RP_ID ${config.WEBAUTHN_RP_ID} or a subdomain of it`)
    }
  }
  if ((config.ADMIN_EMAIL === undefined) !== (config.ADMIN_PASSWORD === undefined)) {
    throw new ConfigError('Invalid configuration: ADMIN_EMAIL and ADMIN_PASSWORD must be set together')
  }
  if (config.ADMIN_EMAIL !== undefined && !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(config.ADMIN_EMAIL.trim())) {
    throw new ConfigError('Invalid configuration: ADMIN_EMAIL must be an email address')
  }
  if (config.ADMIN_PASSWORD !== undefined) {
    try {
      assertPasswordPolicy(config.ADMIN_PASSWORD)
    } catch (err) {
      throw new ConfigError(`Invalid configuration: ADMIN_PASSWORD fails the password policy: ${(err as Error).message}`)
    }
  }
  return config
}
