/**
 * GET /metrics as Prometheus scrapes it: the text format, parsed, after real flows.
 */
import t from 'tap'
import type { App } from '../../src/app.ts'
import { loggerOptions } from '../../src/logger.ts'
import { assertError, buildTestApp, isVerificationMail, login, logCapture, readMail, signup, uniqueEmail } from '../helper.ts'
import { startHibp } from '../hibp-server.ts'

/** The value of one sample (`name{a="b",…} value`) in a Prometheus text document; undefined when absent. */
function sample (text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const found = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]))
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(m[3])
  }
  return undefined
}

const scrape = async (app: App, headers: Record<string, string> = {}) => app.inject({ url: '/metrics', headers })

t.test('after real flows, the scrape counts requests, auth events, limits, breach checks and mail', async (t) => {
  const hibp = await startHibp(t, { 'Breached-Passw0rd-1': 3 })
  const app = await buildTestApp(t, { env: { HIBP_ENABLED: 'true', HIBP_API_URL: hibp.url, RATE_LIMIT_LOGIN_MAX: '2' } })
  const s = await signup(app)
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email: uniqueEmail(), password: 'Breached-Passw0rd-1' } }), 400, 'PASSWORD_BREACHED')
  await login(app, s.email, 'Wrong-Passw0rd-1')
  await login(app, s.email, 'Wrong-Passw0rd-2')
  assertError(t, await login(app, s.email), 429, 'RATE_LIMITED')
  await app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email: s.email } })
  await app.services.credentials.settled()

  const before = await scrape(app)
  t.equal(before.statusCode, 200)
  t.match(before.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  t.equal(sample(before.body, 'gatehouse_outbox_pending'), 2, 'the reset email waits, and the signup\'s verification mail')
  const mail = await readMail(app, { verification: true })
  t.equal(mail.length, 2)
  t.equal(mail.filter(isVerificationMail).length, 1, 'one of them the signup\'s verification mail')
  const m = (await scrape(app)).body

  t.ok((sample(m, 'gatehouse_http_request_duration_seconds_count', { route: '/api/auth/signup', method: 'POST', status_class: '2xx' }) ?? 0) >= 1, 'requests by route pattern, method, status class')
  t.equal(sample(m, 'gatehouse_http_request_duration_seconds_count', { route: '/api/auth/login', method: 'POST', status_class: '4xx' }), 3)
  t.equal(sample(m, 'gatehouse_auth_events_total', { type: 'signup', outcome: 'success' }), 1)
  t.equal(sample(m, 'gatehouse_auth_events_total', { type: 'login_failure', outcome: 'failure' }), 2)
  t.equal(sample(m, 'gatehouse_auth_events_total', { type: 'password_reset_requested', outcome: 'success' }), 1)
  t.equal(sample(m, 'gatehouse_rate_limited_total', { limit: 'POST /api/auth/login' }), 1, 'the per-IP login limit, by name')
  t.equal(sample(m, 'gatehouse_hibp_checks_total', { outcome: 'ok' }), 1)
  t.equal(sample(m, 'gatehouse_hibp_checks_total', { outcome: 'breached' }), 1)
  t.equal(sample(m, 'gatehouse_outbox_deliveries_total', { outcome: 'sent' }), 2, 'the reset email and the signup\'s verification mail')
  t.equal(sample(m, 'gatehouse_outbox_pending'), 0)
  t.equal(sample(m, 'gatehouse_outbox_oldest_pending_seconds'), 0)
  t.ok((sample(m, 'process_cpu_user_seconds_total') ?? 0) > 0, 'process metrics')
  t.ok(sample(m, 'nodejs_heap_size_used_bytes') !== undefined)
  t.notMatch(m, s.email, 'no email address in any label')
})

t.test('METRICS_TOKEN: a Bearer token is required', async (t) => {
  const token = 'scrape-token-0123456789'
  const app = await buildTestApp(t, { env: { METRICS_TOKEN: token } })
  assertError(t, await scrape(app), 401, 'AUTH_REQUIRED')
  assertError(t, await scrape(app, { authorization: 'Bearer wrong-token-0123456789' }), 401, 'TOKEN_INVALID')
  assertError(t, await scrape(app, { authorization: token }), 401, 'TOKEN_INVALID')
  t.equal((await scrape(app, { authorization: `Bearer ${token}` })).statusCode, 200)
})

t.test('not rate limited, not logged at info, and absent with METRICS_ENABLED=false', async (t) => {
  const logs = logCapture()
  const app = await buildTestApp(t, { env: { RATE_LIMIT_MAX: '2' }, logger: loggerOptions('info', logs.stream) })
  for (let i = 0; i < 5; i++) t.equal((await scrape(app)).statusCode, 200, `scrape ${i + 1}`)
  t.notMatch(logs.text(), /"url":"\/metrics"/, 'no request log lines')
  assertError(t, await app.inject({ url: '/api/auth/me' }), 401, 'AUTH_REQUIRED')
  assertError(t, await app.inject({ url: '/api/auth/me' }), 401, 'AUTH_REQUIRED')
  assertError(t, await app.inject({ url: '/api/auth/me' }), 429, 'RATE_LIMITED')
  t.equal(sample((await scrape(app)).body, 'gatehouse_rate_limited_total', { limit: 'global' }), 1)

  const off = await buildTestApp(t, { env: { METRICS_ENABLED: 'false' } })
  assertError(t, await scrape(off), 404, 'NOT_FOUND')
})
