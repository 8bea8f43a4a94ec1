import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { AppError } from '../../src/errors.ts'
import { errors } from '../../src/schemas/common.ts'

const JwkSchema = Type.Object({
  kty: Type.Union([Type.Literal('OKP'), Type.Literal('EC')]),
  crv: Type.Union([Type.Literal('Ed25519'), Type.Literal('P-256')]),
  x: Type.String(),
  y: Type.Optional(Type.String()),
  kid: Type.String({ description: 'RFC 7638 thumbprint of the key' }),
  alg: Type.Union([Type.Literal('EdDSA'), Type.Literal('ES256')]),
  use: Type.Literal('sig')
})

/**
 * GET /.well-known/jwks.json: the public keys that verify access tokens (the signing key's and
 * every JWT_PUBLIC_KEYS key), for resource services that verify tokens on their own. 404 when
 * tokens are signed with HS256 (there is nothing public to publish). Static and cheap: neither
 * rate limited nor logged at info; caches may keep it 5 minutes.
 */
const keyRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const jwks = fastify.keys.jwks()
  fastify.get('/.well-known/jwks.json', {
    logLevel: 'warn',
    config: { rateLimit: false },
    schema: {
      tags: ['keys'],
      summary: 'Public keys that verify access tokens (JWKS, RFC 7517)',
      response: { 200: Type.Object({ keys: Type.Array(JwkSchema) }), ...errors(404) }
    }
  }, async (_request, reply) => {
    if (jwks === undefined) throw new AppError('NOT_FOUND', 'No public keys: access tokens are signed with HS256 (set JWT_PRIVATE_KEY)')
    return reply.header('cache-control', 'public, max-age=300').send(jwks)
  })
}

export default keyRoutes
