/**
 * Issue 12, point 6: proof with a real client. A service gets its token from Gatehouse with an
 * off-the-shelf OAuth 2.0 client library, oauth4webapi, exactly as it would in production:
 * discovery (RFC 8414), the client-credentials grant (HTTP Basic, then the body), a call to
 * examples/resource-service (a process of its own that verifies tokens through the JWKS), and
 * introspection (RFC 7662) by the resource server with credentials of its own. An admin then
 * disables the client: introspection says inactive at once and the client gets no new token.
 */
import { generateKeyPairSync } from 'node:crypto'
import * as oauth from 'oauth4webapi'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { bearer, buildTestApp, decodeJwt, freePort, signupAdmin, startResourceService, type Test } from '../helper.ts'

const AUDIENCE = 'internal-apis'

/** Plain http is refused by oauth4webapi unless asked for: loopback in a test. */
const insecure = { [oauth.allowInsecureRequests]: true }

/**
 * Gatehouse on this file's database, listening on 127.0.0.1 and signing with an Ed25519 key, its
 * issuer and public URL its own origin: the issuer identifier a client discovers it by.
 */
async function startGatehouse (test: Test) {
  const { privateKey } = generateKeyPairSync('ed25519')
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const app = await buildTestApp(test, {
    env: { PUBLIC_URL: base, JWT_ISSUER: base, JWT_AUDIENCE: AUDIENCE, JWT_PRIVATE_KEY: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() }
  })
  await app.listen({ host: '127.0.0.1', port })
  return { app, base }
}

/** A service client, created by an admin through the admin API. */
async function createClient (app: App, adminToken: string, name: string, scopes: string[]) {
  const res = await app.inject({ method: 'POST', url: '/api/admin/clients', headers: bearer(adminToken), payload: { name, scopes } })
  if (res.statusCode !== 201) throw new Error(`client creation failed: ${res.statusCode} ${res.body}`)
  const { client, clientSecret } = res.json() as { client: { id: string, clientId: string }, clientSecret: string }
  return { id: client.id, client: { client_id: client.clientId } satisfies oauth.Client, secret: clientSecret }
}

/** What `promise` was rejected with (it must be rejected). */
async function rejection (promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise
  } catch (err) {
    return err
  }
  throw new Error('expected a rejection')
}

t.test('a service gets a token with oauth4webapi, calls the example with it, is introspected, and is cut off when disabled', async (t) => {
  const { app, base } = await startGatehouse(t)
  const example = await startResourceService(t, base, { GATEHOUSE_ISSUER: base, GATEHOUSE_AUDIENCE: AUDIENCE })
  const admin = await signupAdmin(app)
  const worker = await createClient(app, admin.accessToken, 'report-worker', ['reports:write', 'reports:read'])
  // The resource server introspects with credentials of its own; it needs no scope for that.
  const api = await createClient(app, admin.accessToken, 'reports-api', [])

  // Discovery: oauth4webapi checks that the metadata's issuer is the identifier it was given.
  const issuer = new URL(base)
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
  t.equal(as.issuer, base, 'the metadata names Gatehouse\'s issuer')
  t.equal(as.token_endpoint, `${base}/oauth/token`)
  t.equal(as.introspection_endpoint, `${base}/oauth/introspect`)
  t.equal(as.jwks_uri, `${base}/.well-known/jwks.json`)
  t.same(as.grant_types_supported, ['client_credentials'])
  t.same(as.token_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post'])
  t.same(as.scopes_supported, ['reports:read', 'reports:write'], 'the scopes its enabled clients hold')

  const tokenRequest = (auth: oauth.ClientAuth, parameters: Record<string, string> = {}) =>
    oauth.clientCredentialsGrantRequest(as, worker.client, auth, parameters, insecure)
      .then((res) => oauth.processClientCredentialsResponse(as, worker.client, res))
  const introspect = (token: string) =>
    oauth.introspectionRequest(as, api.client, oauth.ClientSecretBasic(api.secret), token, insecure)
      .then((res) => oauth.processIntrospectionResponse(as, api.client, res))
  const hello = async (token: string) => {
    const res = await oauth.protectedResourceRequest(token, 'GET', new URL(`${example}/api/hello`), undefined, undefined, insecure)
    return { status: res.status, body: await res.json() as Record<string, unknown> }
  }
  const clientId = worker.client.client_id

  // The grant with HTTP Basic (oauth4webapi form-encodes the id and secret first, as RFC 6749
  // §2.3.1 says: the `_` of the client id travels as %5F) and no scope: all of the client's.
  const token = await tokenRequest(oauth.ClientSecretBasic(worker.secret))
  t.equal(token.token_type, 'bearer')
  t.equal(token.expires_in, 15 * 60, 'CLIENT_TOKEN_EXPIRE_MINUTES')
  t.equal(token.scope, 'reports:read reports:write')
  const header = JSON.parse(Buffer.from(token.access_token.split('.')[0] ?? '', 'base64url').toString()) as Record<string, unknown>
  t.match(header, { alg: 'EdDSA', typ: 'at+jwt' }, 'an RFC 9068 JWT signed with the published key')
  const claims = decodeJwt(token.access_token)
  t.match(claims, { iss: base, aud: AUDIENCE, sub: clientId, client_id: clientId, scope: 'reports:read reports:write' })
  t.notOk('sid' in claims || 'role' in claims || 'amr' in claims, 'no user claims in a service token')

  t.same(await hello(token.access_token), { status: 200, body: { message: `Hello, ${clientId}`, clientId, scope: 'reports:read reports:write' } },
    'the example accepts the service token, verified through the JWKS')

  t.match(await introspect(token.access_token), {
    active: true, token_type: 'Bearer', client_id: clientId, sub: clientId, scope: 'reports:read reports:write',
    iss: base, aud: AUDIENCE, exp: claims.exp, iat: claims.iat, jti: claims.jti
  }, 'the resource server\'s introspection: live, and whose it is')

  // A narrower scope, with the credentials in the body this time.
  const narrow = await tokenRequest(oauth.ClientSecretPost(worker.secret), { scope: 'reports:read' })
  t.equal(narrow.scope, 'reports:read', 'granted only what was asked')
  t.equal(decodeJwt(narrow.access_token).scope, 'reports:read')
  t.match(await hello(narrow.access_token), { status: 200, body: { clientId, scope: 'reports:read' } })
  t.match(await introspect(narrow.access_token), { active: true, client_id: clientId, scope: 'reports:read' })
  t.match(await rejection(tokenRequest(oauth.ClientSecretPost(worker.secret), { scope: 'reports:read admin' })),
    { name: 'ResponseBodyError', status: 400, error: 'invalid_scope' }, 'a scope the client does not hold: invalid_scope')

  // An admin disables the client.
  const patch = await app.inject({ method: 'PATCH', url: `/api/admin/clients/${worker.id}`, headers: bearer(admin.accessToken), payload: { disabled: true } })
  t.equal(patch.statusCode, 200)
  t.equal(patch.json().disabled, true)

  t.same(await introspect(token.access_token), { active: false }, 'its tokens are inactive at once')
  t.same(await introspect(narrow.access_token), { active: false })

  // No new token. With HTTP Basic, Gatehouse answers 401 with a WWW-Authenticate challenge (RFC
  // 6749 §5.2), which oauth4webapi reports as such, the error body left unread.
  const basic = await rejection(tokenRequest(oauth.ClientSecretBasic(worker.secret)))
  t.type(basic, oauth.WWWAuthenticateChallengeError, 'HTTP Basic: a challenge')
  const challenge = basic as oauth.WWWAuthenticateChallengeError
  t.equal(challenge.status, 401)
  t.equal(challenge.cause[0]?.scheme, 'basic')
  t.match(await challenge.response.json(), { error: 'invalid_client' }, 'and the body says invalid_client')
  // In the body: a plain OAuth error.
  const post = await rejection(tokenRequest(oauth.ClientSecretPost(worker.secret)))
  t.type(post, oauth.ResponseBodyError, 'credentials in the body: an OAuth error response')
  t.match(post, { status: 401, error: 'invalid_client' })

  // The example verifies on its own, so the token it holds keeps working there until it expires
  // (the trade-off its README explains); a route that must see this at once introspects.
  t.equal((await hello(token.access_token)).status, 200, 'the example still accepts the unexpired token')
})
