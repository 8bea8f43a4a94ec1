import type { FastifyRequest } from 'fastify'
import type { RequestContext } from '../src/services/audit.ts'
import { normaliseEmail } from '../src/services/accounts.ts'

/** The request facts services need, as plain values (services never see the request). */
export function requestContext (request: FastifyRequest): RequestContext {
  const ua = request.headers['user-agent']
  return { ip: request.ip, userAgent: typeof ua === 'string' ? ua : null }
}

/** preValidation hook: trims and lower-cases `body.email` so the schema validates what is stored. */
export async function normaliseEmailField (request: FastifyRequest): Promise<void> {
  const body = request.body as { email?: unknown } | null | undefined
  if (body !== null && typeof body === 'object' && typeof body.email === 'string') {
    body.email = normaliseEmail(body.email)
  }
}
