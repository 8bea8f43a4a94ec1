import { and, eq } from 'drizzle-orm'
import { users, type UserRow } from '../db/schema.ts'
import type { Db, Queryable } from '../db/client.ts'
import { transaction } from '../db/transaction.ts'
import { AppError } from '../errors.ts'
import type { AuditLog, RequestContext } from './audit.ts'
import { assertPasswordPolicy } from './password-policy.ts'
import type { PasswordHasher } from './passwords.ts'
import type { PasswordThrottle } from './password-throttle.ts'
import type { BreachChecker } from './hibp.ts'
import type { MfaChallenge, MfaService } from './mfa.ts'
import type { Amr, IssuedRefreshToken, SessionService } from './sessions.ts'

/** The contract's User object. */
export interface PublicUser {
  id: string
  email: string
  role: 'user' | 'admin'
  isActive: boolean
  mfaEnabled: boolean
  passwordMustChange: boolean
  createdAt: string
  lastLoginAt: string | null
}

export function toPublicUser (u: UserRow): PublicUser {
  return {
    id: u.id,
    email: u.email,
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
  sessions: SessionService
  throttle: PasswordThrottle
  signAccessToken: (claims: AccessClaims) => string
  accessTokenSeconds: number
}) {
  const { db, now, passwords, audit } = deps

  function authResult (user: UserRow, sessionId: string, amr: Amr[], refresh: IssuedRefreshToken): AuthResult {
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

  const emailOf = async (userId: string) =>
    (await db.select({ email: users.email }).from(users).where(eq(users.id, userId)))[0]?.email ?? null

  /** Revokes one session and records `logout` when it was live; returns whether it was. */
  async function endSession (userId: string, sessionId: string, reason: string, ctx: RequestContext, metadata: Record<string, unknown>) {
    const email = await emailOf(userId)
    return transaction(db, async (tx) => {
      const live = await deps.sessions.revoke(userId, sessionId, reason, tx)
      if (live) await audit.record({ type: 'logout', ctx, userId, email, success: true, metadata }, tx)
      return live
    })
  }

  /** The end of every successful login: a session, lastLoginAt, the audit row, the tokens. */
  async function completeLogin (tx: Queryable, user: UserRow, amr: Amr[], ctx: RequestContext): Promise<AuthResult> {
    const [updated] = await tx.update(users).set({ lastLoginAt: now() }).where(eq(users.id, user.id)).returning()
    const { session, refresh } = await deps.sessions.create(user.id, ctx, amr, tx)
    await audit.record({ type: 'login_success', ctx, userId: user.id, email: user.email, success: true, metadata: { amr } }, tx)
    return authResult(updated ?? user, session.id, amr, refresh)
  }

  return {
    async signup (input: { email: string, password: string }, ctx: RequestContext): Promise<AuthResult> {
      const email = normaliseEmail(input.email)
      assertPasswordPolicy(input.password)
      await deps.breaches.assertNotBreached(input.password)
      const passwordHash = await passwords.hash(input.password)
      const t = now()
      return transaction(db, async (tx) => {
        // ON CONFLICT DO NOTHING: two racing signups of one email give one row and one 409, no 500.
        const [user] = await tx.insert(users).values({
          email, passwordHash, passwordChangedAt: t, createdAt: t, updatedAt: t, lastLoginAt: t
        }).onConflictDoNothing({ target: users.email }).returning()
        if (user === undefined) throw new AppError('EMAIL_TAKEN')
        const { session, refresh } = await deps.sessions.create(user.id, ctx, ['pwd'], tx)
        await audit.record({ type: 'signup', ctx, userId: user.id, email, success: true }, tx)
        return authResult(user, session.id, ['pwd'], refresh)
      })
    },

    async login (input: { email: string, password: string }, ctx: RequestContext): Promise<AuthResult | MfaChallenge> {
      const email = normaliseEmail(input.email)
      await deps.throttle.assertOpen(email, ctx)

      const [user] = await db.select().from(users).where(eq(users.email, email))
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

      // Parameters changed since this hash was made: upgrade it while we hold the password.
      if (passwords.needsRehash(user.passwordHash)) {
        const rehash = await passwords.hash(input.password)
        // Only if the hash is still the one verified: a password change in between wins.
        await db.update(users).set({ passwordHash: rehash }).where(and(eq(users.id, user.id), eq(users.passwordHash, user.passwordHash)))
      }
      // A second factor is due: no session, no cookie, only a challenge token.
      if (user.mfaEnabled) return deps.mfa.startChallenge(user.id)
      return transaction(db, (tx) => completeLogin(tx, user, ['pwd'], ctx))
    },

    /** The second step of a login with MFA: a TOTP code or a backup code for the challenge. */
    async loginMfa (input: { mfaToken: string, code?: string, backupCode?: string }, ctx: RequestContext): Promise<AuthResult> {
      return deps.mfa.answerChallenge(input.mfaToken, input, ctx, (tx, user) => completeLogin(tx, user, ['pwd', 'otp'], ctx))
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
      const email = await emailOf(userId)
      return transaction(db, async (tx) => {
        const revoked = await deps.sessions.revokeAll(userId, 'logout_all', tx)
        await audit.record({ type: 'logout_all', ctx, userId, email, success: true, metadata: { revoked } }, tx)
        return revoked
      })
    },

    /** DELETE /sessions/:id: only the caller's own live sessions; anything else is a 404. */
    async revokeSession (userId: string, sessionId: string, ctx: RequestContext): Promise<void> {
      const live = await endSession(userId, sessionId, 'revoked_by_user', ctx, { sessionId, via: 'sessions_api' })
      if (!live) throw new AppError('NOT_FOUND', 'Session not found')
    },

    async getUser (userId: string): Promise<PublicUser> {
      const [user] = await db.select().from(users).where(eq(users.id, userId))
      if (user === undefined) throw new AppError('SESSION_REVOKED')
      return toPublicUser(user)
    }
  }
}
export type AccountService = ReturnType<typeof createAccountService>
