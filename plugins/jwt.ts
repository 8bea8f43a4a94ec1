import { randomUUID } from 'node:crypto'
import fastifyJwt from '@fastify/jwt'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { AccessClaims } from '../src/services/accounts.ts'

/** What a verified access token holds (../shared/API.md "Tokens"). */
export interface AccessTokenPayload extends AccessClaims {
  jti: string
  iss: string
  aud: string
  iat: number
  exp: number
}

declare module '@fastify/jwt' {
  interface FastifyJWT {
    payload: AccessClaims & { jti: string }
    user: AccessTokenPayload
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    signAccessToken: (claims: AccessClaims) => string
  }
}

/** JWT header `typ` of access tokens (RFC 9068), so no other JWT of ours passes as one. */
export const ACCESS_TOKEN_TYP = 'at+jwt'

/**
 * Access tokens: HS256 with JWT_SECRET; the algorithm, issuer, audience and token type are
 * pinned at verification, so `alg: none`, algorithm confusion and foreign tokens fail.
 * @see https://github.com/fastify/fastify-jwt
 */
async function jwt (fastify: FastifyInstance) {
  const { JWT_SECRET, JWT_ISSUER, JWT_AUDIENCE, ACCESS_TOKEN_EXPIRE_MINUTES } = fastify.config
  if (JWT_SECRET === undefined) throw new Error('JWT_SECRET must be resolved before the app is built')
  await fastify.register(fastifyJwt, {
    secret: JWT_SECRET,
    sign: {
      algorithm: 'HS256',
      iss: JWT_ISSUER,
      aud: JWT_AUDIENCE,
      expiresIn: `${ACCESS_TOKEN_EXPIRE_MINUTES}m`,
      header: { alg: 'HS256', typ: ACCESS_TOKEN_TYP }
    },
    verify: {
      algorithms: ['HS256'],
      allowedIss: JWT_ISSUER,
      allowedAud: JWT_AUDIENCE,
      checkTyp: ACCESS_TOKEN_TYP,
      requiredClaims: ['sub', 'sid', 'jti', 'iat', 'exp', 'iss', 'aud']
    }
  })
  fastify.decorate('signAccessToken', (claims: AccessClaims) => fastify.jwt.sign({ ...claims, jti: randomUUID() }))
}

export default fp(jwt, { name: 'jwt', fastify: '5.x' })
