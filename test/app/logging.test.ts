import t from 'tap'
import { buildTestApp, logCapture, PASSWORD, uniqueEmail } from '../helper.ts'
import { loggerOptions } from '../../src/logger.ts'

t.test('no password, token or cookie reaches the logs, even at trace level', async (t) => {
  const logs = logCapture()
  const app = await buildTestApp(t, {
    logger: loggerOptions('trace', logs.stream),
    setup: (app) => {
      // A careless log call must still be redacted.
      app.post('/careless', async (request) => {
        request.log.info({ body: request.body }, 'careless body log')
        request.log.info(request.body as object, 'careless top-level log')
        return { ok: true }
      })
    }
  })
  const email = uniqueEmail()
  const password = 'Sekret-Passw0rd-XYZ'
  const signup = await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email, password } })
  t.equal(signup.statusCode, 201)
  const token = signup.json().accessToken as string
  await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password: 'Wrong-Passw0rd-ABC' } })
  await app.inject({
    url: '/api/auth/me',
    headers: { authorization: `Bearer ${token}`, cookie: 'refresh_token=cookie-secret-value-123' }
  })
  await app.inject({
    method: 'POST',
    url: '/careless',
    payload: { password: 'Careless-Passw0rd-1', token: 'careless-token-value', nested: { secret: 'nested-secret-value' }, currentPassword: PASSWORD }
  })

  const setup = await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/setup', headers: { authorization: `Bearer ${token}` }, payload: { password } })
  t.equal(setup.statusCode, 200)
  const totpSecret = setup.json().secret as string
  await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/confirm', headers: { authorization: `Bearer ${token}` }, payload: { code: '000000' } })

  const text = logs.text()
  t.ok(logs.lines.length > 5, 'logs were captured')
  t.match(text, /"reqId"/, 'lines carry request ids')
  t.match(text, /\[Redacted\]/, 'redaction happened')
  for (const secret of [password, 'Wrong-Passw0rd-ABC', token, token.split('.')[2] ?? 'x', 'cookie-secret-value-123',
    'Careless-Passw0rd-1', 'careless-token-value', 'nested-secret-value', PASSWORD, totpSecret]) {
    t.notOk(text.includes(secret), `log does not contain ${secret.slice(0, 12)}…`)
  }
  t.match(text, /careless body log/, 'the careless lines were written (redacted)')
})

t.test('request ids: a sane X-Request-Id is kept and echoed, anything else replaced', async (t) => {
  const app = await buildTestApp(t)
  const kept = await app.inject({ url: '/health/live', headers: { 'x-request-id': 'abc-123.def' } })
  t.equal(kept.headers['x-request-id'], 'abc-123.def')
  const replaced = await app.inject({ url: '/health/live', headers: { 'x-request-id': 'bad id\nwith newline' } })
  t.match(replaced.headers['x-request-id'], /^[0-9a-f-]{36}$/)
  const generated = await app.inject({ url: '/health/live' })
  t.match(generated.headers['x-request-id'], /^[0-9a-f-]{36}$/)
})

t.test('request loggers: lines at enabled levels carry the request id; a route\'s own level holds', async (t) => {
  const logs = logCapture()
  const app = await buildTestApp(t, {
    logger: loggerOptions('info', logs.stream),
    setup: (app) => {
      app.get('/noisy', async (request) => {
        request.log.debug('not at info')
        request.log.warn({ detail: 1 }, 'a warning')
        return { ok: true }
      })
    }
  })
  await app.inject({ url: '/noisy', headers: { 'x-request-id': 'req-noisy-1' } })
  await app.inject({ url: '/health/live', headers: { 'x-request-id': 'req-health-1' } })
  const lines = logs.lines.map((l) => JSON.parse(l) as { reqId?: string, msg?: string, level: number })
  const noisy = lines.filter((l) => l.reqId === 'req-noisy-1').map((l) => l.msg)
  t.same(noisy, ['incoming request', 'a warning', 'request completed'], 'info and warn, not debug, each with the request id')
  t.same(lines.filter((l) => l.reqId === 'req-health-1'), [], 'the health route logs at warn only')
})
