import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { FastifyReply } from 'fastify'
import { countRateLimited, routeRateLimit } from '../../plugins/rate-limit.ts'
import { AppError } from '../../src/errors.ts'
import {
  CredentialsSchema, ForgotPasswordSchema, LoginMfaSchema, MfaChallengeSchema, SessionListSchema, SessionParamsSchema, TokenResponseSchema,
  VerificationRequiredSchema, VerifyEmailSchema
} from '../../src/schemas/auth.ts'
import { errors, MessageSchema } from '../../src/schemas/common.ts'
import { type AuthResult, toPublicUser } from '../../src/services/accounts.ts'
import { clientKey } from '../../src/services/client-key.ts'
import { normaliseEmailField, requestContext } from '../context.ts'
import { assertAllowedOrigin, clearRefreshCookie, refreshCookie, setRefreshCookie } from './cookies.ts'

/** Account and session routes under /api/auth. Thin: validate, call the service, shape the reply. */
const authRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { accounts, audit } = fastify.services
  const c = fastify.config
  const bearer = [{ bearerAuth: [] }]
  const cookie = [{ refreshCookie: [] }]

  /** The token response body, with the refresh token set as the cookie (never in the body). */
  function respond (reply: FastifyReply, result: AuthResult) {
    setRefreshCookie(reply, c, result.refresh, fastify.now())
    return result.body
  }

  fastify.post('/signup', {
    preValidation: normaliseEmailField,
    config: { rateLimit: routeRateLimit(c.RATE_LIMIT_ENABLED, c.RATE_LIMIT_SIGNUP_MAX, c.RATE_LIMIT_SIGNUP_WINDOW_SECONDS) },
    schema: {
      tags: ['auth'],
      summary: 'Create an account and log in',
      body: CredentialsSchema,
      response: { 201: Type.Union([TokenResponseSchema, VerificationRequiredSchema]), ...errors(400, 409, 413, 415, 429) }
    }
  }, async (request, reply) => {
    const result = await accounts.signup(request.body, requestContext(request))
    // REQUIRE_EMAIL_VERIFICATION: the account waits for its address; no token, no cookie.
    if ('verificationRequired' in result) return reply.code(201).send(result)
    return reply.code(201).send(respond(reply, result))
  })

  fastify.post('/email/verify', {
    config: { rateLimit: routeRateLimit(c.RATE_LIMIT_ENABLED, c.RATE_LIMIT_PASSWORD_MAX, c.RATE_LIMIT_PASSWORD_WINDOW_SECONDS) },
    schema: {
      tags: ['auth'],
      summary: 'Confirm the email address with the token of the mailed link (single use)',
      body: VerifyEmailSchema,
      response: { 200: MessageSchema, ...errors(400, 413, 415, 429) }
    }
  }, async (request) => {
    await fastify.services.emailVerification.verify(request.body.token, requestContext(request))
    return { message: 'Email address verified' }
  })

  fastify.post('/email/verify/resend', {
    preValidation: normaliseEmailField,
    schema: {
      tags: ['auth'],
      summary: 'Mail a new verification link (same answer whether or not the account exists)',
      body: ForgotPasswordSchema,
      response: { 202: MessageSchema, ...errors(400, 413, 415, 429) }
    }
  }, async (request, reply) => {
    // Carried out after this answer, so every email takes the same time; the limits send no mail but still answer 202.
    fastify.services.emailVerification.requestResend(request.body.email, requestContext(request))
    return reply.code(202).send({ message: 'If that address has an account waiting for verification, a new link is on its way' })
  })

  const loginLimit = routeRateLimit(c.RATE_LIMIT_ENABLED, c.RATE_LIMIT_LOGIN_MAX, c.RATE_LIMIT_LOGIN_WINDOW_SECONDS)
  // One audit row per IP and window when the per-IP login limit trips, not one per rejected request.
  const reported = new Map<string, number>()
  fastify.post('/login', {
    preValidation: normaliseEmailField,
    config: {
      rateLimit: loginLimit === false
        ? false
        : {
            ...loginLimit,
            // After parsing, so the audit event can name the email being attacked.
            hook: 'preHandler',
            onExceeded: (request) => {
              countRateLimited(request)
              const t = Date.now()
              const key = clientKey(request.ip, c.RATE_LIMIT_IPV6_PREFIX)
              if ((reported.get(key) ?? 0) > t) return
              if (reported.size > 10_000) reported.clear()
              reported.set(key, t + loginLimit.timeWindow)
              const email = (request.body as { email?: string } | undefined)?.email ?? null
              audit.record({ type: 'rate_limited', ctx: requestContext(request), email, success: false, failureReason: 'ip_login_limit' })
                .catch((err: unknown) => request.log.error({ err }, 'could not record rate_limited event'))
            }
          }
    },
    schema: {
      tags: ['auth'],
      summary: 'Log in with email and password',
      body: CredentialsSchema,
      response: { 200: Type.Union([TokenResponseSchema, MfaChallengeSchema]), ...errors(400, 401, 403, 413, 415, 429) }
    }
  }, async (request, reply) => {
    const result = await accounts.login(request.body, requestContext(request))
    // MFA on: a challenge and no cookie; the login completes at /login/mfa.
    return 'mfaRequired' in result ? result : respond(reply, result)
  })

  fastify.post('/login/mfa', {
    config: { rateLimit: routeRateLimit(c.RATE_LIMIT_ENABLED, c.RATE_LIMIT_MFA_MAX, c.RATE_LIMIT_MFA_WINDOW_SECONDS) },
    schema: {
      tags: ['auth', 'mfa'],
      summary: 'Second step of a login with MFA: a TOTP code or a backup code',
      body: LoginMfaSchema,
      response: { 200: TokenResponseSchema, ...errors(400, 401, 429) }
    }
  }, async (request, reply) => {
    const { code, backupCode } = request.body
    if ((code === undefined) === (backupCode === undefined)) {
      throw new AppError('VALIDATION_ERROR', 'body must have exactly one of code and backupCode')
    }
    return respond(reply, await accounts.loginMfa(request.body, requestContext(request)))
  })

  fastify.post('/refresh', {
    schema: {
      tags: ['sessions'],
      summary: 'Rotate the refresh cookie and get a new access token',
      description: 'Idempotent for REFRESH_REUSE_GRACE_SECONDS: racing requests with one cookie all get the same successor.',
      security: cookie,
      response: { 200: TokenResponseSchema, ...errors(401, 403, 429) }
    }
  }, async (request, reply) => {
    assertAllowedOrigin(request, c)
    const token = refreshCookie(request)
    if (token === undefined) throw new AppError('REFRESH_TOKEN_INVALID', 'Refresh cookie missing')
    try {
      return respond(reply, await accounts.refresh(token, requestContext(request)))
    } catch (err) {
      // A dead cookie is useless to the browser: drop it with the 401.
      if (err instanceof AppError && err.statusCode === 401) clearRefreshCookie(reply, c)
      throw err
    }
  })

  fastify.post('/logout', {
    config: { allowWhilePasswordMustChange: true },
    schema: {
      tags: ['sessions'],
      summary: 'End this session (Bearer token or refresh cookie)',
      security: [...bearer, ...cookie],
      response: { 200: MessageSchema, ...errors(401, 403) }
    }
  }, async (request, reply) => {
    // A browser sends both: its Bearer token and, on /api/auth paths, the refresh cookie. Either
    // one is enough to log out, so an expired access token does not keep the session alive. The
    // cookie follows the refresh rules: a rotated (stolen) token presented here is reuse.
    const ctx = requestContext(request)
    const token = refreshCookie(request)
    if (token !== undefined) assertAllowedOrigin(request, c) // before anything is revoked
    clearRefreshCookie(reply, c)
    let done = token !== undefined && await fastify.services.sessions.endByRefreshToken(token, ctx)
    if (request.headers.authorization !== undefined) {
      try {
        await fastify.authenticate(request)
        await accounts.logout(request.user.sub, request.user.sid, ctx)
        done = true
      } catch (err) {
        if (!done) throw err
      }
    }
    if (!done) throw new AppError(token === undefined ? 'AUTH_REQUIRED' : 'REFRESH_TOKEN_INVALID')
    return { message: 'Logged out' }
  })

  fastify.post('/logout-all', {
    preParsing: fastify.authenticate,
    config: { allowWhilePasswordMustChange: true },
    schema: {
      tags: ['sessions'],
      summary: 'End every session of the user, this one included',
      security: bearer,
      response: { 200: Type.Object({ message: Type.String(), revoked: Type.Integer() }), ...errors(401) }
    }
  }, async (request, reply) => {
    const revoked = await accounts.logoutAll(request.user.sub, requestContext(request))
    clearRefreshCookie(reply, c)
    return { message: 'Logged out of every session', revoked }
  })

  fastify.get('/sessions', {
    preParsing: fastify.authenticate,
    schema: {
      tags: ['sessions'],
      summary: 'The user\'s active sessions',
      security: bearer,
      response: { 200: SessionListSchema, ...errors(401, 403) }
    }
  }, async (request) => ({ items: await fastify.services.sessions.list(request.user.sub, request.user.sid) }))

  fastify.delete('/sessions/:id', {
    preParsing: fastify.authenticate,
    schema: {
      tags: ['sessions'],
      summary: 'End one of the user\'s sessions',
      security: bearer,
      params: SessionParamsSchema,
      response: { 204: Type.Null(), ...errors(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    await accounts.revokeSession(request.user.sub, request.params.id, requestContext(request))
    return reply.code(204).send(null)
  })

  fastify.get('/me', {
    preParsing: fastify.authenticate,
    config: { allowWhilePasswordMustChange: true },
    schema: {
      tags: ['auth'],
      summary: 'The current user',
      security: bearer,
      response: { 200: Type.Ref('User'), ...errors(401) }
    }
  }, async (request) => {
    // From the session check the guard just made (cached per instance): no second query. The
    // guard lets only a live session through, and a live session always has its user.
    const user = request.authSession?.user
    if (user === null || user === undefined) throw new AppError('SESSION_REVOKED')
    return toPublicUser(user)
  })
}

export default authRoutes
