import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

/**
 * OpenAPI 3 document built from the routes' TypeBox schemas, served at /docs/json with the UI at /docs.
 * @see https://github.com/fastify/fastify-swagger
 */
async function docs (fastify: FastifyInstance) {
  await fastify.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Gatehouse',
        description: 'Authentication service: accounts, sessions with rotating refresh cookies, tasks sample API.',
        version: '0.1.0'
      },
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' },
          refreshCookie: { type: 'apiKey', in: 'cookie', name: 'refresh_token' },
          clientBasic: { type: 'http', scheme: 'basic', description: 'a service client: client_id and client_secret (or both in the body)' }
        }
      }
    },
    refResolver: { buildLocalReference: (json, _base, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) }
  })
  await fastify.register(swaggerUi, {
    routePrefix: '/docs',
    staticCSP: true,
    uiConfig: { deepLinking: false }
  })
}

export default fp(docs, { name: 'swagger', fastify: '5.x' })
