/**
 * The OAuth 2.0 endpoints for service clients (issue 12): the client-credentials grant
 * (POST /oauth/token, RFC 6749 §4.4), token introspection (POST /oauth/introspect, RFC 7662) and
 * the authorization server metadata (GET /.well-known/oauth-authorization-server, RFC 8414);
 * client authentication, its audit trail and its limits. Errors here are the RFC's
 * `{error, error_description}`, except 429, which keeps the contract's shape.
 */
import { createPublicKey, verify as cryptoVerify, generateKeyPairSync, randomUUID } from 'node:crypto'
import { eq } from 'drizzle-orm'
import { createSigner } from 'fast-jwt'
import type { LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import type { App } from '../../src/app.ts'
import { authEvents, oauthClients } from '../../src/db/schema.ts'
import { loggerOptions } from '../../src/logger.ts'
import {
  assertError, bearer, buildTestApp, decodeJwt, dumpDatabase, enrolMfa, JWT_SECRET, logCapture, mfaChallenge, refreshCookieIn, signup, signupAdmin,
  testClock, testDb, type TestAppOptions
} from '../helper.ts'

interface Client { id: string, clientId: string, name: string, scopes: string[], disabled: boolean, createdAt: string, lastUsedAt: string | null }

/** Form (or JSON) parameters, client credentials in the Authorization header, and where from. */
interface Call {
  params?: Record<string, string> | string
  json?: unknown
  headers?: Record<string, string>
  remoteAddress?: string
}

function oauthPost (app: App, url: string, { params, json, headers = {}, remoteAddress }: Call) {
  const from = remoteAddress === undefined ? {} : { remoteAddress }
  if (json !== undefined) return app.inject({ method: 'POST', url, payload: json as Record<string, unknown>, headers, ...from })
  const payload = typeof params === 'string' ? params : new URLSearchParams(params ?? {}).toString()
  return app.inject({ method: 'POST', url, payload, headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, ...from })
}
const tokenRequest = (app: App, call: Call) => oauthPost(app, '/oauth/token', call)
const introspectRequest = (app: App, call: Call) => oauthPost(app, '/oauth/introspect', call)

/** HTTP Basic as RFC 6749 §2.3.1 has it: each part form-url-encoded, then `id:secret` in base64. */
const basic = (id: string, secret: string, encode: (s: string) => string = encodeURIComponent) =>
  ({ authorization: `Basic ${Buffer.from(`${encode(id)}:${encode(secret)}`).toString('base64')}` })
/** Every byte as `%XX`: what a client that encodes everything would send. */
const percentEncoded = (s: string) => [...Buffer.from(s)].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('')

const jwtHeader = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[0] ?? '', 'base64url').toString()) as Record<string, unknown>

/** An RFC 6749 §5.2 error: exactly `{error, error_description}`, never cached. */
function assertOAuthError (t: Test, res: LightMyRequestResponse, status: number, error: string, challenge?: 'basic' | 'none') {
  t.equal(res.statusCode, status, `status ${status}`)
  const body = res.json() as Record<string, unknown>
  t.equal(body.error, error, `error ${error}`)
  t.type(body.error_description, 'string')
  t.same(Object.keys(body).sort(), ['error', 'error_description'])
  t.equal(res.headers['cache-control'], 'no-store')
  if (challenge === 'basic') t.match(res.headers['www-authenticate'], /^Basic /, 'WWW-Authenticate: Basic')
  if (challenge === 'none') t.equal(res.headers['www-authenticate'], undefined, 'no WWW-Authenticate')
}

/** An app with a moveable clock and an admin; client-auth failures unlimited unless the test says. */
async function oauthApp (test: Test, opts: TestAppOptions = {}) {
  const clock = testClock()
  const app = await buildTestApp(test, { now: clock.now, ...opts, env: { RATE_LIMIT_CLIENT_AUTH_FAILURES: '1000', ...opts.env } })
  const admin = await signupAdmin(app)
  const admins = (method: 'POST' | 'PATCH' | 'DELETE', url: string, payload?: Record<string, unknown>) =>
    app.inject({ method, url, headers: bearer(admin.accessToken), ...(payload === undefined ? {} : { payload }) })
  async function createClient (name: string, scopes: string[]) {
    const res = await admins('POST', '/api/admin/clients', { name, scopes })
    if (res.statusCode !== 201) throw new Error(`client creation failed: ${res.body}`)
    return res.json() as { client: Client, clientSecret: string }
  }
  const patchClient = (id: string, patch: Record<string, unknown>) => admins('PATCH', `/api/admin/clients/${id}`, patch)
  const rotateSecret = async (id: string, previousValidSeconds: number) =>
    (await admins('POST', `/api/admin/clients/${id}/secret`, { previousValidSeconds })).json().clientSecret as string
  const deleteClient = (id: string) => admins('DELETE', `/api/admin/clients/${id}`)
  /** A token for this client through the grant (Basic), or the test fails. */
  async function serviceToken (client: Client, secret: string) {
    const res = await tokenRequest(app, { params: { grant_type: 'client_credentials' }, headers: basic(client.clientId, secret) })
    if (res.statusCode !== 200) throw new Error(`token request failed: ${res.body}`)
    return res.json().access_token as string
  }
  return { app, clock, admin, admins, createClient, patchClient, rotateSecret, deleteClient, serviceToken }
}

const failuresOf = (app: App) => app.db.select().from(authEvents).where(eq(authEvents.eventType, 'client_auth_failure'))
const clientRow = async (app: App, id: string) => (await app.db.select().from(oauthClients).where(eq(oauthClients.id, id)))[0]
const grant = { grant_type: 'client_credentials' }

t.test('the grant issues an RFC 9068 token with the asked scopes, by Basic or by the body (form or JSON)', async (t) => {
  const { app, createClient } = await oauthApp(t)
  const { client, clientSecret } = await createClient('billing', ['invoices:write', 'invoices:read', 'reports:read'])

  const byBasic = await tokenRequest(app, { params: grant, headers: basic(client.clientId, clientSecret) })
  t.equal(byBasic.statusCode, 200)
  t.equal(byBasic.headers['cache-control'], 'no-store')
  t.match(byBasic.headers['content-type'], /^application\/json/)
  const body = byBasic.json()
  t.same(body, { access_token: body.access_token, token_type: 'Bearer', expires_in: 900, scope: 'invoices:read invoices:write reports:read' },
    'without scope: all of the client\'s')
  t.type(body.access_token, 'string')

  t.same(jwtHeader(body.access_token), { alg: 'HS256', typ: 'at+jwt' })
  const claims = decodeJwt(body.access_token)
  t.same(Object.keys(claims).sort(), ['aud', 'client_id', 'exp', 'iat', 'iss', 'jti', 'scope', 'sub'], 'no sid, role or amr')
  t.match(claims, { iss: 'gatehouse', aud: 'gatehouse', sub: client.clientId, client_id: client.clientId, scope: body.scope })
  t.equal(claims.exp, claims.iat + 900, 'CLIENT_TOKEN_EXPIRE_MINUTES: 15 by default')
  t.match(claims.jti, /^0\.[0-9a-f-]{36}$/, 'unique, prefixed with the generation of the client\'s tokens')

  const byForm = await tokenRequest(app, { params: { ...grant, client_id: client.clientId, client_secret: clientSecret, scope: 'reports:read' } })
  t.equal(byForm.statusCode, 200, 'client_secret_post, form-encoded')
  t.equal(byForm.headers['cache-control'], 'no-store')
  t.same(byForm.json(), { access_token: byForm.json().access_token, token_type: 'Bearer', expires_in: 900, scope: 'reports:read' })
  t.equal(decodeJwt(byForm.json().access_token).scope, 'reports:read')
  t.not(decodeJwt(byForm.json().access_token).jti, claims.jti, 'each token its own jti')

  const byJson = await tokenRequest(app, { json: { ...grant, client_id: client.clientId, client_secret: clientSecret, scope: 'invoices:write invoices:read' } })
  t.equal(byJson.statusCode, 200, 'client_secret_post, JSON')
  t.equal(byJson.json().scope, 'invoices:read invoices:write', 'a subset is granted')

  const repeated = await tokenRequest(app, { params: { ...grant, scope: 'reports:read reports:read' }, headers: basic(client.clientId, clientSecret) })
  t.equal(repeated.json().scope, 'reports:read', 'a scope asked twice is granted once')

  const withId = await tokenRequest(app, { params: { ...grant, client_id: client.clientId }, headers: basic(client.clientId, clientSecret) })
  t.equal(withId.statusCode, 200, 'Basic with the same client_id in the body (RFC 6749 §2.3.1 allows it)')

  const charset = await app.inject({
    method: 'POST', url: '/oauth/token', payload: 'grant_type=client_credentials',
    headers: { ...basic(client.clientId, clientSecret), 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' }
  })
  t.equal(charset.statusCode, 200, 'a form with a charset parameter')

  const encoded = await tokenRequest(app, { params: grant, headers: basic(client.clientId, clientSecret, percentEncoded) })
  t.equal(encoded.statusCode, 200, 'the Basic parts are form-url-decoded')

  const { client: empty, clientSecret: emptySecret } = await createClient('no scopes', [])
  const none = await tokenRequest(app, { params: grant, headers: basic(empty.clientId, emptySecret) })
  t.equal(none.json().scope, '', 'a client without scopes gets a token without scopes')
})

t.test('the token lifetime is CLIENT_TOKEN_EXPIRE_MINUTES', async (t) => {
  const { app, createClient } = await oauthApp(t, { env: { CLIENT_TOKEN_EXPIRE_MINUTES: '5' } })
  const { client, clientSecret } = await createClient('svc', ['a'])
  const res = await tokenRequest(app, { params: grant, headers: basic(client.clientId, clientSecret) })
  t.equal(res.json().expires_in, 300)
  const claims = decodeJwt(res.json().access_token)
  t.equal(claims.exp, claims.iat + 300)
})

t.test('a scope that is not the client\'s, or is malformed, is invalid_scope', async (t) => {
  const { app, createClient } = await oauthApp(t)
  const { client, clientSecret } = await createClient('reader', ['reports:read', 'invoices:read'])
  const auth = basic(client.clientId, clientSecret)
  for (const scope of ['reports:write', 'reports:read invoices:write', 'admin']) {
    assertOAuthError(t, await tokenRequest(app, { params: { ...grant, scope }, headers: auth }), 400, 'invalid_scope')
  }
  for (const scope of ['', ' reports:read', 'reports:read  invoices:read', 'reports:read,invoices:read', 'Reports:read', `r${'x'.repeat(64)}`, 'reports:read\tinvoices:read']) {
    assertOAuthError(t, await tokenRequest(app, { params: { ...grant, scope }, headers: auth }), 400, 'invalid_scope')
  }
  t.equal((await failuresOf(app)).length, 0, 'a scope error is no authentication failure')
})

t.test('client authentication failures are invalid_client; a malformed request is invalid_request', async (t) => {
  const { app, createClient, patchClient } = await oauthApp(t)
  const { client, clientSecret } = await createClient('svc', ['a'])
  const auth = basic(client.clientId, clientSecret)

  assertOAuthError(t, await tokenRequest(app, { params: grant }), 401, 'invalid_client', 'none')
  assertOAuthError(t, await tokenRequest(app, { params: { ...grant, client_id: client.clientId } }), 401, 'invalid_client', 'none')
  assertOAuthError(t, await tokenRequest(app, { params: { ...grant, client_secret: clientSecret } }), 401, 'invalid_client', 'none')
  assertOAuthError(t, await tokenRequest(app, { params: grant, headers: basic(client.clientId, 'wrong-secret') }), 401, 'invalid_client', 'basic')
  assertOAuthError(t, await tokenRequest(app, { params: { ...grant, client_id: client.clientId, client_secret: 'wrong-secret' } }), 401, 'invalid_client', 'none')
  assertOAuthError(t, await tokenRequest(app, { params: { ...grant, client_id: 'gc_nobody', client_secret: clientSecret } }), 401, 'invalid_client', 'none')
  assertOAuthError(t, await tokenRequest(app, { params: grant, headers: basic('gc_nobody', clientSecret) }), 401, 'invalid_client', 'basic')
  assertOAuthError(t, await tokenRequest(app, { params: grant, headers: basic(client.clientId, '') }), 401, 'invalid_client', 'basic')
  assertOAuthError(t, await tokenRequest(app, { params: grant, headers: { authorization: 'Basic not base64!' } }), 401, 'invalid_client', 'basic')
  assertOAuthError(t, await tokenRequest(app, { params: grant, headers: bearer('some.access.token') }), 401, 'invalid_client')
  assertOAuthError(t, await tokenRequest(app, { params: grant, headers: basic(`${client.clientId}\u0000`, clientSecret) }), 401, 'invalid_client', 'basic')

  t.equal((await patchClient(client.id, { disabled: true })).statusCode, 200)
  assertOAuthError(t, await tokenRequest(app, { params: grant, headers: auth }), 401, 'invalid_client', 'basic')
  assertOAuthError(t, await tokenRequest(app, { params: { ...grant, client_id: client.clientId, client_secret: clientSecret } }), 401, 'invalid_client', 'none')
  t.equal((await patchClient(client.id, { disabled: false })).statusCode, 200)

  assertOAuthError(t, await tokenRequest(app, { params: { ...grant, client_secret: clientSecret }, headers: auth }), 400, 'invalid_request')
  assertOAuthError(t, await tokenRequest(app, { params: { ...grant, client_id: 'gc_someoneelse' }, headers: auth }), 400, 'invalid_request')
  assertOAuthError(t, await tokenRequest(app, { params: {}, headers: auth }), 400, 'invalid_request')
  assertOAuthError(t, await tokenRequest(app, { params: { scope: 'a' }, headers: auth }), 400, 'invalid_request')
  assertOAuthError(t, await tokenRequest(app, { params: { grant_type: 'password', username: 'u', password: 'p' }, headers: auth }), 400, 'unsupported_grant_type')
  assertOAuthError(t, await tokenRequest(app, { params: { grant_type: 'authorization_code' }, headers: auth }), 400, 'unsupported_grant_type')
  assertOAuthError(t, await tokenRequest(app, { params: 'grant_type=client_credentials&grant_type=client_credentials', headers: auth }), 400, 'invalid_request')
  assertOAuthError(t, await tokenRequest(app, { params: 'grant_type=client_credentials&scope=a&scope=a', headers: auth }), 400, 'invalid_request')
  assertOAuthError(t, await tokenRequest(app, { json: { ...grant, scope: ['a'] }, headers: auth }), 400, 'invalid_request')
  assertOAuthError(t, await tokenRequest(app, { json: [grant], headers: auth }), 400, 'invalid_request')
  // A NUL (PostgreSQL text cannot hold one) is refused in a form as in JSON: never a 500.
  assertOAuthError(t, await tokenRequest(app, { params: { ...grant, client_id: `${client.clientId}\u0000`, client_secret: clientSecret } }), 400, 'invalid_request')
  assertOAuthError(t, await tokenRequest(app, { json: { ...grant, client_id: `${client.clientId}\u0000`, client_secret: clientSecret } }), 400, 'invalid_request')

  const textPlain = await app.inject({ method: 'POST', url: '/oauth/token', payload: 'grant_type=client_credentials', headers: { ...auth, 'content-type': 'text/plain' } })
  assertOAuthError(t, textPlain, 400, 'invalid_request')
  const badJson = await app.inject({ method: 'POST', url: '/oauth/token', payload: '{"grant_type": "client_credentials"', headers: { ...auth, 'content-type': 'application/json' } })
  assertOAuthError(t, badJson, 400, 'invalid_request')

  const ok = await tokenRequest(app, { params: grant, headers: auth })
  t.equal(ok.statusCode, 200, 'the client itself still works')
})

t.test('a service token is no user\'s: every user route refuses it with TOKEN_INVALID', async (t) => {
  const { app, createClient, serviceToken } = await oauthApp(t)
  const { client, clientSecret } = await createClient('svc', ['a'])
  const token = await serviceToken(client, clientSecret)
  assertError(t, await app.inject({ url: '/api/auth/me', headers: bearer(token) }), 401, 'TOKEN_INVALID')
  assertError(t, await app.inject({ url: '/api/admin/users', headers: bearer(token) }), 401, 'TOKEN_INVALID')
  assertError(t, await app.inject({ url: '/api/admin/clients', headers: bearer(token) }), 401, 'TOKEN_INVALID')
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(token) }), 401, 'TOKEN_INVALID')
})

t.test('a rotated secret: the previous one works for the overlap asked, then never; with 0, not at all', async (t) => {
  const { app, clock, createClient, rotateSecret } = await oauthApp(t)
  const { client, clientSecret: first } = await createClient('svc', ['a'])
  const works = async (secret: string) => (await tokenRequest(app, { params: grant, headers: basic(client.clientId, secret) })).statusCode

  const second = await rotateSecret(client.id, 60)
  t.equal(await works(first), 200, 'the previous secret, within its minute')
  t.equal(await works(second), 200, 'the new secret')
  clock.advance(59_999)
  t.equal(await works(first), 200, 'still within the overlap')
  clock.advance(1_001)
  assertOAuthError(t, await tokenRequest(app, { params: grant, headers: basic(client.clientId, first) }), 401, 'invalid_client', 'basic')
  t.equal(await works(second), 200)

  const third = await rotateSecret(client.id, 60)
  const fourth = await rotateSecret(client.id, 60)
  t.equal(await works(fourth), 200)
  t.equal(await works(third), 200, 'the previous secret')
  t.equal(await works(second), 401, 'one previous secret at most: a rotation replaces it')

  const fifth = await rotateSecret(client.id, 0)
  t.equal(await works(fourth), 401, 'rotated with 0: the old secret fails at once')
  t.equal(await works(third), 401)
  t.equal(await works(fifth), 200)
  t.same((await failuresOf(app)).map((e) => e.failureReason), ['invalid_secret', 'invalid_secret', 'invalid_secret', 'invalid_secret'])
})

t.test('a rotation with an overlap leaves issued tokens live; one without (a leaked secret) revokes them', async (t) => {
  const { app, createClient, rotateSecret, serviceToken } = await oauthApp(t)
  const { client, clientSecret } = await createClient('worker', ['a'])
  const { client: gateway, clientSecret: gatewaySecret } = await createClient('gateway', [])
  const introspect = async (token: string) => (await introspectRequest(app, { params: { token }, headers: basic(gateway.clientId, gatewaySecret) })).json()
  const first = await serviceToken(client, clientSecret)
  const rolled = await rotateSecret(client.id, 3600)
  t.match(await introspect(first), { active: true }, 'rolled with an overlap: the token issued before is still live')
  const second = await serviceToken(client, rolled)
  const replaced = await rotateSecret(client.id, 0)
  t.same(await introspect(first), { active: false }, 'replaced without overlap: revoked')
  t.same(await introspect(second), { active: false }, 'every token issued before the replacement is revoked')
  t.match(await introspect(await serviceToken(client, replaced)), { active: true }, 'a token with the new secret is live')
})

t.test('introspection of a service token: live while its client is enabled, with the client\'s current scopes', async (t) => {
  const { app, createClient, patchClient, deleteClient, serviceToken } = await oauthApp(t)
  const { client, clientSecret } = await createClient('svc', ['invoices:read', 'invoices:write'])
  const { client: gateway, clientSecret: gatewaySecret } = await createClient('api gateway', [])
  const token = await serviceToken(client, clientSecret)
  const claims = decodeJwt(token)
  const asGateway = basic(gateway.clientId, gatewaySecret)
  const introspect = async (jwt: string) => {
    const res = await introspectRequest(app, { params: { token: jwt }, headers: asGateway })
    if (res.statusCode !== 200 || res.headers['cache-control'] !== 'no-store') throw new Error(`introspection failed: ${res.statusCode} ${res.body}`)
    return res.json()
  }

  const res = await introspectRequest(app, { params: { token, token_type_hint: 'access_token' }, headers: asGateway })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['cache-control'], 'no-store')
  t.same(res.json(), {
    active: true, sub: client.clientId, client_id: client.clientId, scope: 'invoices:read invoices:write',
    iss: 'gatehouse', aud: 'gatehouse', exp: claims.exp, iat: claims.iat, jti: claims.jti, token_type: 'Bearer'
  })
  const byPost = await introspectRequest(app, { json: { token, client_id: gateway.clientId, client_secret: gatewaySecret } })
  t.same(byPost.json(), res.json(), 'client_secret_post, JSON')
  t.same(await introspectRequest(app, { params: { token }, headers: basic(client.clientId, clientSecret) }).then((r) => r.json()), res.json(),
    'a client may introspect its own token')

  await patchClient(client.id, { scopes: ['invoices:read', 'reports:read'] })
  t.match(await introspect(token), { active: true, scope: 'invoices:read' }, 'narrowed to what the client still holds; a new scope is not added')

  await patchClient(client.id, { disabled: true })
  t.same(await introspect(token), { active: false }, 'the client disabled: inactive at once')
  await patchClient(client.id, { disabled: false })
  t.same(await introspect(token), { active: false }, 'enabled again: a token issued before the disabling stays revoked')
  const fresh = await serviceToken(client, clientSecret)
  t.match(await introspect(fresh), { active: true, client_id: client.clientId }, 'a token issued since is live')
  t.match(decodeJwt(fresh).jti, /^1\./, 'of the next generation')

  t.equal((await deleteClient(client.id)).statusCode, 204)
  t.same(await introspect(token), { active: false }, 'the client deleted: inactive')
})

t.test('another instance sees a disabled client at once: the client is read from the database', async (t) => {
  const { createClient, patchClient, serviceToken } = await oauthApp(t)
  const other = await buildTestApp(t, { db: await testDb() })
  const { client, clientSecret } = await createClient('svc', ['a'])
  const { client: gateway, clientSecret: gatewaySecret } = await createClient('gateway', [])
  const token = await serviceToken(client, clientSecret)
  const introspect = async () => (await introspectRequest(other, { params: { token }, headers: basic(gateway.clientId, gatewaySecret) })).json()
  t.match(await introspect(), { active: true, client_id: client.clientId })
  await patchClient(client.id, { disabled: true })
  t.same(await introspect(), { active: false })
})

t.test('introspection of a user token: live while its session is, with the user\'s current role', async (t) => {
  // With a session cache, as in production: the instance that made the change says so at once.
  const { app, admins, createClient } = await oauthApp(t, { env: { SESSION_CHECK_TTL_SECONDS: '60' } })
  const { client, clientSecret } = await createClient('gateway', [])
  const auth = basic(client.clientId, clientSecret)
  const introspect = async (token: string) => (await introspectRequest(app, { params: { token }, headers: auth })).json()

  const user = await signup(app)
  const claims = decodeJwt(user.accessToken)
  t.same(await introspect(user.accessToken), {
    active: true, sub: user.user.id, sid: claims.sid, role: 'user', amr: claims.amr,
    iss: 'gatehouse', aud: 'gatehouse', exp: claims.exp, iat: claims.iat, jti: claims.jti, token_type: 'Bearer'
  })
  t.same(claims.amr, ['pwd'])

  t.equal((await admins('PATCH', `/api/admin/users/${user.user.id}`, { role: 'admin' })).statusCode, 200)
  t.match(await introspect(user.accessToken), { active: true, role: 'admin' }, 'the role now, not the token\'s')
  t.equal(claims.role, 'user')

  t.same(await introspect(refreshCookieIn(user.res)), { active: false }, 'a refresh token is no access token')

  const other = await signup(app)
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(other.accessToken) })).statusCode, 200)
  t.same(await introspect(other.accessToken), { active: false }, 'logged out: inactive at once')

  const deactivated = await signup(app)
  t.match(await introspect(deactivated.accessToken), { active: true })
  t.equal((await admins('PATCH', `/api/admin/users/${deactivated.user.id}`, { isActive: false })).statusCode, 200)
  t.same(await introspect(deactivated.accessToken), { active: false }, 'the user deactivated: inactive')
})

t.test('introspection answers exactly {active: false} for anything not live', async (t) => {
  const { app, clock, createClient, serviceToken } = await oauthApp(t)
  const { client, clientSecret } = await createClient('svc', ['a'])
  const auth = basic(client.clientId, clientSecret)
  const introspect = async (token: string) => {
    const res = await introspectRequest(app, { params: { token }, headers: auth })
    t.equal(res.statusCode, 200)
    return res.json()
  }
  const user = await signup(app)
  const sec = Math.floor(Date.now() / 1000) // fast-jwt checks exp with the real clock
  const sign = (claims: Record<string, unknown>, key = JWT_SECRET, typ = 'at+jwt') =>
    createSigner({ key, algorithm: 'HS256', header: { alg: 'HS256', typ } })({ iss: 'gatehouse', aud: 'gatehouse', jti: `0.${randomUUID()}`, iat: sec - 60, exp: sec + 600, ...claims })
  const serviceClaims = { sub: client.clientId, client_id: client.clientId, scope: 'a' }
  const userClaims = { sub: user.user.id, sid: decodeJwt(user.accessToken).sid, role: 'user', amr: ['pwd'] }

  t.match(await introspect(sign(serviceClaims)), { active: true }, 'a token made this way is live (the control)')
  t.match(await introspect(sign(userClaims)), { active: true }, 'a user token made this way is live (the control)')

  const token = await serviceToken(client, clientSecret)
  const [h, p, s] = token.split('.')
  const claims = decodeJwt(token)
  const notLive: Array<[string, string]> = [
    ['garbage', 'not-a-token'],
    ['empty', ''],
    ['only dots', '..'],
    ['another secret', sign(serviceClaims, 'another-secret-that-is-long-enough-for-hs256-0123')],
    ['expired (service)', sign({ ...serviceClaims, iat: sec - 3600, exp: sec - 60 })],
    ['expired (user)', sign({ ...userClaims, iat: sec - 3600, exp: sec - 60 })],
    ['not an access token (typ JWT)', sign(serviceClaims, JWT_SECRET, 'JWT')],
    ['another issuer', sign({ ...serviceClaims, iss: 'someone-else' })],
    ['another audience', sign({ ...serviceClaims, aud: 'someone-else' })],
    ['sub is not the client', sign({ ...serviceClaims, sub: 'gc_other' })],
    ['unknown client', sign({ ...serviceClaims, sub: 'gc_nobody', client_id: 'gc_nobody' })],
    ['no scope', sign({ sub: client.clientId, client_id: client.clientId })],
    ['a client and a session at once', sign({ ...userClaims, client_id: user.user.id, scope: 'a' })],
    ['a session of someone else', sign({ ...userClaims, sub: randomUUID() })],
    ['claims changed', `${h}.${Buffer.from(JSON.stringify({ ...claims, scope: 'a b' })).toString('base64url')}.${s}`],
    ['no signature', `${h}.${p}.`],
    ['alg none', `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString('base64url')}.${p}.`],
    ['an MFA challenge token', await mfaChallenge(app, (await enrolMfa(app, clock)).email)],
    ['a client secret', clientSecret]
  ]
  for (const [what, token] of notLive) t.same(await introspect(token), { active: false }, what)
})

t.test('introspection needs client authentication and a token', async (t) => {
  const { app, createClient, patchClient, serviceToken } = await oauthApp(t)
  const { client, clientSecret } = await createClient('svc', ['a'])
  const token = await serviceToken(client, clientSecret)
  assertOAuthError(t, await introspectRequest(app, { params: { token } }), 401, 'invalid_client', 'none')
  assertOAuthError(t, await introspectRequest(app, { params: { token }, headers: bearer(token) }), 401, 'invalid_client')
  assertOAuthError(t, await introspectRequest(app, { params: { token }, headers: basic(client.clientId, 'wrong') }), 401, 'invalid_client', 'basic')
  assertOAuthError(t, await introspectRequest(app, { params: { token, client_id: client.clientId, client_secret: 'wrong' } }), 401, 'invalid_client', 'none')
  assertOAuthError(t, await introspectRequest(app, { params: {}, headers: basic(client.clientId, clientSecret) }), 400, 'invalid_request')
  assertOAuthError(t, await introspectRequest(app, { params: { token: `${token}\u0000` }, headers: basic(client.clientId, clientSecret) }), 400, 'invalid_request')
  assertOAuthError(t, await introspectRequest(app, { params: `token=${token}&token=${token}`, headers: basic(client.clientId, clientSecret) }), 400, 'invalid_request')
  await patchClient(client.id, { disabled: true })
  assertOAuthError(t, await introspectRequest(app, { params: { token }, headers: basic(client.clientId, clientSecret) }), 401, 'invalid_client', 'basic')
})

t.test('each failed client authentication is recorded with the client id, method and endpoint, never the secret', async (t) => {
  const logs = logCapture()
  const { app, createClient, patchClient } = await oauthApp(t, { logger: loggerOptions('info', logs.stream) })
  const { client, clientSecret } = await createClient('svc', ['a'])
  const { client: disabled, clientSecret: disabledSecret } = await createClient('off', ['a'])
  await patchClient(disabled.id, { disabled: true })
  const WRONG = 'Wr0ng-Secret-Presented-By-An-Attacker'
  const ua = { 'user-agent': 'svc/1.0' }

  t.equal((await tokenRequest(app, { params: { ...grant, client_id: 'gc_unknown', client_secret: WRONG }, headers: ua, remoteAddress: '192.0.2.1' })).statusCode, 401)
  t.equal((await introspectRequest(app, { params: { token: 'x' }, headers: { ...ua, ...basic(client.clientId, WRONG) }, remoteAddress: '192.0.2.2' })).statusCode, 401)
  t.equal((await tokenRequest(app, { json: { ...grant, client_id: disabled.clientId, client_secret: disabledSecret }, headers: ua, remoteAddress: '192.0.2.3' })).statusCode, 401)
  t.equal((await tokenRequest(app, { params: grant, headers: basic(client.clientId, clientSecret) })).statusCode, 200, 'a success is not a failure')

  const events = (await failuresOf(app)).sort((a, b) => String(a.ipAddress).localeCompare(String(b.ipAddress)))
  t.equal(events.length, 3)
  const shape = (e: typeof events[number]) => ({
    userId: e.userId, email: e.email, success: e.success, failureReason: e.failureReason, ipAddress: e.ipAddress, userAgent: e.userAgent, metadata: e.metadata
  })
  t.same(events.map(shape), [
    { userId: null, email: null, success: false, failureReason: 'unknown_client', ipAddress: '192.0.2.1', userAgent: 'svc/1.0', metadata: { clientId: null, address: '192.0.2.1', method: 'client_secret_post', endpoint: 'token' } },
    { userId: null, email: null, success: false, failureReason: 'invalid_secret', ipAddress: '192.0.2.2', userAgent: 'svc/1.0', metadata: { clientId: client.clientId, address: '192.0.2.2', method: 'client_secret_basic', endpoint: 'introspect' } },
    { userId: null, email: null, success: false, failureReason: 'client_disabled', ipAddress: '192.0.2.3', userAgent: 'svc/1.0', metadata: { clientId: disabled.clientId, address: '192.0.2.3', method: 'client_secret_post', endpoint: 'token' } }
  ])

  t.match(logs.text(), /\/oauth\/introspect/, 'the requests were logged')
  const dump = await dumpDatabase(app)
  for (const secret of [WRONG, clientSecret, disabledSecret]) {
    t.notOk(dump.includes(secret), 'no presented secret in the database')
    t.notOk(logs.text().includes(secret), 'nor in the logs')
  }
  t.notOk(logs.text().includes(basic(client.clientId, WRONG).authorization.slice(6)), 'nor the Basic credentials')
})

t.test('too many guesses for one client id: 429 for further guesses from anywhere, while the right secret still works', async (t) => {
  const { app, clock, createClient } = await oauthApp(t, { env: { RATE_LIMIT_CLIENT_AUTH_FAILURES: '3' } })
  const { client, clientSecret } = await createClient('target', ['a'])
  const { client: bystander, clientSecret: bystanderSecret } = await createClient('bystander', ['a'])
  const attempt = (c: Client, secret: string, remoteAddress: string) => tokenRequest(app, { params: grant, headers: basic(c.clientId, secret), remoteAddress })

  for (const ip of ['203.0.113.1', '203.0.113.2', '203.0.113.3']) {
    assertOAuthError(t, await attempt(client, 'guess', ip), 401, 'invalid_client', 'basic')
    clock.advance(10_000)
  }
  const limited = await attempt(client, 'another guess', '203.0.113.4')
  assertError(t, limited, 429, 'RATE_LIMITED')
  t.equal(limited.headers['retry-after'], '870', 'until the first of the three leaves the 15-minute window')
  const viaIntrospect = await introspectRequest(app, { params: { token: 'x' }, headers: basic(client.clientId, 'guess'), remoteAddress: '203.0.113.5' })
  assertError(t, viaIntrospect, 429, 'RATE_LIMITED')
  const viaBody = await tokenRequest(app, { params: { ...grant, client_id: client.clientId, client_secret: 'guess' }, remoteAddress: '203.0.113.6' })
  assertError(t, viaBody, 429, 'RATE_LIMITED')

  // Client ids are not secret (every token names one): the limit must not lock the service out.
  t.equal((await attempt(client, clientSecret, '203.0.113.7')).statusCode, 200, 'the right secret works throughout')
  t.equal((await attempt(bystander, bystanderSecret, '203.0.113.9')).statusCode, 200, 'another client is unaffected')

  const limitedEvents = await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'rate_limited'))
  t.equal(limitedEvents.length, 3)
  t.match(limitedEvents.find((e) => e.ipAddress === '203.0.113.4'), {
    success: false, failureReason: 'client_auth_failures', metadata: { clientId: client.clientId, endpoint: 'token' }
  })
  t.equal((await failuresOf(app)).length, 3, 'a refused attempt is not counted as another failure')

  clock.advance(869_000)
  t.equal((await attempt(client, 'guess', '203.0.113.4')).headers['retry-after'], '1', 'a second before the window passes')
  clock.advance(1_000)
  assertOAuthError(t, await attempt(client, 'guess', '203.0.113.4'), 401, 'invalid_client', 'basic')
})

t.test('too many guesses from one IP: 429 for further guesses from it, not for a client proving itself; the IP is in the suspicious report', async (t) => {
  const { app, clock, admin, createClient } = await oauthApp(t, { env: { RATE_LIMIT_CLIENT_AUTH_FAILURES: '3' } })
  const { client, clientSecret } = await createClient('svc', ['a'])
  const IP = '198.51.100.7'
  for (const id of ['gc_guess1', 'gc_guess2', 'gc_guess3']) {
    assertOAuthError(t, await tokenRequest(app, { params: { ...grant, client_id: id, client_secret: 'guess' }, remoteAddress: IP }), 401, 'invalid_client', 'none')
    clock.advance(5_000)
  }
  const lastAt = new Date(clock.now().getTime() - 5_000).toISOString()
  const limited = await tokenRequest(app, { params: { ...grant, client_id: 'gc_guess4', client_secret: 'guess' }, remoteAddress: IP })
  assertError(t, limited, 429, 'RATE_LIMITED')
  t.equal(limited.headers['retry-after'], '885')
  assertError(t, await introspectRequest(app, { params: { token: 'x' }, headers: basic(client.clientId, 'wrong'), remoteAddress: IP }), 429, 'RATE_LIMITED')
  t.equal((await tokenRequest(app, { params: grant, headers: basic(client.clientId, clientSecret), remoteAddress: IP })).statusCode, 200,
    'a client proving itself from that IP is served (a shared address must not lock out every service behind it)')

  const report = await app.inject({ url: '/api/admin/security/suspicious?threshold=3', headers: bearer(admin.accessToken) })
  t.equal(report.statusCode, 200)
  t.same(report.json(), { windowMinutes: 15, threshold: 3, byIp: [{ ip: IP, failures: 3, lastAt }], byEmail: [], stuffing: [], spraying: [] })

  clock.advance(885_000)
  assertOAuthError(t, await tokenRequest(app, { params: { ...grant, client_id: 'gc_guess5', client_secret: 'guess' }, remoteAddress: IP }), 401, 'invalid_client', 'none')
})

t.test('a disabled client retrying with its own secret is refused and recorded, but counts as no guess', async (t) => {
  const { app, createClient, patchClient } = await oauthApp(t, { env: { RATE_LIMIT_CLIENT_AUTH_FAILURES: '3' } })
  const { client, clientSecret } = await createClient('stale', ['a'])
  const { client: neighbour, clientSecret: neighbourSecret } = await createClient('neighbour', ['a'])
  t.equal((await patchClient(client.id, { disabled: true })).statusCode, 200)
  const IP = '192.0.2.44'
  for (let i = 0; i < 5; i++) {
    assertOAuthError(t, await tokenRequest(app, { params: grant, headers: basic(client.clientId, clientSecret), remoteAddress: IP }), 401, 'invalid_client', 'basic')
  }
  t.equal((await failuresOf(app)).filter((e) => e.failureReason === 'client_disabled').length, 5, 'each refusal recorded')
  t.equal((await tokenRequest(app, { params: grant, headers: basic(neighbour.clientId, neighbourSecret), remoteAddress: IP })).statusCode, 200,
    'the other services behind that address are not locked out')
  assertOAuthError(t, await tokenRequest(app, { params: grant, headers: basic(neighbour.clientId, 'guess'), remoteAddress: IP }), 401, 'invalid_client', 'basic')
})

t.test('lastUsedAt: null until a token, then moves at most once a minute', async (t) => {
  const { app, clock, admin, createClient, serviceToken } = await oauthApp(t)
  const { client, clientSecret } = await createClient('svc', ['a'])
  const listed = async () => ((await app.inject({ url: '/api/admin/clients', headers: bearer(admin.accessToken) })).json().items as Client[])[0]?.lastUsedAt
  t.equal(client.lastUsedAt, null)
  t.equal((await clientRow(app, client.id))?.lastUsedAt, null)

  clock.advance(1_000)
  const first = clock.now()
  await serviceToken(client, clientSecret)
  t.same((await clientRow(app, client.id))?.lastUsedAt, first)
  t.equal(await listed(), first.toISOString())

  clock.advance(30_000)
  await serviceToken(client, clientSecret)
  t.equal(await listed(), first.toISOString(), '30 s later: unchanged')

  clock.advance(31_000)
  const introspected = await introspectRequest(app, { params: { token: 'x' }, headers: basic(client.clientId, clientSecret) })
  t.equal(introspected.statusCode, 200)
  t.equal(await listed(), first.toISOString(), 'introspecting issues no token: unchanged')
  await serviceToken(client, clientSecret)
  t.equal(await listed(), clock.now().toISOString(), '61 s after the first: moved')
})

t.test('the metadata document (RFC 8414): endpoints from PUBLIC_URL, the scopes of enabled clients', async (t) => {
  const { app, createClient, patchClient } = await oauthApp(t, { env: { PUBLIC_URL: 'https://auth.example.com', JWT_ISSUER: 'https://auth.example.com' } })
  await createClient('a', ['reports:read', 'invoices:read'])
  await createClient('b', ['invoices:read', 'invoices:write'])
  const { client: off } = await createClient('off', ['secret:stuff', 'reports:read'])
  await patchClient(off.id, { disabled: true })

  const res = await app.inject({ url: '/.well-known/oauth-authorization-server' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^application\/json/)
  t.same(res.json(), {
    issuer: 'https://auth.example.com',
    token_endpoint: 'https://auth.example.com/oauth/token',
    introspection_endpoint: 'https://auth.example.com/oauth/introspect',
    grant_types_supported: ['client_credentials'],
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    introspection_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    response_types_supported: [],
    scopes_supported: ['invoices:read', 'invoices:write', 'reports:read']
  }, 'no jwks_uri with HS256; a disabled client\'s scopes left out')

  const { client, clientSecret } = await createClient('c', ['a'])
  const token = (await tokenRequest(app, { params: grant, headers: basic(client.clientId, clientSecret) })).json().access_token as string
  t.equal(decodeJwt(token).iss, 'https://auth.example.com', 'tokens are issued by the issuer the metadata names')
})

t.test('with an Ed25519 key: jwks_uri, service tokens signed EdDSA with the kid, and introspection works', async (t) => {
  const pem = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString()
  const { app, createClient, serviceToken } = await oauthApp(t, { env: { PUBLIC_URL: 'https://auth.example.com/', JWT_PRIVATE_KEY: pem } })
  const meta = (await app.inject({ url: '/.well-known/oauth-authorization-server' })).json()
  t.equal(meta.jwks_uri, 'https://auth.example.com/.well-known/jwks.json')
  t.equal(meta.token_endpoint, 'https://auth.example.com/oauth/token', 'a trailing slash in PUBLIC_URL is no double slash')
  const jwks = (await app.inject({ url: '/.well-known/jwks.json' })).json()
  const kid = jwks.keys[0].kid as string

  const { client, clientSecret } = await createClient('svc', ['a'])
  const token = await serviceToken(client, clientSecret)
  t.same(jwtHeader(token), { alg: 'EdDSA', typ: 'at+jwt', kid })
  const [h, p, s] = token.split('.')
  const publicKey = createPublicKey({ key: jwks.keys[0], format: 'jwk' })
  t.ok(cryptoVerify(null, Buffer.from(`${h}.${p}`), publicKey, Buffer.from(s ?? '', 'base64url')), 'the signature verifies with the published key')

  const introspect = async (token: string) => (await introspectRequest(app, { params: { token }, headers: basic(client.clientId, clientSecret) })).json()
  t.match(await introspect(token), { active: true, sub: client.clientId, client_id: client.clientId, scope: 'a' })
  const user = await signup(app)
  t.match(await introspect(user.accessToken), { active: true, sub: user.user.id })
  const sec = Math.floor(Date.now() / 1000)
  const hs256 = createSigner({ key: JWT_SECRET, algorithm: 'HS256', header: { alg: 'HS256', typ: 'at+jwt' } })({
    iss: 'gatehouse', aud: 'gatehouse', jti: randomUUID(), iat: sec, exp: sec + 600, sub: client.clientId, client_id: client.clientId, scope: 'a'
  })
  t.same(await introspect(hs256), { active: false }, 'with a private key, HS256 tokens are refused (no algorithm confusion)')
})
