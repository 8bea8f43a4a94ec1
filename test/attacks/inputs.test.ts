/**
 * Hostile input that used to cost the service: ids PostgreSQL refuses after validation passed
 * them, and made-up reset tokens that bought a password hash and an outbound HIBP call each.
 */
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { assertError, bearer, buildTestApp, latestResetToken, signup } from '../helper.ts'
import { startHibp } from '../hibp-server.ts'

t.test('ids must be plain UUIDs: a urn:uuid: prefix, braces or other forms are a 400, never a 500', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const task = await app.inject({ method: 'POST', url: `/api/${s.user.id}/tasks`, headers: bearer(s.accessToken), payload: { title: 'mine' } })
  const taskId = task.json().id as string
  const forms = (id: string) => [`urn:uuid:${id}`, `URN:UUID:${id}`, `{${id}}`, id.replaceAll('-', ''), `${id} `, `${id}0`]
  for (const bad of forms(s.user.id)) {
    assertError(t, await app.inject({ url: `/api/${encodeURIComponent(bad)}/tasks`, headers: bearer(s.accessToken) }), 400, 'VALIDATION_ERROR')
  }
  for (const bad of forms(taskId)) {
    assertError(t, await app.inject({ url: `/api/${s.user.id}/tasks/${encodeURIComponent(bad)}`, headers: bearer(s.accessToken) }), 400, 'VALIDATION_ERROR')
    assertError(t, await app.inject({ method: 'DELETE', url: `/api/auth/sessions/${encodeURIComponent(bad)}`, headers: bearer(s.accessToken) }), 400, 'VALIDATION_ERROR')
  }
  t.equal((await app.inject({ url: `/api/${s.user.id}/tasks/${taskId.toUpperCase()}`, headers: bearer(s.accessToken) })).statusCode, 200, 'upper case is the same UUID')
  assertError(t, await app.inject({ method: 'DELETE', url: `/api/auth/sessions/${randomUUID()}`, headers: bearer(s.accessToken) }), 404, 'NOT_FOUND')
})

t.test('reset looks the token up first: a made-up token costs no policy check, no breach lookup and no hash', async (t) => {
  const hibp = await startHibp(t)
  const app = await buildTestApp(t, { env: { HIBP_ENABLED: 'true', HIBP_API_URL: hibp.url } })
  let hashes = 0
  const hasher = app.services.passwords
  const original = hasher.hash
  hasher.hash = async (password) => { hashes++; return original(password) }
  t.teardown(() => { hasher.hash = original })
  const reset = (token: string, newPassword: string) =>
    app.inject({ method: 'POST', url: '/api/auth/password/reset', payload: { token, newPassword } })

  const madeUp = 'A'.repeat(43)
  assertError(t, await reset(madeUp, 'weak'), 400, 'RESET_TOKEN_INVALID')
  for (let i = 0; i < 5; i++) assertError(t, await reset(madeUp, `Strong-Passw0rd-${i}`), 400, 'RESET_TOKEN_INVALID')
  t.equal(hibp.state.requests.length, 0, 'no outbound HIBP request')
  t.equal(hashes, 0, 'no Argon2 hash')

  const s = await signup(app)
  hashes = 0
  const lookups = hibp.state.requests.length
  await app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email: s.email } })
  const token = await latestResetToken(app)
  assertError(t, await reset(token, 'weak'), 400, 'PASSWORD_TOO_WEAK')
  t.equal((await reset(token, 'Brand-New-Passw0rd')).statusCode, 200, 'a real token still gets the full checks, then works')
  t.equal(hibp.state.requests.length - lookups, 1)
  t.equal(hashes, 1)
})
