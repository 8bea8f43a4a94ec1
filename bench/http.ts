/**
 * HTTP throughput of the main request paths, each against its ceiling measured in the same run.
 *
 *   npm run bench                      # embedded PGlite under a temp DATA_DIR
 *   BENCH_DATABASE_URL=postgres://… npm run bench
 *
 * The service runs as its own process (the built `dist/`, as `npm start` runs it); this process
 * only drives autocannon. Rate limits and the breach check are off so the paths themselves are
 * measured. Each ceiling is the bare work its route cannot avoid, in a process of its own
 * (bench/ceilings/), so the ratio is what to compare across machines:
 * - GET /api/auth/me: a bare Fastify route that only verifies the same HS256 token;
 * - POST /api/auth/login: raw argon2id verifies, as many in flight as the service's hash gate;
 * - POST /api/auth/refresh: a `SELECT … FOR UPDATE` + `INSERT` transaction through postgres.js
 *   (PostgreSQL only), every connection rotating its own cookie.
 * A second table has the health probes' latency during a login storm.
 *
 *   BENCH_ONLY=refresh …               # only some rows: me, tasks, login, refresh, health
 *   BENCH_PROFILE=/tmp/prof …          # the service writes a CPU profile there when it stops
 *   node bench/profile-top.mjs /tmp/prof/*.cpuprofile   # its top frames and packages
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const WARMUP_SECONDS = 1
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
/** Enough to keep the hash gate full (4 in flight) with requests queued behind it. */
const LOGIN_CONNECTIONS = 8
/** One session per connection; each costs a signup and a login to set up, so not too many. */
const REFRESH_CONNECTIONS = Number(process.env.BENCH_REFRESH_CONNECTIONS ?? 32)
const STORM_CONNECTIONS = 16
const PROBE_CONNECTIONS = 4
const PORT = Number(process.env.BENCH_PORT ?? 3901)
const CEILING_PORT = PORT + 1
const DATABASE_URL = process.env.BENCH_DATABASE_URL
const CORES = cpus().length
const base = `http://127.0.0.1:${PORT}`
const root = new URL('..', import.meta.url).pathname
const ceilings = join(root, 'bench/ceilings')
const ONLY = process.env.BENCH_ONLY?.split(',').map((x) => x.trim())
const want = (row: string) => ONLY === undefined || ONLY.includes(row)

/** One secret for the service and the verify-only ceiling, so both verify the same token. */
const JWT_SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789'
const PASSWORD = 'Bench-Passw0rd-1'
/** Given explicitly to the service and to the ceilings, so both do the same work. */
const shared = {
  ARGON2_MEMORY_COST: process.env.ARGON2_MEMORY_COST ?? '19456',
  ARGON2_TIME_COST: process.env.ARGON2_TIME_COST ?? '2',
  ARGON2_PARALLELISM: process.env.ARGON2_PARALLELISM ?? '1',
  ARGON2_MAX_CONCURRENCY: process.env.ARGON2_MAX_CONCURRENCY ?? '4',
  DB_POOL_MAX: process.env.DB_POOL_MAX ?? '10',
  UV_THREADPOOL_SIZE: String(CORES),
  BENCH_SECONDS: String(SECONDS),
  BENCH_WARMUP_SECONDS: String(WARMUP_SECONDS)
}

const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-'))
const children = new Set<ChildProcess>()

function start (file: string, env: Record<string, string>, stdout: 'inherit' | 'pipe' = 'inherit', nodeArgs: string[] = []): ChildProcess {
  const child = spawn(process.execPath, [...nodeArgs, file], { env: { ...process.env, ...shared, ...env }, stdio: ['ignore', stdout, 'inherit'] })
  children.add(child)
  child.on('exit', () => children.delete(child))
  return child
}

/**
 * Stops every child and removes the temp dir once they are gone: the service (PGlite) writes to
 * its DATA_DIR until it has exited. On a bare exit (which cannot wait) the handler below kills.
 */
async function shutdown (): Promise<void> {
  const exited = [...children].map((child) => new Promise((resolve) => child.once('exit', resolve)))
  for (const child of children) child.kill('SIGTERM')
  await Promise.race([Promise.all(exited), new Promise((resolve) => setTimeout(resolve, 5000))])
  rmSync(dataDir, { recursive: true, force: true })
}
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL')
  rmSync(dataDir, { recursive: true, force: true })
})
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => { shutdown().finally(() => process.exit(130)) })
}
process.on('uncaughtException', (err) => {
  console.error(err)
  shutdown().finally(() => process.exit(1))
})

/**
 * CPU seconds used so far (user + system, from /proc; Linux) by the service and by every local
 * PostgreSQL process, so a row can say where its CPU went per request. Undefined elsewhere.
 */
function cpuSeconds (): { service: number, postgres: number } | undefined {
  try {
    // utime, stime, cutime, cstime: fields 14 to 17 of stat. The children's part counts the
    // backends that have exited since (the postmaster reaps them), like the ceiling's.
    const ticks = (pid: string) => {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
      return Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])
    }
    let postgres = 0
    for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
      try { if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'postgres') postgres += ticks(pid) } catch {}
    }
    return { service: ticks(String(server.pid)) / 100, postgres: postgres / 100 }
  } catch {
    return undefined
  }
}
/** CPU ms per request of the service and of PostgreSQL during `run` (which returns how many requests it made). */
async function cpuPer<T> (run: () => Promise<T>, count: (r: T) => number): Promise<{ result: T, cpu?: { service: number, postgres: number } }> {
  const before = cpuSeconds()
  const result = await run()
  const after = cpuSeconds()
  const n = count(result)
  if (before === undefined || after === undefined || n === 0) return { result }
  return { result, cpu: { service: 1000 * (after.service - before.service) / n, postgres: 1000 * (after.postgres - before.postgres) / n } }
}

/** A ceiling that measures by itself and prints one JSON line with `perSecond`. */
function runCeiling (file: string, env: Record<string, string>): Promise<number> {
  const child = start(join(ceilings, file), env, 'pipe')
  let out = ''
  child.stdout?.on('data', (chunk: Buffer) => { out += chunk.toString() })
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('exit', (code) => {
      const last = out.trim().split('\n').at(-1) ?? ''
      if (code !== 0) return reject(new Error(`${file} exited with ${code}: ${out}`))
      resolve((JSON.parse(last) as { perSecond: number }).perSecond)
    })
  })
}

start(join(ceilings, 'verify-only.mjs'), { JWT_SECRET, PORT: String(CEILING_PORT) })
const server = start(join(root, 'dist/server.mjs'), {
  JWT_SECRET,
  PORT: String(PORT),
  DATA_DIR: dataDir,
  ...(DATABASE_URL === undefined ? {} : { DATABASE_URL }),
  LOG_LEVEL: 'warn',
  RATE_LIMIT_ENABLED: 'false',
  HIBP_ENABLED: 'false',
  OUTBOX_POLL_INTERVAL_MS: '0',
  COOKIE_SECURE: 'false',
  // No grace: a connection that ever sent a rotated cookie gets a 401 (counted) instead of
  // quietly being handed the same successor again.
  REFRESH_REUSE_GRACE_SECONDS: '0'
}, 'inherit', process.env.BENCH_PROFILE === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`])

async function waitFor (url: string, ok: (res: Response) => boolean) {
  for (let i = 0; i < 300; i++) {
    if (server.exitCode !== null) throw new Error(`the service exited with ${server.exitCode} before it was ready`)
    try { if (ok(await fetch(url))) return } catch {}
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`${url} did not come up`)
}

interface Measured { rps: number, p50: number, p99: number, ok: number, non2xx: number, errors: number }

function summary (r: autocannon.Result): Measured {
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, ok: r['2xx'], non2xx: r.non2xx, errors: r.errors }
}

/** A warm-up (not counted), then the measured run. */
async function measure (opts: autocannon.Options, warmup: autocannon.Options | false = opts): Promise<Measured> {
  if (warmup !== false) await autocannon({ ...warmup, duration: WARMUP_SECONDS })
  return summary(await autocannon({ ...opts, duration: SECONDS }))
}

const json = { 'content-type': 'application/json' }
function post (path: string, body: unknown, headers: Record<string, string> = {}) {
  return fetch(base + path, { method: 'POST', headers: { ...json, ...headers }, body: JSON.stringify(body) })
}

function refreshCookieOf (setCookie: string | string[] | undefined): string | undefined {
  for (const line of [setCookie ?? []].flat()) {
    const m = /^refresh_token=([^;]+)/.exec(line)
    if (m !== null) return m[1]
  }
  return undefined
}

async function mapLimit<T, R> (items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length)
  let next = 0
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i]!)
    }
  }))
  return out
}

/** A login that must succeed; its refresh cookie. */
async function logIn (email: string): Promise<string> {
  const res = await post('/api/auth/login', { email, password: PASSWORD })
  const cookie = refreshCookieOf(res.headers.getSetCookie())
  if (res.status !== 200 || cookie === undefined) throw new Error(`login of ${email}: ${res.status}`)
  return cookie
}

/**
 * POST /api/auth/refresh with one session per connection: each connection sends its own cookie
 * and keeps the successor from every response, so every request really rotates. Requests built
 * per client (setupClient) because autocannon resets a request's `context` after every loop.
 */
function rotating (cookies: string[], counts: { rotated: number }): autocannon.Options {
  let next = 0
  return {
    url: base + '/api/auth/refresh',
    connections: cookies.length,
    pipelining: 1, // one request in flight per cookie, or the next one sends a rotated cookie
    setupClient (client) {
      const slot = { cookie: cookies[next++]! }
      client.setRequests([{
        method: 'POST',
        path: '/api/auth/refresh',
        setupRequest: (req) => ({ ...req, headers: { ...req.headers, cookie: `refresh_token=${slot.cookie}` } }),
        onResponse (status, _body, _context, headers) {
          const header = Object.entries(headers ?? {}).find(([k]) => k.toLowerCase() === 'set-cookie')?.[1]
          const fresh = refreshCookieOf(header)
          if (status === 200 && fresh !== undefined && fresh !== slot.cookie) {
            slot.cookie = fresh
            counts.rotated++
          }
        }
      }])
    }
  }
}

await waitFor(`${base}/health/ready`, (res) => res.ok)
await waitFor(`http://127.0.0.1:${CEILING_PORT}/verify`, () => true)

const stamp = Date.now()
const email = `bench-${stamp}@example.com`
const signup = await post('/api/auth/signup', { email, password: PASSWORD })
const { accessToken, user } = await signup.json() as { accessToken: string, user: { id: string } }
const auth = { authorization: `Bearer ${accessToken}`, ...json }
for (let i = 0; i < 20; i++) await post(`/api/${user.id}/tasks`, { title: `task ${i}` }, auth)

const at = (path: string, opts: Partial<autocannon.Options> = {}): autocannon.Options =>
  ({ url: base + path, connections: CONNECTIONS, ...opts })
// Logins spread over accounts, one per connection, as real logins are: the logins of one account
// queue on its row (lastLoginAt), which is not what the ceiling measures.
const loginEmails = want('login') || want('health')
  ? await mapLimit(Array.from({ length: STORM_CONNECTIONS }, (_, i) => `bench-${stamp}-l${i}@example.com`), 4, async (e) => {
    const res = await post('/api/auth/signup', { email: e, password: PASSWORD })
    if (res.status !== 201) throw new Error(`signup of ${e}: ${res.status}`)
    return e
  })
  : []
function loginAt (connections: number): autocannon.Options {
  let next = 0
  return at('/api/auth/login', {
    connections,
    setupClient (client) {
      const body = JSON.stringify({ email: loginEmails[next++ % loginEmails.length], password: PASSWORD })
      client.setRequests([{ method: 'POST', path: '/api/auth/login', headers: json, body }])
    }
  })
}

const live = want('health') ? await measure(at('/health/live')) : undefined
const ready = want('health') ? await measure(at('/health/ready')) : undefined
const verifyOnly = want('me') ? await measure({ url: `http://127.0.0.1:${CEILING_PORT}/verify`, connections: CONNECTIONS, headers: auth }) : undefined
const me = want('me') ? await measure(at('/api/auth/me', { headers: auth })) : undefined
const tasks = want('tasks') ? await measure(at(`/api/${user.id}/tasks?limit=10`, { headers: auth })) : undefined
if (want('login')) await autocannon({ ...loginAt(LOGIN_CONNECTIONS), duration: WARMUP_SECONDS })
const loginRun = want('login')
  ? await cpuPer(async () => summary(await autocannon({ ...loginAt(LOGIN_CONNECTIONS), duration: SECONDS })), (m) => m.ok)
  : undefined
const login = loginRun?.result
const argon2 = want('login') ? await runCeiling('argon2.mjs', { BENCH_PASSWORD: PASSWORD }) : undefined

async function measureRefresh () {
  // A user per connection: the refreshes of one user wait on each other (its row is locked first).
  // Each user's signup session is for the measured run, a second session for the warm-up.
  const refreshEmails = Array.from({ length: REFRESH_CONNECTIONS }, (_, i) => `bench-${stamp}-r${i}@example.com`)
  const runCookies = await mapLimit(refreshEmails, 4, async (e) => {
    const res = await post('/api/auth/signup', { email: e, password: PASSWORD })
    const cookie = refreshCookieOf(res.headers.getSetCookie())
    if (res.status !== 201 || cookie === undefined) throw new Error(`signup of ${e}: ${res.status}`)
    return cookie
  })
  const warmCookies = await mapLimit(refreshEmails, 4, logIn)
  // One refresh by hand: 200 and a different cookie, or the run would measure something else.
  const check = await fetch(base + '/api/auth/refresh', { method: 'POST', headers: { cookie: `refresh_token=${warmCookies[0]}` } })
  const rotated = refreshCookieOf(check.headers.getSetCookie())
  if (check.status !== 200 || rotated === undefined || rotated === warmCookies[0]) {
    throw new Error(`refresh did not rotate: ${check.status} ${await check.text()}`)
  }
  warmCookies[0] = rotated
  const rotations = { rotated: 0 }
  await autocannon({ ...rotating(warmCookies, { rotated: 0 }), duration: WARMUP_SECONDS })
  const { result: measured, cpu } = await cpuPer(async () => summary(await autocannon({ ...rotating(runCookies, rotations), duration: SECONDS })), (m) => m.ok)
  if (DATABASE_URL === undefined) return { measured, rotations, cpu }
  const { result: ceiling, cpu: ceilingCpu } = await cpuPer(
    () => runCeiling('rotation.mjs', { DATABASE_URL, BENCH_CLIENTS: String(REFRESH_CONNECTIONS) }), (perSecond) => perSecond * (SECONDS + WARMUP_SECONDS))
  return { measured, ceiling, rotations, cpu, ceilingCpu }
}
const refreshed = want('refresh') ? await measureRefresh() : undefined

// Health probes with a few connections: idle, then while a login storm fills the hash gate.
const probe = (path: string) => at(path, { connections: PROBE_CONNECTIONS })
const liveIdle = want('health') ? await measure(probe('/health/live'), false) : undefined
const readyIdle = want('health') ? await measure(probe('/health/ready'), false) : undefined
async function underStorm (path: string) {
  // The storm starts first and ends last, so the probe only sees the service under it.
  const storm = autocannon({ ...loginAt(STORM_CONNECTIONS), duration: SECONDS + 1 })
  await new Promise((r) => setTimeout(r, 500))
  const probed = summary(await autocannon({ ...probe(path), duration: SECONDS }))
  return { probed, storm: summary(await storm) }
}
const liveStorm = want('health') ? await underStorm('/health/live') : undefined
const readyStorm = want('health') ? await underStorm('/health/ready') : undefined

// The storm's queued logins still run after autocannon hangs up: one more login waits behind
// them in the hash gate (FIFO), so none of them meets a closing database pool.
await logIn(email)
await shutdown()

const num = (n: number) => String(Math.round(n))
const failures = (m: Measured) => m.errors === 0 ? String(m.non2xx) : `${m.non2xx} (+${m.errors} errors)`
function ratio (m: Measured, ceiling: number | undefined, target: number | undefined) {
  if (ceiling === undefined || target === undefined) return '—'
  const r = m.rps / ceiling
  return `${r.toFixed(2)} ${r >= target ? '✓' : '✗'}`
}
function row (route: string, m: Measured | undefined, ceiling?: { name: string, rps: number | undefined, target: number }) {
  if (m === undefined) return undefined
  const cells = [
    route, num(m.rps), ceiling?.name ?? '—', ceiling?.rps === undefined ? '—' : num(ceiling.rps),
    ratio(m, ceiling?.rps, ceiling?.target), ceiling === undefined ? '—' : `≥ ${ceiling.target}`,
    m.p50, m.p99, failures(m)
  ]
  return `| ${cells.join(' | ')} |`
}

const inFlight = shared.ARGON2_MAX_CONCURRENCY
console.log(`\n${DATABASE_URL === undefined ? 'PGlite' : 'PostgreSQL'}, ${CORES} cores (UV_THREADPOOL_SIZE ${CORES}), ${SECONDS} s per row after a ${WARMUP_SECONDS} s warm-up; ` +
  `${CONNECTIONS} connections, login ${LOGIN_CONNECTIONS}, refresh ${REFRESH_CONNECTIONS} (one session each); ceilings run alone\n`)
console.log('| route | req/s | ceiling (same run) | ceiling req/s | ratio | target | p50 ms | p99 ms | non-2xx |')
console.log('|---|---:|---|---:|---:|---:|---:|---:|---:|')
const rows = [
  row('GET /health/live', live),
  row('GET /health/ready (db ping)', ready),
  row('GET /api/auth/me', me, { name: 'bare Fastify route, @fastify/jwt verify only', rps: verifyOnly?.rps, target: 0.6 }),
  row('GET /api/:userId/tasks?limit=10', tasks),
  row('POST /api/auth/login', login, { name: `raw argon2id verify, ${inFlight} in flight (verifies/s)`, rps: argon2, target: 0.8 }),
  row('POST /api/auth/refresh (rotating)', refreshed?.measured, refreshed?.ceiling === undefined
    ? undefined
    : { name: `SELECT … FOR UPDATE + INSERT tx, postgres.js, ${REFRESH_CONNECTIONS} clients (tx/s)`, rps: refreshed.ceiling, target: 0.5 })
]
for (const r of rows) if (r !== undefined) console.log(r)
if (loginRun?.cpu !== undefined) {
  console.log(`\nCPU per login: the service ${loginRun.cpu.service.toFixed(2)} ms (Argon2 included)` +
    (DATABASE_URL === undefined ? ', the embedded database included.' : `, PostgreSQL ${loginRun.cpu.postgres.toFixed(2)} ms.`))
}
if (refreshed !== undefined) {
  console.log(`\nRefresh: ${refreshed.rotations.rotated} new cookies for ${refreshed.measured.ok} 2xx responses in the measured run` +
    `${DATABASE_URL === undefined ? '; its ceiling is measured on PostgreSQL only' : ''}. ` +
    `Reference: better-auth get-session 400–460 req/s (issue 11, not run here), target ≥ 2× = 800–920 req/s: ${num(refreshed.measured.rps)} req/s.`)
  const ms = (x: number) => x.toFixed(2)
  if (refreshed.cpu !== undefined) {
    console.log(`CPU per refresh: the service ${ms(refreshed.cpu.service)} ms` +
      (DATABASE_URL === undefined ? ', the embedded database included' : `, PostgreSQL ${ms(refreshed.cpu.postgres)} ms`) +
      (refreshed.ceilingCpu === undefined ? '' : `; per ceiling transaction: PostgreSQL ${ms(refreshed.ceilingCpu.postgres)} ms (its client process is not counted).`))
  }
}

if (want('health')) console.log(`\n| probe (${PROBE_CONNECTIONS} connections) | p50 ms idle | p99 ms idle | p50 ms under storm | p99 ms under storm | target p99 | req/s under storm | non-2xx | storm logins/s (non-2xx) |`)
if (want('health')) console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|')
for (const [name, idle, s] of [['GET /health/live', liveIdle, liveStorm], ['GET /health/ready', readyIdle, readyStorm]] as const) {
  if (idle === undefined || s === undefined) continue
  const cells = [
    name, idle.p50, idle.p99, s.probed.p50, `${s.probed.p99} ${s.probed.p99 < 10 ? '✓' : '✗'}`, '< 10',
    num(s.probed.rps), failures(s.probed), `${num(s.storm.rps)} (${failures(s.storm)})`
  ]
  console.log(`| ${cells.join(' | ')} |`)
}
if (want('health')) console.log(`\nLogin storm: ${STORM_CONNECTIONS} connections on POST /api/auth/login while the probe runs.`)
process.exit(0)
