import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { startOutboxWorker } from '../src/services/outbox.ts'

/**
 * Runs the email outbox worker while the app runs: started when the app is ready, stopped
 * (after its current round) when it closes. OUTBOX_POLL_INTERVAL_MS=0 turns it off.
 */
async function outboxWorker (fastify: FastifyInstance) {
  const interval = fastify.config.OUTBOX_POLL_INTERVAL_MS
  if (interval === 0) return
  let worker: ReturnType<typeof startOutboxWorker> | undefined
  fastify.addHook('onReady', async () => {
    worker = startOutboxWorker(fastify.services.outbox, interval, (err) => fastify.log.error({ err }, 'outbox round failed'))
  })
  fastify.addHook('onClose', async () => { await worker?.stop() })
}

export default fp(outboxWorker, { name: 'outbox', fastify: '5.x', dependencies: ['services'] })
