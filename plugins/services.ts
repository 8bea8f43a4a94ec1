import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { createServices, type Services } from '../src/services/index.ts'
import type { Mailer } from '../src/services/mailer.ts'

declare module 'fastify' {
  interface FastifyInstance {
    services: Services
    /** The clock every service uses (injected in tests). */
    now: () => Date
  }
}

export interface ServicesPluginOptions {
  now?: () => Date
  /** Replaces the mailer chosen from SMTP_* (tests). */
  mailer?: Mailer
}

/** Adapts the domain services (src/services, which know nothing of Fastify) onto the instance. */
async function services (fastify: FastifyInstance, opts: ServicesPluginOptions) {
  const now = opts.now ?? (() => new Date())
  fastify.decorate('now', now)
  fastify.decorate('services', createServices({
    db: fastify.db,
    config: fastify.config,
    now,
    keys: fastify.keys,
    broadcast: fastify.state.broadcast,
    signAccessToken: fastify.signAccessToken,
    signServiceToken: fastify.signServiceToken,
    verifyAccessToken: fastify.verifyAccessToken,
    mfaTokens: fastify.mfaTokens,
    mailer: opts.mailer,
    telemetry: fastify.telemetry
  }))

  // Other instances' revocations drop this instance's cached session states.
  await fastify.services.store.listen()

  // Accepted reset requests are carried out before the database closes.
  fastify.addHook('onClose', async () => { await fastify.services.credentials.settled() })

  const { ADMIN_EMAIL, ADMIN_PASSWORD } = fastify.config
  if (ADMIN_EMAIL !== undefined && ADMIN_PASSWORD !== undefined) {
    fastify.addHook('onReady', async () => {
      const created = await fastify.services.credentials.bootstrapAdmin(ADMIN_EMAIL, ADMIN_PASSWORD)
      if (created) fastify.log.warn({ email: ADMIN_EMAIL }, 'bootstrap admin created: it must change its password before anything else')
    })
  }
  if (fastify.config.MAIL_STDOUT && opts.mailer === undefined) {
    fastify.log.warn('MAIL_STDOUT=true: emails, reset links included, are printed to stdout instead of being sent')
  }
}

export default fp(services, { name: 'services', fastify: '5.x', dependencies: ['db', 'jwt', 'telemetry', 'state'] })
