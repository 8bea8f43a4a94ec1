/**
 * REDIS_URL: the rate limits shared by every instance, and what happens when Redis goes away and
 * comes back, with a real redis-server stopped and restarted during the test.
 */
import { Redis } from 'ioredis'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { localBroadcast } from '../../src/services/state-store.ts'
import {
  assertError, buildTestApp, haveRedis, logCapture, login, PASSWORD, signup, startRedis, type Test, testDb, uniqueEmail, within
} from '../helper.ts'

if (!haveRedis()) {
  t.plan(0, 'skipped: redis-server is not installed (apt-get install redis-server to run the Redis tests)')
} else {
  const loggerOptions = (stream: NodeJS.WritableStream) => ({ level: 'info', stream })

  /** An instance on the file's database, counting on `redisUrl`; resolves once Redis answers it. */
  async function instance (test: Test, redisUrl: string, env: Record<string, string> = {}, logs = logCapture()) {
    const db = await testDb()
    // Its own in-process bus: only Redis connects these instances.
    const app = await buildTestApp(test, { db: { ...db, broadcast: localBroadcast() }, env: { REDIS_URL: redisUrl, ...env }, logger: loggerOptions(logs.stream) })
    test.ok(await within(3000, async () => app.state.available()), 'connected to Redis')
    return { app, logs }
  }

  const ready = (app: App) => app.inject({ url: '/health/ready' })
  const metric = async (app: App, name: string) => {
    const text = (await app.inject({ url: '/metrics' })).body
    return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN)
  }
  const outageLines = (logs: { lines: string[] }) => logs.lines.filter((l) => l.includes('Redis is unavailable')).length

  t.test('two instances on one Redis share the per-IP login limit; without Redis each counts its own', async (t) => {
    const redis = await startRedis(t)
    const env = { RATE_LIMIT_LOGIN_MAX: '5' }
    const { app: a } = await instance(t, redis.url, env)
    const { app: b } = await instance(t, redis.url, env)
    const email = uniqueEmail()
    await signup(a, email, PASSWORD, '10.9.0.1')

    const statuses: number[] = []
    for (const app of [a, b, a, b, a, b]) statuses.push((await login(app, email, PASSWORD, '198.51.100.77')).statusCode)
    t.same(statuses, [200, 200, 200, 200, 200, 429], 'five logins in the window across both instances, the sixth refused wherever it lands')

    // The control: two instances without Redis count separately, five each.
    const c = await buildTestApp(t, { env })
    const d = await buildTestApp(t, { env, db: c.dbHandle })
    await signup(c, email, PASSWORD, '10.9.0.1')
    const alone: number[] = []
    for (const app of [c, d, c, d, c, d]) alone.push((await login(app, email, PASSWORD, '198.51.100.78')).statusCode)
    t.same(alone, [200, 200, 200, 200, 200, 200], 'in process, each instance has its own five')
  })

  t.test('Redis down: the service keeps serving, limits count per instance, one error per outage, readiness stays 200 with redis down; back when Redis is', async (t) => {
    const redis = await startRedis(t)
    const logs = logCapture()
    const { app } = await instance(t, redis.url, { RATE_LIMIT_LOGIN_MAX: '3' }, logs)
    t.same((await ready(app)).json(), { status: 'ok', checks: { db: 'ok', redis: 'ok' } }, 'ready, Redis ok')
    t.equal(await metric(app, 'gatehouse_redis_up'), 1)
    const email = uniqueEmail()
    await signup(app, email, PASSWORD, '10.9.1.1')

    await redis.stop()
    t.ok(await within(3000, async () => !app.state.available()), 'the instance notices the outage')
    const during: number[] = []
    for (let i = 0; i < 5; i++) during.push((await login(app, email, PASSWORD, '198.51.100.90')).statusCode)
    t.same(during, [200, 200, 200, 429, 429], 'logins keep working, and the limit still holds, counted in this instance')
    const s = await signup(app, uniqueEmail(), PASSWORD, '10.9.1.2')
    t.equal((await app.inject({ url: '/api/auth/me', headers: { authorization: `Bearer ${s.accessToken}` } })).statusCode, 200, 'signup and authenticated requests work')
    const r = await ready(app)
    t.equal(r.statusCode, 200, 'still ready: the database is the only hard dependency')
    t.same(r.json(), { status: 'ok', checks: { db: 'ok', redis: 'down' } })
    t.equal(outageLines(logs), 1, 'one error line for the outage, not one per request')
    t.equal(await metric(app, 'gatehouse_redis_outages_total'), 1, 'counted once')
    t.equal(await metric(app, 'gatehouse_redis_up'), 0)

    await redis.start()
    t.ok(await within(5000, async () => app.state.available()), 'reconnects on its own')
    t.same((await ready(app)).json(), { status: 'ok', checks: { db: 'ok', redis: 'ok' } }, 'ready reports Redis ok again')
    t.ok(logs.lines.some((l) => l.includes('Redis is available again')), 'the recovery is logged')
    // Shared counting again: the fresh Redis has no counters, so this address starts over.
    assertError(t, await login(app, email, 'Wrong-Passw0rd-1', '198.51.100.91'), 401, 'AUTH_INVALID_CREDENTIALS')

    await redis.stop()
    t.ok(await within(3000, async () => !app.state.available()))
    t.equal((await login(app, email, PASSWORD, '198.51.100.92')).statusCode, 200)
    t.equal(outageLines(logs), 2, 'a second outage is a second line')
    t.equal(await metric(app, 'gatehouse_redis_outages_total'), 2)
  })

  t.test('an instance that starts while Redis is down serves, reports redis down, and connects when Redis comes up', async (t) => {
    const redis = await startRedis(t)
    await redis.stop()
    const logs = logCapture()
    const db = await testDb()
    const app = await buildTestApp(t, { db: { ...db, broadcast: localBroadcast() }, env: { REDIS_URL: redis.url }, logger: loggerOptions(logs.stream) })
    const r = await ready(app)
    t.equal(r.statusCode, 200)
    t.same(r.json(), { status: 'ok', checks: { db: 'ok', redis: 'down' } })
    t.equal((await signup(app, uniqueEmail(), PASSWORD, '10.9.2.1')).res.statusCode, 201, 'serves without Redis')
    t.ok(await within(2000, async () => outageLines(logs) === 1), 'one error line')
    await redis.start()
    t.ok(await within(5000, async () => app.state.available()), 'connects once Redis is up')
    t.same((await ready(app)).json(), { status: 'ok', checks: { db: 'ok', redis: 'ok' } })
  })

  t.test('a Redis that hangs does not hang requests: they answer at once, counted in process, until it answers again', async (t) => {
    const redis = await startRedis(t)
    const logs = logCapture()
    const { app } = await instance(t, redis.url, { RATE_LIMIT_LOGIN_MAX: '3' }, logs)
    const email = uniqueEmail()
    await signup(app, email, PASSWORD, '10.9.3.1')
    redis.pause()
    const started = performance.now()
    const first = await app.inject({ url: '/api/auth/me' })
    t.equal(first.statusCode, 401, 'answered')
    t.ok(performance.now() - started < 2000, `within the command timeout, not the TCP timeout (${Math.round(performance.now() - started)} ms)`)
    t.notOk(app.state.available(), 'the hang is an outage')
    const during: number[] = []
    for (let i = 0; i < 4; i++) during.push((await login(app, email, PASSWORD, '198.51.100.93')).statusCode)
    t.same(during, [200, 200, 200, 429], 'the limit still holds, in process')
    t.same((await ready(app)).json(), { status: 'ok', checks: { db: 'ok', redis: 'down' } })
    redis.resume()
    t.ok(await within(5000, async () => app.state.available()), 'back once Redis answers (probed: the connection never closed)')
    t.equal(outageLines(logs), 1)
  })

  t.test('one error reply (out of memory) is an outage that ends by itself when Redis answers again', async (t) => {
    const redis = await startRedis(t)
    const { app } = await instance(t, redis.url)
    const admin = new Redis(redis.url)
    t.teardown(() => admin.disconnect())
    await admin.config('SET', 'maxmemory-policy', 'noeviction')
    await admin.config('SET', 'maxmemory', '1')
    t.equal((await app.inject({ url: '/api/auth/me' })).statusCode, 401, 'the request is answered, counted in process')
    t.notOk(app.state.available(), 'the error reply made it an outage')
    await admin.config('SET', 'maxmemory', '0')
    t.ok(await within(5000, async () => app.state.available()), 'the probe finds Redis answering again, on the same connection')
    t.same((await ready(app)).json(), { status: 'ok', checks: { db: 'ok', redis: 'ok' } })
  })
}
