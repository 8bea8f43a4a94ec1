import { type AddressInfo, connect } from 'node:net'
import t from 'tap'
import { users } from '../../src/db/schema.ts'
import { assertError, buildTestApp, logCapture, openTestDb, PASSWORD, uniqueEmail } from '../helper.ts'
import { loggerOptions } from '../../src/logger.ts'

t.test('unknown route: 404 NOT_FOUND in the contract shape', async (t) => {
  const app = await buildTestApp(t)
  const res = await app.inject({ url: '/nope?x=1' })
  assertError(t, res, 404, 'NOT_FOUND')
  t.equal(res.json().message, 'Route GET /nope not found')
  assertError(t, await app.inject({ method: 'DELETE', url: '/api/auth/me' }), 404, 'NOT_FOUND')
})

t.test('body limits and content types', async (t) => {
  const app = await buildTestApp(t)
  const url = '/api/auth/signup'
  const big = JSON.stringify({ email: uniqueEmail(), password: 'A1a' + 'x'.repeat(17 * 1024) })
  assertError(t, await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: big }), 413, 'PAYLOAD_TOO_LARGE')
  assertError(t, await app.inject({ method: 'POST', url, headers: { 'content-type': 'text/plain' }, payload: 'hello' }), 415, 'UNSUPPORTED_MEDIA_TYPE')
  assertError(t, await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'email=a&password=b' }), 415, 'UNSUPPORTED_MEDIA_TYPE')
  assertError(t, await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/xml' }, payload: '<a/>' }), 415, 'UNSUPPORTED_MEDIA_TYPE')

  const malformed = await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: '{"email": "a@b.c", ' })
  assertError(t, malformed, 400, 'VALIDATION_ERROR')
  t.equal(malformed.json().message, 'Body is not valid JSON')
  assertError(t, await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: '' }), 400, 'VALIDATION_ERROR')
  assertError(t, await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: '{"__proto__": {"x": 1}}' }), 400, 'VALIDATION_ERROR')
  assertError(t, await app.inject({ method: 'POST', url }), 400, 'VALIDATION_ERROR')
  const ok = await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json; charset=utf-8' }, payload: JSON.stringify({ email: uniqueEmail(), password: PASSWORD }) })
  t.equal(ok.statusCode, 201, 'JSON with a charset is accepted')
  t.equal((await app.db.select().from(users)).length, 1, 'only the valid request wrote')
})

t.test('validation errors name the field', async (t) => {
  const app = await buildTestApp(t)
  const res = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: 'x@example.com' } })
  assertError(t, res, 400, 'VALIDATION_ERROR')
  t.match(res.json().message, /password/)
  const q = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: 'bad', password: 'x' } })
  t.match(q.json().message, /body\/email/)
})

t.test('an unexpected error is a bare 500; the details go to the log only', async (t) => {
  const logs = logCapture()
  const app = await buildTestApp(t, {
    logger: loggerOptions('info', logs.stream),
    setup: (app) => {
      app.get('/boom', async () => { throw new Error('relation "secret_table" does not exist at SELECT * FROM users') })
    }
  })
  const res = await app.inject({ url: '/boom' })
  assertError(t, res, 500, 'INTERNAL_ERROR')
  t.equal(res.json().message, 'Internal Server Error')
  t.notMatch(res.body, /secret_table|SELECT|at /)
  t.match(logs.text(), /secret_table/, 'the full error is logged')
  t.match(logs.text(), /"stack"/)
})

t.test('database down: API routes answer 503 SERVICE_UNAVAILABLE, never a stack', async (t) => {
  const db = await openTestDb()
  const app = await buildTestApp(t, { db })
  await db.drop()
  const res = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: uniqueEmail(), password: PASSWORD } })
  assertError(t, res, 503, 'SERVICE_UNAVAILABLE')
})

t.test('malformed HTTP and oversized headers get the contract shape too', async (t) => {
  const app = await buildTestApp(t)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  const raw = (request: string) => new Promise<string>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.end(request))
    let out = ''
    socket.on('data', (d) => { out += d })
    socket.on('close', () => resolve(out))
    socket.on('error', reject)
  })
  const garbage = await raw('THIS IS NOT HTTP\r\n\r\n')
  t.match(garbage, /^HTTP\/1\.1 400 /)
  t.same(JSON.parse(garbage.slice(garbage.indexOf('\r\n\r\n') + 4)), { statusCode: 400, code: 'VALIDATION_ERROR', error: 'Bad Request', message: 'Malformed HTTP request' })
  const huge = await raw(`GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)
  t.match(huge, /^HTTP\/1\.1 431 /)
  t.match(huge, /"code":"PAYLOAD_TOO_LARGE"/)
  const bad = await app.inject({ url: '/api/%E0%A4%A' })
  t.equal(bad.statusCode, 400)
  t.equal(bad.json().code, 'VALIDATION_ERROR')
})
