import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { routeRateLimit } from '../../plugins/rate-limit.ts'
import { TokenResponseSchema } from '../../src/schemas/auth.ts'
import { errors } from '../../src/schemas/common.ts'
import {
  CeremonyOptionsSchema, EmptyBodySchema, PasskeyResponseSchema, LoginVerifySchema, PasskeyListSchema, PasskeyParamsSchema, PasskeySchema, RegisterVerifySchema,
  RenamePasskeySchema
} from '../../src/schemas/passkeys.ts'
import { requestContext } from '../context.ts'
import { setRefreshCookie } from '../auth/cookies.ts'

/**
 * /api/auth/passkeys: WebAuthn registration and management for the signed-in user, and the
 * password-less login. Thin: the ceremonies are PasskeyService's.
 */
const passkeyRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { passkeys, accounts } = fastify.services
  const c = fastify.config
  const security = [{ bearerAuth: [] }]
  const tags = ['passkeys']
  // The login limits apply to a passkey login as to a password one (each route its own count).
  const loginLimit = routeRateLimit(c.RATE_LIMIT_ENABLED, c.RATE_LIMIT_LOGIN_MAX, c.RATE_LIMIT_LOGIN_WINDOW_SECONDS)
  const writeLimit = routeRateLimit(c.RATE_LIMIT_ENABLED, c.RATE_LIMIT_MFA_MAX, c.RATE_LIMIT_MFA_WINDOW_SECONDS)

  fastify.post('/register/options', {
    preParsing: fastify.authenticate,
    config: { rateLimit: writeLimit },
    schema: {
      tags, security, summary: 'Options for registering a passkey (the user\'s passkeys excluded)', body: EmptyBodySchema,
      response: { 200: CeremonyOptionsSchema, ...errors(400, 401, 403, 429) }
    }
  }, async (request) => passkeys.registrationOptions(request.user.sub))

  fastify.post('/register/verify', {
    preParsing: fastify.authenticate,
    config: { rateLimit: writeLimit },
    schema: {
      tags, security, summary: 'Register the passkey the browser created', body: RegisterVerifySchema,
      response: { 201: PasskeyResponseSchema, ...errors(400, 401, 403, 413, 415, 429) }
    }
  }, async (request, reply) => {
    const passkey = await passkeys.register(request.user.sub, request.body, requestContext(request))
    return reply.code(201).send({ passkey })
  })

  fastify.get('', {
    preParsing: fastify.authenticate,
    schema: { tags, security, summary: 'The user\'s passkeys', response: { 200: PasskeyListSchema, ...errors(401, 403) } }
  }, async (request) => ({ items: await passkeys.list(request.user.sub) }))

  fastify.patch('/:id', {
    preParsing: fastify.authenticate,
    schema: {
      tags, security, summary: 'Rename one of the user\'s passkeys', params: PasskeyParamsSchema, body: RenamePasskeySchema,
      response: { 200: PasskeySchema, ...errors(400, 401, 403, 404) }
    }
  }, async (request) => passkeys.rename(request.user.sub, request.params.id, request.body.name))

  fastify.delete('/:id', {
    preParsing: fastify.authenticate,
    schema: {
      tags, security, summary: 'Remove one of the user\'s passkeys (404 for anyone else\'s)', params: PasskeyParamsSchema,
      response: { 204: Type.Null({ description: 'Removed' }), ...errors(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    await passkeys.remove(request.user.sub, request.params.id, requestContext(request))
    return reply.code(204).send(null)
  })

  fastify.post('/login/options', {
    config: { rateLimit: loginLimit },
    schema: {
      tags, summary: 'Options for a password-less login with a discoverable passkey', body: EmptyBodySchema,
      response: { 200: CeremonyOptionsSchema, ...errors(400, 415, 429) }
    }
  }, async () => passkeys.authenticationOptions())

  fastify.post('/login/verify', {
    config: { rateLimit: loginLimit },
    schema: {
      tags, summary: 'Log in with the passkey assertion: the token response and the refresh cookie, amr ["passkey"]', body: LoginVerifySchema,
      response: { 200: TokenResponseSchema, ...errors(400, 401, 403, 413, 415, 429) }
    }
  }, async (request, reply) => {
    const result = await accounts.loginWithPasskey(request.body, requestContext(request))
    setRefreshCookie(reply, c, result.refresh, fastify.now())
    return result.body
  })
}

export default passkeyRoutes
