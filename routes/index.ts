import type { FastifyInstance } from 'fastify'
import adminRoutes from './admin/index.ts'
import authRoutes from './auth/index.ts'
import healthRoutes from './health/index.ts'
import keyRoutes from './keys/index.ts'
import metricsRoutes from './metrics/index.ts'
import mfaRoutes from './mfa/index.ts'
import oauthRoutes from './oauth/index.ts'
import passkeyRoutes from './passkeys/index.ts'
import passwordRoutes from './password/index.ts'
import taskRoutes from './tasks/index.ts'

/** Every route group, registered explicitly with its prefix. */
export default async function routes (fastify: FastifyInstance) {
  await fastify.register(healthRoutes)
  await fastify.register(metricsRoutes)
  await fastify.register(keyRoutes)
  await fastify.register(authRoutes, { prefix: '/api/auth' })
  await fastify.register(passwordRoutes, { prefix: '/api/auth/password' })
  await fastify.register(mfaRoutes, { prefix: '/api/auth/mfa' })
  await fastify.register(passkeyRoutes, { prefix: '/api/auth/passkeys' })
  await fastify.register(taskRoutes, { prefix: '/api/:userId/tasks' })
  await fastify.register(adminRoutes, { prefix: '/api/admin' })
  await fastify.register(oauthRoutes)
}
