import { randomBytes, randomUUID } from 'node:crypto'
import { and, eq, isNull } from 'drizzle-orm'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { authEvents, refreshTokens, sessions, users } from '../../src/db/schema.ts'
import {
  assertError, bearer, buildTestApp, decodeJwt, enrolMfa, login, PASSWORD, readMail, refreshCookieIn, setUser,
  signup, signupAdmin, testClock, type Test, uniqueEmail
} from '../helper.ts'

const USER_KEYS = ['createdAt', 'email', 'emailVerified', 'id', 'isActive', 'lastLoginAt', 'mfaEnabled', 'passwordMustChange', 'role']
const SESSION_KEYS = ['createdAt', 'current', 'id', 'ipAddress', 'lastUsedAt', 'userAgent']
const BOOTSTRAP = { ADMIN_EMAIL: 'root@example.com', ADMIN_PASSWORD: 'Bootstrap-Passw0rd-1' }

const listUsers = (app: App, token: string, query: Record<string, string> = {}) =>
  app.inject({ url: '/api/admin/users', query, headers: bearer(token) })
const patchUser = (app: App, token: string, id: string, payload: unknown, extra: { headers?: Record<string, string>, remoteAddress?: string } = {}) =>
  app.inject({ method: 'PATCH', url: `/api/admin/users/${id}`, payload: payload as Record<string, unknown>, ...extra, headers: { ...bearer(token), ...extra.headers } })
const userSessions = (app: App, token: string, id: string) =>
  app.inject({ url: `/api/admin/users/${id}/sessions`, headers: bearer(token) })
const revokeSessions = (app: App, token: string, id: string, extra: { headers?: Record<string, string>, remoteAddress?: string } = {}) =>
  app.inject({ method: 'DELETE', url: `/api/admin/users/${id}/sessions`, ...extra, headers: { ...bearer(token), ...extra.headers } })
const adminEvents = (app: App, token: string, type: string) =>
  app.inject({ url: '/api/admin/auth-events', query: { type }, headers: bearer(token) })
const me = (app: App, token: string) => app.inject({ url: '/api/auth/me', headers: bearer(token) })
const refresh = (app: App, cookie: string) =>
  app.inject({ method: 'POST', url: '/api/auth/refresh', cookies: { refresh_token: cookie } })

/** A user signed up and logged in once more: two live sessions, each with its access token and refresh cookie. */
async function userWithTwoSessions (app: App, email = uniqueEmail()) {
  const s = await signup(app, email)
  const second = await login(app, email, PASSWORD, '10.0.0.2')
  if (second.statusCode !== 200) throw new Error(`login failed: ${second.body}`)
  return {
    id: s.user.id,
    email,
    tokens: [s.accessToken, second.json().accessToken as string],
    cookies: [refreshCookieIn(s.res), refreshCookieIn(second)]
  }
}

/** The user row, as stored. */
async function userRow (app: App, id: string) {
  const [row] = await app.db.select().from(users).where(eq(users.id, id))
  return row
}

/** The user's sessions that are not revoked (expired or not). */
const unrevokedSessions = (app: App, userId: string) =>
  app.db.select().from(sessions).where(and(eq(sessions.userId, userId), isNull(sessions.revokedAt)))

/** The bootstrapped admin (ADMIN_EMAIL/ADMIN_PASSWORD), logged in with its initial password. */
async function bootstrapAdminLogin (app: App) {
  const res = await login(app, BOOTSTRAP.ADMIN_EMAIL, BOOTSTRAP.ADMIN_PASSWORD)
  if (res.statusCode !== 200) throw new Error(`bootstrap admin login failed: ${res.body}`)
  return res.json().accessToken as string
}

/** One call of every admin route (the writes aimed at `targetId`). */
const everyAdminRoute = (targetId: string) => [
  { method: 'GET' as const, url: '/api/admin/users' },
  { method: 'PATCH' as const, url: `/api/admin/users/${targetId}`, payload: { isActive: false } },
  { method: 'GET' as const, url: `/api/admin/users/${targetId}/sessions` },
  { method: 'DELETE' as const, url: `/api/admin/users/${targetId}/sessions` },
  { method: 'GET' as const, url: '/api/admin/auth-events' }
]

// ---- access -----------------------------------------------------------------------------

t.test('without a token every admin route answers 401 AUTH_REQUIRED, a user gets 403 ADMIN_REQUIRED, and nothing is written', async (t) => {
  const app = await buildTestApp(t)
  const user = await signup(app)
  const target = await userWithTwoSessions(app)
  for (const route of everyAdminRoute(target.id)) {
    assertError(t, await app.inject(route), 401, 'AUTH_REQUIRED')
    assertError(t, await app.inject({ ...route, headers: bearer(user.accessToken) }), 403, 'ADMIN_REQUIRED')
  }
  t.match(await userRow(app, target.id), { isActive: true, role: 'user' }, 'the target is still active')
  t.equal((await unrevokedSessions(app, target.id)).length, 2, 'and its sessions live')
  t.equal((await me(app, target.tokens[0]!)).statusCode, 200)
})

t.test('a bootstrapped admin gets 403 PASSWORD_CHANGE_REQUIRED on every admin route until it changes its password', async (t) => {
  const app = await buildTestApp(t, { env: BOOTSTRAP })
  const target = await signup(app)
  const token = await bootstrapAdminLogin(app)
  for (const route of everyAdminRoute(target.user.id)) {
    assertError(t, await app.inject({ ...route, headers: bearer(token) }), 403, 'PASSWORD_CHANGE_REQUIRED')
  }
  t.match(await userRow(app, target.user.id), { isActive: true }, 'the PATCH did nothing')
  t.equal((await unrevokedSessions(app, target.user.id)).length, 1, 'nor the DELETE')

  const changed = await app.inject({
    method: 'POST', url: '/api/auth/password/change', headers: bearer(token),
    payload: { currentPassword: BOOTSTRAP.ADMIN_PASSWORD, newPassword: 'Chosen-Admin-Passw0rd' }
  })
  t.equal(changed.statusCode, 200)
  const list = await listUsers(app, token)
  t.equal(list.statusCode, 200, 'open with the same token once the password is changed')
  t.equal(list.json().total, 2)
})

t.test('the role is read from the database: a user promoted there gets in with its existing token, demoted it is out at once', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  assertError(t, await listUsers(app, s.accessToken), 403, 'ADMIN_REQUIRED')
  await setUser(app, s.user.id, { role: 'admin' })
  t.equal(decodeJwt(s.accessToken).role, 'user', 'the token still says user')
  t.equal((await listUsers(app, s.accessToken)).statusCode, 200, 'promoted: in, with the same token')
  await setUser(app, s.user.id, { role: 'user' })
  assertError(t, await listUsers(app, s.accessToken), 403, 'ADMIN_REQUIRED')
})

// ---- GET /api/admin/users -----------------------------------------------------------------

t.test('users are listed with exactly the public fields: no password hash, no MFA secret', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const admin = await signupAdmin(app)
  const mfa = await enrolMfa(app, clock)
  await setUser(app, mfa.user.id, { passwordMustChange: true })

  const res = await listUsers(app, admin.accessToken)
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.same(Object.keys(body).sort(), ['items', 'total'])
  t.equal(body.total, 2)
  t.equal(body.items.length, 2)
  for (const item of body.items) t.same(Object.keys(item).sort(), USER_KEYS, `exact fields of ${item.email}`)

  const rows = await app.db.select().from(users)
  for (const row of rows) {
    const item = body.items.find((i: { id: string }) => i.id === row.id)
    t.same(item, {
      id: row.id,
      email: row.email,
      emailVerified: row.emailVerified,
      role: row.role,
      isActive: row.isActive,
      mfaEnabled: row.mfaEnabled,
      passwordMustChange: row.passwordMustChange,
      createdAt: row.createdAt.toISOString(),
      lastLoginAt: row.lastLoginAt?.toISOString() ?? null
    }, `${row.email} as stored`)
    t.notOk(res.body.includes(row.passwordHash), 'no password hash in the body')
    if (row.totpSecretEnc !== null) t.notOk(res.body.includes(row.totpSecretEnc), 'no sealed TOTP secret in the body')
  }
  t.match(body.items.find((i: { id: string }) => i.id === mfa.user.id), { mfaEnabled: true, passwordMustChange: true, role: 'user' })
  t.match(body.items.find((i: { id: string }) => i.id === admin.user.id), { role: 'admin', mfaEnabled: false })
  t.notOk(res.body.includes(mfa.secret), 'no TOTP secret in the body')
})

t.test('q matches part of the email case-insensitively, and total counts every match whatever the limit and offset', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const tag = randomBytes(3).toString('hex')
  const needles = [`one.example-part-${tag}@example.com`, `two.example-part-${tag}@example.org`, `example-part-${tag}.three@example.net`]
  for (const email of needles) await signup(app, email)
  await signup(app, `one.example-parts-${tag}x@example.com`) // "example-parts-…x": does not contain the needle
  await signup(app, `example-${tag}@example.com`)

  const q = `ExAmPlE-PaRt-${tag.toUpperCase()}`
  const all = await listUsers(app, admin.accessToken, { q })
  t.equal(all.statusCode, 200)
  t.equal(all.json().total, 3)
  t.same(all.json().items.map((u: { email: string }) => u.email).sort(), [...needles].sort())

  const first = await listUsers(app, admin.accessToken, { q, limit: '2' })
  t.equal(first.json().items.length, 2)
  t.equal(first.json().total, 3, 'total is every match, not the page')
  const second = await listUsers(app, admin.accessToken, { q, limit: '2', offset: '2' })
  t.equal(second.json().items.length, 1)
  t.equal(second.json().total, 3)
  const pages = [...first.json().items, ...second.json().items].map((u: { email: string }) => u.email)
  t.same([...pages].sort(), [...needles].sort(), 'the pages together are every match, once each')
  const past = await listUsers(app, admin.accessToken, { q, offset: '3' })
  t.same(past.json(), { items: [], total: 3 }, 'past the end: no items, the same total')

  const everyone = await listUsers(app, admin.accessToken)
  t.equal(everyone.json().total, 6, 'without q: every user')
  const none = await listUsers(app, admin.accessToken, { q: 'no-such-part' })
  t.same(none.json(), { items: [], total: 0 })
})

t.test('% and _ in q are literal characters, not wildcards', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const tag = randomBytes(3).toString('hex')
  const underscore = `a_b.${tag}@example.com`
  const percent = `100%.${tag}@example.com`
  for (const email of [underscore, `axb.${tag}@example.com`, percent, `100x.${tag}@example.com`]) await signup(app, email)

  const emailsFor = async (q: string) => {
    const res = await listUsers(app, admin.accessToken, { q })
    t.equal(res.statusCode, 200, `q=${q}`)
    return { emails: res.json().items.map((u: { email: string }) => u.email), total: res.json().total }
  }
  t.same(await emailsFor('_'), { emails: [underscore], total: 1 })
  t.same(await emailsFor('a_b'), { emails: [underscore], total: 1 })
  t.same(await emailsFor('%'), { emails: [percent], total: 1 })
  t.same(await emailsFor('100%'), { emails: [percent], total: 1 })
  t.same(await emailsFor('%@'), { emails: [], total: 0 }, 'as a wildcard it would match every email')
  t.same(await emailsFor('\\'), { emails: [], total: 0 }, 'a backslash is literal too (no escape error)')
})

t.test('limit defaults to 50 and goes up to 100', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  for (let i = 0; i < 50; i++) await signup(app)
  const byDefault = await listUsers(app, admin.accessToken)
  t.equal(byDefault.json().items.length, 50)
  t.equal(byDefault.json().total, 51)
  const max = await listUsers(app, admin.accessToken, { limit: '100' })
  t.equal(max.json().items.length, 51)
  const one = await listUsers(app, admin.accessToken, { limit: '1', offset: '0' })
  t.equal(one.json().items.length, 1)
  t.equal(one.json().total, 51)
})

t.test('a limit outside 1–100, a negative offset or a value that is not an integer is 400 VALIDATION_ERROR', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const bad: Array<Record<string, string>> = [
    { limit: '0' }, { limit: '101' }, { limit: '-1' }, { limit: 'abc' }, { limit: '1.5' }, { limit: '' },
    { offset: '-1' }, { offset: 'x' }, { offset: '2.5' }
  ]
  for (const query of bad) assertError(t, await listUsers(app, admin.accessToken, query), 400, 'VALIDATION_ERROR')
})

// ---- PATCH /api/admin/users/:id -----------------------------------------------------------

t.test('deactivating a user revokes every session at once: access tokens, refresh cookies and the rows', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const target = await userWithTwoSessions(app)
  const bystander = await signup(app)
  for (const token of target.tokens) t.equal((await me(app, token)).statusCode, 200, 'live before')

  const res = await patchUser(app, admin.accessToken, target.id, { isActive: false })
  t.equal(res.statusCode, 200)
  t.same(Object.keys(res.json()).sort(), USER_KEYS)
  t.match(res.json(), { id: target.id, email: target.email, isActive: false, role: 'user' })

  for (const token of target.tokens) assertError(t, await me(app, token), 401, 'SESSION_REVOKED')
  for (const cookie of target.cookies) assertError(t, await refresh(app, cookie), 401, 'REFRESH_TOKEN_INVALID')
  const rows = await app.db.select().from(sessions).where(eq(sessions.userId, target.id))
  t.equal(rows.length, 2)
  t.ok(rows.every((r) => r.revokedAt !== null), 'every session row revoked')
  const liveTokens = await app.db.select().from(refreshTokens).where(and(eq(refreshTokens.userId, target.id), isNull(refreshTokens.revokedAt)))
  t.equal(liveTokens.length, 0, 'every refresh token revoked')
  t.same((await userSessions(app, admin.accessToken, target.id)).json(), { items: [] })
  t.equal((await userRow(app, target.id))?.isActive, false)

  t.equal((await me(app, bystander.accessToken)).statusCode, 200, 'other users untouched')
  t.equal((await refresh(app, refreshCookieIn(bystander.res))).statusCode, 200)
})

t.test('a deactivated user cannot log in (403 ACCOUNT_DISABLED, a wrong password still 401) and forgot sends it no mail', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const target = await signup(app)
  const control = await signup(app)
  t.equal((await patchUser(app, admin.accessToken, target.user.id, { isActive: false })).statusCode, 200)

  assertError(t, await login(app, target.email, PASSWORD), 403, 'ACCOUNT_DISABLED')
  assertError(t, await login(app, target.email, 'Wrong-Passw0rd-1'), 401, 'AUTH_INVALID_CREDENTIALS')
  t.equal((await unrevokedSessions(app, target.user.id)).length, 0, 'no session opened')

  for (const email of [target.email, control.email]) {
    const res = await app.inject({ method: 'POST', url: '/api/auth/password/forgot', payload: { email } })
    t.equal(res.statusCode, 202)
  }
  await app.services.credentials.settled()
  const resets = (await readMail(app)).filter((m) => /reset-password\?token=/.test(m.text))
  t.same(resets.map((m) => m.to), [control.email], 'only the active user gets a reset link')
})

t.test('reactivating a user lets it log in again; its old sessions stay revoked', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const target = await userWithTwoSessions(app)
  t.equal((await patchUser(app, admin.accessToken, target.id, { isActive: false })).statusCode, 200)
  assertError(t, await login(app, target.email, PASSWORD), 403, 'ACCOUNT_DISABLED')

  const res = await patchUser(app, admin.accessToken, target.id, { isActive: true })
  t.equal(res.statusCode, 200)
  t.match(res.json(), { id: target.id, isActive: true })
  const again = await login(app, target.email, PASSWORD)
  t.equal(again.statusCode, 200)
  t.equal((await me(app, again.json().accessToken)).statusCode, 200)
  assertError(t, await me(app, target.tokens[0]!), 401, 'SESSION_REVOKED')
  assertError(t, await refresh(app, target.cookies[1]!), 401, 'REFRESH_TOKEN_INVALID')
})

t.test('a role change to admin gives admin access at once, and back to user takes it away at once', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const other = await signup(app)
  assertError(t, await listUsers(app, other.accessToken), 403, 'ADMIN_REQUIRED')

  const promoted = await patchUser(app, admin.accessToken, other.user.id, { role: 'admin' })
  t.equal(promoted.statusCode, 200)
  t.match(promoted.json(), { id: other.user.id, role: 'admin', isActive: true })
  t.equal((await listUsers(app, other.accessToken)).statusCode, 200, 'the existing token is now an admin\'s')
  t.equal((await userRow(app, other.user.id))?.role, 'admin')

  const demoted = await patchUser(app, admin.accessToken, other.user.id, { role: 'user' })
  t.equal(demoted.statusCode, 200)
  t.match(demoted.json(), { role: 'user' })
  assertError(t, await listUsers(app, other.accessToken), 403, 'ADMIN_REQUIRED')
  t.equal((await me(app, other.accessToken)).statusCode, 200, 'demotion does not end its sessions')
})

t.test('an admin deactivated by another admin loses the admin API at once', async (t) => {
  const app = await buildTestApp(t)
  const first = await signupAdmin(app)
  const second = await signupAdmin(app)
  t.equal((await listUsers(app, second.accessToken)).statusCode, 200)
  t.equal((await patchUser(app, first.accessToken, second.user.id, { isActive: false })).statusCode, 200)
  assertError(t, await listUsers(app, second.accessToken), 401, 'SESSION_REVOKED')
})

t.test('an admin cannot deactivate or demote itself (403 FORBIDDEN, nothing changed); confirming its own state is harmless', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  for (const patch of [{ isActive: false }, { role: 'user' }, { isActive: false, role: 'admin' }, { isActive: true, role: 'user' }]) {
    assertError(t, await patchUser(app, admin.accessToken, admin.user.id, patch), 403, 'FORBIDDEN')
  }
  t.match(await userRow(app, admin.user.id), { role: 'admin', isActive: true }, 'still an active admin')
  t.equal((await unrevokedSessions(app, admin.user.id)).length, 1, 'its session is live')
  t.equal((await listUsers(app, admin.accessToken)).statusCode, 200, 'and its token still opens the admin API')

  for (const patch of [{ isActive: true }, { role: 'admin' }, { isActive: true, role: 'admin' }]) {
    const res = await patchUser(app, admin.accessToken, admin.user.id, patch)
    t.equal(res.statusCode, 200, JSON.stringify(patch))
    t.match(res.json(), { id: admin.user.id, role: 'admin', isActive: true })
  }
  t.equal((await unrevokedSessions(app, admin.user.id)).length, 1)
  t.equal((await listUsers(app, admin.accessToken)).statusCode, 200)
})

t.test('PATCH: an unknown id is 404 NOT_FOUND; a non-UUID id, an empty body, an unknown field or a bad value is 400', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const target = await signup(app)
  assertError(t, await patchUser(app, admin.accessToken, randomUUID(), { isActive: false }), 404, 'NOT_FOUND')
  assertError(t, await patchUser(app, admin.accessToken, 'not-a-uuid', { isActive: false }), 400, 'VALIDATION_ERROR')
  assertError(t, await patchUser(app, admin.accessToken, `urn:uuid:${target.user.id}`, { isActive: false }), 400, 'VALIDATION_ERROR')
  const bodies = [
    {}, { isActive: false, extra: 1 }, { role: 'admin', passwordHash: 'x' }, { email: 'new@example.com' },
    { isActive: 'false' }, { isActive: 0 }, { role: 'root' }, { role: null }
  ]
  for (const body of bodies) {
    assertError(t, await patchUser(app, admin.accessToken, target.user.id, body), 400, 'VALIDATION_ERROR')
  }
  t.match(await userRow(app, target.user.id), { isActive: true, role: 'user', email: target.email }, 'nothing applied')
  t.equal((await unrevokedSessions(app, target.user.id)).length, 1)
})

// ---- GET /api/admin/users/:id/sessions ----------------------------------------------------

t.test('a user\'s sessions: only the live ones, with the contract fields, current always false', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const s = await signup(app)
  const phone = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: s.email, password: PASSWORD }, headers: { 'user-agent': 'Phone/2.0' }, remoteAddress: '10.0.0.2' })
  const gone = await login(app, s.email, PASSWORD, '10.0.0.3')
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(gone.json().accessToken) })).statusCode, 200)

  const res = await userSessions(app, admin.accessToken, s.user.id)
  t.equal(res.statusCode, 200)
  t.same(Object.keys(res.json()), ['items'])
  const items = res.json().items as Array<Record<string, unknown>>
  t.same(items.map((i) => i.id).sort(), [decodeJwt(s.accessToken).sid, decodeJwt(phone.json().accessToken).sid].sort(), 'the logged-out session is left out')
  for (const item of items) {
    t.same(Object.keys(item).sort(), SESSION_KEYS)
    t.equal(item.current, false)
  }
  t.match(items.find((i) => i.id === decodeJwt(phone.json().accessToken).sid), { ipAddress: '10.0.0.2', userAgent: 'Phone/2.0' })
  t.match(items.find((i) => i.id === decodeJwt(s.accessToken).sid), { ipAddress: '10.0.0.1' })

  const own = await userSessions(app, admin.accessToken, admin.user.id)
  t.equal(own.json().items.length, 1)
  t.equal(own.json().items[0].id, decodeJwt(admin.accessToken).sid)
  t.equal(own.json().items[0].current, false, 'false even for the session of the request')
})

t.test('a user\'s expired sessions are not listed', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const s = await signup(app)
  clock.advance(8 * 86_400_000) // past the 7-day session lifetime
  const admin = await signupAdmin(app)
  t.same((await userSessions(app, admin.accessToken, s.user.id)).json(), { items: [] })
  t.equal((await unrevokedSessions(app, s.user.id)).length, 1, 'expired, not revoked')
})

t.test('a user\'s sessions, listed or revoked: 404 NOT_FOUND for an unknown user, 400 for a non-UUID id', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  for (const call of [userSessions, revokeSessions]) {
    assertError(t, await call(app, admin.accessToken, randomUUID()), 404, 'NOT_FOUND')
    for (const bad of ['nope', '123']) assertError(t, await call(app, admin.accessToken, bad), 400, 'VALIDATION_ERROR')
  }
})

// ---- DELETE /api/admin/users/:id/sessions -------------------------------------------------

t.test('revoking a user\'s sessions answers how many were live and ends their tokens and cookies; a second call revokes 0', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const target = await userWithTwoSessions(app)
  const gone = await login(app, target.email, PASSWORD)
  await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(gone.json().accessToken) })
  const bystander = await signup(app)

  const res = await revokeSessions(app, admin.accessToken, target.id)
  t.equal(res.statusCode, 200)
  t.same(res.json(), { revoked: 2 }, 'the two live sessions, not the one already ended')
  for (const token of target.tokens) assertError(t, await me(app, token), 401, 'SESSION_REVOKED')
  for (const cookie of target.cookies) assertError(t, await refresh(app, cookie), 401, 'REFRESH_TOKEN_INVALID')
  t.equal((await unrevokedSessions(app, target.id)).length, 0, 'every row revoked')
  t.same((await userSessions(app, admin.accessToken, target.id)).json(), { items: [] })

  t.same((await revokeSessions(app, admin.accessToken, target.id)).json(), { revoked: 0 })

  t.equal((await userRow(app, target.id))?.isActive, true, 'the account stays active')
  const again = await login(app, target.email, PASSWORD)
  t.equal(again.statusCode, 200, 'and can log in again')
  t.same((await revokeSessions(app, admin.accessToken, target.id)).json(), { revoked: 1 })
  assertError(t, await me(app, again.json().accessToken), 401, 'SESSION_REVOKED')

  t.equal((await me(app, bystander.accessToken)).statusCode, 200, 'other users untouched')
  t.equal((await listUsers(app, admin.accessToken)).statusCode, 200, 'the admin\'s own session untouched')
})

// ---- the audit log ------------------------------------------------------------------------

t.test('every PATCH records admin_user_updated: the acting admin and its request, the target and the changes in metadata', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { now: clock.now })
  const admin = await signupAdmin(app)
  const target = await userWithTwoSessions(app)
  const from = { headers: { 'user-agent': 'AdminConsole/1.0' }, remoteAddress: '198.51.100.7' }

  t.equal((await patchUser(app, admin.accessToken, target.id, { isActive: false }, from)).statusCode, 200)
  clock.advance(1000)
  t.equal((await patchUser(app, admin.accessToken, target.id, { role: 'admin' }, from)).statusCode, 200)
  clock.advance(1000)
  t.equal((await patchUser(app, admin.accessToken, target.id, { isActive: true, role: 'user' }, from)).statusCode, 200)

  const res = await adminEvents(app, admin.accessToken, 'admin_user_updated')
  t.equal(res.statusCode, 200)
  const items = res.json().items as Array<Record<string, unknown>>
  t.equal(items.length, 3)
  const target$ = { targetUserId: target.id, targetEmail: target.email }
  t.same(items.map((e) => e.metadata), [
    { ...target$, changes: { isActive: { from: false, to: true }, role: { from: 'admin', to: 'user' } }, revokedSessions: 0 },
    { ...target$, changes: { role: { from: 'user', to: 'admin' } }, revokedSessions: 0 },
    { ...target$, changes: { isActive: { from: true, to: false } }, revokedSessions: 2 }
  ], 'newest first, each with its changes')
  for (const e of items) {
    t.match(e, {
      eventType: 'admin_user_updated', userId: admin.user.id, email: admin.email,
      ipAddress: '198.51.100.7', userAgent: 'AdminConsole/1.0', success: true, failureReason: null
    })
  }

  const rows = await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'admin_user_updated'))
  t.equal(rows.length, 3)
  t.ok(rows.every((r) => r.userId === admin.user.id), 'the row names the admin, not the target')
})

t.test('revoking a user\'s sessions records admin_sessions_revoked naming the admin, the target and the count', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const target = await userWithTwoSessions(app)
  const res = await revokeSessions(app, admin.accessToken, target.id, { headers: { 'user-agent': 'IR-Tool/3' }, remoteAddress: '203.0.113.5' })
  t.same(res.json(), { revoked: 2 })

  const events = (await adminEvents(app, admin.accessToken, 'admin_sessions_revoked')).json().items
  t.equal(events.length, 1)
  t.match(events[0], { userId: admin.user.id, email: admin.email, ipAddress: '203.0.113.5', userAgent: 'IR-Tool/3', success: true })
  t.same(events[0].metadata, { targetUserId: target.id, targetEmail: target.email, revokedSessions: 2 })

  const [row] = await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'admin_sessions_revoked'))
  t.match(row, { userId: admin.user.id, email: admin.email, ipAddress: '203.0.113.5', metadata: { targetUserId: target.id, revokedSessions: 2 } })
})

// ---- the session cache --------------------------------------------------------------------

t.test('with a 5 s session cache, a deactivated user\'s token is refused at once on the same instance', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { env: { SESSION_CHECK_TTL_SECONDS: '5' }, now: clock.now })
  const admin = await signupAdmin(app)

  // The cache is on: a change behind the service's back is seen only once the entry expires.
  const behindTheBack = await signup(app)
  t.equal((await me(app, behindTheBack.accessToken)).statusCode, 200)
  await setUser(app, behindTheBack.user.id, { isActive: false })
  t.equal((await me(app, behindTheBack.accessToken)).statusCode, 200, 'still cached')
  clock.advance(5001)
  assertError(t, await me(app, behindTheBack.accessToken), 401, 'SESSION_REVOKED')

  const target = await userWithTwoSessions(app)
  for (const token of target.tokens) t.equal((await me(app, token)).statusCode, 200, 'cached as live')
  t.equal((await patchUser(app, admin.accessToken, target.id, { isActive: false })).statusCode, 200)
  for (const token of target.tokens) assertError(t, await me(app, token), 401, 'SESSION_REVOKED')
})

t.test('with a 5 s session cache, a demoted admin loses the admin API at once on the same instance', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { env: { SESSION_CHECK_TTL_SECONDS: '5' }, now: clock.now })
  const admin = await signupAdmin(app)
  const other = await signup(app)
  t.equal((await patchUser(app, admin.accessToken, other.user.id, { role: 'admin' })).statusCode, 200)
  t.equal((await listUsers(app, other.accessToken)).statusCode, 200, 'cached as admin')
  t.equal((await patchUser(app, admin.accessToken, other.user.id, { role: 'user' })).statusCode, 200)
  assertError(t, await listUsers(app, other.accessToken), 403, 'ADMIN_REQUIRED')
})

t.test('with a 5 s session cache, revoking a user\'s sessions refuses its tokens at once on the same instance', async (t) => {
  const clock = testClock(new Date())
  const app = await buildTestApp(t, { env: { SESSION_CHECK_TTL_SECONDS: '5' }, now: clock.now })
  const admin = await signupAdmin(app)
  const target = await userWithTwoSessions(app)
  for (const token of target.tokens) t.equal((await me(app, token)).statusCode, 200, 'cached as live')
  t.same((await revokeSessions(app, admin.accessToken, target.id)).json(), { revoked: 2 })
  for (const token of target.tokens) assertError(t, await me(app, token), 401, 'SESSION_REVOKED')
})

// ---- concurrency --------------------------------------------------------------------------

/** Three live sessions of one user, and two admins to act on it. */
async function raceSetup (app: App) {
  const [first, second] = [await signupAdmin(app), await signupAdmin(app)]
  const target = await userWithTwoSessions(app)
  const third = await login(app, target.email, PASSWORD, '10.0.0.3')
  return { first, second, target: { ...target, tokens: [...target.tokens, third.json().accessToken as string], cookies: [...target.cookies, refreshCookieIn(third)] } }
}

/** The admin events about `targetId`, in the table. */
async function eventsAbout (app: App, targetId: string) {
  const rows = await app.db.select().from(authEvents)
  return rows.filter((r) => (r.metadata as { targetUserId?: string } | null)?.targetUserId === targetId)
}

async function assertAllRevoked (t: Test, app: App, target: Awaited<ReturnType<typeof raceSetup>>['target']) {
  t.equal((await unrevokedSessions(app, target.id)).length, 0, 'every session revoked')
  for (const token of target.tokens) assertError(t, await me(app, token), 401, 'SESSION_REVOKED')
  for (const cookie of target.cookies) assertError(t, await refresh(app, cookie), 401, 'REFRESH_TOKEN_INVALID')
}

t.test('two admins deactivating the same user at once both get 200, and each session is revoked exactly once', async (t) => {
  const app = await buildTestApp(t)
  const { first, second, target } = await raceSetup(app)
  const results = await Promise.all([first, second].map((a) => patchUser(app, a.accessToken, target.id, { isActive: false })))
  t.same(results.map((r) => r.statusCode), [200, 200], 'no 500, no conflict')
  for (const r of results) t.match(r.json(), { id: target.id, isActive: false })
  t.equal((await userRow(app, target.id))?.isActive, false)
  await assertAllRevoked(t, app, target)

  const events = await eventsAbout(app, target.id)
  t.equal(events.length, 2, 'one event per write')
  const meta = events.map((e) => e.metadata as { revokedSessions: number, changes: { isActive: { from: boolean } } })
  t.same(meta.map((m) => m.revokedSessions).sort(), [0, 3], 'the three sessions revoked once, by one of them')
  t.same(meta.map((m) => m.changes.isActive.from).sort(), [false, true], 'the second saw the first\'s write (no lost update)')
})

t.test('two admins revoking the same user\'s sessions at once both get 200, and the counts add up to the live sessions', async (t) => {
  const app = await buildTestApp(t)
  const { first, second, target } = await raceSetup(app)
  const results = await Promise.all([first, second].map((a) => revokeSessions(app, a.accessToken, target.id)))
  t.same(results.map((r) => r.statusCode), [200, 200])
  t.same(results.map((r) => r.json().revoked).sort(), [0, 3])
  await assertAllRevoked(t, app, target)
  const events = await eventsAbout(app, target.id)
  t.same(events.map((e) => (e.metadata as { revokedSessions: number }).revokedSessions).sort(), [0, 3])
})

t.test('a deactivation racing a session revocation: both 200, every session revoked exactly once', async (t) => {
  const app = await buildTestApp(t)
  const { first, second, target } = await raceSetup(app)
  const [patched, revoked] = await Promise.all([
    patchUser(app, first.accessToken, target.id, { isActive: false }),
    revokeSessions(app, second.accessToken, target.id)
  ])
  t.equal(patched.statusCode, 200)
  t.equal(revoked.statusCode, 200)
  t.equal((await userRow(app, target.id))?.isActive, false)
  await assertAllRevoked(t, app, target)
  const events = await eventsAbout(app, target.id)
  const byType = (type: string) => (events.find((e) => e.eventType === type)?.metadata as { revokedSessions?: number } | undefined)?.revokedSessions ?? Number.NaN
  t.equal(byType('admin_user_updated') + byType('admin_sessions_revoked'), 3, 'the sessions counted once between them')
  t.equal(revoked.json().revoked, byType('admin_sessions_revoked'), 'the answer matches the event')
})

t.test('two admins demoting each other at once: one wins, the other is refused ADMIN_REQUIRED, and an admin remains', async (t) => {
  const app = await buildTestApp(t)
  for (let round = 0; round < 5; round++) {
    const a = await signupAdmin(app)
    const b = await signupAdmin(app)
    const results = await Promise.all([
      patchUser(app, a.accessToken, b.user.id, { role: 'user' }),
      patchUser(app, b.accessToken, a.user.id, { role: 'user' })
    ])
    const statuses = results.map((r) => r.statusCode).sort()
    t.same(statuses, [200, 403], `round ${round}: one winner`)
    const refused = results.find((r) => r.statusCode === 403)
    if (refused !== undefined) assertError(t, refused, 403, 'ADMIN_REQUIRED')
    const roles = [(await userRow(app, a.user.id))?.role, (await userRow(app, b.user.id))?.role].sort()
    t.same(roles, ['admin', 'user'], 'exactly one of them is still an admin')
  }
  const losers = await app.db.select().from(authEvents).where(and(eq(authEvents.eventType, 'admin_user_updated'), eq(authEvents.success, false)))
  t.same(losers.map((e) => e.failureReason), Array(5).fill('not_admin'), 'each refused loser is on the record')
})

t.test('an admin\'s own id in upper case is still itself: it cannot deactivate or demote itself that way', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  for (const payload of [{ isActive: false }, { role: 'user' }]) {
    assertError(t, await patchUser(app, admin.accessToken, admin.user.id.toUpperCase(), payload), 403, 'FORBIDDEN')
  }
  t.match(await userRow(app, admin.user.id), { role: 'admin', isActive: true }, 'nothing changed')
})

t.test('refused admin writes are on the record too: own account, unknown user', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const unknown = randomUUID()
  assertError(t, await patchUser(app, admin.accessToken, admin.user.id, { isActive: false }), 403, 'FORBIDDEN')
  assertError(t, await patchUser(app, admin.accessToken, unknown, { role: 'admin' }), 404, 'NOT_FOUND')
  assertError(t, await revokeSessions(app, admin.accessToken, unknown), 404, 'NOT_FOUND')
  const rows = await app.db.select().from(authEvents).where(and(eq(authEvents.userId, admin.user.id), eq(authEvents.success, false)))
  t.same(rows.map((r) => [r.eventType, r.failureReason, (r.metadata as { targetUserId?: string } | null)?.targetUserId]).sort(), [
    ['admin_sessions_revoked', 'user_not_found', unknown],
    ['admin_user_updated', 'own_account', admin.user.id],
    ['admin_user_updated', 'user_not_found', unknown]
  ].sort(), 'each refusal names the admin, what it tried and on whom')
})

