/**
 * Ceiling for POST /api/auth/refresh on PostgreSQL: the bare shape of a rotation, one transaction
 * of `SELECT … FOR UPDATE` of a client's current row + `INSERT` of its successor, through
 * postgres.js with the service's pool size. Each virtual client walks its own chain of rows, so
 * clients never wait on each other's locks (as refreshes of different users do not).
 * Spawned by bench/http.ts; prints one JSON line.
 */
import { randomBytes } from 'node:crypto'
import postgres from 'postgres'

const num = (name, fallback) => Number(process.env[name] ?? fallback)
const clients = num('BENCH_CLIENTS', 32)
const seconds = num('BENCH_SECONDS', 5)
const warmup = num('BENCH_WARMUP_SECONDS', 1)
const token = () => randomBytes(32).toString('base64url')

const sql = postgres(process.env.DATABASE_URL, { max: num('DB_POOL_MAX', 10), onnotice: () => {} })
await sql`drop table if exists bench_rotation`
await sql`create table bench_rotation (id bigserial primary key, parent bigint, token text not null)`
const heads = await sql`insert into bench_rotation ${sql(Array.from({ length: clients }, () => ({ token: token() })))} returning id`

const start = performance.now() + warmup * 1000
const end = start + seconds * 1000
let count = 0

async function client (head) {
  let current = head
  while (performance.now() < end) {
    current = await sql.begin(async (tx) => {
      await tx`select id, token from bench_rotation where id = ${current} for update`
      const [row] = await tx`insert into bench_rotation (parent, token) values (${current}, ${token()}) returning id`
      return row.id
    })
    const t = performance.now()
    if (t >= start && t < end) count++
  }
}

try {
  await Promise.all(heads.map((h) => client(h.id)))
} finally {
  await sql`drop table if exists bench_rotation`
  await sql.end()
}
console.log(JSON.stringify({ perSecond: count / seconds, count, clients }))
