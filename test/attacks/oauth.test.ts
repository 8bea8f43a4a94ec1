/**
 * An attacker's read of the service clients (OAuth 2.0 client credentials, introspection,
 * metadata). Tests named "DEFENCE" prove a defence held from the start; the others are the
 * weaknesses that read found (a 500 on a malformed client id, disabling that did not revoke, racing
 * rotations, IPv6 addresses and concurrent guesses escaping the limits, a secret recorded as a
 * client id, a live answer for a session that must change its password), each fixed since.
 */
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto'
import { eq, sql } from 'drizzle-orm'
import { createSigner } from 'fast-jwt'
import t, { type Test } from 'tap'
import type { App } from '../../src/app.ts'
import { authEvents } from '../../src/db/schema.ts'
import {
  assertError, bearer, buildTestApp, buildTestAppWithRoutes, decodeJwt, dumpDatabase, JWT_SECRET, rowsOf, setUser, signup, signupAdmin,
  testClock, type TestAppOptions, within
} from '../helper.ts'

interface Client { id: string, clientId: string, scopes: string[] }

const grant = { grant_type: 'client_credentials' }
const form = { 'content-type': 'application/x-www-form-urlencoded' }
const basic = (id: string, secret: string) =>
  ({ authorization: `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}` })

function post (app: App, url: string, params: Record<string, string> | string, headers: Record<string, string> = {}, remoteAddress?: string) {
  const payload = typeof params === 'string' ? params : new URLSearchParams(params).toString()
  return app.inject({ method: 'POST', url, payload, headers: { ...form, ...headers }, ...(remoteAddress === undefined ? {} : { remoteAddress }) })
}

async function setup (test: Test, opts: TestAppOptions = {}) {
  const clock = testClock()
  const app = await buildTestApp(test, { now: clock.now, ...opts, env: { RATE_LIMIT_CLIENT_AUTH_FAILURES: '1000', ...opts.env } })
  const admin = await signupAdmin(app)
  const admins = (method: 'POST' | 'PATCH' | 'DELETE' | 'GET', url: string, payload?: Record<string, unknown>) =>
    app.inject({ method, url, headers: bearer(admin.accessToken), ...(payload === undefined ? {} : { payload }) })
  async function createClient (name: string, scopes: string[]) {
    const res = await admins('POST', '/api/admin/clients', { name, scopes })
    if (res.statusCode !== 201) throw new Error(`client creation failed: ${res.body}`)
    return res.json() as { client: Client, clientSecret: string }
  }
  async function serviceToken (client: Client, secret: string) {
    const res = await post(app, '/oauth/token', grant, basic(client.clientId, secret))
    if (res.statusCode !== 200) throw new Error(`token request failed: ${res.body}`)
    return res.json().access_token as string
  }
  return { app, clock, admin, admins, createClient, serviceToken }
}

// Fix: keep audit metadata well-formed (`clientId.slice(0, 100).toWellFormed()`, or slice by code
// points), or refuse a client_id that is not of the issued shape (`gc_` + 22 base64url) before any lookup.
t.test('a client id cut inside a surrogate pair, or a lone surrogate in JSON: invalid_client, never a 500', async (t) => {
  const { app, admins } = await setup(t)
  // 99 ASCII characters and an emoji: 101 UTF-16 units; the audit row keeps the first 100, half a pair.
  const longId = `${'a'.repeat(99)}\u{1F600}`
  const viaForm = await post(app, '/oauth/token', { ...grant, client_id: longId, client_secret: 'x' })
  t.equal(viaForm.statusCode, 401, `form: ${viaForm.statusCode} ${viaForm.body}`)
  const viaBasic = await post(app, '/oauth/token', grant, basic(longId, 'x'))
  t.equal(viaBasic.statusCode, 401, `Basic: ${viaBasic.statusCode} ${viaBasic.body}`)
  const viaIntrospect = await post(app, '/oauth/introspect', { token: 'x', client_id: longId, client_secret: 'x' })
  t.equal(viaIntrospect.statusCode, 401, `introspect: ${viaIntrospect.statusCode} ${viaIntrospect.body}`)
  const lone = await app.inject({
    method: 'POST', url: '/oauth/token', headers: { 'content-type': 'application/json' },
    payload: '{"grant_type":"client_credentials","client_id":"gc_\\ud800","client_secret":"x"}'
  })
  t.ok(lone.statusCode === 401 || lone.statusCode === 400, `JSON lone surrogate: ${lone.statusCode} ${lone.body}`)
  // The same through the admin API: a client name is recorded in the audit metadata too.
  const named = await admins('POST', '/api/admin/clients', { name: 'svc \ud800', scopes: [] })
  t.ok(named.statusCode === 201 || named.statusCode === 400, `admin: a lone surrogate in a name: ${named.statusCode} ${named.body}`)
})

// Fix: count failures by clientKey(ip, RATE_LIMIT_IPV6_PREFIX) (src/services/client-key.ts): record it in
// the failure's metadata and index it, as the per-IP rate limits already key on it.
t.test('the per-address limit of client guesses counts an IPv6 client per prefix, as every other per-IP limit does', async (t) => {
  const { app } = await setup(t, { env: { RATE_LIMIT_CLIENT_AUTH_FAILURES: '3' } })
  const statuses: number[] = []
  for (let i = 1; i <= 6; i++) {
    // One machine, one /64, a new address per request; a new unknown client id each time.
    const res = await post(app, '/oauth/token', { ...grant, client_id: `gc_spray${i}`, client_secret: 'leaked-secret' }, {}, `2001:db8:1:2::${i.toString(16)}`)
    statuses.push(res.statusCode)
  }
  t.same(statuses, [401, 401, 401, 429, 429, 429], 'after 3 guesses from 2001:db8:1:2::/64, the rest are refused')
})

// Fix: take the previous secret from the row being updated, in the UPDATE itself
// (`previousSecretHash: sql\`${oauthClients.secretHash}\``), or read the row FOR UPDATE in the transaction.
t.test('two rotations at once never keep alive the secret both of them replaced', async (t) => {
  const { app, admin, createClient } = await setup(t)
  const { client, clientSecret: leaked } = await createClient('svc', ['a'])
  const works = async (secret: string) => (await post(app, '/oauth/token', grant, basic(client.clientId, secret))).statusCode
  // An incident: one admin kills a leaked secret (no overlap) while a deploy pipeline rolls the
  // secret (an hour of overlap): two POST /api/admin/clients/:id/secret at once, called here at
  // the service the route hands them to, in the order the race needs. Run one after the other,
  // either order leaves the leaked secret dead (the second rotation keeps the first's secret).
  const actor = { userId: admin.user.id, ctx: { ip: '10.0.0.1', userAgent: null } }
  const rotate = (seconds: number) => app.services.clients.rotateSecret(actor, client.id, seconds)
  let kill: { clientSecret: string }
  let roll: { clientSecret: string }
  if (process.env.TEST_DATABASE_URL === undefined || process.env.TEST_DATABASE_URL === '') {
    // PGlite runs one statement at a time, in the order issued: both reads come before either write.
    [kill, roll] = await Promise.all([rotate(0), rotate(3600)])
  } else {
    // PostgreSQL: hold the row while both rotations read it and queue their updates behind it.
    const lockWaits = async () => Number(rowsOf(await app.db.execute(sql`select count(*)::int as n from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock'`))[0]?.n)
    const pending: Array<Promise<{ clientSecret: string }>> = []
    await app.db.transaction(async (tx) => {
      await tx.execute(sql`select id from oauth_clients where id = ${client.id} for update`)
      pending.push(rotate(0))
      t.ok(await within(5_000, async () => await lockWaits() === 1), 'the kill waits for the row')
      pending.push(rotate(3600))
      t.ok(await within(5_000, async () => await lockWaits() === 2), 'the roll waits behind it')
    })
    ;[kill, roll] = await Promise.all(pending) as [{ clientSecret: string }, { clientSecret: string }]
  }
  const result = { leaked: await works(leaked), killed: await works(kill.clientSecret), rolled: await works(roll.clientSecret) }
  t.equal(result.leaked, 401, `the leaked secret is dead (${JSON.stringify(result)})`)
  t.equal(result.killed + result.rolled >= 400, true, 'at least one new secret works')
})

// Fix: record the attempted client id only when it has the issued shape (`^gc_[A-Za-z0-9_-]{22}$`);
// anything else as `malformed` (a hash prefix at most), in client_auth_failure and rate_limited alike.
t.test('a swapped client id and secret (a common misconfiguration) leave no secret in the audit log', async (t) => {
  const { app, admin, createClient } = await setup(t)
  const { client, clientSecret } = await createClient('svc', ['a'])
  // CLIENT_ID and CLIENT_SECRET swapped in a deployment's environment.
  t.equal((await post(app, '/oauth/token', grant, basic(clientSecret, client.clientId))).statusCode, 401)
  t.equal((await post(app, '/oauth/token', { ...grant, client_id: clientSecret, client_secret: client.clientId })).statusCode, 401)
  const events = await app.inject({ url: '/api/admin/auth-events?type=client_auth_failure', headers: bearer(admin.accessToken) })
  t.notOk(events.body.includes(clientSecret), 'the admin API does not show the secret')
  t.notOk((await dumpDatabase(app)).includes(clientSecret), 'no table holds the secret')
})

// Holds on PGlite (one statement at a time); fails on PostgreSQL, where the check and the record race.
// Fix: serialise check-and-record per client id and per address (pg_advisory_xact_lock on their hash), or
// record the attempt first and count afterwards.
t.test('concurrent guesses do not escape the per-client limit', async (t) => {
  const { app, createClient } = await setup(t, { env: { RATE_LIMIT_CLIENT_AUTH_FAILURES: '3' } })
  const { client } = await createClient('target', ['a'])
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) =>
    post(app, '/oauth/token', grant, basic(client.clientId, `guess-${i}`), `203.0.113.${i + 1}`)))
  const statuses = results.map((r) => r.statusCode)
  const guessed = statuses.filter((s) => s === 401).length
  t.ok(guessed <= 3, `at most 3 guesses are checked, got ${guessed} (${statuses.join(',')})`)
  const recorded = (await app.db.select().from(authEvents).where(eq(authEvents.eventType, 'client_auth_failure'))).length
  t.ok(recorded <= 3, `at most 3 guesses recorded, got ${recorded}`)
})

// Fix: a `tokensNotBefore` (or generation) on the client, set when it is disabled and by a rotation
// without overlap; introspection refuses service tokens whose iat is earlier.
t.test('disabling a client is a revocation: enabling it again does not bring back the tokens it had', async (t) => {
  const { app, admins, createClient, serviceToken } = await setup(t)
  const { client, clientSecret: stolen } = await createClient('billing', ['invoices:write'])
  const { client: gateway, clientSecret: gatewaySecret } = await createClient('gateway', [])
  const introspect = async (token: string) => (await post(app, '/oauth/introspect', { token }, basic(gateway.clientId, gatewaySecret))).json()
  // The attacker holds the stolen secret and mints a token with it.
  const attackers = await serviceToken(client, stolen)
  // The playbook: disable the client, rotate the secret with no overlap, deploy it, enable the client.
  t.equal((await admins('PATCH', `/api/admin/clients/${client.id}`, { disabled: true })).statusCode, 200)
  t.same(await introspect(attackers), { active: false }, 'disabled: the attacker\'s token is inactive')
  t.equal((await admins('POST', `/api/admin/clients/${client.id}/secret`, { previousValidSeconds: 0 })).statusCode, 200)
  t.equal((await post(app, '/oauth/token', grant, basic(client.clientId, stolen))).statusCode, 401, 'the stolen secret is dead')
  t.equal((await admins('PATCH', `/api/admin/clients/${client.id}`, { disabled: false })).statusCode, 200)
  t.same(await introspect(attackers), { active: false }, 'enabled again: the token minted with the stolen secret stays dead')
})

// Fix: answer {active: false} (or add password_must_change) while state.passwordMustChange, as the
// guard refuses such a session everywhere but /me, logout and password change.
t.test('introspection does not call a token live that every admin route refuses (password must change)', async (t) => {
  const { app, createClient } = await setup(t)
  const { client, clientSecret } = await createClient('gateway', [])
  const bootstrapped = await signupAdmin(app)
  await setUser(app, bootstrapped.user.id, { passwordMustChange: true })
  assertError(t, await app.inject({ url: '/api/admin/users', headers: bearer(bootstrapped.accessToken) }), 403, 'PASSWORD_CHANGE_REQUIRED')
  const res = await post(app, '/oauth/introspect', { token: bootstrapped.accessToken }, basic(client.clientId, clientSecret))
  t.equal(res.statusCode, 200)
  t.not(res.json().active === true && res.json().role === 'admin', true,
    `introspection says ${res.body}: a resource service would treat it as a live admin`)
})

// ---- defences -------------------------------------------------------------------------------

t.test('DEFENCE: a service token opens no Gatehouse route that takes a Bearer token, whatever :userId says', async (t) => {
  const { app, routes } = await buildTestAppWithRoutes(t, { env: { RATE_LIMIT_CLIENT_AUTH_FAILURES: '1000' } })
  const admin = await signupAdmin(app)
  const created = await app.inject({ method: 'POST', url: '/api/admin/clients', headers: bearer(admin.accessToken), payload: { name: 'svc', scopes: ['a'] } })
  const { client, clientSecret } = created.json() as { client: Client, clientSecret: string }
  const token = (await post(app, '/oauth/token', grant, basic(client.clientId, clientSecret))).json().access_token as string
  t.equal(decodeJwt(token).sub, client.clientId)
  const guarded = routes.filter((r) => JSON.stringify(r.schema.security ?? []).includes('bearerAuth'))
  t.ok(guarded.length >= 20, `${guarded.length} Bearer routes`)
  const tried: string[] = []
  for (const r of guarded) {
    for (const userId of [client.clientId, client.id, admin.user.id]) {
      const url = r.url.replace(':userId', encodeURIComponent(userId)).replace(/:(id|taskId)/g, randomUUID())
      const res = await app.inject({
        method: r.method as 'GET', url, headers: bearer(token),
        ...(['POST', 'PATCH', 'PUT'].includes(r.method) ? { payload: {} } : {})
      })
      tried.push(`${r.method} ${url}`)
      t.equal(res.statusCode, 401, `${r.method} ${url}: ${res.statusCode}`)
      t.equal(res.json().code, 'TOKEN_INVALID', `${r.method} ${url}`)
      if (!r.url.includes(':userId')) break
    }
  }
  t.ok(tried.some((u) => u.includes(`/api/${client.clientId}/tasks`)), 'the tasks routes were tried with sub as :userId')
})

t.test('DEFENCE: forged and confused tokens are refused by the guard and by introspection (Ed25519 key)', async (t) => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString()
  const { app, createClient, serviceToken } = await setup(t, { env: { JWT_PRIVATE_KEY: pem } })
  const { client, clientSecret } = await createClient('svc', ['a'])
  const user = await signup(app)
  const real = await serviceToken(client, clientSecret)
  const { kid } = JSON.parse(Buffer.from(real.split('.')[0] ?? '', 'base64url').toString()) as { kid: string }
  const sec = Math.floor(Date.now() / 1000)
  const service = { iss: 'gatehouse', aud: 'gatehouse', iat: sec, exp: sec + 600, jti: randomUUID(), sub: client.clientId, client_id: client.clientId, scope: 'a' }
  const userClaims = { ...service, sub: user.user.id, sid: decodeJwt(user.accessToken).sid, role: 'admin', amr: ['pwd'], client_id: undefined, scope: undefined }
  const publicPem = publicKey.export({ format: 'pem', type: 'spki' }).toString()
  const attacker = generateKeyPairSync('ed25519')
  const attackerJwk = attacker.publicKey.export({ format: 'jwk' }) as { crv: string, kty: string, x: string }
  const attackerKid = createHash('sha256').update(JSON.stringify({ crv: attackerJwk.crv, kty: attackerJwk.kty, x: attackerJwk.x })).digest('base64url')
  const hs = (key: string | Buffer, header: Record<string, unknown>) => (claims: Record<string, unknown>) =>
    createSigner({ key: key as string, algorithm: 'HS256', header: { alg: 'HS256', typ: 'at+jwt', ...header } })(claims)
  const ed = (header: Record<string, unknown>) => (claims: Record<string, unknown>) =>
    createSigner({ key: attacker.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), algorithm: 'EdDSA', header: { alg: 'EdDSA', typ: 'at+jwt', ...header } })(claims)
  const forgers: Array<[string, (claims: Record<string, unknown>) => string]> = [
    ['HS256 with JWT_SECRET', hs(JWT_SECRET, {})],
    ['HS256 with JWT_SECRET and the real kid', hs(JWT_SECRET, { kid })],
    ['HS256 keyed with the public key PEM, real kid', hs(publicPem, { kid })],
    ['HS256 keyed with the raw public key, real kid', hs(Buffer.from(publicKey.export({ format: 'jwk' }).x as string, 'base64url'), { kid })],
    ['EdDSA by another key, its own kid and jwk header', ed({ kid: attackerKid, jwk: { ...attackerJwk, kid: attackerKid } })],
    ['EdDSA by another key, the real kid', ed({ kid })],
    ['alg none', (claims) => `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt', kid })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`]
  ]
  const introspect = async (token: string) => (await post(app, '/oauth/introspect', { token }, basic(client.clientId, clientSecret))).json()
  for (const [what, forge] of forgers) {
    for (const [kind, claims] of [['service', service], ['user', JSON.parse(JSON.stringify(userClaims))]] as const) {
      const token = forge({ ...claims, jti: randomUUID() })
      t.same(await introspect(token), { active: false }, `${what} (${kind}): inactive`)
      t.equal((await app.inject({ url: '/api/auth/me', headers: bearer(token) })).statusCode, 401, `${what} (${kind}): the guard refuses`)
    }
  }
  // The real token with another typ, or its signature on a changed payload.
  const retyped = `${Buffer.from(JSON.stringify({ alg: 'EdDSA', typ: 'JWT', kid })).toString('base64url')}.${real.split('.').slice(1).join('.')}`
  t.same(await introspect(retyped), { active: false }, 'typ JWT')
  const widened = `${real.split('.')[0]}.${Buffer.from(JSON.stringify({ ...decodeJwt(real), scope: 'a admin' })).toString('base64url')}.${real.split('.')[2]}`
  t.same(await introspect(widened), { active: false }, 'a widened scope breaks the signature')
  t.match(await introspect(real), { active: true, scope: 'a' }, 'the control: the real token is live')
})

t.test('DEFENCE: form parser edge cases neither crash nor smuggle a parameter', async (t) => {
  const { app, createClient } = await setup(t)
  const { client, clientSecret } = await createClient('svc', ['a', 'b'])
  const auth = basic(client.clientId, clientSecret)
  const cases: Array<[string, string, number, string?]> = [
    ['__proto__ keys', '__proto__=x&__proto__[client_secret]=y&grant_type=client_credentials', 200],
    ['constructor and toString keys', 'constructor=x&toString=y&hasOwnProperty=z&grant_type=client_credentials', 200],
    ['an empty key', '=x&grant_type=client_credentials', 200],
    ['+ is a space in scope', 'grant_type=client_credentials&scope=a+b', 200, 'a b'],
    ['%20 is a space in scope', 'grant_type=client_credentials&scope=a%20b', 200, 'a b'],
    ['an upper-case scope', 'grant_type=client_credentials&scope=A', 400],
    ['a scope with a trailing space', 'grant_type=client_credentials&scope=a%20', 400],
    ['a scope with a non-breaking space', 'grant_type=client_credentials&scope=a%C2%A0b', 400],
    ['a scope of another client in full-width letters', 'grant_type=client_credentials&scope=%EF%BD%81', 400],
    ['grant_type in another case', 'grant_type=CLIENT_CREDENTIALS', 400],
    ['an encoded NUL in a key', 'grant_type=client_credentials&a%00=b', 400],
    ['invalid percent escapes', 'grant_type=client_credentials&x=%E0%A4%A', 200],
    ['client_secret[] array syntax alongside Basic', 'grant_type=client_credentials&client_secret[]=x', 200]
  ]
  for (const [what, body, status, scope] of cases) {
    const res = await post(app, '/oauth/token', body, auth)
    t.equal(res.statusCode, status, `${what}: ${res.statusCode} ${res.body}`)
    if (scope !== undefined) t.equal(res.json().scope, scope, what)
    t.equal(res.headers['cache-control'], 'no-store', `${what}: no-store`)
  }
  const protoJson = await app.inject({
    method: 'POST', url: '/oauth/token', headers: { 'content-type': 'application/json', ...auth },
    payload: '{"grant_type":"client_credentials","__proto__":{"scope":"b"}}'
  })
  t.equal(protoJson.statusCode, 400, 'JSON __proto__ is refused')
  t.equal(protoJson.json().error, 'invalid_request')
  t.equal(({} as Record<string, unknown>).client_secret, undefined, 'nothing polluted')
  const big = await post(app, '/oauth/token', `grant_type=client_credentials&pad=${'x'.repeat(20_000)}`, auth)
  t.equal(big.statusCode, 413, 'a body over the limit: 413')
  const many = await post(app, '/oauth/token', `grant_type=client_credentials&${Array.from({ length: 1500 }, (_, i) => `k${i}=`).join('&')}`, auth)
  t.equal(many.statusCode, 200, 'many unknown parameters are ignored')
})

t.test('DEFENCE: the right secret passes a client id flooded with guesses; a disabled client\'s scopes are not advertised', async (t) => {
  const { app, admins, createClient } = await setup(t, { env: { RATE_LIMIT_CLIENT_AUTH_FAILURES: '2' } })
  const { client, clientSecret } = await createClient('victim', ['payroll:write'])
  for (let i = 0; i < 4; i++) await post(app, '/oauth/token', grant, basic(client.clientId, `g${i}`), '198.51.100.1')
  t.equal((await post(app, '/oauth/token', grant, basic(client.clientId, clientSecret), '198.51.100.1')).statusCode, 200, 'from the attacker\'s own address too')
  t.equal((await post(app, '/oauth/introspect', { token: 'x' }, basic(client.clientId, clientSecret), '198.51.100.1')).statusCode, 200)
  await admins('PATCH', `/api/admin/clients/${client.id}`, { disabled: true })
  const meta = await app.inject({ url: '/.well-known/oauth-authorization-server' })
  t.notOk(meta.body.includes('payroll'), 'a disabled client\'s scope is not advertised')
})
