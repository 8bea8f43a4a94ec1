/**
 * Test helper: builds the real app (every plugin and route) on a database of its own,
 * PGlite in memory by default, or a fresh database on the PostgreSQL server named by
 * TEST_DATABASE_URL. One database per test file (tap runs files in separate processes);
 * tables are truncated before each app.
 */
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { sql } from 'drizzle-orm'
import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { buildApp, type App } from '../src/app.ts'
import { loadConfig, type Config } from '../src/config.ts'
import { connectPglite, connectPostgres, type DbHandle, migrationsFolder } from '../src/db/client.ts'


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
  'auth_events', 'backup_codes', 'email_outbox', 'mfa_challenges', 'password_reset_tokens',
  'refresh_tokens', 'sessions', 'tasks', 'users'
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
}

/** The real app on a clean database, closed when the test ends. */
export async function buildTestApp (test: Test, opts: TestAppOptions = {}): Promise<App> {
  const db = opts.db ?? await testDb()
  if (opts.db === undefined) {
    await db.db.execute(sql.raw(`truncate ${TABLES.join(', ')} restart identity cascade`))
  }
  const app = await buildApp({ config: testConfig(opts.env), db, now: opts.now, logger: opts.logger ?? false })
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

/** Logs in through HTTP and returns the raw response. */
export function login (app: App, email: string, password = PASSWORD, remoteAddress = '10.0.0.1') {
  return app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password }, remoteAddress })
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
