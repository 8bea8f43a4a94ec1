import { sql } from 'drizzle-orm'
import {
  bigint, boolean, check, index, integer, jsonb, pgTable, text, timestamp, uniqueIndex, uuid
} from 'drizzle-orm/pg-core'

/**
 * The whole contract's data model (docs/API.md). Later features add behaviour,
 * not tables: sessions/refresh tokens, MFA, resets and the outbox already have a home.
 * Every timestamp is written by the application (injected clock), never by now() in SQL,
 * so tests can move time.
 */
const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' })

export const users = pgTable('users', {
  id: uuid('id').primaryKey().defaultRandom(),
  /** Trimmed and lower-cased by the application before it gets here. */
  email: text('email').notNull(),
  passwordHash: text('password_hash').notNull(),
  role: text('role', { enum: ['user', 'admin'] }).notNull().default('user'),
  isActive: boolean('is_active').notNull().default(true),
  mfaEnabled: boolean('mfa_enabled').notNull().default(false),
  /** AES-256-GCM ciphertext of the confirmed TOTP secret. */
  totpSecretEnc: text('totp_secret_enc'),
  /** AES-256-GCM ciphertext of a secret set up but not yet confirmed. */
  totpPendingSecretEnc: text('totp_pending_secret_enc'),
  /** Last TOTP time step accepted, claimed with compare-and-set against replay. */
  totpLastStep: bigint('totp_last_step', { mode: 'number' }),
  /**
   * Wrong second factors in the current window (per account, across every mfaToken), claimed
   * atomically before a code is checked; see MfaService.
   */
  mfaFailureCount: integer('mfa_failure_count').notNull().default(0),
  mfaFailureWindowStart: ts('mfa_failure_window_start'),
  /** When the owner was last told that someone is guessing second factors (one mail a window). */
  mfaAlertedAt: ts('mfa_alerted_at'),
  passwordMustChange: boolean('password_must_change').notNull().default(false),
  /** The owner proved the address (a verification link, a completed reset), or the bootstrapped admin. */
  emailVerified: boolean('email_verified').notNull().default(false),
  passwordChangedAt: ts('password_changed_at').notNull(),
  createdAt: ts('created_at').notNull(),
  updatedAt: ts('updated_at').notNull(),
  lastLoginAt: ts('last_login_at')
}, (t) => [
  uniqueIndex('users_email_key').on(t.email),
  index('users_is_active_idx').on(t.isActive),
  check('users_email_lower', sql`${t.email} = lower(${t.email})`),
  check('users_role_check', sql`${t.role} in ('user', 'admin')`)
])

/** One login = one session = one refresh-token family. */
export const sessions = pgTable('sessions', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  amr: text('amr').array().notNull(),
  ipAddress: text('ip_address'),
  userAgent: text('user_agent'),
  createdAt: ts('created_at').notNull(),
  lastUsedAt: ts('last_used_at').notNull(),
  /**
   * The database also has a default (now() + 72 hours, written in migration 0001 by hand: drizzle-kit
   * would copy an SQL default onto every column of this name) for inserts by instances of the
   * previous release during a rolling upgrade; this release always sets it.
   */
  expiresAt: ts('expires_at').notNull(),
  revokedAt: ts('revoked_at'),
  revokedReason: text('revoked_reason')
}, (t) => [
  index('sessions_user_id_idx').on(t.userId)
])

/** Refresh tokens of a session; only a hash of each token is stored. */
export const refreshTokens = pgTable('refresh_tokens', {
  id: uuid('id').primaryKey().defaultRandom(),
  sessionId: uuid('session_id').notNull().references(() => sessions.id, { onDelete: 'cascade' }),
  userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  tokenHash: text('token_hash').notNull(),
  parentId: uuid('parent_id'),
  createdAt: ts('created_at').notNull(),
  /**
   * The database also has a default (now() + 72 hours, written in migration 0001 by hand: drizzle-kit
   * would copy an SQL default onto every column of this name) for inserts by instances of the
   * previous release during a rolling upgrade; this release always sets it.
   */
  expiresAt: ts('expires_at').notNull(),
  rotatedAt: ts('rotated_at'),
  revokedAt: ts('revoked_at'),
  ipAddress: text('ip_address')
}, (t) => [
  uniqueIndex('refresh_tokens_token_hash_key').on(t.tokenHash),
  index('refresh_tokens_session_id_idx').on(t.sessionId),
  index('refresh_tokens_user_id_idx').on(t.userId)
])

/** MFA login challenges (the mfaToken), exhausted after a number of wrong codes. */
export const mfaChallenges = pgTable('mfa_challenges', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  failedAttempts: integer('failed_attempts').notNull().default(0),
  createdAt: ts('created_at').notNull(),
  /**
   * The database also has a default (now() + 72 hours, written in migration 0001 by hand: drizzle-kit
   * would copy an SQL default onto every column of this name) for inserts by instances of the
   * previous release during a rolling upgrade; this release always sets it.
   */
  expiresAt: ts('expires_at').notNull(),
  consumedAt: ts('consumed_at')
}, (t) => [
  index('mfa_challenges_user_id_idx').on(t.userId)
])

export const backupCodes = pgTable('backup_codes', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  /** Keyed hash (HMAC) of the code; the code itself is shown once and never stored. */
  codeHash: text('code_hash').notNull(),
  createdAt: ts('created_at').notNull(),
  usedAt: ts('used_at')
}, (t) => [
  uniqueIndex('backup_codes_user_code_key').on(t.userId, t.codeHash)
])

export const passwordResetTokens = pgTable('password_reset_tokens', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  tokenHash: text('token_hash').notNull(),
  createdAt: ts('created_at').notNull(),
  /**
   * The database also has a default (now() + 72 hours, written in migration 0001 by hand: drizzle-kit
   * would copy an SQL default onto every column of this name) for inserts by instances of the
   * previous release during a rolling upgrade; this release always sets it.
   */
  expiresAt: ts('expires_at').notNull(),
  usedAt: ts('used_at'),
  requestedIp: text('requested_ip')
}, (t) => [
  uniqueIndex('password_reset_tokens_token_hash_key').on(t.tokenHash),
  index('password_reset_tokens_user_id_idx').on(t.userId, t.createdAt)
])

/** Audit log of every authentication event. user_id survives the user (set null). */
export const authEvents = pgTable('auth_events', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id').references(() => users.id, { onDelete: 'set null' }),
  /** The email as attempted (normalised), also for unknown accounts. */
  email: text('email'),
  eventType: text('event_type').notNull(),
  ipAddress: text('ip_address'),
  userAgent: text('user_agent'),
  success: boolean('success').notNull(),
  failureReason: text('failure_reason'),
  metadata: jsonb('metadata').$type<Record<string, unknown>>(),
  createdAt: ts('created_at').notNull()
}, (t) => [
  // The audit queries read newest first, ties broken by id (so paging with a (createdAt, id)
  // cursor loses nothing): each filter's index ends in (created_at, id) and serves the order.
  index('auth_events_created_at_idx').on(t.createdAt, t.id),
  index('auth_events_ip_created_at_idx').on(t.ipAddress, t.createdAt, t.id),
  index('auth_events_email_created_at_idx').on(t.email, t.createdAt, t.id),
  index('auth_events_user_id_created_at_idx').on(t.userId, t.createdAt, t.id),
  index('auth_events_event_type_created_at_idx').on(t.eventType, t.createdAt, t.id),
  /** The suspicious-patterns report reads only recent failures. */
  index('auth_events_failures_created_at_idx').on(t.createdAt).where(sql`${t.success} = false`),
  /**
   * The per-account lockout, read on every login: the account's recent failures only, whatever
   * else (logins, refreshes) the account did meanwhile.
   */
  index('auth_events_email_failures_idx').on(t.email, t.createdAt).where(sql`${t.success} = false`),
  /**
   * The limits of failed client authentications, per client id and per address (IPv6 by prefix):
   * both are in the metadata of `client_auth_failure` rows.
   */
  index('auth_events_client_failures_idx').on(sql`(${t.metadata}->>'clientId')`, t.createdAt).where(sql`${t.eventType} = 'client_auth_failure'`),
  index('auth_events_client_failure_addresses_idx').on(sql`(${t.metadata}->>'address')`, t.createdAt).where(sql`${t.eventType} = 'client_auth_failure'`)
])

/**
 * Durable email outbox: rows are written in the transaction of the change that causes them.
 * Bodies can hold live secrets (reset links), so they are stored sealed (AES-256-GCM, bound to
 * the row id) and erased once the email is delivered, expired or refused; recipient, kind,
 * status and times stay for audit.
 */
export const emailOutbox = pgTable('email_outbox', {
  id: uuid('id').primaryKey().defaultRandom(),
  toAddress: text('to_address').notNull(),
  subject: text('subject').notNull(),
  /** Plain body of rows written before bodies were sealed; never written now. */
  textBody: text('text_body'),
  bodySealed: text('body_sealed'),
  kind: text('kind').notNull(),
  status: text('status', { enum: ['pending', 'sent', 'failed', 'expired'] }).notNull().default('pending'),
  attempts: integer('attempts').notNull().default(0),
  /** Unused since retries run until expiry; kept (with a default) for instances of the previous release during a rolling upgrade. */
  maxAttempts: integer('max_attempts').notNull().default(8),
  /** The worker's claim: completing a row requires still holding it. */
  claimId: uuid('claim_id'),
  nextAttemptAt: ts('next_attempt_at').notNull(),
  /** After this the email is useless (a reset link past its expiry) and is dropped as expired. */
  /**
   * The database also has a default (now() + 72 hours, written in migration 0001 by hand: drizzle-kit
   * would copy an SQL default onto every column of this name) for inserts by instances of the
   * previous release during a rolling upgrade; this release always sets it.
   */
  expiresAt: ts('expires_at').notNull(),
  lastError: text('last_error'),
  createdAt: ts('created_at').notNull(),
  sentAt: ts('sent_at')
}, (t) => [
  index('email_outbox_due_idx').on(t.status, t.nextAttemptAt)
])

export const tasks = pgTable('tasks', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  title: text('title').notNull(),
  description: text('description'),
  completed: boolean('completed').notNull().default(false),
  createdAt: ts('created_at').notNull(),
  updatedAt: ts('updated_at').notNull()
}, (t) => [
  index('tasks_user_id_created_at_idx').on(t.userId, t.createdAt)
])

/** Email-verification links: single use, stored as SHA-256 of the token, never in the clear. */
export const emailVerificationTokens = pgTable('email_verification_tokens', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  tokenHash: text('token_hash').notNull(),
  createdAt: ts('created_at').notNull(),
  expiresAt: ts('expires_at').notNull(),
  usedAt: ts('used_at'),
  requestedIp: text('requested_ip')
}, (t) => [
  uniqueIndex('email_verification_tokens_token_hash_key').on(t.tokenHash),
  index('email_verification_tokens_user_id_created_at_idx').on(t.userId, t.createdAt)
])

/**
 * Passkeys (WebAuthn credentials). The public key is COSE, base64url; the user handle is the
 * opaque `user.id` the authenticator stores with the credential (random, never the email).
 */
export const passkeys = pgTable('passkeys', {
  id: uuid('id').primaryKey().defaultRandom(),
  userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  /** The credential id, base64url, as the authenticator reports it. */
  credentialId: text('credential_id').notNull(),
  publicKey: text('public_key').notNull(),
  userHandle: text('user_handle').notNull(),
  /** The signature counter last seen (WebAuthn §6.1.1); 0 for authenticators that keep none. */
  counter: bigint('counter', { mode: 'number' }).notNull().default(0),
  transports: text('transports').array().notNull().default(sql`'{}'::text[]`),
  deviceType: text('device_type', { enum: ['singleDevice', 'multiDevice'] }).notNull(),
  backedUp: boolean('backed_up').notNull(),
  aaguid: text('aaguid'),
  name: text('name').notNull(),
  createdAt: ts('created_at').notNull(),
  lastUsedAt: ts('last_used_at')
}, (t) => [
  uniqueIndex('passkeys_credential_id_key').on(t.credentialId),
  index('passkeys_user_id_idx').on(t.userId)
])

/**
 * WebAuthn challenges: single use, 5 minutes. Only the SHA-256 of the challenge is kept; a
 * registration challenge belongs to the user who asked for it (and carries the user handle it
 * offered), an authentication challenge to nobody.
 */
export const webauthnChallenges = pgTable('webauthn_challenges', {
  id: uuid('id').primaryKey().defaultRandom(),
  kind: text('kind', { enum: ['registration', 'authentication'] }).notNull(),
  userId: uuid('user_id').references(() => users.id, { onDelete: 'cascade' }),
  userHandle: text('user_handle'),
  challengeHash: text('challenge_hash').notNull(),
  createdAt: ts('created_at').notNull(),
  expiresAt: ts('expires_at').notNull(),
  usedAt: ts('used_at')
}, (t) => [
  index('webauthn_challenges_expires_at_idx').on(t.expiresAt),
  check('webauthn_challenges_kind_check', sql`${t.kind} in ('registration', 'authentication')`)
])

/**
 * Service clients (OAuth 2.0 client credentials). The secret is 256 random bits, stored only as
 * its SHA-256; during a rotation the previous secret's hash works until its expiry.
 */
export const oauthClients = pgTable('oauth_clients', {
  id: uuid('id').primaryKey().defaultRandom(),
  /** The public, opaque client identifier (`client_id`). */
  clientId: text('client_id').notNull(),
  name: text('name').notNull(),
  scopes: text('scopes').array().notNull(),
  secretHash: text('secret_hash').notNull(),
  previousSecretHash: text('previous_secret_hash'),
  previousSecretExpiresAt: ts('previous_secret_expires_at'),
  disabled: boolean('disabled').notNull().default(false),
  /**
   * Bumped when the client is disabled and when its secret is replaced without overlap: tokens
   * carry the generation they were issued in (in their `jti`), and introspection refuses older ones.
   */
  tokenGeneration: integer('token_generation').notNull().default(0),
  createdAt: ts('created_at').notNull(),
  updatedAt: ts('updated_at').notNull(),
  /** Moved on at most once a minute per client, so a busy client costs no write per token. */
  lastUsedAt: ts('last_used_at')
}, (t) => [
  uniqueIndex('oauth_clients_client_id_key').on(t.clientId)
])

export type UserRow = typeof users.$inferSelect
export type SessionRow = typeof sessions.$inferSelect
export type RefreshTokenRow = typeof refreshTokens.$inferSelect
export type TaskRow = typeof tasks.$inferSelect
export type AuthEventRow = typeof authEvents.$inferSelect
export type OAuthClientRow = typeof oauthClients.$inferSelect
