import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { AppError } from '../src/errors.ts'
import { UUID_PATTERN } from '../src/schemas/common.ts'
import type { SessionState } from '../src/services/account-store.ts'
import type { AccessTokenPayload } from './jwt.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Guard: a valid access token of a live session. Register it as a `preParsing` hook: after
     * the per-IP rate limit (onRequest, so unauthenticated floods are limited too) and before
     * the body is parsed.
     */
    authenticate: (request: FastifyRequest) => Promise<void>
    /** Guard: authenticate, then role admin (current role from the database, not the token). */
    requireAdmin: (request: FastifyRequest) => Promise<void>
  }
  interface FastifyRequest {
    /** The checked session and its user (`/me` answers from it), set by `authenticate`. */
    authSession: SessionState | null
  }
  interface FastifyContextConfig {
    /**
     * The route stays open while the account must change its password (me, logout,
     * logout-all, password/change); every other authenticated route answers 403.
     */
    allowWhilePasswordMustChange?: boolean
  }
}

const UUID = new RegExp(UUID_PATTERN)
const MAX_VERIFIED = 10_000
const VERIFIED_TTL_MS = 60_000

function tokenError (err: unknown): AppError {
  const code = (err as { code?: string }).code
  if (code === 'FST_JWT_NO_AUTHORIZATION_IN_HEADER') return new AppError('AUTH_REQUIRED')
  if (code === 'FST_JWT_AUTHORIZATION_TOKEN_EXPIRED') return new AppError('TOKEN_EXPIRED')
  return new AppError('TOKEN_INVALID')
}

/**
 * Route guards. They throw AppError, and the errors plugin shapes the 401/403.
 * Every request checks that the token's session is still live and its user still active
 * (cached per instance for SESSION_CHECK_TTL_SECONDS), so logout and deactivation bite at once.
 */
async function auth (fastify: FastifyInstance) {
  const { sessions } = fastify.services

  fastify.decorateRequest('authSession', null)

  /**
   * Verified access tokens by the exact Authorization header that carried them, until their exp
   * (at most a minute): a client sends the same token for many requests, and a hit skips the
   * decoding and the signature check. Only the very same string hits, so nothing unverified can
   * pass; the keys are the process's own (configuration), so a hit is what a check would say.
   * The session and user checks below still run on every request.
   */
  const verified = new Map<string, { claims: AccessTokenPayload, until: number }>()

  async function authenticate (request: FastifyRequest): Promise<{ role: 'user' | 'admin' }> {
    const header = request.headers.authorization
    if (header === undefined || header.trim() === '') throw new AppError('AUTH_REQUIRED')
    // Present but not a Bearer token (Basic, a bare token, …) is an invalid credential, not a missing one.
    if (!/^Bearer [^\s]+$/i.test(header.trim())) throw new AppError('TOKEN_INVALID')
    const nowMs = Date.now() // the clock the token's exp is checked with (fast-jwt's)
    const hit = verified.get(header)
    if (hit !== undefined && hit.until > nowMs) {
      request.user = hit.claims
    } else {
      try {
        await request.jwtVerify()
      } catch (err) {
        throw tokenError(err)
      }
      if (verified.size >= MAX_VERIFIED) verified.clear()
      verified.set(header, { claims: request.user, until: Math.min(request.user.exp * 1000, nowMs + VERIFIED_TTL_MS) })
    }
    const { sub, sid, amr } = request.user
    if (typeof sub !== 'string' || !UUID.test(sub) || typeof sid !== 'string' || !UUID.test(sid) || !Array.isArray(amr)) {
      throw new AppError('TOKEN_INVALID')
    }
    const state = await sessions.state(sid)
    if (!state.active) throw new AppError('SESSION_REVOKED')
    // Only a holder of the signing key could pair one user's session with another's sub; even
    // then the token is worth nothing.
    if (state.userId !== sub) throw new AppError('TOKEN_INVALID')
    if (state.passwordMustChange && request.routeOptions.config.allowWhilePasswordMustChange !== true) {
      throw new AppError('PASSWORD_CHANGE_REQUIRED')
    }
    request.authSession = state
    return state
  }

  fastify.decorate('authenticate', async (request: FastifyRequest) => { await authenticate(request) })
  fastify.decorate('requireAdmin', async (request: FastifyRequest) => {
    const state = await authenticate(request)
    if (state.role !== 'admin') throw new AppError('ADMIN_REQUIRED')
  })
}

export default fp(auth, { name: 'auth', fastify: '5.x', dependencies: ['jwt', 'services'] })
