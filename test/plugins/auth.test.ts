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
