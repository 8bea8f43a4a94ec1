/**
 * Ceiling for GET /api/auth/me: a bare Fastify route that only verifies the HS256 access token
 * with @fastify/jwt (same algorithm, issuer and audience pinned). Spawned by bench/http.ts.
 */
import fastifyJwt from '@fastify/jwt'
import Fastify from 'fastify'

const app = Fastify()
await app.register(fastifyJwt, {
  secret: process.env.JWT_SECRET,
  verify: { algorithms: ['HS256'], allowedIss: 'gatehouse', allowedAud: 'gatehouse' }
})
app.get('/verify', { onRequest: (request) => request.jwtVerify() }, async (request) => ({ sub: request.user.sub }))
await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT) })
