import { randomUUID } from 'node:crypto'
import fastifyJwt, { type TokenOrHeader } from '@fastify/jwt'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { createSigner, createVerifier } from 'fast-jwt'
import type { AccessClaims } from '../src/services/accounts.ts'
import { createKeyRing, type KeyRing } from '../src/services/key-ring.ts'
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
    /** Every signing, verifying and internal key (src/services/key-ring.ts). */
    keys: KeyRing
    signAccessToken: (claims: AccessClaims) => string
    /** A service client's access token (OAuth client credentials): sub = client_id, scope, no sid. */
    signServiceToken: (claims: ServiceClaims) => string
    /**
     * Verifies any access token of ours (a user's or a service's) as the guard does, outside a
     * request (introspection): its claims, or a rejection.
     */
    verifyAccessToken: (token: string) => Promise<Record<string, unknown>>
    /** MFA challenge tokens (the `mfaToken` of a login that needs a second factor). */
    mfaTokens: MfaTokenCodec
  }
}

/** What a service token says besides iss, aud, iat, exp and jti (RFC 9068 §2.2). */
export interface ServiceClaims {
  sub: string
  client_id: string
  scope: string
  /** Unique; the service's prefix says which generation of the client's tokens it belongs to. */
  jti: string
}

/** JWT header `typ` of access tokens (RFC 9068), so no other JWT of ours passes as one. */
export const ACCESS_TOKEN_TYP = 'at+jwt'
/** JWT header `typ` of MFA challenge tokens. */
export const MFA_TOKEN_TYP = 'mfa+jwt'
export const MFA_TOKEN_SECONDS = 300

/**
 * Access tokens, signed with the key ring's signing key: EdDSA/ES256 with `JWT_PRIVATE_KEY` (and
 * its `kid`), or HS256 with JWT_SECRET. The verifying key is chosen by the token header's `kid`
 * and `alg` (fastify-jwt's `secret` as a function of the header), and the algorithms, issuer,
 * audience and token type are pinned, so `alg: none`, algorithm confusion, unknown keys and
 * foreign tokens fail.
 * @see https://github.com/fastify/fastify-jwt
 */
async function jwt (fastify: FastifyInstance) {
  const { JWT_SECRET, JWT_ISSUER, JWT_AUDIENCE, ACCESS_TOKEN_EXPIRE_MINUTES, JWT_PRIVATE_KEY, JWT_PUBLIC_KEYS } = fastify.config
  if (JWT_SECRET === undefined) throw new Error('JWT_SECRET must be resolved before the app is built')
  const keys = createKeyRing({ secret: JWT_SECRET, privateKeyPem: JWT_PRIVATE_KEY, publicKeysPem: JWT_PUBLIC_KEYS })
  fastify.decorate('keys', keys)
  const { signing } = keys
  // One signing setup and one set of pins for every access token, user's or service's.
  const signOptions = {
    algorithm: signing.alg,
    iss: JWT_ISSUER,
    aud: JWT_AUDIENCE,
    ...(signing.kid === undefined ? {} : { kid: signing.kid }),
    header: { alg: signing.alg, typ: ACCESS_TOKEN_TYP }
  }
  const pins = { algorithms: keys.algorithms, allowedIss: JWT_ISSUER, allowedAud: JWT_AUDIENCE, checkTyp: ACCESS_TOKEN_TYP }
  await fastify.register(fastifyJwt, {
    secret: {
      private: signing.key,
      public: async (_request: FastifyRequest, token: TokenOrHeader) => keys.verificationKey('header' in token ? token.header : token)
    },
    // The key callback needs the header (kid, alg): decode the whole token, not only its claims.
    decode: { complete: true },
    sign: { ...signOptions, expiresIn: `${ACCESS_TOKEN_EXPIRE_MINUTES}m` },
    verify: { ...pins, requiredClaims: ['sub', 'sid', 'jti', 'iat', 'exp', 'iss', 'aud'] }
  })
  fastify.decorate('signAccessToken', (claims: AccessClaims) => fastify.jwt.sign({ ...claims, jti: randomUUID() }))
  const signService = createSigner({ ...signOptions, key: signing.key, expiresIn: fastify.config.CLIENT_TOKEN_EXPIRE_MINUTES * 60_000 })
  fastify.decorate('signServiceToken', (claims: ServiceClaims) => signService(claims))
  const verifyAny = createVerifier({
    ...pins,
    key: async (decoded: { header: { alg?: unknown, kid?: unknown } }) => keys.verificationKey(decoded.header),
    requiredClaims: ['sub', 'jti', 'iat', 'exp', 'iss', 'aud']
  })
  fastify.decorate('verifyAccessToken', async (token: string) => await verifyAny(token) as Record<string, unknown>)

  // MFA challenge tokens are signed with an internal key of their own (derived from JWT_SECRET,
  // never the signing key) and carry another `typ`: an access token can never pass as one, nor
  // one as an access token.
  const mfaKey = keys.internalKey('mfa challenge token v1')
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
