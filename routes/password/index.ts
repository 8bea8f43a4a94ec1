import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { routeRateLimit } from '../../plugins/rate-limit.ts'
import { ChangePasswordSchema, ForgotPasswordSchema, ResetPasswordSchema } from '../../src/schemas/auth.ts'
import { errors, MessageSchema } from '../../src/schemas/common.ts'
import { normaliseEmailField, requestContext } from '../context.ts'

export const FORGOT_MESSAGE = 'If an account exists for that email, a reset link is on its way'

/** /api/auth/password: forgotten password, reset by emailed token, change when signed in. */
const passwordRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { credentials } = fastify.services
  const c = fastify.config
  const limit = routeRateLimit(c.RATE_LIMIT_ENABLED, c.RATE_LIMIT_PASSWORD_MAX, c.RATE_LIMIT_PASSWORD_WINDOW_SECONDS)

  fastify.post('/forgot', {
    preValidation: normaliseEmailField,
    config: { rateLimit: routeRateLimit(c.RATE_LIMIT_ENABLED, c.RATE_LIMIT_FORGOT_MAX, c.RATE_LIMIT_FORGOT_WINDOW_SECONDS) },
    schema: {
      tags: ['password'],
      summary: 'Email a reset link (same answer whether or not the account exists)',
      body: ForgotPasswordSchema,
      response: { 202: MessageSchema, ...errors(400, 429) }
    }
  }, async (request, reply) => {
    // Carried out after this answer, so existing and unknown emails take the same time.
    credentials.requestReset(request.body.email, requestContext(request))
    return reply.code(202).send({ message: FORGOT_MESSAGE })
  })

  fastify.post('/reset', {
    config: { rateLimit: limit },
    schema: {
      tags: ['password'],
      summary: 'Set a new password with the emailed token; ends every session',
      body: ResetPasswordSchema,
      response: { 200: MessageSchema, ...errors(400, 429) }
    }
  }, async (request) => {
    await credentials.reset(request.body.token, request.body.newPassword, requestContext(request))
    return { message: 'Password has been reset; please log in' }
  })

  fastify.post('/change', {
    preParsing: fastify.authenticate,
    config: { rateLimit: limit, allowWhilePasswordMustChange: true },
    schema: {
      tags: ['password'],
      summary: 'Change the password; ends the other sessions',
      security: [{ bearerAuth: [] }],
      body: ChangePasswordSchema,
      response: { 200: MessageSchema, ...errors(400, 401, 429) }
    }
  }, async (request) => {
    await credentials.change(request.user.sub, request.user.sid, request.body, requestContext(request))
    return { message: 'Password changed' }
  })
}

export default passwordRoutes
