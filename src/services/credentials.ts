import { and, eq, gt, isNull, sql } from 'drizzle-orm'
import type { Db, Tx } from '../db/client.ts'
import { transaction } from '../db/transaction.ts'
import { mfaChallenges, passwordResetTokens } from '../db/schema.ts'
import { AppError } from '../errors.ts'
import type { AuditLog, RequestContext } from './audit.ts'
import { hashOpaqueToken, newOpaqueToken, OPAQUE_TOKEN_FORMAT } from './opaque-tokens.ts'
import type { BreachChecker } from './hibp.ts'
import type { Outbox } from './outbox.ts'
import type { Telemetry } from './telemetry.ts'
import { displayIp } from './user-agent.ts'
import { assertPasswordPolicy } from './password-policy.ts'
import type { PasswordHasher } from './passwords.ts'
import type { PasswordThrottle } from './password-throttle.ts'
import type { SessionService } from './sessions.ts'
import type { AccountStore } from './account-store.ts'
import { normaliseEmail } from './accounts.ts'


const MAX_QUEUED_RESETS = 1000

/**
 * The password lifecycle after signup: forgotten password by email, reset, change, and the
 * admin bootstrap. Every change that sends an email writes it to the outbox in its own
 * transaction; every password change revokes sessions and outstanding reset tokens.
 */
export function createCredentialService (deps: {
  db: Db
  now: () => Date
  passwords: PasswordHasher
  breaches: BreachChecker
  store: AccountStore
  sessions: SessionService
  outbox: Outbox
  audit: AuditLog
  throttle: PasswordThrottle
  telemetry: Telemetry
  appUrl: string
  resetTokenMinutes: number
  resetEmailsPerHour: number
}) {
  const { db, now, passwords, audit, outbox, store } = deps

  /** Policy first (cheap, precise message), then the breach check. */
  async function assertAcceptable (password: string): Promise<void> {
    assertPasswordPolicy(password)
    await deps.breaches.assertNotBreached(password)
  }

  /**
   * A new password: clears passwordMustChange, voids every outstanding reset link and every open
   * MFA challenge (an mfaToken won with the old password), and lifts the per-account MFA lock
   * that whoever knew the old password may have been holding.
   */
  async function setPassword (tx: Tx, userId: string, passwordHash: string, t: Date): Promise<void> {
    await store.setPassword(tx, userId, passwordHash, t)
    await tx.update(passwordResetTokens).set({ usedAt: t })
      .where(and(eq(passwordResetTokens.userId, userId), isNull(passwordResetTokens.usedAt)))
    await tx.update(mfaChallenges).set({ consumedAt: t })
      .where(and(eq(mfaChallenges.userId, userId), isNull(mfaChallenges.consumedAt)))
  }

  const resetLink = (token: string) => `${deps.appUrl.replace(/\/+$/, '')}/reset-password?token=${token}`

  /** Requests accepted but not yet carried out (see requestReset), at most MAX_QUEUED_RESETS. */
  const queued = new Set<Promise<void>>()

  /**
   * Carries out `work` after the caller has answered, so that the answer takes the same time
   * whatever the work finds (an account or none). Bounded: accepted work must not pile up without
   * limit when requests outrun the database. `settled` waits for it.
   */
  function defer (work: () => Promise<void>, what: string): void {
    if (queued.size >= MAX_QUEUED_RESETS) throw new AppError('SERVICE_UNAVAILABLE', 'Too many requests in progress, please try again shortly')
    // setImmediate: not even the first query may run before the answer has been written.
    const running = new Promise<void>((resolve) => { setImmediate(resolve) })
      .then(work)
      .catch((err: unknown) => deps.telemetry.log.error({ err }, `${what} failed`))
      .finally(() => queued.delete(running))
    queued.add(running)
  }

  /**
   * Whether the email has an account, is disabled, or has had too many reset emails this hour
   * is visible only in the audit log and the mailbox.
   */
  async function forgot (rawEmail: string, ctx: RequestContext): Promise<void> {
    const email = normaliseEmail(rawEmail)
    const t = now()
    await transaction(db, async (tx) => {
      const user = await store.lockUserByEmail(tx, email)
      if (user === undefined || !user.isActive) {
        await audit.record({
          type: 'password_reset_requested', ctx, userId: user?.id ?? null, email, success: false,
          failureReason: user === undefined ? 'unknown_email' : 'account_disabled'
        }, tx)
        return
      }
      const [recent] = await tx.select({ n: sql<number>`count(*)::int` }).from(passwordResetTokens)
        .where(and(eq(passwordResetTokens.userId, user.id), gt(passwordResetTokens.createdAt, new Date(t.getTime() - 3_600_000))))
      if ((recent?.n ?? 0) >= deps.resetEmailsPerHour) {
        await audit.record({ type: 'password_reset_requested', ctx, userId: user.id, email, success: false, failureReason: 'account_limit' }, tx)
        return
      }
      const token = newOpaqueToken()
      const expiresAt = new Date(t.getTime() + deps.resetTokenMinutes * 60_000)
      await tx.insert(passwordResetTokens).values({
        userId: user.id,
        tokenHash: hashOpaqueToken(token),
        createdAt: t,
        expiresAt,
        requestedIp: ctx.ip
      })
      await audit.record({ type: 'password_reset_requested', ctx, userId: user.id, email, success: true }, tx)
      await outbox.enqueue(tx, 'password_reset', {
        to: user.email,
        subject: 'Reset your Gatehouse password',
        text: [
          'Someone (hopefully you) asked to reset the password of your account.',
          '',
          `Open this link within ${deps.resetTokenMinutes} minutes to choose a new password:`,
          resetLink(token),
          '',
          `Requested from IP ${displayIp(ctx.ip)} at ${t.toISOString()}.`,
          'If it was not you, ignore this email: your password stays as it is.'
        ].join('\n')
      }, { expiresAt }) // a link past its expiry is useless: the outbox drops it rather than send it
    })
  }

  return {
    assertAcceptable,

    /**
     * Accepts a forgotten-password request and carries it out after the caller has answered, so
     * the answer (202) takes the same time whether or not the account exists: the work for a
     * real account (a token, an email) would otherwise show in the response time.
     */
    requestReset (rawEmail: string, ctx: RequestContext): void {
      defer(() => forgot(rawEmail, ctx), 'password reset request')
    },

    defer,

    /** Resolves when every accepted reset request has been carried out (shutdown, tests). */
    async settled (): Promise<void> {
      while (queued.size > 0) await Promise.all(queued)
    },

    /**
     * Consumes a reset token (single use, atomically: of two racing resets one wins) and sets
     * the new password; every session of the user ends, since whoever forgot the password may
     * not be the only one who knew it.
     */
    async reset (token: string, newPassword: string, ctx: RequestContext): Promise<void> {
      // The token first: a made-up token must not cost a hash and an outbound breach check.
      const invalid = () => new AppError('RESET_TOKEN_INVALID', 'Reset link is invalid or has expired')
      if (!OPAQUE_TOKEN_FORMAT.test(token)) throw invalid()
      const [pending] = await db.select({ userId: passwordResetTokens.userId }).from(passwordResetTokens)
        .where(and(eq(passwordResetTokens.tokenHash, hashOpaqueToken(token)), isNull(passwordResetTokens.usedAt), gt(passwordResetTokens.expiresAt, now())))
      if (pending === undefined) throw invalid()
      await assertAcceptable(newPassword)
      const passwordHash = await passwords.hash(newPassword)
      const t = now()
      const userId = await transaction(db, async (tx) => {
        // The user row first, as every writer of a user's credentials and sessions locks it.
        const user = await store.lockUser(tx, pending.userId)
        const [consumed] = await tx.update(passwordResetTokens).set({ usedAt: t })
          .where(and(eq(passwordResetTokens.tokenHash, hashOpaqueToken(token)), isNull(passwordResetTokens.usedAt), gt(passwordResetTokens.expiresAt, t)))
          .returning()
        // A password change after the link was sent invalidates it.
        if (consumed === undefined || user === undefined || !user.isActive || user.passwordChangedAt > consumed.createdAt) {
          return undefined
        }
        await setPassword(tx, user.id, passwordHash, t)
        // The link came to the mailbox: the address is proven.
        if (await store.markEmailVerified(tx, user.id)) {
          await audit.record({ type: 'email_verified', ctx, userId: user.id, email: user.email, success: true, metadata: { via: 'password_reset' } }, tx)
        }
        const revoked = (await store.revokeAllSessions(tx, user.id, 'password_reset')).length
        await audit.record({ type: 'password_reset', ctx, userId: user.id, email: user.email, success: true, metadata: { revokedSessions: revoked } }, tx)
        await outbox.enqueue(tx, 'password_changed', {
          to: user.email,
          subject: 'Your Gatehouse password was reset',
          text: [
            `The password of your account was reset at ${t.toISOString()} from IP ${displayIp(ctx.ip)}, and every session was signed out.`,
            'If this was not you, reset your password again at once and review your account.'
          ].join('\n')
        })
        return user.id
      })
      if (userId === undefined) throw invalid()
    },

    /** Changes the password of a signed-in user, keeping the current session and ending the others. */
    async change (userId: string, sessionId: string, input: { currentPassword: string, newPassword: string }, ctx: RequestContext): Promise<void> {
      const user = await store.userById(userId)
      if (user === undefined) throw new AppError('SESSION_REVOKED')
      await deps.throttle.assertOpen(user.email, ctx, user.id)
      if (!await passwords.verify(user.passwordHash, input.currentPassword)) {
        await audit.record({ type: 'password_change', ctx, userId, email: user.email, success: false, failureReason: 'invalid_current_password' })
        throw new AppError('AUTH_INVALID_CREDENTIALS', 'Current password is incorrect')
      }
      assertPasswordPolicy(input.newPassword)
      if (await passwords.verify(user.passwordHash, input.newPassword)) {
        throw new AppError('PASSWORD_TOO_WEAK', 'New password must differ from the current one')
      }
      await deps.breaches.assertNotBreached(input.newPassword)
      const passwordHash = await passwords.hash(input.newPassword)
      const t = now()
      await transaction(db, async (tx) => {
        // Re-checked under the user lock: the hashing above takes time, and a reset in between
        // (which ends this session) must not be undone by this change.
        const locked = await store.lockUser(tx, userId)
        await deps.sessions.assertLive(tx, sessionId)
        if (locked?.passwordHash !== user.passwordHash) throw new AppError('AUTH_INVALID_CREDENTIALS', 'Current password is incorrect')
        await setPassword(tx, userId, passwordHash, t)
        const revoked = (await store.revokeOtherSessions(tx, userId, sessionId, 'password_change')).length
        await audit.record({ type: 'password_change', ctx, userId, email: user.email, success: true, metadata: { revokedSessions: revoked } }, tx)
        await outbox.enqueue(tx, 'password_changed', {
          to: user.email,
          subject: 'Your Gatehouse password was changed',
          text: [
            `The password of your account was changed at ${t.toISOString()} from IP ${displayIp(ctx.ip)}.`,
            'Your other sessions were signed out. If this was not you, reset your password at once.'
          ].join('\n')
        })
      })
    },

    /**
     * ADMIN_EMAIL/ADMIN_PASSWORD: creates that admin when no account has the email, with
     * passwordMustChange set. Never touches an existing account; ON CONFLICT DO NOTHING makes
     * instances starting at once create exactly one. Returns whether this call created it.
     */
    async bootstrapAdmin (rawEmail: string, password: string): Promise<boolean> {
      const email = normaliseEmail(rawEmail)
      if (await store.userByEmail(email) !== undefined) return false
      const passwordHash = await passwords.hash(password)
      return transaction(db, async (tx) => {
        // The operator wrote the address into the configuration: verified.
        const created = await store.insertUser(tx, { email, passwordHash, role: 'admin', passwordMustChange: true, emailVerified: true })
        if (created === undefined) return false
        await audit.record({ type: 'signup', ctx: { ip: 'bootstrap', userAgent: null }, userId: created.id, email, success: true, metadata: { bootstrapAdmin: true } }, tx)
        return true
      })
    }
  }
}
export type CredentialService = ReturnType<typeof createCredentialService>
