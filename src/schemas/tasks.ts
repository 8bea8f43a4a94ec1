import { Type } from 'typebox'
import { DateTimeSchema, UuidSchema } from './common.ts'

/** Not blank: at least one non-space character. */
const Title = Type.String({ minLength: 1, maxLength: 200, pattern: '\\S' })
const Description = Type.String({ maxLength: 2000 })

export const TaskSchema = Type.Object({
  id: UuidSchema,
  title: Type.String(),
  description: Type.Union([Type.String(), Type.Null()]),
  completed: Type.Boolean(),
  createdAt: DateTimeSchema,
  updatedAt: DateTimeSchema
}, { $id: 'Task' })

export const TaskListSchema = Type.Object({
  items: Type.Array(Type.Ref('Task')),
  total: Type.Integer()
})

export const UserParamsSchema = Type.Object({ userId: UuidSchema })
export const TaskParamsSchema = Type.Object({ userId: UuidSchema, taskId: UuidSchema })

export const TaskListQuerySchema = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 50 }),
  offset: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 0 }),
  completed: Type.Optional(Type.Boolean())
}, { additionalProperties: false })

export const TaskCreateSchema = Type.Object({
  title: Title,
  description: Type.Optional(Type.Union([Description, Type.Null()]))
}, { additionalProperties: false })

export const TaskPatchSchema = Type.Object({
  title: Type.Optional(Title),
  description: Type.Optional(Type.Union([Description, Type.Null()])),
  completed: Type.Optional(Type.Boolean())
}, { additionalProperties: false, minProperties: 1 })
