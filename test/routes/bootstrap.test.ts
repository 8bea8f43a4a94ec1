import { eq } from 'drizzle-orm'
import t from 'tap'
import { buildApp } from '../../src/app.ts'
import { authEvents, users } from '../../src/db/schema.ts'
import { assertError, bearer, buildTestApp, login, openTestDb, PASSWORD, signup, testConfig } from '../helper.ts'

const ADMIN = { ADMIN_EMAIL: 'Root@Example.com', ADMIN_PASSWORD: 'Bootstrap-Passw0rd-1' }

t.test('start-up creates the admin with passwordMustChange; it must change its password first', async (t) => {
  const app = await buildTestApp(t, { env: ADMIN })
  const [admin] = await app.db.select().from(users)
  t.match(admin, { email: 'root@example.com', role: 'admin', passwordMustChange: true, isActive: true })
  const [event] = await app.db.select().from(authEvents)
  t.match(event, { eventType: 'signup', userId: admin?.id, metadata: { bootstrapAdmin: true } })

  const res = await login(app, 'root@example.com', ADMIN.ADMIN_PASSWORD)
  t.equal(res.statusCode, 200)
  t.equal(res.json().user.passwordMustChange, true)
  const token = res.json().accessToken as string
  const h = bearer(token)

  // Everything but me, logout, logout-all and password/change is closed.
  assertError(t, await app.inject({ url: `/api/${admin?.id}/tasks`, headers: h }), 403, 'PASSWORD_CHANGE_REQUIRED')
  assertError(t, await app.inject({ url: '/api/auth/sessions', headers: h }), 403, 'PASSWORD_CHANGE_REQUIRED')
  t.equal((await app.inject({ url: '/api/auth/me', headers: h })).statusCode, 200)

  const changed = await app.inject({ method: 'POST', url: '/api/auth/password/change', headers: h, payload: { currentPassword: ADMIN.ADMIN_PASSWORD, newPassword: 'Chosen-Admin-Passw0rd' } })
  t.equal(changed.statusCode, 200)
  t.equal((await app.inject({ url: '/api/auth/sessions', headers: h })).statusCode, 200, 'open after the change, same session')
  const [after] = await app.db.select().from(users).where(eq(users.id, admin?.id ?? ''))
  t.equal(after?.passwordMustChange, false)

  const second = await login(app, 'root@example.com', 'Chosen-Admin-Passw0rd')
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout-all', headers: bearer(second.json().accessToken) })).statusCode, 200)
})

t.test('logout and logout-all stay open while the password must change', async (t) => {
  const app = await buildTestApp(t, { env: ADMIN })
  const a = await login(app, 'root@example.com', ADMIN.ADMIN_PASSWORD)
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(a.json().accessToken) })).statusCode, 200)
  const b = await login(app, 'root@example.com', ADMIN.ADMIN_PASSWORD)
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout-all', headers: bearer(b.json().accessToken) })).statusCode, 200)
})

t.test('an existing account is never touched', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app, 'root@example.com')
  const db = app.dbHandle
  const again = await buildApp({ config: testConfig(ADMIN), db, logger: false })
  t.teardown(() => again.close())
  await again.ready()
  const rows = await app.db.select().from(users)
  t.equal(rows.length, 1)
  t.match(rows[0], { id: s.user.id, role: 'user', passwordMustChange: false })
  t.equal((await login(app, 'root@example.com', PASSWORD)).statusCode, 200, 'its password unchanged')
})

t.test('instances starting at once create exactly one admin', async (t) => {
  const db = await openTestDb()
  t.teardown(() => db.drop())
  const apps = await Promise.all(Array.from({ length: 4 }, () => buildApp({ config: testConfig(ADMIN), db, logger: false })))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  await Promise.all(apps.map((a) => a.ready()))
  const rows = await db.db.select().from(users)
  t.equal(rows.length, 1)
  t.equal(rows[0]?.role, 'admin')
  t.equal((await db.db.select().from(authEvents)).length, 1, 'one creation recorded')
})

t.test('a weak ADMIN_PASSWORD stops start-up', async (t) => {
  t.throws(() => testConfig({ ADMIN_EMAIL: 'a@example.com', ADMIN_PASSWORD: 'weak' }), /ADMIN_PASSWORD fails the password policy/)
  t.throws(() => testConfig({ ADMIN_EMAIL: 'not-an-email', ADMIN_PASSWORD: 'Strong-Passw0rd-1' }), /ADMIN_EMAIL must be an email/)
})
