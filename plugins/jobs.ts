import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { startPeriodic } from '../src/services/periodic.ts'

/**
 * The background jobs of every instance, started when the app is ready and stopped (after their
 * current round) when it closes: the email outbox worker (OUTBOX_POLL_INTERVAL_MS, 0 turns it
 * off) and retention (RETENTION_INTERVAL_MINUTES, 0 turns it off; one instance prunes at a time).
 */
async function jobs (fastify: FastifyInstance) {
  const { OUTBOX_POLL_INTERVAL_MS, RETENTION_INTERVAL_MINUTES } = fastify.config
  const { outbox, retention } = fastify.services
  const running: Array<ReturnType<typeof startPeriodic>> = []
  const failed = (what: string) => (err: unknown) => fastify.log.error({ err }, `${what} round failed`)
  fastify.addHook('onReady', async () => {
    if (OUTBOX_POLL_INTERVAL_MS > 0) running.push(startPeriodic(() => outbox.runOnce(), OUTBOX_POLL_INTERVAL_MS, failed('outbox')))
    if (RETENTION_INTERVAL_MINUTES > 0) running.push(startPeriodic(() => retention.runOnce(), RETENTION_INTERVAL_MINUTES * 60_000, failed('retention')))
  })
  fastify.addHook('onClose', async () => { await Promise.all(running.map((job) => job.stop())) })
}

export default fp(jobs, { name: 'jobs', fastify: '5.x', dependencies: ['services'] })
