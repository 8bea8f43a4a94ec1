/**
 * The plans of the admin audit queries on a realistically large log.
 *
 *   PLAN_DATABASE_URL=postgres://…/scratch npx tsx bench/audit-plans.ts
 *
 * Migrates the database it is given, fills `auth_events` with synthetic rows (PLAN_ROWS,
 * default 500,000: 5,000 accounts, 2,000 addresses, the contract's event types, 90 days) and
 * prints `EXPLAIN (ANALYZE, BUFFERS)` for every filter of GET /api/admin/auth-events and for the
 * suspicious-patterns report, so the README shows what PostgreSQL really does. It writes to the
 * database: point it at a scratch one.
 */
import { sql } from 'drizzle-orm'
import { connectPostgres, rowsOf } from '../src/db/client.ts'
import { createAdminService } from '../src/services/admin.ts'
import { createAccountStore } from '../src/services/account-store.ts'
import { createAuditLog } from '../src/services/audit.ts'
import { silentTelemetry } from '../src/services/telemetry.ts'

const url = process.env.PLAN_DATABASE_URL
if (url === undefined) throw new Error('set PLAN_DATABASE_URL to a scratch PostgreSQL database')
const rows = Number(process.env.PLAN_ROWS ?? 500_000)
const handle = await connectPostgres(url)
await handle.migrate()
const { db } = handle
const now = () => new Date()

await db.execute(sql`truncate auth_events`)
await db.execute(sql`
  insert into auth_events (email, event_type, ip_address, user_agent, success, failure_reason, created_at)
  select 'user' || (i % 5000) || '@example.com',
         (array['login_success','login_failure','refresh','logout','mfa_failure','signup'])[1 + i % 6],
         '198.51.' || (i % 2000 / 250) || '.' || (i % 250),
         'bench', i % 6 not in (1, 4), case when i % 6 in (1, 4) then 'invalid_password' end,
         now() - (i % 129600) * interval '1 minute'
  from generate_series(1, ${rows}) as i`)
await db.execute(sql`analyze auth_events`)

const store = createAccountStore({ db, now, checkTtlSeconds: 0 })
const admin = createAdminService({ db, now, store, audit: createAuditLog({ db, now, telemetry: silentTelemetry() }) })

/** drizzle's query with its parameters written in as literals (EXPLAIN cannot take them). */
function literal (q: { sql: string, params: unknown[] }): string {
  return q.sql.replace(/\$(\d+)/g, (_, i: string) => {
    const v = q.params[Number(i) - 1]
    return typeof v === 'number' ? String(v) : `'${String(v).replace(/'/g, "''")}'`
  })
}

async function explain (title: string, query: string) {
  const plan = rowsOf(await db.execute(sql.raw(`explain (analyze, buffers, costs off, timing on) ${query}`)))
  console.log(`\n-- ${title}\n${plan.map((r) => r['QUERY PLAN']).join('\n')}`)
}

const since = new Date(Date.now() - 86_400_000)
const filters = {
  'no filter': {},
  userId: { userId: '00000000-0000-4000-8000-000000000000' },
  email: { email: 'user42@example.com' },
  type: { type: 'login_failure' },
  ip: { ip: '198.51.3.7' },
  since: { since },
  'before (next page)': { before: since },
  'before + beforeId (cursor)': { before: since, beforeId: '80000000-0000-4000-8000-000000000000' },
  'ip + cursor': { ip: '198.51.3.7', before: since, beforeId: '80000000-0000-4000-8000-000000000000' },
  'email + type + since': { email: 'user42@example.com', type: 'login_failure', since }
}
console.log(`auth_events: ${rows} rows`)
for (const [title, f] of Object.entries(filters)) await explain(`auth-events, ${title}`, literal(admin.eventsQuery({ ...f, limit: 100 }).toSQL()))
for (const [title, q] of Object.entries(admin.suspiciousQueries({ windowMinutes: 15, threshold: 5 }))) {
  await explain(`suspicious, ${title}`, literal(q.toSQL()))
}
for (const round of ['first', 'second']) {
  const t0 = performance.now()
  await admin.suspicious({ windowMinutes: 15, threshold: 5 })
  console.log(`\nsuspicious report, ${round} run (four aggregates, 15-minute window): ${(performance.now() - t0).toFixed(1)} ms`)
}
await handle.close()
