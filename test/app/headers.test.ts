import { type AddressInfo, connect } from 'node:net'
import t from 'tap'
import { SECURITY_HEADERS } from '../../plugins/security.ts'
import { assertError, bearer, buildTestApp, decodeJwt, login, PASSWORD, signup, type Test, uniqueEmail } from '../helper.ts'

/**
 * What helmet sends with this app's options. Pinned here, not read from the app, so that a change
 * to the policy (or to helmet's defaults) is a change someone reviews.
 */
const EXPECTED: Record<string, string> = {
  'content-security-policy': "default-src 'none';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'none';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests",
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-site',
  'origin-agent-cluster': '?1',
  'referrer-policy': 'no-referrer',
  'strict-transport-security': 'max-age=31536000; includeSubDomains',
  'x-content-type-options': 'nosniff',
  'x-dns-prefetch-control': 'off',
  'x-download-options': 'noopen',
  'x-frame-options': 'SAMEORIGIN',
  'x-permitted-cross-domain-policies': 'none',
  'x-xss-protection': '0'
}

type Headers = Record<string, string | string[] | number | undefined>

function assertSecurityHeaders (t: Test, headers: Headers, what: string) {
  const got = Object.fromEntries(Object.keys(EXPECTED).map((name) => [name, headers[name]]))
  t.same(got, EXPECTED, `${what}: every security header`)
  t.notOk('x-powered-by' in headers, `${what}: no x-powered-by`)
}

t.test('the exported header set is exactly what helmet sends on a normal response', async (t) => {
  t.same(SECURITY_HEADERS, EXPECTED)
  const app = await buildTestApp(t)
  const res = await app.inject({ url: '/health/live' })
  t.equal(res.statusCode, 200)
  assertSecurityHeaders(t, res.headers, 'GET /health/live')
})

t.test('successful responses carry the security headers: 200, 201 and 204', async (t) => {
  const app = await buildTestApp(t)
  const created = await signup(app)
  t.equal(created.res.statusCode, 201)
  assertSecurityHeaders(t, created.res.headers, '201 signup')

  const me = await app.inject({ url: '/api/auth/me', headers: bearer(created.accessToken) })
  t.equal(me.statusCode, 200)
  t.match(me.headers['content-type'], /^application\/json/)
  assertSecurityHeaders(t, me.headers, '200 me')

  const other = await login(app, created.email)
  t.equal(other.statusCode, 200)
  assertSecurityHeaders(t, other.headers, '200 login')
  const deleted = await app.inject({
    method: 'DELETE', url: `/api/auth/sessions/${decodeJwt(other.json().accessToken).sid}`, headers: bearer(created.accessToken)
  })
  t.equal(deleted.statusCode, 204)
  t.equal(deleted.body, '')
  assertSecurityHeaders(t, deleted.headers, '204 session deleted')
})

t.test('error responses carry the security headers: 400, 401, 403, 404, 413, 415', async (t) => {
  const app = await buildTestApp(t)
  const { accessToken } = await signup(app)
  const url = '/api/auth/signup'

  const invalid = await app.inject({ method: 'POST', url, payload: { email: 'not-an-email', password: PASSWORD } })
  assertError(t, invalid, 400, 'VALIDATION_ERROR')
  assertSecurityHeaders(t, invalid.headers, '400 validation')

  const unauthenticated = await app.inject({ url: '/api/auth/me' })
  assertError(t, unauthenticated, 401, 'AUTH_REQUIRED')
  assertSecurityHeaders(t, unauthenticated.headers, '401')

  const forbidden = await app.inject({ url: '/api/00000000-0000-4000-8000-000000000000/tasks', headers: bearer(accessToken) })
  assertError(t, forbidden, 403, 'FORBIDDEN')
  assertSecurityHeaders(t, forbidden.headers, '403')

  const missing = await app.inject({ url: '/no/such/route' })
  assertError(t, missing, 404, 'NOT_FOUND')
  assertSecurityHeaders(t, missing.headers, '404 unknown route')

  const big = JSON.stringify({ email: uniqueEmail(), password: 'A1a' + 'x'.repeat(17 * 1024) })
  const tooLarge = await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: big })
  assertError(t, tooLarge, 413, 'PAYLOAD_TOO_LARGE')
  assertSecurityHeaders(t, tooLarge.headers, '413')

  const unsupported = await app.inject({ method: 'POST', url, headers: { 'content-type': 'text/plain' }, payload: 'hello' })
  assertError(t, unsupported, 415, 'UNSUPPORTED_MEDIA_TYPE')
  assertSecurityHeaders(t, unsupported.headers, '415')
})

t.test('a request refused by the rate limiter (429) carries the security headers', async (t) => {
  const app = await buildTestApp(t, { env: { RATE_LIMIT_MAX: '2' } })
  const responses = []
  for (let i = 0; i < 3; i++) responses.push(await app.inject({ url: '/api/auth/me', remoteAddress: '10.9.9.9' }))
  t.same(responses.map((r) => r.statusCode), [401, 401, 429], 'the third request is over the limit of 2')
  const limited = responses[2]!
  assertError(t, limited, 429, 'RATE_LIMITED')
  assertSecurityHeaders(t, limited.headers, '429')
})

t.test('an unexpected error (500) carries the security headers', async (t) => {
  const app = await buildTestApp(t, {
    setup: (app) => { app.get('/boom', async () => { throw new Error('kaboom') }) }
  })
  const res = await app.inject({ url: '/boom' })
  assertError(t, res, 500, 'INTERNAL_ERROR')
  assertSecurityHeaders(t, res.headers, '500')
})

t.test('a malformed URL, answered before routing, carries the security headers', async (t) => {
  const app = await buildTestApp(t)
  for (const url of ['/%E0%A4%A', '/api/auth/%E0%A4%A']) {
    const res = await app.inject({ url })
    assertError(t, res, 400, 'VALIDATION_ERROR')
    assertSecurityHeaders(t, res.headers, `GET ${url}`)
  }
})

/** Writes raw bytes to the server and returns the status code, headers and body it answered. */
function rawRequest (port: number, request: string) {
  return new Promise<{ status: number, headers: Record<string, string>, body: string }>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.end(request))
    let out = ''
    socket.setEncoding('latin1')
    socket.on('data', (d: string) => { out += d })
    socket.on('error', reject)
    socket.on('close', () => {
      const end = out.indexOf('\r\n\r\n')
      if (end < 0) return reject(new Error(`no complete HTTP head in ${JSON.stringify(out)}`))
      const [statusLine = '', ...lines] = out.slice(0, end).split('\r\n')
      const headers: Record<string, string> = {}
      for (const line of lines) {
        const colon = line.indexOf(':')
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
      }
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body: out.slice(end + 4) })
    })
  })
}

t.test('requests Node\'s HTTP parser rejects get the security headers on the raw 400 and 431', async (t) => {
  const app = await buildTestApp(t)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo

  const garbage = await rawRequest(port, 'THIS IS NOT HTTP\r\n\r\n')
  t.equal(garbage.status, 400)
  t.same(JSON.parse(garbage.body), { statusCode: 400, code: 'VALIDATION_ERROR', error: 'Bad Request', message: 'Malformed HTTP request' })
  t.equal(garbage.headers['content-length'], String(Buffer.byteLength(garbage.body)))
  assertSecurityHeaders(t, garbage.headers, 'raw 400 malformed request line')

  const huge = await rawRequest(port, `GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)
  t.equal(huge.status, 431)
  t.equal(JSON.parse(huge.body).code, 'PAYLOAD_TOO_LARGE')
  t.match(huge.headers['content-type'], /^application\/json/)
  assertSecurityHeaders(t, huge.headers, 'raw 431 oversized headers')

  // The same socket path still serves ordinary requests with the headers.
  const live = await rawRequest(port, 'GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  t.equal(live.status, 200)
  assertSecurityHeaders(t, live.headers, 'GET /health/live over a socket')
})
