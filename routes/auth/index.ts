import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { CredentialsSchema, TokenResponseSchema } from '../../src/schemas/auth.ts'
import { errors } from '../../src/schemas/common.ts'
import { Type } from '@fastify/type-provider-typebox'
import { routeRateLimit } from '../../plugins/rate-limit.ts'
import { normaliseEmailField, requestContext } from '../context.ts'

/** Account routes under /api/auth. Thin: validate, call the service, shape the reply. */
const authRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { accounts, audit } = fastify.services
  const c = fastify.config

  fastify.post('/signup', {
    preValidation: normaliseEmailField,
    config: { rateLimit: routeRateLimit(c.RATE_LIMIT_ENABLED, c.RATE_LIMIT_SIGNUP_MAX, c.RATE_LIMIT_SIGNUP_WINDOW_SECONDS) },
    schema: {
      tags: ['auth'],
      summary: 'Create an account and log in',
      body: CredentialsSchema,
      response: { 201: TokenResponseSchema, ...errors(400, 409, 413, 415, 429) }
    }
  }, async (request, reply) => {
    const result = await accounts.signup(request.body, requestContext(request))
    return reply.code(201).send(result)
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
              const t = Date.now()
              if ((reported.get(request.ip) ?? 0) > t) return
              if (reported.size > 10_000) reported.clear()
              reported.set(request.ip, t + loginLimit.timeWindow)
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
      response: { 200: TokenResponseSchema, ...errors(400, 401, 403, 413, 415, 429) }
    }
  }, async (request) => accounts.login(request.body, requestContext(request)))

  fastify.get('/me', {
    preParsing: fastify.authenticate,
    config: { allowWhilePasswordMustChange: true },
    schema: {
      tags: ['auth'],
      summary: 'The current user',
      security: [{ bearerAuth: [] }],
      response: { 200: Type.Ref('User'), ...errors(401) }
    }
  }, async (request) => accounts.getUser(request.user.sub))
}

export default authRoutes
