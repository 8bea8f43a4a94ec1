/**
 * A resource service that accepts Gatehouse access tokens without calling Gatehouse per request:
 * it verifies each token's signature with the public key Gatehouse publishes at
 * /.well-known/jwks.json (fetched once per key id and cached), and pins the algorithm, issuer,
 * audience and token type. Gatehouse must sign with JWT_PRIVATE_KEY (EdDSA or ES256).
 *
 * Two kinds of token open it: a user's (from login: `sid`, `role`, `amr`) and a service's (from
 * the client-credentials grant at /oauth/token: `client_id`, the same as `sub`, and `scope`).
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
// The keys decide what is trusted: fetch them over TLS, or from this machine.
const { protocol, hostname } = new URL(gatehouse)
if (protocol !== 'https:' && !['127.0.0.1', 'localhost', '[::1]'].includes(hostname)) {
  throw new Error('GATEHOUSE_URL must be https (plain http only on loopback): the JWKS fetched from it decides which tokens are trusted')
}
const issuer = env.GATEHOUSE_ISSUER ?? 'gatehouse'
const audience = env.GATEHOUSE_AUDIENCE ?? 'gatehouse'
// Pinned: only the asymmetric algorithms Gatehouse signs with, never HS256 or none.
const algorithms = (env.GATEHOUSE_ALGORITHMS ?? 'EdDSA,ES256').split(',').map((a) => a.trim())
if (algorithms.some((a) => !['EdDSA', 'ES256'].includes(a))) throw new Error('GATEHOUSE_ALGORITHMS: only EdDSA and ES256')

// Keys are cached per kid for 5 minutes (the JWKS's max-age). An unknown kid (a key added by a
// rotation, or a forged token) fetches the JWKS again, at most once per kid every 10 seconds.
const getJwks = buildGetJwks({ max: 100, ttl: 5 * 60 * 1000, jwksPath: '/.well-known/jwks.json', providerDiscovery: false })
const unknownKids = new Map()

/** The PEM of Gatehouse's key `kid`, or an error; never a key Gatehouse no longer publishes. */
async function publicKey (kid, alg) {
  if ((unknownKids.get(kid) ?? 0) > Date.now()) throw new Error('unknown kid')
  // get-jwks would fall back to an expired entry when the JWKS no longer lists a key, which
  // would keep a key removed by a rotation trusted: no stale entries.
  getJwks.staleCache.clear()
  let timer
  const timeout = new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error('JWKS fetch timed out')), 5000) })
  try {
    // getJwk, not getPublicKey: its PEM conversion knows EC keys but not Ed25519 (OKP).
    const jwk = await Promise.race([getJwks.getJwk({ domain: gatehouse, kid, alg }), timeout])
    return createPublicKey({ key: jwk, format: 'jwk' }).export({ format: 'pem', type: 'spki' })
  } catch (err) {
    if (unknownKids.size > 1000) unknownKids.clear()
    unknownKids.set(kid, Date.now() + 10_000)
    throw err
  } finally {
    clearTimeout(timer)
  }
}

const app = Fastify({ logger: { level: env.LOG_LEVEL ?? 'info' } })

await app.register(fastifyJwt, {
  decode: { complete: true },
  secret: async (_request, token) => {
    const { kid, alg } = token.header
    if (typeof kid !== 'string' || kid.length > 128 || !algorithms.includes(alg)) throw new Error('token not signed by Gatehouse')
    return publicKey(kid, alg)
  },
  verify: {
    algorithms,
    allowedIss: issuer,
    allowedAud: audience,
    checkTyp: 'at+jwt',
    requiredClaims: ['sub', 'iss', 'aud', 'exp', 'iat', 'jti']
  }
})

/** 'user' (a login's token), 'service' (a client-credentials token), or undefined: neither. */
function kindOf (claims) {
  if (typeof claims.sid === 'string' && typeof claims.role === 'string' && !('client_id' in claims)) return 'user'
  if (typeof claims.client_id === 'string' && claims.client_id === claims.sub && typeof claims.scope === 'string' && !('sid' in claims)) return 'service'
  return undefined
}

/** Any failed verification is one 401: the reason stays in the log. */
async function authenticate (request, reply) {
  try {
    await request.jwtVerify()
    if (kindOf(request.user) === undefined) throw new Error('neither a user nor a service token')
  } catch (err) {
    request.log.info({ reason: err.code ?? err.message }, 'token refused')
    return reply.code(401).send({ statusCode: 401, code: 'TOKEN_INVALID', error: 'Unauthorized', message: 'Invalid access token' })
  }
}

app.get('/health', async () => ({ status: 'ok' }))

// A route that needs a permission checks the token's kind and, for a service, its `scope`
// (space-separated): request.user.scope.split(' ').includes('reports:read').
app.get('/api/hello', { onRequest: authenticate }, async (request) => {
  const { sub, role, amr, client_id: clientId, scope } = request.user
  if (kindOf(request.user) === 'service') return { message: `Hello, ${sub}`, clientId, scope }
  return { message: `Hello, ${sub}`, userId: sub, role, amr }
})

await app.listen({ host: env.HOST ?? '127.0.0.1', port: Number(env.PORT ?? 4000) })
