/**
 * Process start to `/health/ready`, and idle RSS, of the built service (`dist/`, as `npm start`
 * runs it), against a bare Fastify process measured in the same run.
 *
 *   npm run build && npx tsx bench/start.ts                              # embedded PGlite
 *   BENCH_DATABASE_URL=postgres://…/bench npx tsx bench/start.ts         # and PostgreSQL
 *
 * Each process is started ROUNDS times (default 5) on a fresh temp DATA_DIR (PGlite) or the
 * given database (already migrated after the first round); the median is printed. RSS is read
 * from /proc after IDLE_MS (default 3000) of idleness.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 3000)
const root = new URL('..', import.meta.url).pathname
const PORT = Number(process.env.BENCH_PORT ?? 3911)

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? Number.NaN) / 1024

/** Starts `args` with `env`, returns ms until `url` answers 200 and the RSS after IDLE_MS. */
async function measure (args: string[], env: Record<string, string>, url: string) {
  const t0 = performance.now()
  const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'ignore', 'inherit'] })
  let ready = Number.NaN
  for (let i = 0; i < 3000; i++) {
    const ok = await fetch(url).then((r) => r.ok, () => false)
    if (ok) { ready = performance.now() - t0; break }
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  await new Promise((resolve) => setTimeout(resolve, IDLE_MS))
  const rss = rssMiB(child.pid ?? 0)
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  await exited
  return { ready, rss }
}

async function series (name: string, run: () => Promise<{ ready: number, rss: number }>) {
  const results = []
  for (let i = 0; i < ROUNDS; i++) results.push(await run())
  const row = { name, readyMs: median(results.map((r) => r.ready)), rssMiB: median(results.map((r) => r.rss)) }
  console.log(`| ${row.name} | ${row.readyMs.toFixed(0)} | ${row.rssMiB.toFixed(0)} |`)
  return row
}

const bareDir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-bare-'))
const bare = join(bareDir, 'bare.mjs')
writeFileSync(bare, `import Fastify from ${JSON.stringify(join(root, 'node_modules/fastify/fastify.js'))}
const app = Fastify()
app.get('/health/ready', async () => ({ status: 'ok' }))
await app.listen({ host: '127.0.0.1', port: ${PORT} })
process.on('SIGTERM', () => app.close().then(() => process.exit(0)))
`)

const base = `http://127.0.0.1:${PORT}`
const service = (extra: Record<string, string>) => async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-start-'))
  try {
    return await measure([join(root, 'dist/server.mjs')], {
      PORT: String(PORT), HOST: '127.0.0.1', DATA_DIR: dataDir, LOG_LEVEL: 'warn', HIBP_ENABLED: 'false', ...extra
    }, `${base}/health/ready`)
  } finally {
    rmSync(dataDir, { recursive: true, force: true })
  }
}

console.log(`\nstart to ready and idle RSS, median of ${ROUNDS}, Node ${process.version}\n`)
console.log('| process | start to ready, ms | idle RSS, MiB |')
console.log('|---|---:|---:|')
await series('bare Fastify (ceiling)', () => measure([bare], {}, `${base}/health/ready`))
await series('Gatehouse on PGlite (fresh data dir: migrates)', service({}))
if (process.env.BENCH_DATABASE_URL !== undefined) {
  await series('Gatehouse on PostgreSQL', service({ DATABASE_URL: process.env.BENCH_DATABASE_URL }))
}
rmSync(bareDir, { recursive: true, force: true })
