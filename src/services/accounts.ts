import type { UserRow } from '../db/schema.ts'
import type { Db, Queryable } from '../db/client.ts'
import { transaction } from '../db/transaction.ts'
import { AppError } from '../errors.ts'
import type { AuditLog, RequestContext } from './audit.ts'
import { assertPasswordPolicy } from './password-policy.ts'
import type { PasswordHasher } from './passwords.ts'
import type { PasswordThrottle } from './password-throttle.ts'
import type { BreachChecker } from './hibp.ts'
import type { MfaChallenge, MfaService } from './mfa.ts'
import type { AccountStore, PublicUserRow } from './account-store.ts'
import type { EmailVerification } from './email-verification.ts'
import type { PasskeyService } from './passkeys.ts'
import type { Amr, IssuedRefreshToken, SessionService } from './sessions.ts'

/** The contract's User object. */
export interface PublicUser {
  id: string
  email: string
  emailVerified: boolean
  role: 'user' | 'admin'
  isActive: boolean
  mfaEnabled: boolean
  passwordMustChange: boolean
  createdAt: string
  lastLoginAt: string | null
}

export function toPublicUser (u: PublicUserRow): PublicUser {
  return {
    id: u.id,
    email: u.email,
    emailVerified: u.emailVerified,
    role: u.role,
    isActive: u.isActive,
    mfaEnabled: u.mfaEnabled,
    passwordMustChange: u.passwordMustChange,
    createdAt: u.createdAt.toISOString(),
    lastLoginAt: u.lastLoginAt?.toISOString() ?? null
  }
}

/** Emails are compared trimmed and lower-cased; the schema validates the result. */
export const normaliseEmail = (email: string) => email.trim().toLowerCase()

export interface AccessClaims {
  sub: string
  sid: string
  role: 'user' | 'admin'
  amr: Amr[]
}

export interface TokenResponse {
  user: PublicUser
  accessToken: string
  tokenType: 'Bearer'
  expiresIn: number
}

/** Signup's answer under REQUIRE_EMAIL_VERIFICATION: the account, and no token. */
export interface VerificationRequired {
  user: PublicUser
  verificationRequired: true
}

/** What signup, login and refresh produce: the JSON body and the refresh cookie's value. */
export interface AuthResult {
  body: TokenResponse
  refresh: IssuedRefreshToken
}

export function createAccountService (deps: {
  db: Db
  now: () => Date
  passwords: PasswordHasher
  breaches: BreachChecker
  mfa: MfaService
  audit: AuditLog
  store: AccountStore
  sessions: SessionService
  emailVerification: EmailVerification
  passkeys: PasskeyService
  /** REQUIRE_EMAIL_VERIFICATION: signup opens no session, and login waits for a verified address. */
  requireVerifiedEmail: boolean
  throttle: PasswordThrottle
  signAccessToken: (claims: AccessClaims) => string
  accessTokenSeconds: number
}) {
  const { db, passwords, audit, store } = deps

  function authResult (user: PublicUserRow, sessionId: string, amr: Amr[], refresh: IssuedRefreshToken): AuthResult {
    return {
      body: {
        user: toPublicUser(user),
        accessToken: deps.signAccessToken({ sub: user.id, sid: sessionId, role: user.role, amr }),
        tokenType: 'Bearer',
        expiresIn: deps.accessTokenSeconds
      },
      refresh
    }
  }


  /** Revokes one session and records `logout` when it was live; returns whether it was. */
  async function endSession (userId: string, sessionId: string, reason: string, ctx: RequestContext, metadata: Record<string, unknown>) {
    const email = await store.emailOf(userId)
    return transaction(db, async (tx) => {
      const live = await store.revokeSession(tx, userId, sessionId, reason)
      if (live) await audit.record({ type: 'logout', ctx, userId, email, success: true, metadata }, tx)
      return live
    })
  }

  /** The end of every successful login: a session, lastLoginAt, the audit row, the tokens. */
  async function completeLogin (q: Queryable, user: UserRow, amr: Amr[], ctx: RequestContext): Promise<AuthResult> {
    const { user: updated, sessionId, refresh } = await deps.sessions.create(q, user.id, ctx, amr)
    return authResult(updated, sessionId, amr, refresh)
  }

  return {
    /**
     * A new account, its verification mail, and (unless REQUIRE_EMAIL_VERIFICATION) a session:
     * with it, the account waits for its address to be proven and the answer holds no token.
     */
    async signup (input: { email: string, password: string }, ctx: RequestContext): Promise<AuthResult | VerificationRequired> {
      const email = normaliseEmail(input.email)
      assertPasswordPolicy(input.password)
      await deps.breaches.assertNotBreached(input.password)
      const passwordHash = await passwords.hash(input.password)
      return transaction(db, async (tx) => {
        // Two racing signups of one email give one row and one 409, no 500.
        const created = await store.insertUser(tx, { email, passwordHash })
        if (created === undefined) throw new AppError('EMAIL_TAKEN')
        await deps.emailVerification.issue(tx, created, ctx)
        if (deps.requireVerifiedEmail) {
          await audit.record({ type: 'signup', ctx, userId: created.id, email, success: true, metadata: { verificationRequired: true } }, tx)
          return { user: toPublicUser(created), verificationRequired: true as const }
        }
        const { user, sessionId, refresh } = await deps.sessions.create(tx, created.id, ctx, ['pwd'], 'signup')
        return authResult(user, sessionId, ['pwd'], refresh)
      })
    },

    async login (input: { email: string, password: string }, ctx: RequestContext): Promise<AuthResult | MfaChallenge> {
      const email = normaliseEmail(input.email)
      // The lockout check and the account's row at once (two connections, one wait).
      const [, user] = await Promise.all([deps.throttle.assertOpen(email, ctx), store.userByEmail(email)])
      const ok = user === undefined
        ? await passwords.verifyDummy(input.password)
        : await passwords.verify(user.passwordHash, input.password)
      if (user === undefined || !ok) {
        await audit.record({
          type: 'login_failure', ctx, userId: user?.id ?? null, email, success: false,
          failureReason: user === undefined ? 'unknown_email' : 'invalid_password'
        })
        throw new AppError('AUTH_INVALID_CREDENTIALS')
      }
      if (!user.isActive) {
        await audit.record({ type: 'login_failure', ctx, userId: user.id, email, success: false, failureReason: 'account_disabled' })
        throw new AppError('ACCOUNT_DISABLED')
      }

      // The right password, but the address is not proven yet (a wrong password stays 401 above).
      if (deps.requireVerifiedEmail && !user.emailVerified) {
        await audit.record({ type: 'login_failure', ctx, userId: user.id, email, success: false, failureReason: 'email_not_verified' })
        throw new AppError('EMAIL_NOT_VERIFIED')
      }

      // Parameters changed since this hash was made: upgrade it while we hold the password.
      if (passwords.needsRehash(user.passwordHash)) {
        // Only if the hash is still the one verified: a password change in between wins.
        await store.upgradePasswordHash(user.id, user.passwordHash, await passwords.hash(input.password))
      }
      // A second factor is due: no session, no cookie, only a challenge token.
      if (user.mfaEnabled) return deps.mfa.startChallenge(user.id)
      // One statement (a transaction by itself): the session, its token, lastLoginAt and the record.
      try {
        return await completeLogin(db, user, ['pwd'], ctx)
      } catch (err) {
        // Deactivated while the password was being checked.
        if (err instanceof AppError && err.code === 'ACCOUNT_DISABLED') {
          await audit.record({ type: 'login_failure', ctx, userId: user.id, email, success: false, failureReason: 'account_disabled' })
        }
        throw err
      }
    },

    /** The second step of a login with MFA: a TOTP code or a backup code for the challenge. */
    async loginMfa (input: { mfaToken: string, code?: string, backupCode?: string }, ctx: RequestContext): Promise<AuthResult> {
      return deps.mfa.answerChallenge(input.mfaToken, input, ctx, (tx, user) => completeLogin(tx, user, ['pwd', 'otp'], ctx))
    },

    /**
     * A login by passkey (see PasskeyService.login): the usual session and tokens with
     * `amr: ["passkey"]`. No TOTP step: a passkey with user verification is two factors.
     */
    async loginWithPasskey (input: Parameters<PasskeyService['login']>[0], ctx: RequestContext): Promise<AuthResult> {
      return deps.passkeys.login(input, ctx, async (tx, userId) => {
        const { user, sessionId, refresh } = await deps.sessions.create(tx, userId, ctx, ['passkey'])
        return authResult(user, sessionId, ['passkey'], refresh)
      })
    },

    /** Rotates the refresh token (see sessions.rotate) and issues a fresh access token. */
    async refresh (token: string, ctx: RequestContext): Promise<AuthResult> {
      const { session, user, refresh } = await deps.sessions.rotate(token, ctx)
      return authResult(user, session.id, session.amr as Amr[], refresh)
    },

    /** Ends one session (this device). */
    async logout (userId: string, sessionId: string, ctx: RequestContext): Promise<void> {
      await endSession(userId, sessionId, 'logout', ctx, { sessionId })
    },

    /** Ends every session of the user, this one included; returns how many were live. */
    async logoutAll (userId: string, ctx: RequestContext): Promise<number> {
      const email = await store.emailOf(userId)
      return transaction(db, async (tx) => {
        const revoked = (await store.revokeAllSessions(tx, userId, 'logout_all')).length
        await audit.record({ type: 'logout_all', ctx, userId, email, success: true, metadata: { revoked } }, tx)
        return revoked
      })
    },

    /** DELETE /sessions/:id: only the caller's own live sessions; anything else is a 404. */
    async revokeSession (userId: string, sessionId: string, ctx: RequestContext): Promise<void> {
      const live = await endSession(userId, sessionId, 'revoked_by_user', ctx, { sessionId, via: 'sessions_api' })
      if (!live) throw new AppError('NOT_FOUND', 'Session not found')
    }
  }
}
export type AccountService = ReturnType<typeof createAccountService>
