import { hkdfSync, randomUUID } from 'node:crypto'
import fastifyJwt from '@fastify/jwt'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { createSigner, createVerifier } from 'fast-jwt'
import type { AccessClaims } from '../src/services/accounts.ts'
import type { MfaTokenCodec } from '../src/services/mfa.ts'

/** What a verified access token holds (docs/API.md, "Tokens and sessions"). */
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
    /** MFA challenge tokens (the `mfaToken` of a login that needs a second factor). */
    mfaTokens: MfaTokenCodec
  }
}

/** JWT header `typ` of access tokens (RFC 9068), so no other JWT of ours passes as one. */
export const ACCESS_TOKEN_TYP = 'at+jwt'
/** JWT header `typ` of MFA challenge tokens. */
export const MFA_TOKEN_TYP = 'mfa+jwt'
export const MFA_TOKEN_SECONDS = 300

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

  // MFA challenge tokens are signed with a key of their own (derived from JWT_SECRET) and carry
  // another `typ`: an access token can never pass as one, nor one as an access token.
  const mfaKey = Buffer.from(hkdfSync('sha256', JWT_SECRET, 'gatehouse', 'mfa challenge token v1', 32))
  const signMfa = createSigner({
    key: mfaKey, algorithm: 'HS256', iss: JWT_ISSUER, aud: JWT_AUDIENCE, expiresIn: MFA_TOKEN_SECONDS * 1000, header: { alg: 'HS256', typ: MFA_TOKEN_TYP }
  })
  const verifyMfa = createVerifier({
    key: mfaKey, algorithms: ['HS256'], allowedIss: JWT_ISSUER, allowedAud: JWT_AUDIENCE, checkTyp: MFA_TOKEN_TYP, requiredClaims: ['sub', 'jti', 'exp']
  })
  fastify.decorate('mfaTokens', {
    sign: (claims: { sub: string, jti: string }) => signMfa(claims),
    verify: (token: string) => {
      const claims = verifyMfa(token) as { sub?: unknown, jti?: unknown }
      if (typeof claims.sub !== 'string' || typeof claims.jti !== 'string') throw new Error('malformed MFA token')
      return { sub: claims.sub, jti: claims.jti }
    }
  } satisfies MfaTokenCodec)
}

export default fp(jwt, { name: 'jwt', fastify: '5.x' })
