import { and, count, eq, gt, isNull, sql } from 'drizzle-orm'
import type { Db, Tx } from '../db/client.ts'
import { authEvents, emailVerificationTokens } from '../db/schema.ts'
import { transaction } from '../db/transaction.ts'
import { AppError } from '../errors.ts'
import type { AccountStore } from './account-store.ts'
import { normaliseEmail } from './accounts.ts'
import type { AuditLog, RequestContext } from './audit.ts'
import { hashOpaqueToken, newOpaqueToken, OPAQUE_TOKEN_FORMAT } from './opaque-tokens.ts'
import type { Outbox } from './outbox.ts'
import { displayIp } from './user-agent.ts'

const HOUR_MS = 3_600_000
/** The advisory-lock key space of the per-IP resend limit (any constant of ours). */
const LOCK_SPACE = 724_532

/**
 * Email verification: a single-use link (256 random bits, stored as SHA-256) mailed at signup and
 * on request, which marks the address as proven. Resend requests answer 202 whatever the email
 * and are carried out after the answer (`defer`), so neither the answer nor its timing says
 * whether the account exists; they mail only an existing, active, unverified account, at most
 * `perAccountPerHour` mails an hour per account (the signup mail included) and `perIpPerHour`
 * mails an hour triggered from one address.
 */
export function createEmailVerification (deps: {
  db: Db
  now: () => Date
  store: AccountStore
  audit: AuditLog
  outbox: Outbox
  appUrl: string
  expireHours: number
  perAccountPerHour: number
  perIpPerHour: number
  /** Runs work after the answer has been written (the credential service's queue). */
  defer: (work: () => Promise<void>, what: string) => void
}) {
  const { db, now, store, audit } = deps
  const link = (token: string) => `${deps.appUrl.replace(/\/+$/, '')}/verify-email?token=${token}`

  /**
   * A new link for the user, mailed through the outbox in the caller's transaction (under the
   * user's lock); false, and nothing sent, when the account had its hourly number of mails.
   */
  async function issue (tx: Tx, user: { id: string, email: string }, ctx: RequestContext): Promise<boolean> {
    const t = now()
    const [recent] = await tx.select({ n: count() }).from(emailVerificationTokens)
      .where(and(eq(emailVerificationTokens.userId, user.id), gt(emailVerificationTokens.createdAt, new Date(t.getTime() - HOUR_MS))))
    if ((recent?.n ?? 0) >= deps.perAccountPerHour) return false
    const token = newOpaqueToken()
    const expiresAt = new Date(t.getTime() + deps.expireHours * HOUR_MS)
    await tx.insert(emailVerificationTokens).values({ userId: user.id, tokenHash: hashOpaqueToken(token), createdAt: t, expiresAt, requestedIp: ctx.ip })
    await deps.outbox.enqueue(tx, 'email_verification', {
      to: user.email,
      subject: 'Confirm your email address for Gatehouse',
      text: [
        'Confirm that this address is yours by opening this link:',
        link(token),
        '',
        `The link works once, for ${deps.expireHours} hours.`,
        `Requested from IP ${displayIp(ctx.ip)} at ${t.toISOString()}.`,
        'If you did not create an account, ignore this email.'
      ].join('\n')
    }, { expiresAt })
    return true
  }

  async function resend (rawEmail: string, ctx: RequestContext): Promise<void> {
    const email = normaliseEmail(rawEmail)
    const t = now()
    const refused = (tx: Tx, userId: string | null, failureReason: string) =>
      audit.record({ type: 'email_verification_requested', ctx, userId, email, success: false, failureReason }, tx)
    await transaction(db, async (tx) => {
      // Requests from one address are decided one after the other (they run concurrently after
      // their 202s): otherwise a burst of them would all read the same count and all mail.
      await tx.execute(sql`select pg_advisory_xact_lock(${LOCK_SPACE}, hashtext(${ctx.ip}))`)
      const [fromIp] = await tx.select({ n: count() }).from(authEvents).where(and(
        eq(authEvents.ipAddress, ctx.ip), eq(authEvents.eventType, 'email_verification_requested'), eq(authEvents.success, true),
        gt(authEvents.createdAt, new Date(t.getTime() - HOUR_MS))
      ))
      if ((fromIp?.n ?? 0) >= deps.perIpPerHour) return refused(tx, null, 'ip_limit')
      const user = await store.lockUserByEmail(tx, email)
      if (user === undefined) return refused(tx, null, 'unknown_email')
      if (!user.isActive) return refused(tx, user.id, 'account_disabled')
      if (user.emailVerified) return refused(tx, user.id, 'already_verified')
      if (!await issue(tx, user, ctx)) return refused(tx, user.id, 'account_limit')
      await audit.record({ type: 'email_verification_requested', ctx, userId: user.id, email, success: true }, tx)
    })
  }

  return {
    issue,

    /** Accepts a resend request; the work runs after the 202 (see the service comment). */
    requestResend (rawEmail: string, ctx: RequestContext): void {
      deps.defer(() => resend(rawEmail, ctx), 'verification email request')
    },

    /**
     * Consumes a link (single use, atomically: of two racing requests one wins) and marks the
     * address verified. 400 VERIFY_TOKEN_INVALID for anything else, and, without spending the
     * link, for a deactivated account (frozen by an administrator: as a reset or a resend, a
     * link does not change it) and for an address already verified (by another of its links, or
     * by a reset: the links still out have nothing left to prove).
     */
    async verify (token: string, ctx: RequestContext): Promise<void> {
      const invalid = () => new AppError('VERIFY_TOKEN_INVALID')
      if (!OPAQUE_TOKEN_FORMAT.test(token)) throw invalid()
      const hash = hashOpaqueToken(token)
      const [pending] = await db.select({ userId: emailVerificationTokens.userId }).from(emailVerificationTokens)
        .where(eq(emailVerificationTokens.tokenHash, hash))
      if (pending === undefined) throw invalid()
      const t = now()
      const done = await transaction(db, async (tx) => {
        // The user row first, as every writer of a user locks it.
        const user = await store.lockUser(tx, pending.userId)
        if (user === undefined || !user.isActive || user.emailVerified) return false
        const [consumed] = await tx.update(emailVerificationTokens).set({ usedAt: t })
          .where(and(eq(emailVerificationTokens.tokenHash, hash), isNull(emailVerificationTokens.usedAt), gt(emailVerificationTokens.expiresAt, t)))
          .returning({ id: emailVerificationTokens.id })
        if (consumed === undefined) return false
        await store.markEmailVerified(tx, user.id)
        await audit.record({ type: 'email_verified', ctx, userId: user.id, email: user.email, success: true, metadata: { via: 'link' } }, tx)
        return true
      })
      if (!done) throw invalid()
    }
  }
}
export type EmailVerification = ReturnType<typeof createEmailVerification>
