/**
 * A resource service that accepts Gatehouse access tokens without calling Gatehouse per request:
 * it verifies each token's signature with the public key Gatehouse publishes at
 * /.well-known/jwks.json (fetched once per key id and cached), and pins the algorithm, issuer,
 * audience and token type. Gatehouse must sign with JWT_PRIVATE_KEY (EdDSA or ES256).
 *
 *   GATEHOUSE_URL=http://127.0.0.1:3000 PORT=4000 node server.js
 *   curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:4000/api/hello
 *
 * Local verification is fast and keeps working while Gatehouse is down, but a token stays valid
 * here until it expires (ACCESS_TOKEN_EXPIRE_MINUTES, 15 by default) even after a logout: when
 * a route must see revocations at once, ask Gatehouse instead (see its README).
 */
import { createPublicKey } from 'node:crypto'
import fastifyJwt from '@fastify/jwt'
import Fastify from 'fastify'
import buildGetJwks from 'get-jwks'

const env = process.env
const gatehouse = (env.GATEHOUSE_URL ?? 'http://127.0.0.1:3000').replace(/\/+$/, '')
const issuer = env.GATEHOUSE_ISSUER ?? 'gatehouse'
const audience = env.GATEHOUSE_AUDIENCE ?? 'gatehouse'
// Pinned: only the asymmetric algorithms Gatehouse signs with, never HS256 or none.
const algorithms = (env.GATEHOUSE_ALGORITHMS ?? 'EdDSA,ES256').split(',').map((a) => a.trim())
if (algorithms.some((a) => !['EdDSA', 'ES256'].includes(a))) throw new Error('GATEHOUSE_ALGORITHMS: only EdDSA and ES256')

// Keys are cached per kid for 5 minutes (the JWKS's max-age); an unknown kid (after a key
// rotation) fetches the JWKS again, so in production keep a rate limit in front of this service.
const getJwks = buildGetJwks({ max: 100, ttl: 5 * 60 * 1000, jwksPath: '/.well-known/jwks.json', providerDiscovery: false })

const app = Fastify({ logger: { level: env.LOG_LEVEL ?? 'info' } })

await app.register(fastifyJwt, {
  decode: { complete: true },
  secret: async (_request, token) => {
    const { kid, alg } = token.header
    if (typeof kid !== 'string' || !algorithms.includes(alg)) throw new Error('token not signed by Gatehouse')
    // getJwk, not getPublicKey: its PEM conversion knows EC keys but not Ed25519 (OKP).
    const jwk = await getJwks.getJwk({ domain: gatehouse, kid, alg })
    return createPublicKey({ key: jwk, format: 'jwk' }).export({ format: 'pem', type: 'spki' })
  },
  verify: {
    algorithms,
    allowedIss: issuer,
    allowedAud: audience,
    checkTyp: 'at+jwt',
    requiredClaims: ['sub', 'sid', 'role', 'iss', 'aud', 'exp', 'iat', 'jti']
  }
})

/** Any failed verification is one 401: the reason stays in the log. */
async function authenticate (request, reply) {
  try {
    await request.jwtVerify()
  } catch (err) {
    request.log.info({ reason: err.code ?? err.message }, 'token refused')
    return reply.code(401).send({ statusCode: 401, code: 'TOKEN_INVALID', error: 'Unauthorized', message: 'Invalid access token' })
  }
}

app.get('/health', async () => ({ status: 'ok' }))

app.get('/api/hello', { onRequest: authenticate }, async (request) => ({
  message: `Hello, ${request.user.sub}`,
  userId: request.user.sub,
  role: request.user.role,
  amr: request.user.amr
}))

await app.listen({ host: env.HOST ?? '127.0.0.1', port: Number(env.PORT ?? 4000) })
