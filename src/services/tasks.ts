import { and, count, desc, eq, type SQL } from 'drizzle-orm'
import { tasks, type TaskRow } from '../db/schema.ts'
import type { Db } from '../db/client.ts'
import { AppError } from '../errors.ts'

export interface PublicTask {
  id: string
  title: string
  description: string | null
  completed: boolean
  createdAt: string
  updatedAt: string
}

const toPublicTask = (t: TaskRow): PublicTask => ({
  id: t.id,
  title: t.title,
  description: t.description,
  completed: t.completed,
  createdAt: t.createdAt.toISOString(),
  updatedAt: t.updatedAt.toISOString()
})

/**
 * A user's tasks: the sample protected resource. Every query is scoped by user id, so another
 * user's task id is indistinguishable from one that does not exist (404).
 */
export function createTaskService (deps: { db: Db, now: () => Date }) {
  const { db } = deps
  const owned = (userId: string, taskId: string) => and(eq(tasks.userId, userId), eq(tasks.id, taskId))

  return {
    async list (userId: string, q: { limit: number, offset: number, completed?: boolean }) {
      const where: SQL | undefined = q.completed === undefined
        ? eq(tasks.userId, userId)
        : and(eq(tasks.userId, userId), eq(tasks.completed, q.completed))
      const [rows, totals] = await Promise.all([
        db.select().from(tasks).where(where).orderBy(desc(tasks.createdAt), desc(tasks.id)).limit(q.limit).offset(q.offset),
        db.select({ n: count() }).from(tasks).where(where)
      ])
      return { items: rows.map(toPublicTask), total: totals[0]?.n ?? 0 }
    },

    async create (userId: string, input: { title: string, description?: string | null }) {
      const t = deps.now()
      const [row] = await db.insert(tasks).values({
        userId, title: input.title, description: input.description ?? null, createdAt: t, updatedAt: t
      }).returning()
      if (row === undefined) throw new Error('task insert returned no row')
      return toPublicTask(row)
    },

    async get (userId: string, taskId: string) {
      const [row] = await db.select().from(tasks).where(owned(userId, taskId))
      if (row === undefined) throw new AppError('NOT_FOUND', 'Task not found')
      return toPublicTask(row)
    },

    async update (userId: string, taskId: string, patch: { title?: string, description?: string | null, completed?: boolean }) {
      const [row] = await db.update(tasks)
        .set({ ...patch, updatedAt: deps.now() })
        .where(owned(userId, taskId))
        .returning()
      if (row === undefined) throw new AppError('NOT_FOUND', 'Task not found')
      return toPublicTask(row)
    },

    async remove (userId: string, taskId: string): Promise<void> {
      const rows = await db.delete(tasks).where(owned(userId, taskId)).returning({ id: tasks.id })
      if (rows.length === 0) throw new AppError('NOT_FOUND', 'Task not found')
    }
  }
}
export type TaskService = ReturnType<typeof createTaskService>
