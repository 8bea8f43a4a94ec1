import type { Config } from '../config.ts'
import type { Db } from '../db/client.ts'
import { type AccessClaims, createAccountService } from './accounts.ts'
import { createAuditLog } from './audit.ts'
import { createCredentialService } from './credentials.ts'
import { createEmailVerification } from './email-verification.ts'
import { createBreachChecker } from './hibp.ts'
import { createMfaService, type MfaTokenCodec } from './mfa.ts'
import { createSmtpMailer, createStdoutMailer, type Mailer } from './mailer.ts'
import { createOutbox } from './outbox.ts'
import { createPasskeyService } from './passkeys.ts'
import { createPasswordHasher } from './passwords.ts'
import { createPasswordThrottle } from './password-throttle.ts'
import { createRetention } from './retention.ts'
import { createSealer, deriveKey } from './sealing.ts'
import { createAccountStore } from './account-store.ts'
import { createAdminService } from './admin.ts'
import { createClientService } from './clients.ts'
import { createOAuthService } from './oauth.ts'
import { createSessionService } from './sessions.ts'
import { createTaskService } from './tasks.ts'
import type { KeyRing } from './key-ring.ts'
import type { Broadcast } from './state-store.ts'
import type { Telemetry } from './telemetry.ts'

export interface ServiceDeps {
  db: Db
  config: Config
  /** The clock; tests inject one to move time instead of sleeping. */
  now: () => Date
  keys: KeyRing
  /** Messages to every instance (revoked sessions). */
  broadcast?: Broadcast
  signAccessToken: (claims: AccessClaims) => string
  signServiceToken: (claims: { sub: string, client_id: string, scope: string, jti: string }) => string
  verifyAccessToken: (token: string) => Promise<Record<string, unknown>>
  mfaTokens: MfaTokenCodec
  /** Overrides the mailer chosen from SMTP_* (tests). */
  mailer?: Mailer
  telemetry: Telemetry
}

/** SMTP when SMTP_HOST is set, otherwise emails are printed to stdout (development, or MAIL_STDOUT). */
export function mailerFromConfig (config: Config): Mailer {
  if (config.SMTP_HOST === undefined) return createStdoutMailer()
  return createSmtpMailer({
    host: config.SMTP_HOST,
    port: config.SMTP_PORT,
    secure: config.SMTP_SECURE,
    requireTls: config.SMTP_REQUIRE_TLS ?? true,
    user: config.SMTP_USER,
    password: config.SMTP_PASSWORD,
    from: config.SMTP_FROM
  })
}

/** Wires the domain services together. Nothing here knows about HTTP. */
export function createServices ({ db, config, now, keys, broadcast, signAccessToken, signServiceToken, verifyAccessToken, mfaTokens, mailer, telemetry }: ServiceDeps) {
  if (config.MFA_ENCRYPTION_KEY === undefined) throw new Error('MFA_ENCRYPTION_KEY must be resolved before the services are built')
  const passwords = createPasswordHasher({
    memoryCost: config.ARGON2_MEMORY_COST,
    timeCost: config.ARGON2_TIME_COST,
    parallelism: config.ARGON2_PARALLELISM,
    maxConcurrency: config.ARGON2_MAX_CONCURRENCY
  })
  const audit = createAuditLog({ db, now, telemetry })
  const outbox = createOutbox({
    db,
    now,
    mailer: mailer ?? mailerFromConfig(config),
    // MFA_ENCRYPTION_KEY is the key for data at rest: TOTP secrets and email bodies.
    sealer: createSealer(deriveKey(config.MFA_ENCRYPTION_KEY, 'email-outbox body aes-256-gcm v1')),
    telemetry,
    settings: {
      backoffBaseSeconds: config.OUTBOX_BACKOFF_BASE_SECONDS,
      backoffMaxSeconds: config.OUTBOX_BACKOFF_MAX_SECONDS,
      maxAgeHours: config.OUTBOX_MAX_AGE_HOURS,
      leaseSeconds: config.OUTBOX_LEASE_SECONDS
    }
  })
  // The one owner of users, sessions and refresh tokens (and of the session-state cache).
  const store = createAccountStore({ db, now, checkTtlSeconds: config.SESSION_CHECK_TTL_SECONDS, broadcast, telemetry })
  const sessions = createSessionService({
    db,
    now,
    store,
    audit,
    outbox,
    successorKey: keys.internalKey('refresh-token successor v1'),
    refreshDays: config.REFRESH_TOKEN_EXPIRE_DAYS,
    graceSeconds: config.REFRESH_REUSE_GRACE_SECONDS
  })
  const throttle = createPasswordThrottle({
    db,
    now,
    audit,
    telemetry,
    settings: {
      maxFailures: config.RATE_LIMIT_LOGIN_EMAIL_FAILURES,
      windowMinutes: config.RATE_LIMIT_LOGIN_EMAIL_WINDOW_MINUTES,
      knownIpDays: config.RATE_LIMIT_KNOWN_IP_DAYS
    }
  })
  const breaches = createBreachChecker({
    enabled: config.HIBP_ENABLED,
    apiUrl: config.HIBP_API_URL,
    timeoutMs: config.HIBP_TIMEOUT_MS,
    failClosed: config.HIBP_FAIL_CLOSED,
    cacheTtlMs: config.HIBP_CACHE_TTL_SECONDS * 1000
  }, { now, telemetry })
  const mfa = createMfaService({
    db,
    now,
    passwords,
    store,
    audit,
    outbox,
    encryptionKey: config.MFA_ENCRYPTION_KEY,
    issuer: config.MFA_ISSUER,
    tokens: mfaTokens,
    sessions,
    throttle,
    telemetry,
    challengeSeconds: 300,
    maxFailures: 5,
    accountLimit: { maxFailures: config.RATE_LIMIT_MFA_ACCOUNT_FAILURES, windowMinutes: config.RATE_LIMIT_MFA_ACCOUNT_WINDOW_MINUTES }
  })
  const credentials = createCredentialService({
    db,
    now,
    passwords,
    breaches,
    store,
    sessions,
    outbox,
    audit,
    throttle,
    telemetry,
    appUrl: config.APP_URL,
    resetTokenMinutes: 30,
    resetEmailsPerHour: config.RATE_LIMIT_RESET_EMAILS_PER_HOUR
  })
  const emailVerification = createEmailVerification({
    db,
    now,
    store,
    audit,
    outbox,
    appUrl: config.APP_URL,
    expireHours: config.EMAIL_VERIFY_EXPIRE_HOURS,
    perAccountPerHour: config.RATE_LIMIT_VERIFY_EMAILS_PER_HOUR,
    perIpPerHour: config.RATE_LIMIT_VERIFY_IP_PER_HOUR,
    defer: credentials.defer
  })
  const passkeys = createPasskeyService({
    db,
    now,
    store,
    audit,
    outbox,
    settings: {
      rpId: config.WEBAUTHN_RP_ID ?? new URL(config.APP_URL).hostname,
      rpName: config.WEBAUTHN_RP_NAME,
      origins: config.WEBAUTHN_ORIGINS,
      requireVerifiedEmail: config.REQUIRE_EMAIL_VERIFICATION
    }
  })
  const accounts = createAccountService({
    db,
    now,
    passwords,
    breaches,
    mfa,
    audit,
    store,
    sessions,
    emailVerification,
    passkeys,
    requireVerifiedEmail: config.REQUIRE_EMAIL_VERIFICATION,
    signAccessToken,
    accessTokenSeconds: config.ACCESS_TOKEN_EXPIRE_MINUTES * 60,
    throttle
  })
  const admin = createAdminService({ db, now, store, audit })
  const clients = createClientService({ db, now, store, audit })
  const oauth = createOAuthService({
    db,
    now,
    audit,
    sessions,
    signServiceToken,
    verifyAccessToken,
    tokenSeconds: config.CLIENT_TOKEN_EXPIRE_MINUTES * 60,
    failures: { max: config.RATE_LIMIT_CLIENT_AUTH_FAILURES, windowMinutes: config.RATE_LIMIT_CLIENT_AUTH_WINDOW_MINUTES },
    ipv6Prefix: config.RATE_LIMIT_IPV6_PREFIX
  })
  const tasks = createTaskService({ db, now })
  const retention = createRetention({
    db,
    now,
    telemetry,
    settings: { authEventsDays: config.AUTH_EVENTS_RETENTION_DAYS, outboxDays: config.OUTBOX_RETENTION_DAYS }
  })
  return { passwords, breaches, audit, outbox, store, sessions, mfa, accounts, credentials, admin, clients, oauth, emailVerification, passkeys, tasks, retention }
}
export type Services = ReturnType<typeof createServices>
