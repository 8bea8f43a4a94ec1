/**
 * Two Gatehouse processes on one PostgreSQL database and one redis-server, started at the same
 * moment on a fresh, empty database, as two instances behind a load balancer run (issue 10,
 * point 6). Both are driven only over HTTP: migrations and the admin bootstrap happen once, the
 * per-IP login limit is shared, a logout on one is refused on the other within a second, a refresh
 * token rotated on one and replayed on the other is reuse, MFA set up on one is confirmed on the
 * other, and each email is delivered once with both outbox workers running.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import t from 'tap'
import { haveRedis, PASSWORD, startRedis, startService, totpCode, uniqueEmail, within } from '../helper.ts'
import { startSmtp } from '../smtp.ts'

const DATABASE_URL = process.env.TEST_DATABASE_URL

if (DATABASE_URL === undefined || DATABASE_URL === '') {
  t.plan(0, 'skipped: two processes need a shared PostgreSQL (TEST_DATABASE_URL); CI runs this file in its PostgreSQL pass')
} else if (!haveRedis()) {
  t.plan(0, 'skipped: redis-server is not installed (apt-get install redis-server to run the two-instance tests)')
} else {
  const serverUrl = DATABASE_URL
  const ADMIN_EMAIL = `root-${randomBytes(3).toString('hex')}@example.com`
  const ADMIN_PASSWORD = 'Bootstrap-Passw0rd-1'
  /** The login limit's window: short, so the tests after the limit test can log in again soon. */
  const LOGIN_WINDOW_SECONDS = 5
  const BOOTSTRAP_LINE = 'bootstrap admin created'

  interface Reply { status: number, body: Record<string, unknown>, refresh: string | undefined }

  /** One HTTP call: JSON in and out; `refresh` is the refresh cookie the response set ('' when cleared). */
  async function call (base: string, method: string, path: string, opts: { body?: object, token?: string, cookie?: string } = {}): Promise<Reply> {
    const headers: Record<string, string> = {}
    if (opts.body !== undefined) headers['content-type'] = 'application/json'
    if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`
    if (opts.cookie !== undefined) headers.cookie = `refresh_token=${opts.cookie}`
    const res = await fetch(`${base}${path}`, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) })
    const text = await res.text()
    const set = res.headers.getSetCookie().find((c) => c.startsWith('refresh_token='))
    return {
      status: res.status,
      body: text === '' ? {} : JSON.parse(text) as Record<string, unknown>,
      refresh: set === undefined ? undefined : set.slice('refresh_token='.length).split(';')[0]
    }
  }

  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

  t.test('two instances on one PostgreSQL and one Redis, started at the same moment on a fresh database', async (t) => {
    // A fresh, empty database: the instances migrate it themselves.
    const name = `gatehouse_two_${process.pid}_${randomBytes(4).toString('hex')}`
    const admin = postgres(serverUrl, { max: 1, onnotice: () => {} })
    await admin.unsafe(`create database "${name}"`)
    const target = new URL(serverUrl)
    target.pathname = `/${name}`
    const sql = postgres(target.toString(), { max: 1, onnotice: () => {} })
    t.teardown(async () => {
      await sql.end({ timeout: 5 })
      await admin.unsafe(`drop database if exists "${name}" with (force)`)
      await admin.end({ timeout: 5 })
    })
    const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-two-'))
    t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))

    const redis = await startRedis(t)
    const smtp = await startSmtp(t)

    const env = {
      NODE_ENV: 'production',
      PORT: '0',
      DATA_DIR: dataDir,
      DATABASE_URL: target.toString(),
      REDIS_URL: redis.url,
      JWT_SECRET: 'two-instances-jwt-secret-0123456789abcdef',
      MFA_ENCRYPTION_KEY: 'two-instances-mfa-key-0123456789abcdef',
      ADMIN_EMAIL,
      ADMIN_PASSWORD,
      SMTP_HOST: '127.0.0.1',
      SMTP_PORT: String(smtp.port),
      SMTP_REQUIRE_TLS: 'false',
      OUTBOX_POLL_INTERVAL_MS: '100',
      // Cached session states live 60 s: only the Redis message can explain a prompt refusal.
      SESSION_CHECK_TTL_SECONDS: '60',
      REFRESH_REUSE_GRACE_SECONDS: '0',
      RATE_LIMIT_LOGIN_MAX: '5',
      RATE_LIMIT_LOGIN_WINDOW_SECONDS: String(LOGIN_WINDOW_SECONDS),
      // Every request of this file comes from 127.0.0.1: room for the signups and reset requests.
      RATE_LIMIT_SIGNUP_MAX: '100',
      RATE_LIMIT_FORGOT_MAX: '100',
      RATE_LIMIT_MAX: '10000',
      HIBP_ENABLED: 'false',
      COOKIE_SECURE: 'false',
      ARGON2_MEMORY_COST: '8192',
      ARGON2_TIME_COST: '1'
    }
    // The same moment: both spawned before either is awaited.
    const services = [startService(env), startService(env)]
    const stdout = services.map(() => '')
    for (const [i, s] of services.entries()) {
      s.child.stdout.on('data', (d) => { stdout[i] += String(d) })
      t.teardown(async () => {
        if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGTERM')
        const timer = setTimeout(() => s.child.kill('SIGKILL'), 15_000)
        await s.exited
        clearTimeout(timer)
      })
    }
    const [A, B] = await Promise.all(services.map((s) => s.listening)) as [string, string]

    for (const base of [A, B]) {
      const ready = await within(10_000, async () => {
        const res = await call(base, 'GET', '/health/ready')
        return res.status === 200 && (res.body.checks as Record<string, unknown>).redis === 'ok'
      })
      t.ok(ready > 0, `${base} is ready, Redis ok`)
    }

    const signup = async (base: string, email = uniqueEmail()) => {
      const res = await call(base, 'POST', '/api/auth/signup', { body: { email, password: PASSWORD } })
      if (res.status !== 201) throw new Error(`signup failed: ${res.status} ${JSON.stringify(res.body)}`)
      return { email, accessToken: String(res.body.accessToken), refresh: res.refresh ?? '' }
    }
    /**
     * Every /login of this file goes through here. The limit test fills 127.0.0.1's window (opened
     * by the first login after the limit test's signup); the tests after it wait for that window
     * to pass before they log in.
     */
    let windowOpenedAt = 0
    let refusedUntil = 0
    const login = (base: string, email: string, password = PASSWORD) => {
      if (windowOpenedAt === 0) windowOpenedAt = Date.now()
      return call(base, 'POST', '/api/auth/login', { body: { email, password } })
    }
    const loginsOpen = async () => {
      const wait = refusedUntil + 500 - Date.now()
      if (wait > 0) await sleep(wait)
    }

    await t.test('migrations ran once and completely; one admin, created by one of the two', async (t) => {
      const journal = JSON.parse(readFileSync(new URL('../../drizzle/meta/_journal.json', import.meta.url), 'utf8')) as { entries: unknown[] }
      const [applied] = await sql<Array<{ n: number, hashes: number }>>`select count(*)::int as n, count(distinct hash)::int as hashes from drizzle.__drizzle_migrations`
      t.equal(applied?.n, journal.entries.length, 'one row per migration in drizzle/meta/_journal.json')
      t.equal(applied?.hashes, journal.entries.length, 'no migration recorded twice')

      const admins = await sql<Array<{ role: string, password_must_change: boolean }>>`select role, password_must_change from users where email = ${ADMIN_EMAIL}`
      t.same(admins, [{ role: 'admin', password_must_change: true }], 'exactly one user with ADMIN_EMAIL, an admin')
      const [created] = await sql<Array<{ n: number }>>`select count(*)::int as n from auth_events where event_type = 'signup' and metadata->>'bootstrapAdmin' = 'true'`
      t.equal(created?.n, 1, 'one creation recorded')
      t.same(stdout.map((out) => out.split('\n').filter((l) => l.includes(BOOTSTRAP_LINE)).length).sort(), [0, 1],
        'the bootstrap warning in exactly one process\'s output, once')
      t.ok(stdout.every((out) => out.includes('database migrated')), 'both went through the migration step (one waited on the other)')
    })

    await t.test('the per-IP login limit is shared: five logins across A and B, the sixth refused', async (t) => {
      // The first /login of this file: the window for 127.0.0.1 opens here.
      const user = await signup(A)
      windowOpenedAt = 0
      const statuses: number[] = []
      let last: Reply | undefined
      for (const base of [A, B, A, B, A, B]) {
        last = await login(base, user.email)
        statuses.push(last.status)
      }
      refusedUntil = windowOpenedAt + LOGIN_WINDOW_SECONDS * 1000
      t.ok(Date.now() < refusedUntil, 'all six inside one window')
      t.same(statuses, [200, 200, 200, 200, 200, 429], 'five in the window across both instances, the sixth (on B) refused')
      t.equal(last?.body.code, 'RATE_LIMITED')
    })

    await t.test('logout on A is refused on B within 1 s, though B caches session states for 60 s', async (t) => {
      const user = await signup(A)
      t.equal((await call(B, 'GET', '/api/auth/me', { token: user.accessToken })).status, 200, 'B has seen the session live (and cached it)')
      t.equal((await call(A, 'POST', '/api/auth/logout', { token: user.accessToken })).status, 200, 'logged out on A')
      let last: Reply | undefined
      const ms = await within(1000, async () => {
        last = await call(B, 'GET', '/api/auth/me', { token: user.accessToken })
        return last.status === 401
      })
      t.ok(ms > 0, `B refuses the token within 1 s (took ${ms} ms)`)
      t.equal(last?.status, 401)
      t.equal(last?.body.code, 'SESSION_REVOKED')
    })

    await t.test('each email is delivered once with both outbox workers running', async (t) => {
      const emails: string[] = []
      for (const base of [A, B, A, B, A, B, A, B, A, B]) emails.push((await signup(base)).email)
      const accepted: number[] = []
      for (const [i, email] of emails.entries()) {
        accepted.push((await call(i % 2 === 0 ? A : B, 'POST', '/api/auth/password/forgot', { body: { email } })).status)
      }
      t.same(accepted, emails.map(() => 202), 'every request accepted')

      const ours = new Set(emails)
      const resetMails = () => smtp.messages.filter((m) => m.headers.get('subject') === 'Reset your Gatehouse password' && m.rcptTo.some((r) => ours.has(r)))
      const took = await within(10_000, async () => resetMails().length >= emails.length)
      t.ok(took > 0, `all ${emails.length} reset emails arrived (in ${took} ms)`)
      await sleep(1000) // ten poll intervals of each worker: time for any second delivery
      const mails = resetMails()
      t.equal(mails.length, emails.length, 'exactly one email per request, no duplicates')
      t.same(mails.flatMap((m) => m.rcptTo).sort(), [...emails].sort(), 'one to each user')

      const rows = await sql<Array<{ to_address: string, status: string, attempts: number }>>`
        select to_address, status, attempts from email_outbox where kind = 'password_reset' and to_address in ${sql(emails)} order by to_address`
      t.same(rows, [...emails].sort().map((to_address) => ({ to_address, status: 'sent', attempts: 1 })), 'one outbox row per user, sent at the first attempt')
    })

    await t.test('a refresh token rotated on A and replayed on B (grace 0) is reuse', async (t) => {
      await loginsOpen()
      const user = await signup(B)
      const first = await login(A, user.email)
      t.equal(first.status, 200)
      const c0 = first.refresh ?? ''
      t.not(c0, '', 'login set the refresh cookie C0')

      const rotated = await call(A, 'POST', '/api/auth/refresh', { cookie: c0 })
      t.equal(rotated.status, 200, 'C0 rotated on A')
      const c1 = rotated.refresh ?? ''
      t.ok(c1 !== '' && c1 !== c0, 'a new cookie C1')

      const replayed = await call(B, 'POST', '/api/auth/refresh', { cookie: c0 })
      t.equal(replayed.status, 401, 'C0 replayed on B')
      t.equal(replayed.body.code, 'REFRESH_TOKEN_REUSED')

      const after = await call(A, 'POST', '/api/auth/refresh', { cookie: c1 })
      t.equal(after.status, 401, 'C1 is dead on A too: the family was revoked')
      t.equal((await call(A, 'GET', '/api/auth/me', { token: String(first.body.accessToken) })).status, 401, 'and so is the session\'s access token')
    })

    await t.test('MFA set up on A is confirmed on B, then a login on A completes on B', async (t) => {
      await loginsOpen()
      const user = await signup(A)
      const setup = await call(A, 'POST', '/api/auth/mfa/totp/setup', { token: user.accessToken, body: { password: PASSWORD } })
      t.equal(setup.status, 200, 'set up on A')
      const secret = String(setup.body.secret)

      const confirm = await call(B, 'POST', '/api/auth/mfa/totp/confirm', { token: user.accessToken, body: { code: totpCode(secret, new Date()) } })
      t.equal(confirm.status, 200, 'confirmed on B with a code of the secret A issued')
      t.equal((confirm.body.backupCodes as unknown[] | undefined)?.length, 10, 'ten backup codes')

      const challenge = await login(A, user.email)
      t.equal(challenge.status, 200)
      t.equal(challenge.body.mfaRequired, true, 'A asks for the second factor')
      t.equal(challenge.refresh, undefined, 'and sets no cookie yet')
      // The step the confirmation used is spent; the next one is accepted (±1 step).
      const done = await call(B, 'POST', '/api/auth/login/mfa', {
        body: { mfaToken: String(challenge.body.mfaToken), code: totpCode(secret, new Date(Date.now() + 30_000)) }
      })
      t.equal(done.status, 200, 'B completes the login A started')
      t.type(done.body.accessToken, 'string')
      t.not(done.refresh ?? '', '', 'with the refresh cookie')
    })

    await t.test('both stop on SIGTERM with exit code 0, having logged nothing at error level', async (t) => {
      for (const s of services) s.child.kill('SIGTERM')
      const runs = await Promise.all(services.map((s) => s.exited))
      t.same(runs.map((r) => r.code), [0, 0], 'exit code 0')
      for (const [i, run] of runs.entries()) {
        const errors = run.stdout.split('\n').filter((l) => /"level":(5|6)0/.test(l))
        t.same(errors, [], `${i === 0 ? 'A' : 'B'}: no error or fatal line`)
        t.equal(run.stderr, '', `${i === 0 ? 'A' : 'B'}: nothing on stderr`)
      }
    })
  })
}
