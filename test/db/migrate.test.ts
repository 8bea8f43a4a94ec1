/**
 * `npm run db:migrate`, as an operator runs it: it must apply every migration and exit, on
 * PostgreSQL (where it once waited forever: its pool of one connection held the advisory lock
 * the migrator needed a second connection beside) and on the embedded database.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { expectedMigrationCount } from '../../src/db/client.ts'

const ROOT = new URL('../..', import.meta.url).pathname

/** Runs the npm script with this environment; fails the test if it has not exited after 60 s. */
function migrate (env: Record<string, string>): Promise<{ code: number | null, output: string }> {
  const child = spawn('npm', ['run', 'db:migrate'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', (d) => { output += d })
  child.stderr.on('data', (d) => { output += d })
  return new Promise((resolve) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); resolve({ code: null, output: `${output}\n(still running after 60 s: killed)` }) }, 60_000)
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, output }) })
  })
}

const url = process.env.TEST_DATABASE_URL
if (url !== undefined && url !== '') {
  t.test('PostgreSQL: applies every migration and exits; again, and twice at once, too', async (t) => {
    const { default: postgres } = await import('postgres')
    const admin = postgres(url, { max: 1, onnotice: () => {} })
    const name = `gatehouse_migrate_${randomBytes(4).toString('hex')}`
    await admin.unsafe(`create database "${name}"`)
    t.teardown(async () => {
      await admin.unsafe(`drop database if exists "${name}" with (force)`)
      await admin.end()
    })
    const target = new URL(url)
    target.pathname = `/${name}`
    const env = { DATABASE_URL: target.toString() }

    const first = await migrate(env)
    t.equal(first.code, 0, first.output)
    t.match(first.output, /migrations applied \(postgres\)/)
    const db = postgres(target.toString(), { max: 1, onnotice: () => {} })
    t.teardown(() => db.end())
    const [applied] = await db`select count(*)::int as n from drizzle.__drizzle_migrations`
    t.equal(applied?.n, expectedMigrationCount(), 'every migration is recorded')
    const [table] = await db`select count(*)::int as n from information_schema.columns where table_name = 'email_outbox' and column_name = 'body_sealed'`
    t.equal(table?.n, 1, 'the schema is the latest')

    const again = await migrate(env)
    t.equal(again.code, 0, 'a second run has nothing to do and exits')
    const racing = await Promise.all([migrate(env), migrate(env)])
    t.same(racing.map((r) => r.code), [0, 0], 'two at once: the advisory lock serialises them, both exit')
  })
} else {
  t.test('embedded database: applies every migration under DATA_DIR and exits', async (t) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-migrate-'))
    t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
    const first = await migrate({ DATA_DIR: dataDir })
    t.equal(first.code, 0, first.output)
    t.match(first.output, /migrations applied \(pglite\)/)
    const again = await migrate({ DATA_DIR: dataDir })
    t.equal(again.code, 0, 'a second run on the same data exits too')
  })
}
