import cors from '@fastify/cors'
import helmet from '@fastify/helmet'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

/**
 * Security headers (helmet) and CORS. Only origins listed in CORS_ORIGINS get CORS headers,
 * and they get them with credentials, so a browser app there can send the refresh cookie.
 * @see https://github.com/fastify/fastify-helmet
 * @see https://github.com/fastify/fastify-cors
 */
async function security (fastify: FastifyInstance) {
  await fastify.register(helmet, {
    // The API answers JSON only; the Swagger UI page sets its own CSP (plugins/swagger.ts).
    contentSecurityPolicy: { directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
    crossOriginResourcePolicy: { policy: 'same-site' }
  })
  const allowed = new Set(fastify.config.CORS_ORIGINS)
  await fastify.register(cors, {
    origin: (origin, cb) => cb(null, origin !== undefined && allowed.has(origin)),
    credentials: true,
    methods: ['GET', 'POST', 'PATCH', 'DELETE'],
    allowedHeaders: ['Content-Type', 'Authorization', 'X-Request-Id'],
    exposedHeaders: ['Retry-After', 'X-Request-Id'],
    maxAge: 600
  })
}

export default fp(security, { name: 'security', fastify: '5.x' })
