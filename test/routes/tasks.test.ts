/**
 * The tasks API, /api/:userId/tasks (docs/API.md, "Tasks" and "Errors"),
 * exercised only through app.inject, with the database checked after each write (or refused write).
 */
import { randomUUID } from 'node:crypto'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { tasks } from '../../src/db/schema.ts'
import { assertError, bearer, buildTestApp, revokeSessionsOf, setUser, signup, testClock, type Test } from '../helper.ts'
import type { PublicTask } from '../../src/services/tasks.ts'

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE'

type Task = PublicTask

interface TaskList { items: Task[], total: number }

type User = Awaited<ReturnType<typeof signup>>

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/
const TASK_KEYS = ['completed', 'createdAt', 'description', 'id', 'title', 'updatedAt']

const listUrl = (userId: string, query = '') => `/api/${userId}/tasks${query === '' ? '' : `?${query}`}`
const taskUrl = (userId: string, taskId: string) => `/api/${userId}/tasks/${taskId}`

/** A fresh app (tables truncated) and one signed-up user. */
async function setup (test: Test, opts: { now?: () => Date } = {}) {
  const app = await buildTestApp(test, opts)
  const user = await signup(app)
  return { app, user }
}

function call (app: App, user: User | null, method: Method, url: string, payload?: unknown) {
  return app.inject({
    method,
    url,
    headers: user === null ? {} : bearer(user.accessToken),
    ...(payload === undefined ? {} : { payload: payload as Record<string, unknown> })
  })
}

/** Creates a task through the API and checks the 201. */
async function createTask (test: Test, app: App, user: User, payload: Record<string, unknown>): Promise<Task> {
  const res = await call(app, user, 'POST', listUrl(user.user.id), payload)
  test.equal(res.statusCode, 201, `create ${JSON.stringify(payload).slice(0, 60)}: ${res.body.slice(0, 200)}`)
  return res.json() as Task
}

/** Every task row, as plain JSON (dates as ISO strings), in a stable order. */
async function dbTasks (app: App) {
  const rows = await app.db.select().from(tasks).orderBy(tasks.id)
  return rows.map((r) => ({ ...r, createdAt: r.createdAt.toISOString(), updatedAt: r.updatedAt.toISOString() }))
}

async function dbTask (app: App, id: string) {
  const rows = (await dbTasks(app)).filter((r) => r.id === id)
  return rows[0]
}

/** The API view of a row, for comparing responses with the database. */
function rowAsTask (row: Awaited<ReturnType<typeof dbTasks>>[number]): Task {
  const { userId: _userId, ...rest } = row
  return rest
}

/** Checks a task body's exact shape and formats. */
function assertTaskShape (test: Test, task: Task) {
  test.same(Object.keys(task).sort(), TASK_KEYS, 'task has exactly the contract fields')
  test.match(task.id, UUID, 'id is a uuid')
  test.type(task.title, 'string')
  test.ok(task.description === null || typeof task.description === 'string', 'description is string or null')
  test.type(task.completed, 'boolean')
  test.match(task.createdAt, ISO_UTC, 'createdAt is ISO-8601 UTC')
  test.match(task.updatedAt, ISO_UTC, 'updatedAt is ISO-8601 UTC')
}

/** 400 VALIDATION_ERROR in the contract shape, whose message names `field` when given. */
function assertValidation (test: Test, res: Awaited<ReturnType<typeof call>>, field?: string) {
  assertError(test, res, 400, 'VALIDATION_ERROR')
  if (field !== undefined) {
    test.match((res.json() as { message: string }).message, field, `message names "${field}"`)
  }
}

// ---------------------------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------------------------

t.test('POST /api/:userId/tasks', async (t) => {
  t.test('201 with the new task, stored for the caller', async (t) => {
    const clock = testClock()
    const { app, user } = await setup(t, { now: clock.now })

    const res = await call(app, user, 'POST', listUrl(user.user.id), { title: 'Buy milk', description: 'Semi-skimmed, 2 litres' })
    t.equal(res.statusCode, 201, res.body)
    t.match(res.headers['content-type'], /^application\/json/)
    const task = res.json() as Task
    assertTaskShape(t, task)
    t.equal(task.title, 'Buy milk')
    t.equal(task.description, 'Semi-skimmed, 2 litres')
    t.equal(task.completed, false, 'a new task is not completed')
    t.equal(task.createdAt, clock.now().toISOString(), 'createdAt comes from the clock')
    t.equal(task.updatedAt, task.createdAt, 'updatedAt equals createdAt on creation')

    const rows = await dbTasks(app)
    t.equal(rows.length, 1, 'one row written')
    t.same(rows[0], { ...task, userId: user.user.id }, 'the row matches the response and belongs to the caller')
  })

  t.test('description is optional, and may be null or empty', async (t) => {
    const { app, user } = await setup(t)

    const omitted = await createTask(t, app, user, { title: 'no description' })
    assertTaskShape(t, omitted)
    t.equal(omitted.description, null, 'omitted description is returned as null')
    t.equal((await dbTask(app, omitted.id))?.description, null, 'omitted description is stored as NULL')

    const nulled = await createTask(t, app, user, { title: 'null description', description: null })
    t.equal(nulled.description, null, 'null description is returned as null')
    t.equal((await dbTask(app, nulled.id))?.description, null, 'null description is stored as NULL')

    const empty = await createTask(t, app, user, { title: 'empty description', description: '' })
    t.equal(empty.description, '', 'empty description is kept as an empty string')
    t.equal((await dbTask(app, empty.id))?.description, '')

    t.equal((await dbTasks(app)).length, 3)
  })

  t.test('accepts the boundary lengths: title 1 and 200, description 2000', async (t) => {
    const { app, user } = await setup(t)
    const shortest = await createTask(t, app, user, { title: 'x' })
    t.equal(shortest.title, 'x')
    const longest = await createTask(t, app, user, { title: 't'.repeat(200), description: 'd'.repeat(2000) })
    t.equal(longest.title.length, 200)
    t.equal(longest.description?.length, 2000)
    const row = await dbTask(app, longest.id)
    t.equal(row?.title, 't'.repeat(200), 'the 200-char title is stored whole')
    t.equal(row?.description, 'd'.repeat(2000), 'the 2000-char description is stored whole')
  })

  t.test('unicode is stored and returned exactly (no normalisation, no trimming)', async (t) => {
    const { app, user } = await setup(t)
    const samples: Record<string, string> = {
      emoji: 'Ship it 🚀🎉',
      'emoji ZWJ sequence and flag': '👩‍💻 pair with 👨‍👩‍👧‍👦 in 🇳🇿',
      'RTL Arabic': 'مرحبا بالعالم',
      'RTL Hebrew with marks': '\u200Fשלום עולם\u200E (done)',
      'combining characters (decomposed e + acute)': 'Cafe\u0301 re\u0301sume\u0301',
      'Zalgo stack of combining marks': 'Z\u0351\u036b\u0343a\u0352l\u0310g\u0300o',
      'astral plane letters': '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠜎',
      CJK: '買い物リスト 任务',
      'surrounding spaces': '  padded  '
    }
    for (const [name, title] of Object.entries(samples)) {
      const description = `desc: ${title}`
      const created = await createTask(t, app, user, { title, description })
      t.equal(created.title, title, `${name}: POST returns the title exactly`)
      t.equal(created.description, description, `${name}: POST returns the description exactly`)

      const got = await call(app, user, 'GET', taskUrl(user.user.id, created.id))
      t.equal(got.statusCode, 200)
      t.equal((got.json() as Task).title, title, `${name}: GET returns the title exactly`)

      const row = await dbTask(app, created.id)
      t.equal(row?.title, title, `${name}: stored exactly`)
      t.equal(row?.description, description, `${name}: description stored exactly`)
    }
    t.not(samples['combining characters (decomposed e + acute)'], 'Café résumé', 'sanity: the sample is not NFC')

    // 200 astral characters are 200 characters (400 UTF-16 code units): within the limit.
    const emojiTitle = '😀'.repeat(200)
    const emoji = await createTask(t, app, user, { title: emojiTitle })
    t.equal(emoji.title, emojiTitle, '200 emoji are accepted and returned whole')
  })
})

// ---------------------------------------------------------------------------------------------
// Get
// ---------------------------------------------------------------------------------------------

t.test('GET /api/:userId/tasks/:taskId', async (t) => {
  t.test('200 with the task as created', async (t) => {
    const { app, user } = await setup(t)
    const created = await createTask(t, app, user, { title: 'Read', description: 'a book' })
    const res = await call(app, user, 'GET', taskUrl(user.user.id, created.id))
    t.equal(res.statusCode, 200, res.body)
    const task = res.json() as Task
    assertTaskShape(t, task)
    t.same(task, created, 'GET returns what POST returned')
    const row = await dbTask(app, created.id)
    t.ok(row, 'row exists')
    if (row !== undefined) t.same(task, rowAsTask(row), 'GET matches the database row')
  })

  t.test('404 NOT_FOUND for a well-formed id that does not exist', async (t) => {
    const { app, user } = await setup(t)
    await createTask(t, app, user, { title: 'mine' })
    const res = await call(app, user, 'GET', taskUrl(user.user.id, randomUUID()))
    assertError(t, res, 404, 'NOT_FOUND')
  })
})

// ---------------------------------------------------------------------------------------------
// Patch
// ---------------------------------------------------------------------------------------------

t.test('PATCH /api/:userId/tasks/:taskId', async (t) => {
  t.test('each field can be changed alone; the others stay; updatedAt follows the clock', async (t) => {
    const clock = testClock()
    const { app, user } = await setup(t, { now: clock.now })
    const created = await createTask(t, app, user, { title: 'Original', description: 'first' })
    const url = taskUrl(user.user.id, created.id)
    let expected: Task = created

    const steps: Array<[string, Partial<Task>]> = [
      ['title', { title: 'Renamed' }],
      ['description to a new string', { description: 'second' }],
      ['description to null', { description: null }],
      ['description back from null', { description: 'third' }],
      ['completed to true', { completed: true }],
      ['completed back to false', { completed: false }]
    ]
    for (const [name, patch] of steps) {
      clock.advance(60_000)
      const res = await call(app, user, 'PATCH', url, patch)
      t.equal(res.statusCode, 200, `${name}: ${res.body}`)
      const task = res.json() as Task
      assertTaskShape(t, task)
      expected = { ...expected, ...patch, updatedAt: clock.now().toISOString() }
      t.same(task, expected, `${name}: only that field and updatedAt changed`)
      t.equal(task.createdAt, created.createdAt, `${name}: createdAt is unchanged`)
      t.not(task.updatedAt, created.updatedAt, `${name}: updatedAt moved`)

      const row = await dbTask(app, created.id)
      t.same(row, { ...expected, userId: user.user.id }, `${name}: the database agrees`)
      const got = await call(app, user, 'GET', url)
      t.same(got.json(), expected, `${name}: GET shows the change`)
    }
  })

  t.test('several fields at once', async (t) => {
    const clock = testClock()
    const { app, user } = await setup(t, { now: clock.now })
    const created = await createTask(t, app, user, { title: 'a' })
    clock.advance(5_000)
    const res = await call(app, user, 'PATCH', taskUrl(user.user.id, created.id), { title: 'b', description: 'c', completed: true })
    t.equal(res.statusCode, 200, res.body)
    const expected = { ...created, title: 'b', description: 'c', completed: true, updatedAt: clock.now().toISOString() }
    t.same(res.json(), expected)
    t.same(await dbTask(app, created.id), { ...expected, userId: user.user.id })
  })

  t.test('404 NOT_FOUND for a well-formed id that does not exist, and nothing written', async (t) => {
    const { app, user } = await setup(t)
    await createTask(t, app, user, { title: 'mine' })
    const before = await dbTasks(app)
    const res = await call(app, user, 'PATCH', taskUrl(user.user.id, randomUUID()), { title: 'x' })
    assertError(t, res, 404, 'NOT_FOUND')
    t.same(await dbTasks(app), before)
  })
})

// ---------------------------------------------------------------------------------------------
// Delete
// ---------------------------------------------------------------------------------------------

t.test('DELETE /api/:userId/tasks/:taskId', async (t) => {
  t.test('204 with no body; the row is gone; then every verb on it is 404', async (t) => {
    const { app, user } = await setup(t)
    const doomed = await createTask(t, app, user, { title: 'doomed' })
    const kept = await createTask(t, app, user, { title: 'kept' })
    const url = taskUrl(user.user.id, doomed.id)

    const res = await call(app, user, 'DELETE', url)
    t.equal(res.statusCode, 204, res.body)
    t.equal(res.body, '', '204 has an empty body')

    const rows = await dbTasks(app)
    t.same(rows.map((r) => r.id), [kept.id], 'only the deleted row is gone')

    assertError(t, await call(app, user, 'GET', url), 404, 'NOT_FOUND')
    assertError(t, await call(app, user, 'PATCH', url, { title: 'zombie' }), 404, 'NOT_FOUND')
    assertError(t, await call(app, user, 'DELETE', url), 404, 'NOT_FOUND')
    t.same(await dbTasks(app), rows, 'the 404s wrote nothing')
  })
})

// ---------------------------------------------------------------------------------------------
// List
// ---------------------------------------------------------------------------------------------

t.test('GET /api/:userId/tasks', async (t) => {
  /** Creates `n` tasks one second apart; returns them oldest first. */
  async function seed (test: Test, app: App, user: User, clock: ReturnType<typeof testClock>, n: number, completed?: (i: number) => boolean) {
    const out: Task[] = []
    for (let i = 0; i < n; i++) {
      clock.advance(1_000)
      let task = await createTask(test, app, user, { title: `task ${i}` })
      if (completed?.(i) === true) {
        const res = await call(app, user, 'PATCH', taskUrl(user.user.id, task.id), { completed: true })
        task = res.json() as Task
      }
      out.push(task)
    }
    return out
  }

  async function list (test: Test, app: App, user: User, query = '') {
    const res = await call(app, user, 'GET', listUrl(user.user.id, query))
    test.equal(res.statusCode, 200, `list ?${query}: ${res.body.slice(0, 200)}`)
    const body = res.json() as TaskList
    test.same(Object.keys(body).sort(), ['items', 'total'], 'list body is {items, total}')
    return body
  }

  t.test('empty list', async (t) => {
    const { app, user } = await setup(t)
    t.same(await list(t, app, user), { items: [], total: 0 })
  })

  t.test('newest first, full task objects, only the caller\'s tasks', async (t) => {
    const clock = testClock()
    const { app, user } = await setup(t, { now: clock.now })
    const other = await signup(app)
    const mine = await seed(t, app, user, clock, 3)
    await seed(t, app, other, clock, 2)

    const body = await list(t, app, user)
    t.equal(body.total, 3, 'total counts only the caller\'s tasks')
    t.same(body.items, [...mine].reverse(), 'newest first, exactly as created')
    for (const item of body.items) assertTaskShape(t, item)
  })

  t.test('default limit is 50', async (t) => {
    const clock = testClock()
    const { app, user } = await setup(t, { now: clock.now })
    const all = await seed(t, app, user, clock, 51)
    const newestFirst = [...all].reverse()

    const page = await list(t, app, user)
    t.equal(page.items.length, 50, '50 items without a limit')
    t.equal(page.total, 51, 'total counts every task')
    t.same(page.items.map((i) => i.id), newestFirst.slice(0, 50).map((i) => i.id), 'the 50 newest')

    const rest = await list(t, app, user, 'offset=50')
    t.same(rest.items.map((i) => i.id), [all[0]?.id], 'offset=50 leaves the oldest')
    t.equal(rest.total, 51)

    const max = await list(t, app, user, 'limit=100')
    t.equal(max.items.length, 51, 'limit=100 (the maximum) is accepted')
  })

  t.test('limit and offset page through the list; total is unaffected', async (t) => {
    const clock = testClock()
    const { app, user } = await setup(t, { now: clock.now })
    const newestFirst = (await seed(t, app, user, clock, 5)).reverse().map((i) => i.id)

    const pages: string[] = []
    for (const offset of [0, 2, 4]) {
      const page = await list(t, app, user, `limit=2&offset=${offset}`)
      t.equal(page.total, 5, `total at offset ${offset}`)
      t.same(page.items.map((i) => i.id), newestFirst.slice(offset, offset + 2), `page at offset ${offset}`)
      pages.push(...page.items.map((i) => i.id))
    }
    t.same(pages, newestFirst, 'the pages together are the whole list, no gaps or repeats')

    const one = await list(t, app, user, 'limit=1')
    t.same(one.items.map((i) => i.id), newestFirst.slice(0, 1), 'limit=1 (the minimum)')

    const beyond = await list(t, app, user, 'offset=10')
    t.same(beyond, { items: [], total: 5 }, 'an offset past the end is an empty page with the total')
  })

  t.test('completed filters items and total', async (t) => {
    const clock = testClock()
    const { app, user } = await setup(t, { now: clock.now })
    const all = await seed(t, app, user, clock, 5, (i) => i % 2 === 0) // 0, 2, 4 completed
    const ids = (pred: (x: Task) => boolean) => [...all].reverse().filter(pred).map((x) => x.id)

    const done = await list(t, app, user, 'completed=true')
    t.equal(done.total, 3)
    t.same(done.items.map((i) => i.id), ids((x) => x.completed), 'completed=true: newest first')
    t.ok(done.items.every((i) => i.completed === true), 'only completed tasks')

    const open = await list(t, app, user, 'completed=false')
    t.equal(open.total, 2)
    t.same(open.items.map((i) => i.id), ids((x) => !x.completed), 'completed=false: newest first')
    t.ok(open.items.every((i) => i.completed === false), 'only open tasks')

    const paged = await list(t, app, user, 'completed=true&limit=1&offset=1')
    t.equal(paged.total, 3, 'filtered total with paging')
    t.same(paged.items.map((i) => i.id), ids((x) => x.completed).slice(1, 2), 'filter and paging combine')
  })
})

// ---------------------------------------------------------------------------------------------
// Authentication and ownership
// ---------------------------------------------------------------------------------------------

/** Every route of the API, for a user and one of their task ids. */
function routes (userId: string, taskId: string): Array<[Method, string, unknown]> {
  return [
    ['GET', listUrl(userId), undefined],
    ['POST', listUrl(userId), { title: 'intruder' }],
    ['GET', taskUrl(userId, taskId), undefined],
    ['PATCH', taskUrl(userId, taskId), { title: 'intruder', completed: true }],
    ['DELETE', taskUrl(userId, taskId), undefined]
  ]
}

t.test('authentication', async (t) => {
  t.test('401 AUTH_REQUIRED without a token, and nothing written', async (t) => {
    const { app, user } = await setup(t)
    const task = await createTask(t, app, user, { title: 'mine' })
    const before = await dbTasks(app)
    for (const [method, url, payload] of routes(user.user.id, task.id)) {
      const res = await call(app, null, method, url, payload)
      t.test(`${method} ${url}`, async (t) => { assertError(t, res, 401, 'AUTH_REQUIRED') })
    }
    t.same(await dbTasks(app), before, 'no row created, changed or deleted')
  })

  t.test('401 TOKEN_INVALID for a malformed or tampered token', async (t) => {
    const { app, user } = await setup(t)
    const [head, payload, sig] = user.accessToken.split('.')
    const tampered = `${head}.${payload}.${sig?.slice(0, -2)}xx`
    for (const token of ['not-a-jwt', tampered]) {
      const res = await app.inject({ method: 'GET', url: listUrl(user.user.id), headers: bearer(token) })
      assertError(t, res, 401, 'TOKEN_INVALID')
    }
  })

  t.test('401 SESSION_REVOKED once the session is revoked or the user deactivated', async (t) => {
    const { app, user } = await setup(t)
    const other = await signup(app)
    await revokeSessionsOf(app, user.user.id, new Date())
    assertError(t, await call(app, user, 'GET', listUrl(user.user.id)), 401, 'SESSION_REVOKED')

    await setUser(app, other.user.id, { isActive: false })
    assertError(t, await call(app, other, 'POST', listUrl(other.user.id), { title: 'x' }), 401, 'SESSION_REVOKED')
    t.same(await dbTasks(app), [], 'nothing written')
  })

  t.test('403 PASSWORD_CHANGE_REQUIRED while the user must change their password', async (t) => {
    const { app, user } = await setup(t)
    const task = await createTask(t, app, user, { title: 'mine' })
    await setUser(app, user.user.id, { passwordMustChange: true })
    const before = await dbTasks(app)
    // API.md, under the "Authenticated" table: only me, logout, logout-all and password/change stay open.
    for (const [method, url, payload] of routes(user.user.id, task.id)) {
      const res = await call(app, user, method, url, payload)
      t.test(`${method} ${url}`, async (t) => { assertError(t, res, 403, 'PASSWORD_CHANGE_REQUIRED') })
    }
    t.same(await dbTasks(app), before, 'no row created, changed or deleted')
  })
})

t.test('ownership', async (t) => {
  t.test('403 FORBIDDEN when :userId is another user\'s id, and nothing written', async (t) => {
    const { app, user: alice } = await setup(t)
    const bob = await signup(app)
    const bobsTask = await createTask(t, app, bob, { title: 'bob\'s', description: 'private' })
    const before = await dbTasks(app)

    // Alice's token against Bob's user id, including Bob's real task id: 403, never Bob's data.
    for (const [method, url, payload] of routes(bob.user.id, bobsTask.id)) {
      const res = await call(app, alice, method, url, payload)
      t.test(`${method} ${url}`, async (t) => {
        assertError(t, res, 403, 'FORBIDDEN')
        t.notMatch(res.body, 'private', 'nothing of Bob\'s task leaks')
      })
    }
    // ... and against a user id that belongs to nobody.
    for (const [method, url, payload] of routes(randomUUID(), bobsTask.id)) {
      const res = await call(app, alice, method, url, payload)
      t.test(`unknown user: ${method}`, async (t) => { assertError(t, res, 403, 'FORBIDDEN') })
    }
    t.same(await dbTasks(app), before, 'no row created, changed or deleted')
  })

  t.test('404 NOT_FOUND for another user\'s task id under your own :userId; it is unchanged', async (t) => {
    const { app, user: alice } = await setup(t)
    const bob = await signup(app)
    await createTask(t, app, alice, { title: 'alice\'s' })
    const bobsTask = await createTask(t, app, bob, { title: 'bob\'s', description: 'private' })
    const before = await dbTasks(app)
    const url = taskUrl(alice.user.id, bobsTask.id)

    const get = await call(app, alice, 'GET', url)
    assertError(t, get, 404, 'NOT_FOUND')
    t.notMatch(get.body, 'private', 'nothing of Bob\'s task leaks')
    assertError(t, await call(app, alice, 'PATCH', url, { title: 'pwned', completed: true }), 404, 'NOT_FOUND')
    assertError(t, await call(app, alice, 'DELETE', url), 404, 'NOT_FOUND')

    t.same(await dbTasks(app), before, 'Bob\'s task (and everything else) is unchanged')
    const bobSees = await call(app, bob, 'GET', taskUrl(bob.user.id, bobsTask.id))
    t.same(bobSees.json(), bobsTask, 'Bob still sees his task as it was')
  })
})

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

t.test('malformed ids in the path: 400 VALIDATION_ERROR', async (t) => {
  const { app, user } = await setup(t)
  const task = await createTask(t, app, user, { title: 'mine' })
  const before = await dbTasks(app)
  const bad = ['not-a-uuid', '123', `${task.id}0`, task.id.replace(/-/g, ''), 'zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz']

  for (const id of bad) {
    t.test(`:userId = ${id}`, async (t) => {
      for (const [method, url, payload] of routes(id, task.id)) {
        assertValidation(t, await call(app, user, method, url, payload), 'userId')
      }
    })
    t.test(`:taskId = ${id}`, async (t) => {
      for (const [method, url, payload] of routes(user.user.id, id).slice(2)) {
        assertValidation(t, await call(app, user, method, url, payload), 'taskId')
      }
    })
  }
  t.same(await dbTasks(app), before, 'nothing written')
})

/** Bodies both POST and PATCH must refuse, with the field the message names. */
const BAD_FIELDS: Array<[string, Record<string, unknown>, string]> = [
  ['title is a number', { title: 123 }, 'title'],
  ['title is null', { title: null }, 'title'],
  ['title is an array', { title: ['a'] }, 'title'],
  ['title is an object', { title: { text: 'a' } }, 'title'],
  ['title is empty', { title: '' }, 'title'],
  ['title is blank (spaces)', { title: '   ' }, 'title'],
  ['title is blank (tabs and newlines)', { title: '\t\n\r ' }, 'title'],
  ['title is blank (unicode spaces)', { title: '\u00A0\u2003\u3000' }, 'title'],
  ['title has 201 chars', { title: 'x'.repeat(201) }, 'title'],
  ['title has 201 emoji', { title: '😀'.repeat(201) }, 'title'],
  ['description has 2001 chars', { title: 'ok', description: 'd'.repeat(2001) }, 'description'],
  ['description is a number', { title: 'ok', description: 5 }, 'description'],
  ['description is a boolean', { title: 'ok', description: false }, 'description'],
  ['an unknown field', { title: 'ok', priority: 'high' }, 'priority'],
  ['userId in the body', { title: 'ok', userId: randomUUID() }, 'userId'],
  ['id in the body', { title: 'ok', id: randomUUID() }, 'id'],
  ['createdAt in the body', { title: 'ok', createdAt: '2020-01-01T00:00:00.000Z' }, 'createdAt']
]

/** NUL cannot be stored in PostgreSQL text; it is refused before it gets there. */
const NUL_BODIES: Array<[string, Record<string, unknown>]> = [
  ['title containing U+0000', { title: 'a\u0000b' }],
  ['description containing U+0000', { title: 'ok', description: 'x\u0000' }]
]

t.test('POST with bad input: 400 VALIDATION_ERROR and nothing written', async (t) => {
  const { app, user } = await setup(t)
  const url = listUrl(user.user.id)
  const cases: Array<[string, unknown, string | undefined]> = [
    ...BAD_FIELDS,
    ['missing title', { description: 'only a description' }, 'title'],
    ['empty object', {}, 'title'],
    ['completed is not a create field', { title: 'ok', completed: true }, 'completed'],
    ...NUL_BODIES.map(([name, body]): [string, unknown, undefined] => [name, body, undefined]),
    ['a JSON array', [{ title: 'ok' }], undefined]
  ]
  for (const [name, payload, field] of cases) {
    t.test(name, async (t) => {
      assertValidation(t, await call(app, user, 'POST', url, payload), field)
    })
  }

  t.test('no body at all', async (t) => {
    assertValidation(t, await app.inject({ method: 'POST', url, headers: bearer(user.accessToken) }))
  })
  t.test('invalid JSON', async (t) => {
    const res = await app.inject({
      method: 'POST', url, payload: '{"title": "unterminated', headers: { ...bearer(user.accessToken), 'content-type': 'application/json' }
    })
    assertValidation(t, res)
  })

  t.same(await dbTasks(app), [], 'no task was written')
})

t.test('PATCH with bad input: 400 VALIDATION_ERROR and the task unchanged', async (t) => {
  const { app, user } = await setup(t)
  const task = await createTask(t, app, user, { title: 'stable', description: 'as is' })
  const before = await dbTasks(app)
  const url = taskUrl(user.user.id, task.id)
  const cases: Array<[string, unknown, string | undefined]> = [
    ...BAD_FIELDS,
    ['an empty body {}', {}, undefined],
    ['completed is a string', { completed: 'yes' }, 'completed'],
    ['completed is "true" (no coercion in bodies)', { completed: 'true' }, 'completed'],
    ['completed is a number', { completed: 1 }, 'completed'],
    ['completed is null', { completed: null }, 'completed'],
    ['one good field and one bad', { title: 'fine', completed: 'yes' }, 'completed'],
    ...NUL_BODIES.map(([name, body]): [string, unknown, undefined] => [name, body, undefined])
  ]
  for (const [name, payload, field] of cases) {
    t.test(name, async (t) => {
      assertValidation(t, await call(app, user, 'PATCH', url, payload), field)
    })
  }
  t.same(await dbTasks(app), before, 'the task is unchanged')
})

t.test('list with a bad query: 400 VALIDATION_ERROR', async (t) => {
  const { app, user } = await setup(t)
  await createTask(t, app, user, { title: 'mine' })
  const cases: Array<[string, string]> = [
    ['limit=0', 'limit'],
    ['limit=101', 'limit'],
    ['limit=-1', 'limit'],
    ['limit=abc', 'limit'],
    ['limit=1.5', 'limit'],
    ['offset=-1', 'offset'],
    ['offset=abc', 'offset'],
    ['completed=maybe', 'completed'],
    ['completed=yes', 'completed']
  ]
  for (const [query, field] of cases) {
    t.test(query, async (t) => {
      assertValidation(t, await call(app, user, 'GET', listUrl(user.user.id, query)), field)
    })
  }
})
