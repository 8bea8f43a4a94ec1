/**
 * Ceiling for POST /api/auth/login: raw argon2id verifies of a hash made with the service's
 * parameters, ARGON2_MAX_CONCURRENCY of them in flight (the service's hash gate), no HTTP and no
 * database. Spawned by bench/http.ts with the service's UV_THREADPOOL_SIZE; prints one JSON line.
 */
import { hash, verify } from '@node-rs/argon2'

const num = (name, fallback) => Number(process.env[name] ?? fallback)
// Argon2id: @node-rs/argon2's Algorithm is a const enum, `{}` at run time.
const options = {
  algorithm: 2,
  memoryCost: num('ARGON2_MEMORY_COST', 19456),
  timeCost: num('ARGON2_TIME_COST', 2),
  parallelism: num('ARGON2_PARALLELISM', 1)
}
const inFlight = num('ARGON2_MAX_CONCURRENCY', 4)
const seconds = num('BENCH_SECONDS', 5)
const warmup = num('BENCH_WARMUP_SECONDS', 1)
const password = process.env.BENCH_PASSWORD ?? 'Bench-Passw0rd-1'

const stored = await hash(password, options)
const start = performance.now() + warmup * 1000
const end = start + seconds * 1000
let count = 0

async function worker () {
  while (performance.now() < end) {
    if (!(await verify(stored, password))) throw new Error('argon2 verify failed')
    const t = performance.now()
    if (t >= start && t < end) count++ // only verifies that end inside the measured window
  }
}

await Promise.all(Array.from({ length: inFlight }, worker))
console.log(JSON.stringify({ perSecond: count / seconds, count, inFlight }))
