/**
 * examples/resource-service as another team would run it: a Gatehouse process signing with an
 * Ed25519 key, the example as a process of its own that knows only Gatehouse's URL, and a user
 * who logs in at Gatehouse and calls the example with the access token.
 */
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSigner } from 'fast-jwt'
import t from 'tap'
import { decodeJwt, PASSWORD, startResourceService, startService, type Test, uniqueEmail } from '../helper.ts'

const JWT_SECRET = 'resource-service-test-secret-0123456789abcdef'

async function startGatehouse (test: Test, privateKeyPem: string) {
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-resource-'))
  const service = startService({
    PORT: '0', DATA_DIR: dataDir, JWT_SECRET, JWT_PRIVATE_KEY: privateKeyPem, HIBP_ENABLED: 'false', MAIL_STDOUT: 'true'
  })
  test.teardown(async () => {
    service.child.kill('SIGTERM')
    await service.exited
    rmSync(dataDir, { recursive: true, force: true })
  })
  return service.listening
}

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
const hello = (base: string, token?: string) =>
  fetch(`${base}/api/hello`, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } })

t.test('a P-256 (ES256) token from Gatehouse opens the example too', async (t) => {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const gatehouse = await startGatehouse(t, privateKey.export({ format: 'pem', type: 'pkcs8' }).toString())
  const example = await startResourceService(t, gatehouse)
  const signup = await post(`${gatehouse}/api/auth/signup`, { email: uniqueEmail('resource'), password: PASSWORD })
  const { accessToken, user } = await signup.json() as { accessToken: string, user: { id: string } }
  t.equal(JSON.parse(Buffer.from(accessToken.split('.')[0] ?? '', 'base64url').toString()).alg, 'ES256')
  const ok = await hello(example, accessToken)
  t.equal(ok.status, 200)
  t.equal((await ok.json() as { userId: string }).userId, user.id)
})

t.test('an Ed25519 token from Gatehouse opens the example, verified only through the JWKS; forged and foreign tokens do not; a logout does not reach it', async (t) => {
  const { privateKey } = generateKeyPairSync('ed25519')
  const gatehouse = await startGatehouse(t, privateKey.export({ format: 'pem', type: 'pkcs8' }).toString())
  const example = await startResourceService(t, gatehouse)

  const signup = await post(`${gatehouse}/api/auth/signup`, { email: uniqueEmail('resource'), password: PASSWORD })
  t.equal(signup.status, 201)
  const { accessToken, user } = await signup.json() as { accessToken: string, user: { id: string } }

  const ok = await hello(example, accessToken)
  t.equal(ok.status, 200, 'the example accepts the token')
  t.same(await ok.json(), { message: `Hello, ${user.id}`, userId: user.id, role: 'user', amr: ['pwd'] }, 'and reads its claims')

  t.equal((await hello(example)).status, 401, 'no token: 401')
  const [h, p, s] = accessToken.split('.') as [string, string, string]
  const flipped = `${h}.${p}.${s.slice(0, -2)}${s.endsWith('AA') ? 'BB' : 'AA'}`
  t.equal((await hello(example, flipped)).status, 401, 'a tampered signature: 401')

  const claims = decodeJwt(accessToken)
  const { iat: _iat, exp: _exp, ...rest } = claims
  const hs = createSigner({ key: JWT_SECRET, algorithm: 'HS256', expiresIn: 60_000, header: { alg: 'HS256', typ: 'at+jwt' } })(rest)
  t.equal((await hello(example, hs)).status, 401, 'HS256 with Gatehouse\'s own secret (algorithm confusion): 401')

  const { privateKey: other } = generateKeyPairSync('ed25519')
  const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as { kid: string }
  const foreign = createSigner({ key: other.export({ format: 'pem', type: 'pkcs8' }).toString(), algorithm: 'EdDSA', kid: header.kid, expiresIn: 60_000, header: { alg: 'EdDSA', typ: 'at+jwt' } })(rest)
  t.equal((await hello(example, foreign)).status, 401, 'another key claiming Gatehouse\'s kid: 401')
  const wrongAudience = createSigner({ key: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), algorithm: 'EdDSA', kid: header.kid, expiresIn: 60_000, header: { alg: 'EdDSA', typ: 'at+jwt' } })({ ...rest, aud: 'another-service' })
  t.equal((await hello(example, wrongAudience)).status, 401, 'Gatehouse\'s key but another audience: 401')

  // Verifying locally, the example cannot know of a logout: the trade-off the README explains.
  t.equal((await post(`${gatehouse}/api/auth/logout`, {}, { authorization: `Bearer ${accessToken}` })).status, 200)
  const me = await fetch(`${gatehouse}/api/auth/me`, { headers: { authorization: `Bearer ${accessToken}` } })
  t.equal(me.status, 401, 'Gatehouse: the session is revoked')
  t.equal((await me.json() as { code: string }).code, 'SESSION_REVOKED')
  t.equal((await hello(example, accessToken)).status, 200, 'the example still accepts the token until it expires')
})
