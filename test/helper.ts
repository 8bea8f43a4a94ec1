/**
 * Test helper: builds the real app (every plugin and route) on a database of its own,
 * PGlite in memory by default, or a fresh database on the PostgreSQL server named by
 * TEST_DATABASE_URL. One database per test file (tap runs files in separate processes);
 * tables are truncated before each app.
 */
import { execFileSync, spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { type AddressInfo, connect, createServer } from 'node:net'
import { existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { eq, sql } from 'drizzle-orm'
import type { FastifyInstance } from 'fastify'
import { Secret, TOTP } from 'otpauth'
import t, { type Test } from 'tap'
import { buildApp, type App } from '../src/app.ts'
import { loadConfig, type Config } from '../src/config.ts'
import { connectPglite, connectPostgres, type DbHandle, migrationsFolder, rowsOf } from '../src/db/client.ts'

export { rowsOf }
import type { Email, Mailer } from '../src/services/mailer.ts'
import { sessions, users } from '../src/db/schema.ts'


export const JWT_SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789'
export const PASSWORD = 'Correct-Horse-9'

/** Config for tests: fast argon2, no session cache, generous limits unless a test asks. */
export function testConfig (env: Record<string, string> = {}): Config {
  return loadConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    JWT_SECRET,
    ARGON2_MEMORY_COST: '8192',
    ARGON2_TIME_COST: '1',
    SESSION_CHECK_TTL_SECONDS: '0',
    RATE_LIMIT_MAX: '10000',
    RATE_LIMIT_LOGIN_MAX: '10000',
    RATE_LIMIT_SIGNUP_MAX: '10000',
    HIBP_ENABLED: 'false',
    OUTBOX_POLL_INTERVAL_MS: '0',
    RETENTION_INTERVAL_MINUTES: '0',
    MFA_ENCRYPTION_KEY: 'test-mfa-encryption-key-0123456789abcdef',
    RATE_LIMIT_MFA_MAX: '10000',
    ...env
  })
}

export type { Test }

/**
 * A migrated PGlite database. Starting PGlite and migrating costs seconds; loading a snapshot a
 * fraction of that, so the first test process saves one (keyed by the migrations' content) in
 * the temp dir and the others start from it. Written to a temp name, then renamed: atomic.
 */
async function migratedPglite (): Promise<DbHandle> {
  const folder = migrationsFolder()
  const digest = createHash('sha256')
  for (const f of readdirSync(folder, { recursive: true }).map(String).sort()) {
    const path = join(folder, f)
    if (statSync(path).isFile()) digest.update(f).update(readFileSync(path))
  }
  const snapshot = join(tmpdir(), `gatehouse-test-pglite-${digest.digest('hex').slice(0, 16)}.tar.gz`)
  if (existsSync(snapshot)) return connectPglite(undefined, { from: new Blob([readFileSync(snapshot)]) })
  const handle = await connectPglite()
  await handle.migrate()
  const blob = await handle.snapshot?.()
  if (blob !== undefined) {
    const partial = `${snapshot}.${process.pid}.partial`
    writeFileSync(partial, Buffer.from(await blob.arrayBuffer()))
    renameSync(partial, snapshot)
  }
  return handle
}

/** Opens a fresh, migrated database: a new PostgreSQL database, or an in-memory PGlite. */
export async function openTestDb (): Promise<DbHandle & { drop: () => Promise<void> }> {
  const url = process.env.TEST_DATABASE_URL
  if (url === undefined || url === '') {
    const handle = await migratedPglite()
    return { ...handle, drop: handle.close }
  }
  const { default: postgres } = await import('postgres')
  const name = `gatehouse_test_${process.pid}_${randomBytes(4).toString('hex')}`
  const admin = postgres(url, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database "${name}"`)
  const target = new URL(url)
  target.pathname = `/${name}`
  const handle = await connectPostgres(target.toString(), { max: 10 })
  await handle.migrate()
  return {
    ...handle,
    drop: async () => {
      await handle.close()
      await admin.unsafe(`drop database if exists "${name}" with (force)`)
      await admin.end()
    }
  }
}

let shared: Promise<DbHandle & { drop: () => Promise<void> }> | undefined
/** This test file's database, opened on first use and dropped when the file's tests end. */
export function testDb (): Promise<DbHandle> {
  if (shared === undefined) {
    shared = openTestDb()
    const opened = shared
    t.teardown(async () => { await (await opened).drop() })
  }
  return shared
}

const TABLES = [
  'auth_events', 'backup_codes', 'email_outbox', 'email_verification_tokens', 'mfa_challenges', 'oauth_clients', 'passkeys', 'password_reset_tokens',
  'refresh_tokens', 'sessions', 'tasks', 'users', 'webauthn_challenges'
]

/** A clock tests can move. */
export function testClock (start = new Date('2026-06-01T12:00:00Z')) {
  let current = start.getTime()
  return {
    now: () => new Date(current),
    advance: (ms: number) => { current += ms },
    set: (d: Date) => { current = d.getTime() }
  }
}

/** Collects log lines (JSON) written by the app. */
export function logCapture () {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk, _enc, cb) { lines.push(String(chunk)); cb() }
  })
  return { stream, lines, text: () => lines.join('') }
}

export interface TestAppOptions {
  env?: Record<string, string>
  now?: () => Date
  logger?: Parameters<typeof buildApp>[0]['logger']
  /** Use this database instead of the file's shared one (it is not truncated). */
  db?: DbHandle
  /** Runs before ready(), e.g. to add a route that fails on purpose. */
  setup?: (app: FastifyInstance) => void | Promise<void>
  /** Replaces the mailer; by default an app without SMTP_HOST delivers to a test inbox (readMail). */
  mailer?: Mailer
}

const inboxes = new WeakMap<object, Email[]>()

/**
 * The mail a user of an app without SMTP_HOST has received: delivers what the outbox has due
 * (as the worker would), then returns every email delivered so far, oldest first. Tests read
 * links from here, as a user would, never from the database.
 */
export async function readMail (app: App, opts: { verification?: boolean } = {}): Promise<Email[]> {
  const inbox = inboxes.get(app)
  if (inbox === undefined) throw new Error('readMail: this app sends real mail (SMTP_HOST) or has its own mailer')
  await app.services.credentials.settled()
  await app.services.outbox.runOnce()
  // Every signup mails a verification link: most tests are about the other mails.
  return opts.verification === true ? inbox : inbox.filter((m) => !isVerificationMail(m))
}

/** A mail with an email-verification link. */
export const isVerificationMail = (mail: { text?: string, subject?: string }) => /verify-email\?token=/.test(mail.text ?? '')

/** What one outbox round did: the counts given, every other count 0. */
export function round (counts: Partial<Record<'sent' | 'failed' | 'retry' | 'expired' | 'released', number>>) {
  return { sent: 0, failed: 0, retry: 0, expired: 0, released: 0, ...counts }
}

/** The token of the link in an email (`…?token=…`). */
export function tokenInMail (mail: Email | undefined): string {
  return /token=([A-Za-z0-9_-]+)/.exec(mail?.text ?? '')?.[1] ?? ''
}

/** The reset token of the newest reset email this app's user received. */
export async function latestResetToken (app: App): Promise<string> {
  return tokenInMail((await readMail(app)).filter((m) => /reset-password\?token=/.test(m.text)).at(-1))
}

/** The real app on a clean database, closed when the test ends. */
export async function buildTestApp (test: Test, opts: TestAppOptions = {}): Promise<App> {
  const db = opts.db ?? await testDb()
  if (opts.db === undefined) {
    await db.db.execute(sql.raw(`truncate ${TABLES.join(', ')} restart identity cascade`))
  }
  const config = testConfig(opts.env)
  const inbox: Email[] = []
  const mailer = opts.mailer ?? (config.SMTP_HOST === undefined ? { send: async (mail: Email) => { inbox.push(mail) } } : undefined)
  const app = await buildApp({ config, db, now: opts.now, logger: opts.logger ?? false, mailer })
  if (opts.mailer === undefined && mailer !== undefined) inboxes.set(app, inbox)
  test.teardown(() => app.close())
  if (opts.setup !== undefined) await opts.setup(app)
  await app.ready()
  return app
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

let counter = 0
export const uniqueEmail = (prefix = 'user') => `${prefix}${++counter}-${randomBytes(3).toString('hex')}@example.com`

/** Signs up through HTTP and returns the token response. */
export async function signup (app: App, email = uniqueEmail(), password = PASSWORD, remoteAddress = '10.0.0.1') {
  const res = await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email, password }, remoteAddress })
  if (res.statusCode !== 201) throw new Error(`signup failed: ${res.statusCode} ${res.body}`)
  const body = res.json() as { user: { id: string, email: string }, accessToken: string }
  return { ...body, email, password, res }
}

/** The value of the refresh cookie a response set ('' when it cleared it or set none). */
export function refreshCookieIn (res: { cookies: Array<{ name: string, value: string }> }): string {
  return res.cookies.find((c) => c.name === 'refresh_token')?.value ?? ''
}

/** Logs in through HTTP and returns the raw response. */
export function login (app: App, email: string, password = PASSWORD, remoteAddress = '10.0.0.1') {
  return app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password }, remoteAddress })
}

/**
 * Every row of every table in the public schema, as text (`row::text`), sorted: a dump of what
 * anyone with read access to the database (a backup, a replica) could see.
 */
export async function dumpDatabase (app: { db: DbHandle['db'] }): Promise<string> {
  const tables = await app.db.execute(sql`select table_name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE' order by table_name`)
  const names = rowsOf(tables).map((r) => String(r.table_name))
  const parts: string[] = []
  for (const name of names) {
    const rows = rowsOf(await app.db.execute(sql.raw(`select t::text as row from "${name}" t`)))
    parts.push(`-- ${name}`, ...rows.map((r) => String(r.row)).sort())
  }
  return parts.join('\n')
}

/** The TOTP code of `secret` at `at` (otpauth: SHA1, 6 digits, 30 s). */
export const totpCode = (secret: string, at: Date) => TOTP.generate({ secret: Secret.fromBase32(secret), timestamp: at.getTime() })

/**
 * Signs up and turns MFA on through HTTP; returns the session, the TOTP secret and the backup
 * codes. Moves `clock` past the step the confirming code used, so the next code is fresh.
 */
export async function enrolMfa (app: App, clock: ReturnType<typeof testClock>, remoteAddress = '10.0.0.1') {
  const s = await signup(app, uniqueEmail(), PASSWORD, remoteAddress)
  const setup = await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/setup', headers: bearer(s.accessToken), payload: { password: PASSWORD } })
  if (setup.statusCode !== 200) throw new Error(`MFA setup failed: ${setup.body}`)
  const secret = setup.json().secret as string
  const confirm = await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/confirm', headers: bearer(s.accessToken), payload: { code: totpCode(secret, clock.now()) } })
  if (confirm.statusCode !== 200) throw new Error(`MFA confirm failed: ${confirm.body}`)
  clock.advance(30_000)
  return { ...s, secret, backupCodes: confirm.json().backupCodes as string[] }
}

/** Logs in with the right password and returns the mfaToken of the challenge. */
export async function mfaChallenge (app: App, email: string, remoteAddress = '10.0.0.1'): Promise<string> {
  const res = await login(app, email, PASSWORD, remoteAddress)
  if (res.json().mfaRequired !== true) throw new Error(`expected an MFA challenge: ${res.body}`)
  return res.json().mfaToken as string
}

/**
 * Runs `build` with `onInstance` called on every Fastify instance created meanwhile, as it is
 * created (Fastify's 'fastify.initialization' diagnostics channel): the way in for hooks that
 * must see route registration, which happens inside buildApp before any `setup` runs.
 */
export async function withEveryInstance<T> (onInstance: (fastify: FastifyInstance) => void, build: () => Promise<T>): Promise<T> {
  const listener = (message: unknown) => onInstance((message as { fastify: FastifyInstance }).fastify)
  subscribe('fastify.initialization', listener)
  try {
    return await build()
  } finally {
    unsubscribe('fastify.initialization', listener)
  }
}

/** The real app and every route it registered (method, URL pattern, schema), HEAD left out. */
export async function buildTestAppWithRoutes (test: Test, opts: TestAppOptions = {}) {
  const routes: Array<{ method: string, url: string, schema: Record<string, unknown> }> = []
  const app = await withEveryInstance((fastify) => {
    fastify.addHook('onRoute', (r) => {
      for (const method of [r.method].flat()) {
        if (method !== 'HEAD') routes.push({ method, url: r.url, schema: (r.schema ?? {}) as Record<string, unknown> })
      }
    })
  }, () => buildTestApp(test, opts))
  return { app, routes }
}

/** How a service process ended. */
export interface ServiceRun { code: number | null, stdout: string, stderr: string }

/**
 * The entry point as an operator runs it: `src/server.ts` in a process of its own, with only
 * PATH, HOME, LOG_LEVEL=info and `env` in its environment. `listening` resolves to its base URL
 * (from its "Server listening" log line), `exited` to its exit code and output.
 */
export function startService (env: Record<string, string>) {
  const entry = new URL('../src/server.ts', import.meta.url).pathname
  const child = spawn(process.execPath, ['--import', 'tsx', entry], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => { stdout += d })
  child.stderr.on('data', (d) => { stderr += d })
  const exited = new Promise<ServiceRun>((resolve) => child.on('exit', (code) => resolve({ code, stdout, stderr })))
  const listening = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listen line:\n${stdout}\n${stderr}`)), 60_000)
    child.stdout.on('data', () => {
      const m = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(stdout)
      if (m?.[1] !== undefined) { clearTimeout(timer); resolve(m[1]) }
    })
    void exited.then(() => { clearTimeout(timer); reject(new Error(`exited early:\n${stdout}\n${stderr}`)) })
  })
  listening.catch(() => {}) // awaited only by the tests that expect a server
  return { child, exited, listening }
}

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/**
 * The real app listening on 127.0.0.1, with PUBLIC_URL its real origin (the service's own origin
 * for the CSRF rule). Returns the app and that origin.
 */
export async function listeningTestApp (test: Test, opts: TestAppOptions = {}) {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const app = await buildTestApp(test, { ...opts, env: { PUBLIC_URL: base, ...opts.env } })
  await app.listen({ host: '127.0.0.1', port })
  return { app, base, port }
}

/** The claims of a JWT, unverified (tests read what they were issued). */
export function decodeJwt (jwt: string): Record<string, unknown> & { sub: string, sid: string, role: string, amr: string[], iat: number, exp: number, jti: string } {
  return JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString())
}

/**
 * Changes a user row behind the service's back: the state an operator, a migration or another
 * instance could leave. Tests of the admin API use the API instead.
 */
export async function setUser (app: App, userId: string, patch: Partial<Pick<typeof users.$inferInsert, 'isActive' | 'role' | 'passwordMustChange' | 'passwordHash'>>) {
  await app.db.update(users).set(patch).where(eq(users.id, userId))
}

/** Removes a user (and, by cascade, its sessions and tokens). */
export async function deleteUser (app: App, userId: string) {
  await app.db.delete(users).where(eq(users.id, userId))
}

/** Gives an existing user the admin role. */
export const makeAdmin = (app: App, userId: string) => setUser(app, userId, { role: 'admin' })

/** Signs up a user and makes it an admin; its access token carries role user but the guard reads the database. */
export async function signupAdmin (app: App, email = uniqueEmail('admin'), remoteAddress = '10.0.0.1') {
  const s = await signup(app, email, PASSWORD, remoteAddress)
  await makeAdmin(app, s.user.id)
  return s
}

/** Marks a session revoked behind the service's back (its access tokens must stop working). */
export async function revokeSession (app: App, sessionId: string, at = new Date()) {
  await app.db.update(sessions).set({ revokedAt: at, revokedReason: 'test' }).where(eq(sessions.id, sessionId))
}

/** Marks every session of a user revoked behind the service's back. */
export async function revokeSessionsOf (app: App, userId: string, at = new Date()) {
  await app.db.update(sessions).set({ revokedAt: at, revokedReason: 'test' }).where(eq(sessions.userId, userId))
}

/**
 * Polls `probe` in real time until it holds or `ms` have passed; the milliseconds it took (at
 * least 1), or 0 when it never held. For what crosses processes or connections (messages
 * between instances), where no injected clock can help.
 */
export async function within (ms: number, probe: () => Promise<boolean>): Promise<number> {
  const start = performance.now()
  for (;;) {
    if (await probe()) return Math.max(1, Math.round(performance.now() - start))
    if (performance.now() - start > ms) return 0
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** Whether `redis-server` can be run here (CI installs it and requires it). */
export function haveRedis (): boolean {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' })
    return true
  } catch {
    if (process.env.CI === 'true') throw new Error('redis-server is required in CI (apt-get install redis-server)')
    return false
  }
}

/**
 * A real redis-server of the test's own on 127.0.0.1 (no persistence, a temp dir), stopped when
 * the test ends. `stop()` and `start()` take it down and bring it back on the same port, for
 * outage tests; `pause()` and `resume()` freeze and thaw it.
 */
export async function startRedis (test: Test) {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-redis-'))
  let child: ReturnType<typeof spawn> | undefined
  const url = `redis://127.0.0.1:${port}`
  const ping = () => new Promise<boolean>((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('error', () => resolve(false))
    socket.once('connect', () => socket.write('PING\r\n'))
    socket.once('data', (d) => { socket.destroy(); resolve(d.toString().startsWith('+PONG')) })
  })
  async function start () {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' })
    for (let i = 0; !(await ping()); i++) {
      if (i > 200) throw new Error('redis-server did not start')
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
  }
  async function stop () {
    const c = child
    if (c === undefined || c.exitCode !== null) return
    const exited = new Promise((resolve) => c.once('exit', resolve))
    c.kill('SIGKILL')
    await exited
    child = undefined
  }
  /** Freezes the server (SIGSTOP): connections stay open, nothing answers. `resume()` thaws it. */
  const pause = () => { child?.kill('SIGSTOP') }
  const resume = () => { child?.kill('SIGCONT') }
  await start()
  test.teardown(async () => {
    resume()
    await stop()
    rmSync(dir, { recursive: true, force: true })
  })
  return { url, port, start, stop, ping, pause, resume }
}

/** Asserts the contract's error body. */
export function assertError (test: Test, res: { statusCode: number, json: () => unknown }, status: number, code: string) {
  test.equal(res.statusCode, status, `status ${status}`)
  const body = res.json() as Record<string, unknown>
  test.equal(body.code, code, `code ${code}`)
  test.equal(body.statusCode, status)
  test.type(body.error, 'string')
  test.type(body.message, 'string')
  test.same(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'])
}

/**
 * examples/resource-service started as its README says, as a process of its own, pointed at
 * Gatehouse (`GATEHOUSE_URL`, plus any of its other settings in `env`); its base URL once it answers.
 */
export async function startResourceService (test: Test, gatehouse: string, env: Record<string, string> = {}): Promise<string> {
  const port = await freePort()
  const child = spawn(process.execPath, [new URL('../examples/resource-service/server.js', import.meta.url).pathname], {
    env: { PATH: process.env.PATH ?? '', GATEHOUSE_URL: gatehouse, PORT: String(port), LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', (d) => { output += d })
  child.stderr.on('data', (d) => { output += d })
  const exited = new Promise((resolve) => child.on('exit', resolve))
  test.teardown(async () => { child.kill('SIGTERM'); await exited })
  const base = `http://127.0.0.1:${port}`
  for (let i = 0; ; i++) {
    const up = await fetch(`${base}/health`).then((r) => r.ok, () => false)
    if (up) return base
    if (i > 200 || child.exitCode !== null) throw new Error(`the example did not start:\n${output}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
