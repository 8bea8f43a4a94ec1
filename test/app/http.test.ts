import { eq } from 'drizzle-orm'
import t from 'tap'
import { authEvents, sessions } from '../../src/db/schema.ts'
import { buildTestApp } from '../helper.ts'

t.test('OpenAPI document lists every route with its schemas; the UI is served', async (t) => {
  const app = await buildTestApp(t)
  const res = await app.inject({ url: '/docs/json' })
  t.equal(res.statusCode, 200)
  const doc = res.json()
  t.match(doc.openapi, /^3\./)
  const routes = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
    .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)).sort()
  for (const r of [
    'POST /api/auth/signup', 'POST /api/auth/login', 'GET /api/auth/me', 'GET /health/live', 'GET /health/ready',
    'GET /api/{userId}/tasks', 'POST /api/{userId}/tasks', 'GET /api/{userId}/tasks/{taskId}',
    'PATCH /api/{userId}/tasks/{taskId}', 'DELETE /api/{userId}/tasks/{taskId}'
  ]) t.ok(routes.includes(r), `documents ${r}`)
  const signup = doc.paths['/api/auth/signup'].post
  t.ok(signup.requestBody.content['application/json'].schema.properties.email, 'request body schema')
  t.ok(signup.responses['201'], 'response schema')
  t.ok(doc.components.schemas.Error, 'shared error schema')
  const ui = await app.inject({ url: '/docs' })
  t.equal(ui.statusCode, 200)
  t.match(ui.headers['content-type'], /text\/html/)
  t.match(ui.body, /swagger/i)
})

t.test('CORS: credentials only for the configured origins', async (t) => {
  const app = await buildTestApp(t, { env: { CORS_ORIGINS: 'https://app.example.com, https://admin.example.com' } })
  const preflight = await app.inject({
    method: 'OPTIONS',
    url: '/api/auth/login',
    headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' }
  })
  t.equal(preflight.statusCode, 204)
  t.equal(preflight.headers['access-control-allow-origin'], 'https://app.example.com')
  t.equal(preflight.headers['access-control-allow-credentials'], 'true')

  const allowed = await app.inject({ url: '/health/live', headers: { origin: 'https://admin.example.com' } })
  t.equal(allowed.headers['access-control-allow-origin'], 'https://admin.example.com')
  t.equal(allowed.headers['access-control-allow-credentials'], 'true')

  const evil = await app.inject({ url: '/health/live', headers: { origin: 'https://evil.example.com' } })
  t.equal(evil.headers['access-control-allow-origin'], undefined)
  t.equal(evil.headers['access-control-allow-credentials'], undefined)
})

t.test('security headers', async (t) => {
  const app = await buildTestApp(t)
  const res = await app.inject({ url: '/health/live' })
  t.equal(res.headers['x-content-type-options'], 'nosniff')
  t.match(res.headers['content-security-policy'], /default-src 'none'/)
  t.match(res.headers['strict-transport-security'], /max-age=/)
  t.equal(res.headers['x-powered-by'], undefined)
})

t.test('TRUST_PROXY: the client IP comes from X-Forwarded-For only when the proxy is trusted', async (t) => {
  const payload = { email: 'proxy-user@example.com', password: 'Correct-Horse-9' }
  const forwarded = { 'x-forwarded-for': '198.51.100.7' }

  const direct = await buildTestApp(t)
  const a = await direct.inject({ method: 'POST', url: '/api/auth/signup', payload, headers: forwarded, remoteAddress: '10.0.0.5' })
  t.equal(a.statusCode, 201)
  const [untrusted] = await direct.db.select().from(sessions)
  t.equal(untrusted?.ipAddress, '10.0.0.5', 'without TRUST_PROXY the header is ignored (clients cannot pick their IP)')

  const proxied = await buildTestApp(t, { env: { TRUST_PROXY: '10.0.0.0/8', RATE_LIMIT_LOGIN_MAX: '2' } })
  const b = await proxied.inject({ method: 'POST', url: '/api/auth/signup', payload, headers: forwarded, remoteAddress: '10.0.0.5' })
  t.equal(b.statusCode, 201)
  const [trusted] = await proxied.db.select().from(sessions)
  t.equal(trusted?.ipAddress, '198.51.100.7', 'behind a trusted proxy the forwarded address counts')

  // The per-IP limit follows the forwarded client, not the proxy's own address.
  const loginFrom = (client: string) => proxied.inject({ method: 'POST', url: '/api/auth/login', payload, headers: { 'x-forwarded-for': client }, remoteAddress: '10.0.0.5' })
  t.equal((await loginFrom('198.51.100.8')).statusCode, 200)
  t.equal((await loginFrom('198.51.100.8')).statusCode, 200)
  t.equal((await loginFrom('198.51.100.8')).statusCode, 429, 'that client is limited')
  t.equal((await loginFrom('198.51.100.9')).statusCode, 200, 'another client behind the same proxy is not')
  const spoofed = await proxied.inject({ method: 'POST', url: '/api/auth/login', payload, headers: { 'x-forwarded-for': '198.51.100.10' }, remoteAddress: '203.0.113.1' })
  t.equal(spoofed.statusCode, 200)
  const events = await proxied.db.select().from(authEvents).where(eq(authEvents.eventType, 'login_success'))
  t.ok(events.some((e) => e.ipAddress === '203.0.113.1'), 'an untrusted peer\'s X-Forwarded-For is ignored')
})
