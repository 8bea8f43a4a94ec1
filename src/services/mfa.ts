import { randomUUID } from 'node:crypto'
import { and, count, eq, gt, isNull, lt, sql } from 'drizzle-orm'
import { Secret, TOTP } from 'otpauth'
import type { Db, Queryable, Tx } from '../db/client.ts'
import { transaction } from '../db/transaction.ts'
import { backupCodes, mfaChallenges, type UserRow } from '../db/schema.ts'
import type { AccountStore } from './account-store.ts'
import { AppError } from '../errors.ts'
import type { AuditLog, RequestContext } from './audit.ts'
import { createMfaCrypto, generateBackupCode } from './mfa-crypto.ts'
import type { Outbox } from './outbox.ts'
import { displayIp } from './user-agent.ts'
import type { PasswordHasher } from './passwords.ts'
import type { PasswordThrottle } from './password-throttle.ts'
import type { SessionService } from './sessions.ts'
import type { Telemetry } from './telemetry.ts'

/** TOTP as the contract fixes it: SHA1, 6 digits, 30 s, ±1 step. */
const PERIOD = 30
const WINDOW = 1
const BACKUP_CODE_COUNT = 10
const CODE_FORMAT = /^\d{6}$/

/** A refused second factor, thrown to roll back the transaction that tried it. */
class Refused extends Error {
  constructor (readonly reason: string) { super(reason) }
}

export interface MfaTokenCodec {
  sign: (claims: { sub: string, jti: string }) => string
  /** Returns the claims or throws when the token is not a valid, unexpired MFA token. */
  verify: (token: string) => { sub: string, jti: string }
}

export interface MfaChallenge {
  mfaRequired: true
  mfaToken: string
  expiresIn: number
}

/**
 * TOTP (RFC 6238) and backup codes. Secrets are stored encrypted (AES-256-GCM); backup codes
 * only as keyed hashes. Every accepted code claims its time step with a compare-and-set on
 * `users.totp_last_step`, so a code, or an older one, works once, even for two racing logins.
 */
export function createMfaService (deps: {
  db: Db
  now: () => Date
  passwords: PasswordHasher
  store: AccountStore
  audit: AuditLog
  outbox: Outbox
  encryptionKey: string
  issuer: string
  tokens: MfaTokenCodec
  sessions: Pick<SessionService, 'assertLive'>
  /** The per-account lock on wrong passwords, which the password re-checks share with login. */
  throttle: PasswordThrottle
  telemetry: Telemetry
  challengeSeconds: number
  /** Attempts one mfaToken allows. */
  maxFailures: number
  /** Wrong second factors one account may see in a window, whatever the token or IP. */
  accountLimit: { maxFailures: number, windowMinutes: number }
}) {
  const { db, now, audit, store } = deps
  const crypto = createMfaCrypto(deps.encryptionKey)

  const totpFor = (secretBase32: string, label: string) => new TOTP({
    issuer: deps.issuer, label, algorithm: 'SHA1', digits: 6, period: PERIOD, secret: Secret.fromBase32(secretBase32)
  })

  /** The time step `code` belongs to (within ±1 of now), or null. */
  function matchStep (secretBase32: string, code: string): number | null {
    if (!CODE_FORMAT.test(code)) return null
    const t = now().getTime()
    const delta = TOTP.validate({ token: code, secret: Secret.fromBase32(secretBase32), algorithm: 'SHA1', digits: 6, period: PERIOD, timestamp: t, window: WINDOW })
    return delta === null ? null : Math.floor(t / 1000 / PERIOD) + delta
  }

  async function loadUser (userId: string): Promise<UserRow> {
    const user = await store.userById(userId)
    if (user === undefined) throw new AppError('SESSION_REVOKED')
    return user
  }

  async function newBackupCodes (q: Queryable, userId: string): Promise<string[]> {
    const codes = Array.from({ length: BACKUP_CODE_COUNT }, generateBackupCode)
    await q.delete(backupCodes).where(eq(backupCodes.userId, userId))
    const t = now()
    await q.insert(backupCodes).values(codes.map((c) => ({ userId, codeHash: crypto.hashBackupCode(c), createdAt: t })))
    return codes
  }

  async function fail (user: UserRow, ctx: RequestContext, reason: string): Promise<never> {
    await audit.record({ type: 'mfa_failure', ctx, userId: user.id, email: user.email, success: false, failureReason: reason })
    throw new AppError('MFA_INVALID_CODE', 'Invalid or already used code')
  }

  /**
   * Verifies a current TOTP code of an enabled factor and claims its step, in `q` (a
   * transaction when the caller has one). Returns false for a wrong or replayed code.
   */
  async function useTotp (q: Queryable, user: UserRow, code: string): Promise<'ok' | 'invalid' | 'replayed'> {
    if (user.totpSecretEnc === null) return 'invalid'
    const step = matchStep(crypto.decrypt(user.totpSecretEnc, user.id), code)
    if (step === null) return 'invalid'
    return await store.claimTotpStep(q, user.id, step) ? 'ok' : 'replayed'
  }

  /** Sensitive MFA changes re-check the password; a wrong one is an mfa_failure event. */
  async function requirePassword (user: UserRow, password: string, ctx: RequestContext): Promise<void> {
    await deps.throttle.assertOpen(user.email, ctx, user.id)
    if (await deps.passwords.verify(user.passwordHash, password)) return
    await audit.record({ type: 'mfa_failure', ctx, userId: user.id, email: user.email, success: false, failureReason: 'invalid_password' })
    throw new AppError('AUTH_INVALID_CREDENTIALS', 'Password is incorrect')
  }

  const accountWindowMs = deps.accountLimit.windowMinutes * 60_000

  /**
   * Claims one second-factor attempt for the account, atomically and before the code is checked,
   * so parallel guesses (many mfaTokens, many IPs) can never exceed the limit: the counter
   * restarts when its window has passed, and no row is updated once it is full. A correct code
   * gives its attempt back (releaseAttempt). Throws 429 when the account is at the limit.
   */
  async function claimAttempt (user: UserRow, ctx: RequestContext): Promise<number> {
    const t = now()
    const claimed = await store.claimMfaAttempt(user.id, { maxFailures: deps.accountLimit.maxFailures, windowMs: accountWindowMs })
    if ('count' in claimed) return claimed.count
    const retryAfter = Math.max(1, Math.ceil(((claimed.fullSince?.getTime() ?? t.getTime()) + accountWindowMs - t.getTime()) / 1000))
    deps.telemetry.metrics.rateLimited.inc({ limit: 'account_mfa' })
    await audit.record({ type: 'rate_limited', ctx, userId: user.id, email: user.email, success: false, failureReason: 'account_mfa_failures' })
    throw new AppError('RATE_LIMITED', 'Too many wrong codes for this account, please try again later', { retryAfter })
  }

  /** A correct code: its attempt was not a failure. */
  const releaseAttempt = (q: Queryable, userId: string) => store.releaseMfaAttempt(q, userId)

  /**
   * A wrong code. The failure that fills the account's window also tells the owner, once a
   * window (claimed with compare-and-set on mfa_alerted_at): whoever is guessing knows the password.
   */
  async function failAttempt (user: UserRow, count: number, ctx: RequestContext, reason: string): Promise<never> {
    if (count >= deps.accountLimit.maxFailures) {
      const t = now()
      await transaction(db, async (tx) => {
        if (!await store.claimMfaAlert(tx, user.id, t, accountWindowMs)) return
        await deps.outbox.enqueue(tx, 'mfa_failures', {
          to: user.email,
          subject: 'Security alert: someone knows your Gatehouse password',
          text: [
            `Someone who got past your password (or holds one of your sessions) then gave a wrong two-step verification code ${count} times within ${deps.accountLimit.windowMinutes} minutes.`,
            `The latest attempt came from IP ${displayIp(ctx.ip)} at ${t.toISOString()}.`,
            '',
            'If this was not you, someone knows your password: change it now. Further codes for your account',
            'are refused for a while; your authenticator app and backup codes remain safe to use afterwards.'
          ].join('\n')
        })
      })
    }
    return fail(user, ctx, reason)
  }

  async function requireCode (user: UserRow, code: string, ctx: RequestContext): Promise<void> {
    const count = await claimAttempt(user, ctx)
    const result = await useTotp(db, user, code)
    if (result === 'ok') return releaseAttempt(db, user.id)
    await failAttempt(user, count, ctx, result === 'replayed' ? 'replayed_code' : 'invalid_code')
  }

  return {
    async status (userId: string) {
      const user = await loadUser(userId)
      const [row] = await db.select({ n: count() }).from(backupCodes).where(and(eq(backupCodes.userId, userId), isNull(backupCodes.usedAt)))
      return { enabled: user.mfaEnabled, backupCodesRemaining: user.mfaEnabled ? (row?.n ?? 0) : 0 }
    },

    /** A new 160-bit secret, pending until confirmed with a code. The password is re-checked. */
    async setup (userId: string, password: string, ctx: RequestContext) {
      const user = await loadUser(userId)
      if (user.mfaEnabled) throw new AppError('MFA_ALREADY_ENABLED', 'Multi-factor authentication is already enabled')
      await requirePassword(user, password, ctx)
      const secret = new Secret({ size: 20 }).base32
      await store.setPendingTotp(userId, crypto.encrypt(secret, user.id))
      return { secret, otpauthUri: totpFor(secret, user.email).toString() }
    },

    /** Turns MFA on with a code from the pending secret; returns the backup codes, once. */
    async confirm (userId: string, code: string, ctx: RequestContext) {
      const user = await loadUser(userId)
      if (user.mfaEnabled) throw new AppError('MFA_ALREADY_ENABLED', 'Multi-factor authentication is already enabled')
      if (user.totpPendingSecretEnc === null) throw new AppError('VALIDATION_ERROR', 'No TOTP setup in progress: call /api/auth/mfa/totp/setup first')
      const step = matchStep(crypto.decrypt(user.totpPendingSecretEnc, user.id), code)
      if (step === null) await fail(user, ctx, 'invalid_code')
      // Never call `db` inside a transaction: on PGlite (one connection) it would wait forever.
      const result = await transaction(db, async (tx) => {
        if (!await store.claimTotpStep(tx, user.id, step as number)) return undefined
        if (!await store.enableTotp(tx, userId, user.totpPendingSecretEnc as string)) throw new AppError('MFA_ALREADY_ENABLED', 'Multi-factor authentication is already enabled')
        const codes = await newBackupCodes(tx, userId)
        await audit.record({ type: 'mfa_enabled', ctx, userId, email: user.email, success: true }, tx)
        return { backupCodes: codes }
      })
      return result ?? fail(user, ctx, 'replayed_code')
    },

    /** Replaces every backup code; needs a current TOTP code. */
    async regenerateBackupCodes (userId: string, code: string, ctx: RequestContext) {
      const user = await loadUser(userId)
      if (!user.mfaEnabled) throw new AppError('VALIDATION_ERROR', 'Multi-factor authentication is not enabled')
      await requireCode(user, code, ctx)
      return { backupCodes: await transaction(db, (tx) => newBackupCodes(tx, userId)) }
    },

    /** Turns MFA off (password and a current code), and tells the user by email. */
    async disable (userId: string, sessionId: string, input: { password: string, code: string }, ctx: RequestContext) {
      const user = await loadUser(userId)
      if (!user.mfaEnabled) throw new AppError('VALIDATION_ERROR', 'Multi-factor authentication is not enabled')
      await requirePassword(user, input.password, ctx)
      await requireCode(user, input.code, ctx)
      const t = now()
      await transaction(db, async (tx) => {
        // Under the user lock: a reset that ended this session while the checks ran wins.
        await store.lockUser(tx, userId)
        await deps.sessions.assertLive(tx, sessionId)
        await store.disableTotp(tx, userId, t)
        await tx.delete(backupCodes).where(eq(backupCodes.userId, userId))
        await audit.record({ type: 'mfa_disabled', ctx, userId, email: user.email, success: true }, tx)
        await deps.outbox.enqueue(tx, 'mfa_disabled', {
          to: user.email,
          subject: 'Two-step verification was turned off',
          text: [
            `Two-step verification (TOTP) was turned off for your account at ${t.toISOString()} from IP ${displayIp(ctx.ip)}.`,
            'If this was not you, reset your password and turn it back on at once.'
          ].join('\n')
        })
      })
    },

    /** After a correct password for an MFA account: a challenge, answered at /login/mfa. */
    async startChallenge (userId: string): Promise<MfaChallenge> {
      const t = now()
      const id = randomUUID()
      await db.insert(mfaChallenges).values({ id, userId, createdAt: t, expiresAt: new Date(t.getTime() + deps.challengeSeconds * 1000) })
      return { mfaRequired: true, mfaToken: deps.tokens.sign({ sub: userId, jti: id }), expiresIn: deps.challengeSeconds }
    },

    /**
     * Checks the second factor for a challenge. On success, `complete(tx, user, amr)` runs in the
     * same transaction that consumes the challenge and the code, so a login is created exactly
     * when the code is spent. Each answer first claims an attempt of the mfaToken and of the
     * account (atomic increments, before the code is looked at), so parallel guesses never get
     * more tries than `maxFailures` per token and the account limit per window.
     */
    async answerChallenge<T> (mfaToken: string, answer: { code?: string, backupCode?: string }, ctx: RequestContext,
      complete: (tx: Tx, user: UserRow) => Promise<T>): Promise<T> {
      const invalid = () => new AppError('MFA_TOKEN_INVALID', 'MFA challenge is invalid or has expired')
      let claims: { sub: string, jti: string }
      try {
        claims = deps.tokens.verify(mfaToken)
      } catch {
        throw invalid()
      }
      const open = and(eq(mfaChallenges.id, claims.jti), eq(mfaChallenges.userId, claims.sub), isNull(mfaChallenges.consumedAt),
        gt(mfaChallenges.expiresAt, now()))
      const [challenge] = await db.update(mfaChallenges).set({ failedAttempts: sql`${mfaChallenges.failedAttempts} + 1` })
        .where(and(open, lt(mfaChallenges.failedAttempts, deps.maxFailures)))
        .returning({ id: mfaChallenges.id })
      if (challenge === undefined) throw invalid()
      const user = await loadUser(claims.sub)
      if (!user.mfaEnabled || !user.isActive) throw invalid()
      const count = await claimAttempt(user, ctx)

      // A refused answer must roll the transaction back (the challenge stays unconsumed, the
      // backup code and time step unspent), so it leaves the transaction as an exception.
      try {
        return await transaction(db, async (tx) => {
          const [consumed] = await tx.update(mfaChallenges)
            .set({ consumedAt: now(), failedAttempts: sql`${mfaChallenges.failedAttempts} - 1` })
            .where(and(eq(mfaChallenges.id, challenge.id), isNull(mfaChallenges.consumedAt), gt(mfaChallenges.expiresAt, now())))
            .returning({ id: mfaChallenges.id })
          if (consumed === undefined) throw new Refused('challenge_gone')
          if (answer.backupCode !== undefined) {
            const [used] = await tx.update(backupCodes).set({ usedAt: now() })
              .where(and(eq(backupCodes.userId, user.id), eq(backupCodes.codeHash, crypto.hashBackupCode(answer.backupCode)), isNull(backupCodes.usedAt)))
              .returning({ id: backupCodes.id })
            if (used === undefined) throw new Refused('invalid_backup_code')
            await audit.record({ type: 'backup_code_used', ctx, userId: user.id, email: user.email, success: true }, tx)
          } else {
            const result = await useTotp(tx, user, answer.code ?? '')
            if (result !== 'ok') throw new Refused(result === 'replayed' ? 'replayed_code' : 'invalid_code')
          }
          await releaseAttempt(tx, user.id)
          return complete(tx, user)
        })
      } catch (err) {
        if (!(err instanceof Refused)) throw err
        if (err.reason === 'challenge_gone') throw invalid()
        return failAttempt(user, count, ctx, err.reason)
      }
    }
  }
}
export type MfaService = ReturnType<typeof createMfaService>
