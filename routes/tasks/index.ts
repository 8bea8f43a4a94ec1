import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { errors } from '../../src/schemas/common.ts'
import {
  TaskCreateSchema, TaskListQuerySchema, TaskListSchema, TaskParamsSchema, TaskPatchSchema, UserParamsSchema
} from '../../src/schemas/tasks.ts'
import { AppError } from '../../src/errors.ts'

/**
 * /api/:userId/tasks: the sample protected resource. Every route needs a valid access token
 * whose `sub` is `:userId` (403 FORBIDDEN otherwise); another user's task is a 404.
 */
const taskRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { tasks } = fastify.services
  // preParsing: after the per-IP rate limit (onRequest), before the body is parsed.
  fastify.addHook('preParsing', fastify.authenticate)
  fastify.addHook('preHandler', async (request) => {
    const { userId } = request.params as { userId: string }
    if (userId.toLowerCase() !== request.user.sub.toLowerCase()) throw new AppError('FORBIDDEN', 'You can only access your own tasks')
  })
  const security = [{ bearerAuth: [] }]
  const tags = ['tasks']

  fastify.get('', {
    schema: {
      tags, security, querystring: TaskListQuerySchema, params: UserParamsSchema,
      response: { 200: TaskListSchema, ...errors(400, 401, 403) }
    }
  }, async (request) => tasks.list(request.user.sub, request.query))

  fastify.post('', {
    schema: {
      tags, security, params: UserParamsSchema, body: TaskCreateSchema,
      response: { 201: Type.Ref('Task'), ...errors(400, 401, 403) }
    }
  }, async (request, reply) => reply.code(201).send(await tasks.create(request.user.sub, request.body)))

  fastify.get('/:taskId', {
    schema: { tags, security, params: TaskParamsSchema, response: { 200: Type.Ref('Task'), ...errors(400, 401, 403, 404) } }
  }, async (request) => tasks.get(request.user.sub, request.params.taskId))

  fastify.patch('/:taskId', {
    schema: {
      tags, security, params: TaskParamsSchema, body: TaskPatchSchema,
      response: { 200: Type.Ref('Task'), ...errors(400, 401, 403, 404) }
    }
  }, async (request) => tasks.update(request.user.sub, request.params.taskId, request.body))

  fastify.delete('/:taskId', {
    schema: { tags, security, params: TaskParamsSchema, response: { 204: Type.Null(), ...errors(400, 401, 403, 404) } }
  }, async (request, reply) => {
    await tasks.remove(request.user.sub, request.params.taskId)
    return reply.code(204).send(null)
  })
}

export default taskRoutes
