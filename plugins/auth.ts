import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { AppError } from '../src/errors.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Guard: a valid access token of a live session (onRequest hook). */
    authenticate: (request: FastifyRequest) => Promise<void>
    /** Guard: authenticate, then role admin (current role from the database, not the token). */
    requireAdmin: (request: FastifyRequest) => Promise<void>
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

function tokenError (err: unknown): AppError {
  const code = (err as { code?: string }).code
  if (code === 'FST_JWT_NO_AUTHORIZATION_IN_HEADER') return new AppError('AUTH_REQUIRED')
  if (code === 'FST_JWT_AUTHORIZATION_TOKEN_EXPIRED') return new AppError('TOKEN_EXPIRED')
  return new AppError('TOKEN_INVALID')
}

/**
 * Route guards. They throw AppError, and the errors plugin shapes the 401/403.
 * Every request checks that the token's session is still live and its user still active
 * (cached per instance for SESSION_CHECK_TTL_SECONDS), so logout and deactivation bite at once.
 */
async function auth (fastify: FastifyInstance) {
  const { sessions } = fastify.services

  async function authenticate (request: FastifyRequest): Promise<{ role: 'user' | 'admin' }> {
    try {
      await request.jwtVerify()
    } catch (err) {
      throw tokenError(err)
    }
    const { sub, sid, amr } = request.user
    if (typeof sub !== 'string' || !UUID.test(sub) || typeof sid !== 'string' || !UUID.test(sid) || !Array.isArray(amr)) {
      throw new AppError('TOKEN_INVALID')
    }
    const state = await sessions.state(sid)
    if (!state.active) throw new AppError('SESSION_REVOKED')
    return state
  }

  fastify.decorate('authenticate', async (request: FastifyRequest) => { await authenticate(request) })
  fastify.decorate('requireAdmin', async (request: FastifyRequest) => {
    const state = await authenticate(request)
    if (state.role !== 'admin') throw new AppError('ADMIN_REQUIRED')
  })
}

export default fp(auth, { name: 'auth', fastify: '5.x', dependencies: ['jwt', 'services'] })
