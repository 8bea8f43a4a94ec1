/**
 * HTTP throughput of the main request paths, against a baseline measured in the same run.
 *
 *   npm run bench                      # embedded PGlite under a temp DATA_DIR
 *   BENCH_DATABASE_URL=postgres://… npm run bench
 *
 * The service runs as its own process (the built `dist/`, as `npm start` runs it); this process
 * only drives autocannon. Rate limits and the breach check are off so the paths themselves are
 * measured. Ratios against `GET /health/live` (no auth, no database) are what to compare across
 * machines; absolute numbers depend on the machine and on the load generator sharing its cores.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const PORT = Number(process.env.BENCH_PORT ?? 3901)
const base = `http://127.0.0.1:${PORT}`
const root = new URL('..', import.meta.url).pathname

const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-'))
/** One secret for the service and the verify-only ceiling, so both verify the same token. */
const JWT_SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789'
const CEILING_PORT = PORT + 1
// The ceiling for authenticated reads: a bare Fastify route that only verifies the HS256 token
// with @fastify/jwt (same algorithm, issuer and audience pinned), in a process of its own.
const ceilingFile = join(dataDir, 'verify-only.mjs')
writeFileSync(ceilingFile, `import Fastify from ${JSON.stringify(join(root, 'node_modules/fastify/fastify.js'))}
import fastifyJwt from ${JSON.stringify(join(root, 'node_modules/@fastify/jwt/index.js'))}
const app = Fastify()
await app.register(fastifyJwt, { secret: ${JSON.stringify(JWT_SECRET)}, verify: { algorithms: ['HS256'], allowedIss: 'gatehouse', allowedAud: 'gatehouse' } })
app.get('/verify', { onRequest: (request) => request.jwtVerify() }, async (request) => ({ sub: request.user.sub }))
await app.listen({ host: '127.0.0.1', port: ${CEILING_PORT} })
`)
const ceiling = spawn(process.execPath, [ceilingFile], { stdio: ['ignore', 'inherit', 'inherit'] })
const server = spawn(process.execPath, [join(root, 'dist/src/server.js')], {
  env: {
    ...process.env,
    JWT_SECRET,
    PORT: String(PORT),
    DATA_DIR: dataDir,
    ...(process.env.BENCH_DATABASE_URL === undefined ? {} : { DATABASE_URL: process.env.BENCH_DATABASE_URL }),
    LOG_LEVEL: 'warn',
    RATE_LIMIT_ENABLED: 'false',
    HIBP_ENABLED: 'false',
    OUTBOX_POLL_INTERVAL_MS: '0',
    UV_THREADPOOL_SIZE: String(cpus().length)
  },
  stdio: ['ignore', 'inherit', 'inherit']
})
const stop = () => { server.kill('SIGTERM'); ceiling.kill('SIGTERM'); rmSync(dataDir, { recursive: true, force: true }) }
process.on('exit', stop)

async function waitReady () {
  for (let i = 0; i < 200; i++) {
    try { if ((await fetch(`${base}/health/ready`)).ok) return } catch {}
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error('service did not become ready')
}

interface Row { name: string, rps: number, p50: number, p99: number, errors: number, non2xx: number }

async function run (name: string, path: string, opts: Partial<autocannon.Options> = {}): Promise<Row> {
  const url = base + path
  await autocannon({ url, connections: CONNECTIONS, duration: 1, ...opts }) // warm-up, not counted
  const r = await autocannon({ url, connections: CONNECTIONS, duration: SECONDS, ...opts })
  return { name, rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors, non2xx: r.non2xx }
}

/** The same measurement against any URL (the ceiling process). */
async function runUrl (name: string, url: string, opts: Partial<autocannon.Options> = {}): Promise<Row> {
  await autocannon({ url, connections: CONNECTIONS, duration: 1, ...opts })
  const r = await autocannon({ url, connections: CONNECTIONS, duration: SECONDS, ...opts })
  return { name, rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors, non2xx: r.non2xx }
}

await waitReady()
const email = `bench-${Date.now()}@example.com`
const password = 'Bench-Passw0rd-1'
const signup = await fetch(`${base}/api/auth/signup`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }) })
const { accessToken, user } = await signup.json() as { accessToken: string, user: { id: string } }
const auth = { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' }
for (let i = 0; i < 20; i++) {
  await fetch(`${base}/api/${user.id}/tasks`, { method: 'POST', headers: auth, body: JSON.stringify({ title: `task ${i}` }) })
}

const rows: Row[] = []
rows.push(await run('GET /health/live (baseline)', '/health/live'))
rows.push(await run('GET /health/ready (db ping)', '/health/ready'))
const ceilingRow = await runUrl('GET /verify on a bare Fastify route that only verifies the token (ceiling)', `http://127.0.0.1:${CEILING_PORT}/verify`, { headers: auth })
rows.push(ceilingRow)
const meRow = await run('GET /api/auth/me (JWT + cached session check and user)', '/api/auth/me', { headers: auth })
rows.push(meRow)
rows.push(await run('GET /api/:userId/tasks?limit=10 (JWT + list + count)', `/api/${user.id}/tasks?limit=10`, { headers: auth }))
rows.push(await run('POST /api/auth/login (argon2id verify + session)', '/api/auth/login', {
  method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }), connections: 8
}))

const baseline = rows[0]?.rps ?? 1
console.log(`\n${process.env.BENCH_DATABASE_URL === undefined ? 'PGlite' : 'PostgreSQL'}, ${CONNECTIONS} connections (login: 8), ${SECONDS} s per route, ${cpus().length} cores\n`)
console.log('| route | req/s | ratio to baseline | p50 ms | p99 ms | errors | non-2xx |')
console.log('|---|---:|---:|---:|---:|---:|---:|')
for (const r of rows) {
  console.log(`| ${r.name} | ${Math.round(r.rps)} | ${(r.rps / baseline).toFixed(3)} | ${r.p50} | ${r.p99} | ${r.errors} | ${r.non2xx} |`)
}
console.log(`\nGET /api/auth/me ÷ the verify-only ceiling: ${(meRow.rps / ceilingRow.rps).toFixed(3)} (target ≥ 0.6)`)
stop()
process.exit(0)
