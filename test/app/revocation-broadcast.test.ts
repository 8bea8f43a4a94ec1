/**
 * Issue 10, point 3: a revocation on one instance (logout, logout-all, session delete, password
 * change or reset, deactivation, role change, refresh-token reuse) is refused by every other
 * instance within 1 s, by a message carrying the session ids: Redis pub/sub with REDIS_URL,
 * otherwise the database's bus (PostgreSQL LISTEN/NOTIFY; in-process on PGlite).
 *
 * Every instance caches session state for 60 s (SESSION_CHECK_TTL_SECONDS) and the clock is real,
 * so only the message can explain a prompt refusal; a third, "deaf" instance (no transport) keeps
 * accepting from its cache after each action, the control that proves it. When the message is
 * lost (Redis down), SESSION_CHECK_TTL_SECONDS remains the bound.
 */
import type { LightMyRequestResponse } from 'fastify'
import { Redis } from 'ioredis'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { REVOCATION_CHANNEL } from '../../src/services/account-store.ts'
import { localBroadcast } from '../../src/services/state-store.ts'
import {
  assertError, bearer, buildTestApp, haveRedis, login, PASSWORD, readMail, refreshCookieIn, setUser, signup, signupAdmin,
  startRedis, type Test, testClock, testDb, tokenInMail, within
} from '../helper.ts'

/** 60 s of cache everywhere; a rotated refresh token presented again is reuse at once. */
const ENV = { SESSION_CHECK_TTL_SECONDS: '60', REFRESH_REUSE_GRACE_SECONDS: '0' }
const NEW_PASSWORD = 'Battery-Staple-42'
const SKIP_REDIS = 'skipped: redis-server is not installed (apt-get install redis-server to run the Redis transport tests)'

/** A acts, B must hear it, `deaf` hears nothing (its own in-process bus, no Redis). */
interface Cluster { a: App, b: App, deaf: App }

/** What a request with one of the victim's tokens gets: while cached, and once the message has arrived. */
interface Expect { status: number, code?: string }
interface Probe {
  what: string
  ask: (app: App) => Promise<LightMyRequestResponse>
  before: Expect
  after: Expect
}

const OK: Expect = { status: 200 }
const REVOKED: Expect = { status: 401, code: 'SESSION_REVOKED' }

/** GET /api/auth/me: 200 until the session is revoked (or 200 throughout, for a session that must survive). */
const me = (what: string, token: string, after: Expect = REVOKED): Probe => ({
  what, before: OK, after, ask: (app) => app.inject({ url: '/api/auth/me', headers: bearer(token) })
})

/** GET /api/admin/users: 200 while the user is an admin, 403 ADMIN_REQUIRED once it is not. */
const adminList = (what: string, token: string): Probe => ({
  what, before: OK, after: { status: 403, code: 'ADMIN_REQUIRED' }, ask: (app) => app.inject({ url: '/api/admin/users', headers: bearer(token) })
})

/** GET /api/auth/sessions: 403 PASSWORD_CHANGE_REQUIRED until the password is changed, then 200. */
const sessionList = (what: string, token: string): Probe => ({
  what, before: { status: 403, code: 'PASSWORD_CHANGE_REQUIRED' }, after: OK, ask: (app) => app.inject({ url: '/api/auth/sessions', headers: bearer(token) })
})

function matches (res: LightMyRequestResponse, e: Expect): boolean {
  return res.statusCode === e.status && (e.code === undefined || (res.json() as { code?: string }).code === e.code)
}

function assertExpect (t: Test, res: LightMyRequestResponse, e: Expect, msg: string) {
  t.equal(res.statusCode, e.status, msg)
  if (e.code !== undefined) t.equal((res.json() as { code?: string }).code, e.code, `${msg}: ${e.code}`)
}

/** One revoking action: sets up the victim on A (returning what to probe), then acts on A. */
interface Action {
  name: string
  setup: (a: App, t: Test) => Promise<{ probes: Probe[], act: () => Promise<void> }>
}

const refresh = (app: App, cookie: string) => app.inject({ method: 'POST', url: '/api/auth/refresh', cookies: { refresh_token: cookie } })
const sidOf = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString()).sid as string

/** The user's second session (a login), its access token. */
async function secondSession (app: App, email: string): Promise<string> {
  const res = await login(app, email)
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
  return res.json().accessToken as string
}

const ACTIONS: Action[] = [
  {
    name: 'logout with the Bearer token',
    async setup (a, t) {
      const s = await signup(a)
      return {
        probes: [me('the logged-out session', s.accessToken)],
        act: async () => { t.equal((await a.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(s.accessToken) })).statusCode, 200, 'logged out on A') }
      }
    }
  },
  {
    name: 'logout with the refresh cookie alone',
    async setup (a, t) {
      const s = await signup(a)
      const cookie = refreshCookieIn(s.res)
      t.not(cookie, '', 'signup set the refresh cookie')
      return {
        probes: [me('the logged-out session', s.accessToken)],
        act: async () => {
          t.equal((await a.inject({ method: 'POST', url: '/api/auth/logout', cookies: { refresh_token: cookie } })).statusCode, 200, 'logged out on A by cookie')
        }
      }
    }
  },
  {
    name: 'logout-all',
    async setup (a, t) {
      const s = await signup(a)
      const other = await secondSession(a, s.email)
      return {
        probes: [me('the session that logged out everywhere', s.accessToken), me('the other session of the user', other)],
        act: async () => {
          const res = await a.inject({ method: 'POST', url: '/api/auth/logout-all', headers: bearer(s.accessToken) })
          t.equal(res.statusCode, 200, 'logout-all on A')
          t.equal(res.json().revoked, 2)
        }
      }
    }
  },
  {
    name: 'DELETE /api/auth/sessions/:id',
    async setup (a, t) {
      const s = await signup(a)
      const other = await secondSession(a, s.email)
      return {
        probes: [me('the deleted session', other), me('the session that deleted it', s.accessToken, OK)],
        act: async () => {
          t.equal((await a.inject({ method: 'DELETE', url: `/api/auth/sessions/${sidOf(other)}`, headers: bearer(s.accessToken) })).statusCode, 204, 'deleted on A')
        }
      }
    }
  },
  {
    name: 'password change (the other sessions end; the changing one loses passwordMustChange)',
    async setup (a, t) {
      const s = await signup(a)
      await setUser(a, s.user.id, { passwordMustChange: true })
      const other = await secondSession(a, s.email)
      return {
        probes: [
          sessionList('the changing session, on a route closed while the password must change', s.accessToken),
          me('the changing session', s.accessToken, OK),
          me('the other session of the user', other)
        ],
        act: async () => {
          const res = await a.inject({ method: 'POST', url: '/api/auth/password/change', headers: bearer(s.accessToken), payload: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD } })
          t.equal(res.statusCode, 200, 'password changed on A')
        }
      }
    }
  },
  {
    name: 'password reset by emailed token',
    async setup (a, t) {
      const s = await signup(a)
      const other = await secondSession(a, s.email)
      t.equal((await a.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email: s.email } })).statusCode, 202)
      const token = tokenInMail((await readMail(a)).filter((m) => m.to === s.email && /reset-password\?token=/.test(m.text)).at(-1))
      t.not(token, '', 'the reset link arrived')
      return {
        probes: [me('a session of the user', s.accessToken), me('another session of the user', other)],
        act: async () => {
          t.equal((await a.inject({ method: 'POST', url: '/api/auth/password/reset', payload: { token, newPassword: NEW_PASSWORD } })).statusCode, 200, 'reset on A')
        }
      }
    }
  },
  {
    name: 'deactivation by an admin',
    async setup (a, t) {
      const admin = await signupAdmin(a)
      const s = await signup(a)
      return {
        probes: [me('the deactivated user\'s session', s.accessToken)],
        act: async () => {
          const res = await a.inject({ method: 'PATCH', url: `/api/admin/users/${s.user.id}`, headers: bearer(admin.accessToken), payload: { isActive: false } })
          t.equal(res.statusCode, 200, 'deactivated on A')
          t.equal(res.json().isActive, false)
        }
      }
    }
  },
  {
    name: 'role change admin → user',
    async setup (a, t) {
      const admin = await signupAdmin(a)
      const victim = await signupAdmin(a)
      return {
        probes: [adminList('the demoted admin\'s session', victim.accessToken)],
        act: async () => {
          const res = await a.inject({ method: 'PATCH', url: `/api/admin/users/${victim.user.id}`, headers: bearer(admin.accessToken), payload: { role: 'user' } })
          t.equal(res.statusCode, 200, 'demoted on A')
          t.equal(res.json().role, 'user')
        }
      }
    }
  },
  {
    name: 'admin DELETE /api/admin/users/:id/sessions',
    async setup (a, t) {
      const admin = await signupAdmin(a)
      const s = await signup(a)
      const other = await secondSession(a, s.email)
      return {
        probes: [me('a session of the user', s.accessToken), me('another session of the user', other), me('the admin\'s own session', admin.accessToken, OK)],
        act: async () => {
          const res = await a.inject({ method: 'DELETE', url: `/api/admin/users/${s.user.id}/sessions`, headers: bearer(admin.accessToken) })
          t.equal(res.statusCode, 200, 'revoked on A')
          t.same(res.json(), { revoked: 2 })
        }
      }
    }
  },
  {
    name: 'refresh-token reuse (every session of the user)',
    async setup (a, t) {
      const s = await signup(a)
      const other = await secondSession(a, s.email)
      const first = refreshCookieIn(s.res)
      const rotated = await refresh(a, first)
      t.equal(rotated.statusCode, 200, 'the first presentation rotates the cookie')
      return {
        probes: [me('the session whose rotated cookie was presented again', s.accessToken), me('another session of the user', other)],
        act: async () => {
          // REFRESH_REUSE_GRACE_SECONDS=0: the second presentation of the first cookie is reuse.
          assertError(t, await refresh(a, first), 401, 'REFRESH_TOKEN_REUSED')
        }
      }
    }
  }
]

/**
 * For each action, a sub-test: B and the deaf instance cache the victim's state, A acts, B
 * answers as `after` within 1 s, and the deaf instance still answers as `before` (its cache).
 */
async function everyAction (t: Test, c: Cluster) {
  for (const action of ACTIONS) {
    await t.test(action.name, async (t) => {
      const { probes, act } = await action.setup(c.a, t)
      for (const [name, app] of [['B', c.b], ['the deaf instance', c.deaf]] as const) {
        for (const p of probes) assertExpect(t, await p.ask(app), p.before, `${name} caches it: ${p.what}`)
      }

      await act()
      const took = await within(1000, async () => {
        for (const p of probes) if (!matches(await p.ask(c.b), p.after)) return false
        return true
      })
      t.ok(took, `B follows A within 1 s (${took} ms), its 60 s cache notwithstanding`)
      for (const p of probes) {
        assertExpect(t, await p.ask(c.b), p.after, `B: ${p.what}`)
        assertExpect(t, await p.ask(c.a), p.after, `A: ${p.what}`)
      }
      // The control: an instance the message cannot reach still answers from its cache.
      for (const p of probes) assertExpect(t, await p.ask(c.deaf), p.before, `the deaf instance, still cached: ${p.what}`)
    })
  }
}

/** An instance with the database but no transport: its own in-process bus and no Redis. */
async function deafInstance (t: Test, a: App): Promise<App> {
  const deaf = await buildTestApp(t, { env: ENV, db: { ...a.dbHandle, broadcast: localBroadcast() } })
  t.equal(deaf.state.kind, 'memory')
  return deaf
}

/** An instance counting on Redis at `url`, with an in-process database bus of its own: only Redis joins it to the others. */
async function redisInstance (t: Test, url: string, env: Record<string, string>, now?: () => Date): Promise<App> {
  const handle = await testDb()
  const app = await buildTestApp(t, { now, env: { ...env, REDIS_URL: url }, db: { ...handle, broadcast: localBroadcast() } })
  t.equal(app.state.kind, 'redis')
  t.ok(await within(3000, async () => app.state.available()), 'connected to Redis')
  return app
}

/** How many connections Redis counts on the revocation channel (-1 while it does not answer). */
async function listeners (url: string): Promise<number> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  r.on('error', () => {})
  try {
    await r.connect()
    return Number((await r.pubsub('NUMSUB', REVOCATION_CHANNEL))[1])
  } catch {
    return -1
  } finally {
    r.disconnect()
  }
}

t.test('transport "database": the instances share the database\'s bus', async (t) => {
  const a = await buildTestApp(t, { env: ENV })
  const b = await buildTestApp(t, { env: ENV, db: a.dbHandle })
  const deaf = await deafInstance(t, a)
  t.equal(a.state.kind, 'memory', 'no Redis')
  t.comment(a.dbHandle.kind === 'postgres' ? 'PostgreSQL LISTEN/NOTIFY' : 'PGlite: in-process bus')
  await everyAction(t, { a, b, deaf })
})

t.test('transport "redis": pub/sub, the database buses kept apart', async (t) => {
  if (!haveRedis()) return t.plan(0, SKIP_REDIS)
  const redis = await startRedis(t)
  const a = await redisInstance(t, redis.url, ENV)
  const b = await redisInstance(t, redis.url, ENV)
  const deaf = await deafInstance(t, a)
  await everyAction(t, { a, b, deaf })
})

t.test('Redis down: a lost message is bounded by SESSION_CHECK_TTL_SECONDS; Redis back, messages travel again', async (t) => {
  if (!haveRedis()) return t.plan(0, SKIP_REDIS)
  const redis = await startRedis(t)
  const clock = testClock(new Date())
  const env = { SESSION_CHECK_TTL_SECONDS: '5' }
  const a = await redisInstance(t, redis.url, env, clock.now)
  const b = await redisInstance(t, redis.url, env, clock.now)
  const meOn = (app: App, token: string) => app.inject({ url: '/api/auth/me', headers: bearer(token) })
  /** A session B has cached, logged out on A; resolves to how long B took to refuse it (0: not within 1 s). */
  async function logoutHeardByB () {
    const s = await signup(a)
    t.equal((await meOn(b, s.accessToken)).statusCode, 200, 'B caches the session')
    t.equal((await a.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(s.accessToken) })).statusCode, 200, 'logged out on A')
    assertError(t, await meOn(a, s.accessToken), 401, 'SESSION_REVOKED')
    return { s, took: await within(1000, async () => (await meOn(b, s.accessToken)).statusCode !== 200) }
  }

  // While Redis is up the message arrives: the same two instances, the same TTL, the clock standing still.
  const up = await logoutHeardByB()
  t.ok(up.took, `with Redis up, B refuses within 1 s (${up.took} ms)`)

  await redis.stop()
  t.ok(await within(3000, async () => !a.state.available() && !b.state.available()), 'both instances notice the outage')
  const down = await logoutHeardByB()
  t.equal(down.took, 0, 'no message: B still accepts the session 1 s after the logout')
  clock.advance(4_000)
  t.equal((await meOn(b, down.s.accessToken)).statusCode, 200, 'still cached 4 s later')
  clock.advance(1_001)
  assertError(t, await meOn(b, down.s.accessToken), 401, 'SESSION_REVOKED')

  await redis.start()
  t.ok(await within(5000, async () => a.state.available() && b.state.available()), 'both instances reconnect')
  t.ok(await within(3000, async () => await listeners(redis.url) === 2), 'both listen on the revocation channel again')
  const back = await logoutHeardByB()
  t.ok(back.took, `Redis back, B refuses within 1 s again (${back.took} ms)`)
})

t.test('an instance started while Redis is down hears revocations once Redis is up', async (t) => {
  if (!haveRedis()) return t.plan(0, SKIP_REDIS)
  const redis = await startRedis(t)
  const a = await redisInstance(t, redis.url, ENV)
  await redis.stop()
  t.ok(await within(3000, async () => !a.state.available()), 'A notices the outage')
  const handle = await testDb()
  const late = await buildTestApp(t, { env: { ...ENV, REDIS_URL: redis.url }, db: { ...handle, broadcast: localBroadcast() } })
  await redis.start()
  t.ok(await within(5000, async () => a.state.available() && late.state.available()), 'both connected')
  t.ok(await within(3000, async () => await listeners(redis.url) === 2), 'both listen on the revocation channel')

  const s = await signup(a)
  t.equal((await late.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) })).statusCode, 200, 'the late instance caches the session')
  t.equal((await a.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(s.accessToken) })).statusCode, 200, 'logged out on A')
  const took = await within(1000, async () => (await late.inject({ url: '/api/auth/me', headers: bearer(s.accessToken) })).statusCode === 401)
  t.ok(took, `the late instance refuses within 1 s (${took} ms), its 60 s cache notwithstanding`)
})
