import t from 'tap'
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
