import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { createServices, type Services } from '../src/services/index.ts'

declare module 'fastify' {
  interface FastifyInstance {
    services: Services
    /** The clock every service uses (injected in tests). */
    now: () => Date
  }
}

export interface ServicesPluginOptions {
  now?: () => Date
}

/** Adapts the domain services (src/services, which know nothing of Fastify) onto the instance. */
async function services (fastify: FastifyInstance, opts: ServicesPluginOptions) {
  const now = opts.now ?? (() => new Date())
  fastify.decorate('now', now)
  fastify.decorate('services', createServices({
    db: fastify.db,
    config: fastify.config,
    now,
    signAccessToken: fastify.signAccessToken
  }))
}

export default fp(services, { name: 'services', fastify: '5.x', dependencies: ['db', 'jwt'] })
