import { eq } from 'drizzle-orm'
import t from 'tap'
import { users } from '../../src/db/schema.ts'
import { assertError, bearer, buildTestApp, signup } from '../helper.ts'

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

  await app.db.update(users).set({ role: 'admin' }).where(eq(users.id, s.user.id))
  const promoted = await app.inject({ url: '/api/admin/ping', headers: bearer(s.accessToken) })
  t.equal(promoted.statusCode, 200, 'promotion counts at once, though the token still says role user')
  t.same(promoted.json(), { ok: true })

  await app.db.update(users).set({ role: 'user' }).where(eq(users.id, s.user.id))
  assertError(t, await app.inject({ url: '/api/admin/ping', headers: bearer(s.accessToken) }), 403, 'ADMIN_REQUIRED')
  await app.db.update(users).set({ role: 'admin', isActive: false }).where(eq(users.id, s.user.id))
  assertError(t, await app.inject({ url: '/api/admin/ping', headers: bearer(s.accessToken) }), 401, 'SESSION_REVOKED')
})
