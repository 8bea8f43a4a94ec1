import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import {
  AdminUserListQuerySchema, AdminUserListSchema, AdminUserParamsSchema, AdminUserPatchSchema, AuthEventListSchema,
  AuthEventQuerySchema, ClientCreateSchema, ClientListSchema, ClientPatchSchema, ClientSecretRotateSchema, ClientWithSecretSchema,
  RevokedCountSchema, SuspiciousQuerySchema, SuspiciousReportSchema
} from '../../src/schemas/admin.ts'
import { SessionListSchema } from '../../src/schemas/auth.ts'
import { errors } from '../../src/schemas/common.ts'
import { normaliseEmail } from '../../src/services/accounts.ts'
import { AppError } from '../../src/errors.ts'
import { requestContext } from '../context.ts'
import { Type } from 'typebox'

/**
 * /api/admin: users, their sessions, the audit log and the suspicious-patterns report. Every
 * route needs an access token of a live session whose user has role admin now (read from the
 * database, not the token): 401 without one, 403 ADMIN_REQUIRED for other users, 403
 * PASSWORD_CHANGE_REQUIRED for a bootstrapped admin that has not changed its password.
 */
const adminRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { admin } = fastify.services
  // preParsing: after the per-IP rate limit (onRequest), before the body is parsed.
  fastify.addHook('preParsing', fastify.requireAdmin)
  const security = [{ bearerAuth: [] }]
  const tags = ['admin']
  const actor = (request: { user: { sub: string } } & Parameters<typeof requestContext>[0]) =>
    ({ userId: request.user.sub, ctx: requestContext(request) })

  fastify.get('/users', {
    schema: {
      tags, security, summary: 'List users, or find them by part of the email',
      querystring: AdminUserListQuerySchema,
      response: { 200: AdminUserListSchema, ...errors(400, 401, 403, 429) }
    }
  }, async (request) => admin.listUsers({ ...request.query, q: request.query.q?.trim().toLowerCase() }))

  fastify.patch('/users/:id', {
    schema: {
      tags, security, summary: 'Activate or deactivate a user, or change its role',
      params: AdminUserParamsSchema, body: AdminUserPatchSchema,
      response: { 200: Type.Ref('User'), ...errors(400, 401, 403, 404, 413, 415, 429) }
    }
  }, async (request) => admin.updateUser(actor(request), request.params.id, request.body))

  fastify.get('/users/:id/sessions', {
    schema: {
      tags, security, summary: "A user's active sessions",
      params: AdminUserParamsSchema,
      response: { 200: SessionListSchema, ...errors(400, 401, 403, 404, 429) }
    }
  }, async (request) => ({ items: await admin.userSessions(request.params.id) }))

  fastify.delete('/users/:id/sessions', {
    schema: {
      tags, security, summary: 'Revoke every session of a user (incident response)',
      params: AdminUserParamsSchema,
      response: { 200: RevokedCountSchema, ...errors(400, 401, 403, 404, 429) }
    }
  }, async (request) => ({ revoked: await admin.revokeUserSessions(actor(request), request.params.id) }))

  fastify.get('/auth-events', {
    schema: {
      tags, security, summary: 'The audit log, newest first, filtered',
      querystring: AuthEventQuerySchema,
      response: { 200: AuthEventListSchema, ...errors(400, 401, 403, 429) }
    }
  }, async (request) => {
    const q = request.query
    if (q.beforeId !== undefined && q.before === undefined) throw new AppError('VALIDATION_ERROR', 'querystring/beforeId needs querystring/before')
    // The date-time format admits a leap second (…:60Z), which Date cannot represent.
    for (const name of ['since', 'before'] as const) {
      const value = q[name]
      if (value !== undefined && Number.isNaN(Date.parse(value))) throw new AppError('VALIDATION_ERROR', `querystring/${name} must be a time this service can represent`)
    }
    return {
      items: await admin.events({
        userId: q.userId?.toLowerCase(),
        email: q.email === undefined ? undefined : normaliseEmail(q.email),
        type: q.type,
        ip: q.ip?.toLowerCase(),
        since: q.since === undefined ? undefined : new Date(q.since),
        before: q.before === undefined ? undefined : new Date(q.before),
        beforeId: q.beforeId?.toLowerCase(),
        limit: q.limit
      })
    }
  })

  fastify.get('/security/suspicious', {
    schema: {
      tags, security, summary: 'Authentication failures aggregated by IP and by account within a window',
      querystring: SuspiciousQuerySchema,
      response: { 200: SuspiciousReportSchema, ...errors(400, 401, 403, 429) }
    }
  }, async (request) => admin.suspicious(request.query))

  // ---- service clients (OAuth 2.0 client credentials) ----------------------------------------

  const clients = fastify.services.clients
  const clientTags = ['admin', 'clients']

  fastify.post('/clients', {
    schema: {
      tags: clientTags, security, summary: 'Create a service client; its secret is shown once',
      body: ClientCreateSchema,
      response: { 201: ClientWithSecretSchema, ...errors(400, 401, 403, 413, 415, 429) }
    }
  }, async (request, reply) => {
    reply.header('cache-control', 'no-store')
    return reply.code(201).send(await clients.create(actor(request), request.body))
  })

  fastify.get('/clients', {
    schema: {
      tags: clientTags, security, summary: 'Every service client',
      response: { 200: ClientListSchema, ...errors(401, 403, 429) }
    }
  }, async () => ({ items: await clients.list() }))

  fastify.patch('/clients/:id', {
    schema: {
      tags: clientTags, security, summary: 'Rename a client, change its scopes, disable or enable it',
      params: AdminUserParamsSchema, body: ClientPatchSchema,
      response: { 200: Type.Ref('Client'), ...errors(400, 401, 403, 404, 413, 415, 429) }
    }
  }, async (request) => clients.update(actor(request), request.params.id, request.body))

  fastify.post('/clients/:id/secret', {
    // The body is optional: no body is `{}`.
    preValidation: async (request) => { if (request.body === undefined || request.body === null) request.body = {} },
    schema: {
      tags: clientTags, security, summary: 'A new secret, shown once; the previous one may keep working for a while',
      params: AdminUserParamsSchema, body: ClientSecretRotateSchema,
      response: { 200: ClientWithSecretSchema, ...errors(400, 401, 403, 404, 413, 415, 429) }
    }
  }, async (request, reply) => {
    reply.header('cache-control', 'no-store')
    return clients.rotateSecret(actor(request), request.params.id, request.body.previousValidSeconds ?? 0)
  })

  fastify.delete('/clients/:id', {
    schema: {
      tags: clientTags, security, summary: 'Delete a client; its tokens stop working',
      params: AdminUserParamsSchema,
      response: { 204: Type.Null(), ...errors(400, 401, 403, 404, 429) }
    }
  }, async (request, reply) => {
    await clients.remove(actor(request), request.params.id)
    return reply.code(204).send(null)
  })
}

export default adminRoutes
