import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { routeRateLimit } from '../../plugins/rate-limit.ts'
import {
  BackupCodesSchema, MfaCodeSchema, MfaDisableSchema, MfaPasswordSchema, MfaSetupResponseSchema, MfaStatusSchema
} from '../../src/schemas/auth.ts'
import { errors, MessageSchema } from '../../src/schemas/common.ts'
import { requestContext } from '../context.ts'

/** /api/auth/mfa: TOTP enrolment and management for the signed-in user. */
const mfaRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { mfa } = fastify.services
  const c = fastify.config
  // Codes and passwords are guessable in small spaces: limit attempts per IP on every write.
  const limit = routeRateLimit(c.RATE_LIMIT_ENABLED, c.RATE_LIMIT_MFA_MAX, c.RATE_LIMIT_MFA_WINDOW_SECONDS)
  fastify.addHook('preParsing', fastify.authenticate)
  const security = [{ bearerAuth: [] }]
  const tags = ['mfa']

  fastify.get('', {
    schema: { tags, security, summary: 'MFA status', response: { 200: MfaStatusSchema, ...errors(401, 403) } }
  }, async (request) => mfa.status(request.user.sub))

  fastify.post('/totp/setup', {
    config: { rateLimit: limit },
    schema: {
      tags, security, summary: 'Start TOTP enrolment (password re-checked)', body: MfaPasswordSchema,
      response: { 200: MfaSetupResponseSchema, ...errors(400, 401, 403, 409, 429) }
    }
  }, async (request) => mfa.setup(request.user.sub, request.body.password, requestContext(request)))

  fastify.post('/totp/confirm', {
    config: { rateLimit: limit },
    schema: {
      tags, security, summary: 'Confirm TOTP with a code: MFA on, backup codes shown once', body: MfaCodeSchema,
      response: { 200: BackupCodesSchema, ...errors(400, 401, 403, 409, 429) }
    }
  }, async (request) => mfa.confirm(request.user.sub, request.body.code, requestContext(request)))

  fastify.post('/backup-codes', {
    config: { rateLimit: limit },
    schema: {
      tags, security, summary: 'Replace all backup codes (needs a current TOTP code)', body: MfaCodeSchema,
      response: { 200: BackupCodesSchema, ...errors(400, 401, 403, 429) }
    }
  }, async (request) => mfa.regenerateBackupCodes(request.user.sub, request.body.code, requestContext(request)))

  fastify.post('/disable', {
    config: { rateLimit: limit },
    schema: {
      tags, security, summary: 'Turn MFA off (password and a current code)', body: MfaDisableSchema,
      response: { 200: MessageSchema, ...errors(400, 401, 403, 429) }
    }
  }, async (request) => {
    await mfa.disable(request.user.sub, request.user.sid, request.body, requestContext(request))
    return { message: 'Multi-factor authentication disabled' }
  })
}

export default mfaRoutes
