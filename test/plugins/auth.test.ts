import t from 'tap'
import { assertError, bearer, buildTestApp, makeAdmin, setUser, signup } from '../helper.ts'

t.test('requireAdmin: role admin from the database, not from the token', async (t) => {
  const app = await buildTestApp(t, {
    setup: (app) => {
      // A stub admin route: the admin API arrives later, the guard is here now.
      app.get('/api/admin/ping', { onRequest: app.requireAdmin }, async () => ({ ok: true }))
    }
  })
  const s = await signup(app)
  assertError(t, await app.inject({ url: '/api/admin/ping' }), 401, 'AUTH_REQUIRED')
  assertError(t, await app.inject({ url: '/api/admin/ping', headers: bearer(s.accessToken) }), 403, 'ADMIN_REQUIRED')

  await makeAdmin(app, s.user.id)
  const promoted = await app.inject({ url: '/api/admin/ping', headers: bearer(s.accessToken) })
  t.equal(promoted.statusCode, 200, 'promotion counts at once, though the token still says role user')
  t.same(promoted.json(), { ok: true })

  await setUser(app, s.user.id, { role: 'user' })
  assertError(t, await app.inject({ url: '/api/admin/ping', headers: bearer(s.accessToken) }), 403, 'ADMIN_REQUIRED')
  await setUser(app, s.user.id, { role: 'admin', isActive: false })
  assertError(t, await app.inject({ url: '/api/admin/ping', headers: bearer(s.accessToken) }), 401, 'SESSION_REVOKED')
})

t.test('a verified token is remembered by its exact text only: a changed one is checked, an expired one refused', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const me = (token: string) => app.inject({ url: '/api/auth/me', headers: bearer(token) })
  t.equal((await me(s.accessToken)).statusCode, 200)
  t.equal((await me(s.accessToken)).statusCode, 200, 'again, from the remembered verification')

  const [header, payload, signature] = s.accessToken.split('.') as [string, string, string]
  const forged = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>
  forged.role = 'admin'
  const swapped = `${header}.${Buffer.from(JSON.stringify(forged)).toString('base64url')}.${signature}`
  assertError(t, await me(swapped), 401, 'TOKEN_INVALID')
  const flipped = `${header}.${payload}.${signature.slice(0, -2)}${signature.endsWith('AA') ? 'BB' : 'AA'}`
  assertError(t, await me(flipped), 401, 'TOKEN_INVALID')
  assertError(t, await app.inject({ url: '/api/auth/me', headers: { authorization: `bearer  ${s.accessToken}` } }), 401, 'TOKEN_INVALID')

  // Past the token's exp (15 minutes), the remembered verification is no longer used.
  const realNow = Date.now
  Date.now = () => realNow() + 16 * 60_000
  t.teardown(() => { Date.now = realNow })
  assertError(t, await me(s.accessToken), 401, 'TOKEN_EXPIRED')
  Date.now = realNow

  await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(s.accessToken) })
  assertError(t, await me(s.accessToken), 401, 'SESSION_REVOKED')
})
