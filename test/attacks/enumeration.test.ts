/**
 * Account enumeration over HTTP: an attacker who cannot tell an existing email from an unknown
 * one by the answer of signup, login or password/forgot, nor by how long it takes.
 *
 * Timing: medians of interleaved samples (existing, unknown, existing, unknown, ...), so load
 * from elsewhere on the machine falls on both alike, with the production Argon2 parameters so
 * the hash costs what it costs in production. Two medians within a factor of 2 is a coarse bound:
 * it does not prove the paths indistinguishable, it catches one path skipping the hash (which
 * makes the other many times slower).
 */
import t from 'tap'
import type { App } from '../../src/app.ts'
import { passwordResetTokens } from '../../src/db/schema.ts'
import { assertError, buildTestApp, login, PASSWORD, signup, type Test, uniqueEmail } from '../helper.ts'

const SAMPLES = 20
const WARMUP = 3
const FACTOR = 2

/** Production hashing; limits that would otherwise trip while the same email is tried 20 times. */
const TIMING_ENV = {
  ARGON2_MEMORY_COST: '19456',
  ARGON2_TIME_COST: '2',
  RATE_LIMIT_LOGIN_EMAIL_FAILURES: '10000',
  RATE_LIMIT_FORGOT_MAX: '10000',
  RATE_LIMIT_RESET_EMAILS_PER_HOUR: '100'
}

type Response = Awaited<ReturnType<App['inject']>>

/** Headers that legitimately differ from one response to the next. */
const VARYING = /^(date|x-request-id|x-ratelimit-.*|retry-after)$/

const stableHeaders = (res: Response) =>
  Object.fromEntries(Object.entries(res.headers).filter(([name]) => !VARYING.test(name)))

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

async function timed (request: () => Promise<Response>): Promise<{ ms: number, status: number }> {
  const start = process.hrtime.bigint()
  const res = await request()
  const ms = Number(process.hrtime.bigint() - start) / 1e6
  return { ms, status: res.statusCode }
}

/**
 * Times `existing` and `unknown` alternately, after a warm-up, and asserts every answer had the
 * expected status and the two medians are within FACTOR of each other.
 */
async function assertSimilarTiming (
  t: Test,
  what: string,
  existing: { request: () => Promise<Response>, status: number },
  unknown: { request: () => Promise<Response>, status: number },
  /** Runs before each sample, untimed: lets work the previous request left behind finish first. */
  between: () => Promise<void> = async () => {}
) {
  for (let i = 0; i < WARMUP; i++) {
    await existing.request()
    await unknown.request()
  }
  const a: number[] = []
  const b: number[] = []
  const statuses = new Set<string>()
  for (let i = 0; i < SAMPLES; i++) {
    await between()
    const x = await timed(existing.request)
    await between()
    const y = await timed(unknown.request)
    a.push(x.ms)
    b.push(y.ms)
    statuses.add(`${x.status}/${y.status}`)
  }
  t.same([...statuses], [`${existing.status}/${unknown.status}`], `${what}: every sample took the path under test`)
  const ma = median(a)
  const mb = median(b)
  const ratio = Math.max(ma, mb) / Math.min(ma, mb)
  t.comment(`${what}: median existing ${ma.toFixed(2)} ms, unknown ${mb.toFixed(2)} ms, ratio ${ratio.toFixed(2)}`)
  t.ok(ratio < FACTOR, `${what}: medians ${ma.toFixed(2)} ms (existing) and ${mb.toFixed(2)} ms (unknown) are within a factor of ${FACTOR}, got ${ratio.toFixed(2)}`)
}

const forgot = (app: App, email: string) =>
  app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email }, remoteAddress: '10.0.0.1' })

t.test('login: a wrong password and an unknown email get the same answer, headers included', async (t) => {
  const app = await buildTestApp(t)
  const { email } = await signup(app)
  const wrong = await login(app, email, 'Wrong-Password-1')
  const unknown = await login(app, uniqueEmail('nobody'), 'Wrong-Password-1')
  assertError(t, wrong, 401, 'AUTH_INVALID_CREDENTIALS')
  assertError(t, unknown, 401, 'AUTH_INVALID_CREDENTIALS')
  t.equal(wrong.body, unknown.body, 'byte-identical bodies')
  t.equal(wrong.json().message, 'Invalid email or password')
  t.same(stableHeaders(wrong), stableHeaders(unknown), 'same headers apart from date, request id and rate-limit counters')
  t.notOk('set-cookie' in wrong.headers, 'no cookie either way')
})

t.test('password/forgot: an existing and an unknown email get the same 202, headers included', async (t) => {
  const app = await buildTestApp(t)
  const { email } = await signup(app)
  const known = await forgot(app, email)
  const unknown = await forgot(app, uniqueEmail('nobody'))
  t.equal(known.statusCode, 202)
  t.equal(unknown.statusCode, 202)
  t.equal(known.body, unknown.body, 'byte-identical bodies')
  t.same(stableHeaders(known), stableHeaders(unknown), 'same headers apart from date, request id and rate-limit counters')
})

t.test('signup: an existing email answers about as fast as a new one', async (t) => {
  const app = await buildTestApp(t, { env: TIMING_ENV })
  const { email } = await signup(app)
  const taken = await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email, password: PASSWORD } })
  assertError(t, taken, 409, 'EMAIL_TAKEN')
  await assertSimilarTiming(t, 'signup',
    { request: () => app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email, password: PASSWORD } }), status: 409 },
    { request: () => app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email: uniqueEmail('fresh'), password: PASSWORD } }), status: 201 })
})

t.test('login: a wrong password and an unknown email take about as long (the unknown email verifies a dummy hash)', async (t) => {
  const app = await buildTestApp(t, { env: TIMING_ENV })
  const { email } = await signup(app)
  const nobody = uniqueEmail('nobody')
  await assertSimilarTiming(t, 'login',
    { request: () => login(app, email, 'Wrong-Password-1'), status: 401 },
    { request: () => login(app, nobody, 'Wrong-Password-1'), status: 401 })
})

t.test('password/forgot: an existing and an unknown email take about as long', async (t) => {
  const app = await buildTestApp(t, { env: TIMING_ENV })
  const { email } = await signup(app)
  const nobody = uniqueEmail('nobody')
  await assertSimilarTiming(t, 'forgot',
    { request: () => forgot(app, email), status: 202 },
    { request: () => forgot(app, nobody), status: 202 },
    // The reset itself is carried out after the 202; each answer is timed on its own.
    () => app.services.credentials.settled())
  await app.services.credentials.settled()
  const tokens = await app.db.select({ id: passwordResetTokens.id }).from(passwordResetTokens)
  t.equal(tokens.length, WARMUP + SAMPLES, 'every existing-email request took the full path: a reset token (and an email) each')
})
