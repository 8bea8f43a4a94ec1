import { type AddressInfo, connect } from 'node:net'
import { sql } from 'drizzle-orm'
import inject from 'light-my-request'
import t from 'tap'
import { buildTestApp, logCapture, openTestDb } from '../helper.ts'
import { loggerOptions } from '../../src/logger.ts'

t.test('liveness and readiness', async (t) => {
  const app = await buildTestApp(t)
  const live = await app.inject({ url: '/health/live' })
  t.equal(live.statusCode, 200)
  t.same(live.json(), { status: 'ok' })
  const ready = await app.inject({ url: '/health/ready' })
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ok', checks: { db: 'ok' } })
})

t.test('readiness is 503 when the database is gone; liveness stays 200', async (t) => {
  const db = await openTestDb()
  const app = await buildTestApp(t, { db })
  t.equal((await app.inject({ url: '/health/ready' })).statusCode, 200)
  await db.drop()
  const res = await app.inject({ url: '/health/ready' })
  t.equal(res.statusCode, 503)
  t.same(res.json(), { status: 'unavailable', checks: { db: 'down' } })
  t.equal((await app.inject({ url: '/health/live' })).statusCode, 200)
})

t.test('readiness is 503 while migrations are not applied', async (t) => {
  const db = await openTestDb()
  t.teardown(() => db.drop())
  const app = await buildTestApp(t, { db })
  await db.db.execute('delete from drizzle.__drizzle_migrations' as never)
  const res = await app.inject({ url: '/health/ready' })
  t.equal(res.statusCode, 503)
  t.same(res.json(), { status: 'unavailable', checks: { db: 'down' } })
})

t.test('probes that arrive together share one database check', async (t) => {
  const db = await openTestDb()
  t.teardown(() => db.drop())
  let checks = 0
  const ping = db.ping
  const app = await buildTestApp(t, { db: { ...db, ping: () => { checks++; return ping() } } })
  const res = await Promise.all(Array.from({ length: 20 }, () => app.inject({ url: '/health/ready' })))
  t.same(res.map((r) => r.statusCode), Array(20).fill(200))
  t.ok(checks >= 1 && checks < 20, `20 probes, ${checks} database check(s)`)
  const before = checks
  await app.inject({ url: '/health/ready' })
  t.equal(checks, before + 1, 'a later probe checks again: results are not cached')
})

t.test('readiness answers at once while every pooled connection is busy (PostgreSQL)', { skip: process.env.TEST_DATABASE_URL === undefined && 'the embedded database has one connection, on the main thread' }, async (t) => {
  const db = await openTestDb()
  t.teardown(() => db.drop())
  const app = await buildTestApp(t, { db, env: { HEALTH_DB_TIMEOUT_MS: '500' } })
  // Ten slow queries hold all ten connections of the request pool.
  // (drizzle's queries start when awaited: the async function awaits each at once.)
  const busy = Array.from({ length: 10 }, async () => db.db.execute(sql`select pg_sleep(1.5)`))
  await new Promise((resolve) => setTimeout(resolve, 200))
  const started = performance.now()
  const res = await app.inject({ url: '/health/ready' })
  const took = performance.now() - started
  t.equal(res.statusCode, 200, 'ready: the probe does not queue behind the pool')
  t.ok(took < 500, `answered in ${took.toFixed(0)} ms`)
  await Promise.all(busy)
})

t.test('readiness turns 503 as soon as shutdown starts', async (t) => {
  let during: { statusCode: number, json: () => unknown } | undefined
  const app = await buildTestApp(t, {
    setup: (app) => {
      // Runs after the health plugin's own preClose hook: ask the router directly, as a
      // load balancer's probe on a kept-alive connection would.
      app.addHook('preClose', async () => {
        during = await inject((req, res) => app.routing(req, res), { url: '/health/ready' })
      })
    }
  })
  t.equal((await app.inject({ url: '/health/ready' })).statusCode, 200)
  await app.close()
  t.equal(during?.statusCode, 503)
  t.same(during?.json(), { status: 'unavailable', checks: { db: 'down' } })
})

t.test('health routes are neither rate limited nor logged at info', async (t) => {
  const logs = logCapture()
  const app = await buildTestApp(t, { env: { RATE_LIMIT_MAX: '3' }, logger: loggerOptions('info', logs.stream) })
  for (let i = 0; i < 10; i++) {
    t.equal((await app.inject({ url: '/health/live' })).statusCode, 200)
    t.equal((await app.inject({ url: '/health/ready' })).statusCode, 200)
  }
  t.notMatch(logs.text(), /health/, 'no probe in the info log')
  for (let i = 0; i < 3; i++) await app.inject({ url: '/api/auth/me' })
  const limited = await app.inject({ url: '/api/auth/me' })
  t.equal(limited.statusCode, 429, 'the global limit applies elsewhere')
  t.equal(limited.json().code, 'RATE_LIMITED')
  t.ok(Number(limited.headers['retry-after']) > 0)
  t.match(logs.text(), /api\/auth\/me/, 'other requests are logged')
})

t.test('shutdown closes connections that never sent a request once in-flight requests are done', async (t) => {
  const app = await buildTestApp(t, { env: { SHUTDOWN_DRAIN_MS: '300' } })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  // A connection opened ahead of time and never used, as browsers do.
  const silent = connect(port, '127.0.0.1')
  await new Promise((resolve) => silent.once('connect', resolve))
  const closed = new Promise((resolve) => silent.once('close', resolve))
  const started = Date.now()
  await app.close()
  await closed
  const took = Date.now() - started
  t.ok(took >= 250 && took < 5000, `closed after the drain time (${took} ms)`)
})
