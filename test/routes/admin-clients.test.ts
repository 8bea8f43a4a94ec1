/**
 * Service clients managed by admins (issue 12, point 1): create, list, change, rotate the secret,
 * delete, each audited; the secret shown once and stored only as a hash.
 */
import { createHash, randomUUID } from 'node:crypto'
import { eq } from 'drizzle-orm'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { authEvents, oauthClients } from '../../src/db/schema.ts'
import { assertError, bearer, buildTestApp, dumpDatabase, signup, signupAdmin, testClock } from '../helper.ts'

const CLIENT_KEYS = ['clientId', 'createdAt', 'disabled', 'id', 'lastUsedAt', 'name', 'scopes']
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

const createClient = (app: App, token: string, payload: unknown) =>
  app.inject({ method: 'POST', url: '/api/admin/clients', payload: payload as Record<string, unknown>, headers: bearer(token) })
const listClients = (app: App, token: string) => app.inject({ url: '/api/admin/clients', headers: bearer(token) })
const patchClient = (app: App, token: string, id: string, payload: unknown) =>
  app.inject({ method: 'PATCH', url: `/api/admin/clients/${id}`, payload: payload as Record<string, unknown>, headers: bearer(token) })
const rotateSecret = (app: App, token: string, id: string, payload?: unknown) =>
  app.inject({ method: 'POST', url: `/api/admin/clients/${id}/secret`, ...(payload === undefined ? {} : { payload: payload as Record<string, unknown> }), headers: bearer(token) })
const deleteClient = (app: App, token: string, id: string) =>
  app.inject({ method: 'DELETE', url: `/api/admin/clients/${id}`, headers: bearer(token) })
const eventsOf = (app: App, type: string) => app.db.select().from(authEvents).where(eq(authEvents.eventType, type))
const rowOf = async (app: App, id: string) => (await app.db.select().from(oauthClients).where(eq(oauthClients.id, id)))[0]

t.test('an admin creates a client: the secret is shown once, stored as a hash, and the creation is recorded', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const admin = await signupAdmin(app)
  const res = await createClient(app, admin.accessToken, { name: 'billing worker', scopes: ['invoices:read', 'invoices:write', 'invoices:read'] })
  t.equal(res.statusCode, 201)
  t.equal(res.headers['cache-control'], 'no-store')
  const { client, clientSecret } = res.json()
  t.same(Object.keys(client).sort(), CLIENT_KEYS)
  t.match(client, { name: 'billing worker', scopes: ['invoices:read', 'invoices:write'], disabled: false, createdAt: clock.now().toISOString(), lastUsedAt: null })
  t.match(client.clientId, /^gc_[A-Za-z0-9_-]{22}$/)
  t.match(clientSecret, /^[A-Za-z0-9_-]{43}$/, '256 random bits')

  const row = await rowOf(app, client.id)
  t.equal(row?.secretHash, sha256(clientSecret), 'only the hash is stored')
  t.notOk((await dumpDatabase(app)).includes(clientSecret), 'the secret is nowhere in the database')

  const [event] = await eventsOf(app, 'client_created')
  t.match(event, {
    userId: admin.user.id, email: admin.email, success: true,
    metadata: { targetClientId: client.id, clientId: client.clientId, name: 'billing worker', scopes: ['invoices:read', 'invoices:write'] }
  })
  t.notOk(JSON.stringify(event).includes(clientSecret), 'the event holds no secret')

  const list = await listClients(app, admin.accessToken)
  t.equal(list.statusCode, 200)
  t.same(list.json(), { items: [client] }, 'the list shows the client, never its secret')
})

t.test('client input is validated: name 1–100, scopes by pattern and at most 20, nothing else', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const bad: unknown[] = [
    { name: '', scopes: [] },
    { name: 'x'.repeat(101), scopes: [] },
    { name: 'ok', scopes: ['Upper'] },
    { name: 'ok', scopes: ['1starts-with-digit'] },
    { name: 'ok', scopes: ['has space'] },
    { name: 'ok', scopes: [`a${'b'.repeat(64)}`] },
    { name: 'ok', scopes: Array.from({ length: 21 }, (_, i) => `s${i}`) },
    { name: 'ok' },
    { name: 'ok', scopes: [], secret: 'mine' },
    { name: 42, scopes: [] }
  ]
  for (const payload of bad) assertError(t, await createClient(app, admin.accessToken, payload), 400, 'VALIDATION_ERROR')
  const edge = await createClient(app, admin.accessToken, { name: 'x'.repeat(100), scopes: [`a${'b'.repeat(63)}`, 'a:b.c_d-e'] })
  t.equal(edge.statusCode, 201, 'the limits themselves are accepted')
  t.equal((await createClient(app, admin.accessToken, { name: 'no scopes', scopes: [] })).statusCode, 201)
  t.equal((await app.db.select().from(oauthClients)).length, 2, 'nothing else was stored')
})

t.test('only admins manage clients', async (t) => {
  const app = await buildTestApp(t)
  const user = await signup(app)
  const admin = await signupAdmin(app)
  const { client } = (await createClient(app, admin.accessToken, { name: 'c', scopes: [] })).json()
  assertError(t, await app.inject({ url: '/api/admin/clients' }), 401, 'AUTH_REQUIRED')
  assertError(t, await listClients(app, user.accessToken), 403, 'ADMIN_REQUIRED')
  assertError(t, await createClient(app, user.accessToken, { name: 'c', scopes: [] }), 403, 'ADMIN_REQUIRED')
  assertError(t, await patchClient(app, user.accessToken, client.id, { disabled: true }), 403, 'ADMIN_REQUIRED')
  assertError(t, await rotateSecret(app, user.accessToken, client.id), 403, 'ADMIN_REQUIRED')
  assertError(t, await deleteClient(app, user.accessToken, client.id), 403, 'ADMIN_REQUIRED')
  t.match(await rowOf(app, client.id), { disabled: false }, 'nothing changed')
})

t.test('PATCH renames, changes scopes, disables and enables, each recorded with what changed', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const { client } = (await createClient(app, admin.accessToken, { name: 'old', scopes: ['a'] })).json()
  const renamed = await patchClient(app, admin.accessToken, client.id, { name: 'new', scopes: ['b', 'a'] })
  t.equal(renamed.statusCode, 200)
  t.match(renamed.json(), { id: client.id, clientId: client.clientId, name: 'new', scopes: ['a', 'b'], disabled: false })
  const disabled = await patchClient(app, admin.accessToken, client.id.toUpperCase(), { disabled: true })
  t.equal(disabled.statusCode, 200, 'an upper-case id is the same client')
  t.equal(disabled.json().disabled, true)
  t.equal((await patchClient(app, admin.accessToken, client.id, { disabled: false })).json().disabled, false)

  const events = await eventsOf(app, 'client_updated')
  t.equal(events.length, 3)
  t.match(events.find((e) => (e.metadata as { changes?: { name?: unknown } }).changes?.name !== undefined), {
    userId: admin.user.id, metadata: { targetClientId: client.id, changes: { name: { from: 'old', to: 'new' }, scopes: { from: ['a'], to: ['a', 'b'] } } }
  })
  const disabling = events.find((e) => (e.metadata as { changes?: { disabled?: { to?: boolean } } }).changes?.disabled?.to === true)
  t.match(disabling, { metadata: { changes: { disabled: { from: false, to: true } } } }, 'the disabling is recorded')

  assertError(t, await patchClient(app, admin.accessToken, client.id, {}), 400, 'VALIDATION_ERROR')
  assertError(t, await patchClient(app, admin.accessToken, client.id, { secretHash: 'x' }), 400, 'VALIDATION_ERROR')
  assertError(t, await patchClient(app, admin.accessToken, 'not-a-uuid', { disabled: true }), 400, 'VALIDATION_ERROR')
  assertError(t, await patchClient(app, admin.accessToken, randomUUID(), { disabled: true }), 404, 'NOT_FOUND')
})

t.test('a new secret replaces the old; the previous one is kept only for the overlap asked, and only one', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const admin = await signupAdmin(app)
  const created = (await createClient(app, admin.accessToken, { name: 'c', scopes: [] })).json()
  const id = created.client.id as string

  const first = await rotateSecret(app, admin.accessToken, id)
  t.equal(first.statusCode, 200, 'no body: no overlap')
  t.equal(first.headers['cache-control'], 'no-store')
  const secret1 = first.json().clientSecret as string
  t.not(secret1, created.clientSecret)
  t.same(first.json().client, created.client, 'the client itself is unchanged')
  t.match(await rowOf(app, id), { secretHash: sha256(secret1), previousSecretHash: null, previousSecretExpiresAt: null })

  const second = await rotateSecret(app, admin.accessToken, id, { previousValidSeconds: 3600 })
  const secret2 = second.json().clientSecret as string
  t.match(await rowOf(app, id), {
    secretHash: sha256(secret2), previousSecretHash: sha256(secret1), previousSecretExpiresAt: new Date(clock.now().getTime() + 3_600_000)
  })
  const third = await rotateSecret(app, admin.accessToken, id, { previousValidSeconds: 604_800 })
  const secret3 = third.json().clientSecret as string
  t.match(await rowOf(app, id), { secretHash: sha256(secret3), previousSecretHash: sha256(secret2) }, 'one previous secret at most: the older one is gone')
  const zero = await rotateSecret(app, admin.accessToken, id, { previousValidSeconds: 0 })
  t.match(await rowOf(app, id), { previousSecretHash: null, previousSecretExpiresAt: null })
  t.notOk((await dumpDatabase(app)).includes(zero.json().clientSecret as string))

  assertError(t, await rotateSecret(app, admin.accessToken, id, { previousValidSeconds: 604_801 }), 400, 'VALIDATION_ERROR')
  assertError(t, await rotateSecret(app, admin.accessToken, id, { previousValidSeconds: -1 }), 400, 'VALIDATION_ERROR')
  assertError(t, await rotateSecret(app, admin.accessToken, randomUUID(), {}), 404, 'NOT_FOUND')
  const events = await eventsOf(app, 'client_secret_rotated')
  t.equal(events.length, 4)
  t.match(events.find((e) => (e.metadata as { previousValidSeconds?: number }).previousValidSeconds === 3600), { userId: admin.user.id, metadata: { targetClientId: id } })
  for (const s of [secret1, secret2, secret3]) t.notOk(JSON.stringify(events).includes(s), 'no secret in the events')
})

t.test('DELETE removes the client and records it; afterwards it is 404', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const { client } = (await createClient(app, admin.accessToken, { name: 'gone', scopes: ['x'] })).json()
  const { client: other } = (await createClient(app, admin.accessToken, { name: 'stays', scopes: [] })).json()
  const res = await deleteClient(app, admin.accessToken, client.id)
  t.equal(res.statusCode, 204)
  t.equal(res.body, '')
  t.equal(await rowOf(app, client.id), undefined)
  t.same((await listClients(app, admin.accessToken)).json().items.map((c: { id: string }) => c.id), [other.id])
  assertError(t, await deleteClient(app, admin.accessToken, client.id), 404, 'NOT_FOUND')
  assertError(t, await patchClient(app, admin.accessToken, client.id, { name: 'x' }), 404, 'NOT_FOUND')
  assertError(t, await rotateSecret(app, admin.accessToken, client.id), 404, 'NOT_FOUND')
  const [event] = await eventsOf(app, 'client_deleted')
  t.match(event, { userId: admin.user.id, email: admin.email, metadata: { targetClientId: client.id, clientId: client.clientId, name: 'gone' } })
})
