/**
 * Attacks on access tokens. Every malicious token is built by hand with node:crypto, never with
 * the app's own signer, starting from the claims of a token the app really issued and changing
 * one thing per case. Every refusal is a 401 with the contract's code, on every protected route
 * tried, and none of them has any effect (the session survives the logout-all attempts).
 */
import { createHmac, generateKeyPairSync, hkdfSync, KeyObject, randomUUID, sign } from 'node:crypto'
import { eq } from 'drizzle-orm'
import { TOTP } from 'otpauth'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { passwordResetTokens, sessions } from '../../src/db/schema.ts'
import { hashOpaqueToken, newOpaqueToken } from '../../src/services/opaque-tokens.ts'
import { assertError, bearer, buildTestApp, deleteUser, JWT_SECRET, login, PASSWORD, setUser, signup, type Test } from '../helper.ts'

/** The claims of an access token, as the app issues them. */
interface Claims {
  iss: string
  aud: string
  sub: string
  sid: string
  role: string
  amr: string[]
  jti: string
  iat: number
  exp: number
}

/** A JWT segment: an object (serialised as JSON) or the raw text to encode. */
type Segment = object | string
type SigningAlg = 'HS256' | 'HS384' | 'HS512' | 'RS256' | 'ES256' | 'EdDSA' | 'none'

const ACCESS_HEADER = { alg: 'HS256', typ: 'at+jwt' }

const encode = (segment: Segment) =>
  Buffer.from(typeof segment === 'string' ? segment : JSON.stringify(segment)).toString('base64url')
const decodeSegment = (token: string, index: number): unknown =>
  JSON.parse(Buffer.from(token.split('.')[index] ?? '', 'base64url').toString())

function signature (input: string, alg: SigningAlg, key: string | Buffer | KeyObject): string {
  const data = Buffer.from(input)
  switch (alg) {
    case 'none': return ''
    case 'HS256': case 'HS384': case 'HS512':
      return createHmac(`sha${alg.slice(2)}`, key).update(data).digest('base64url')
    case 'RS256': return sign('sha256', data, key).toString('base64url')
    case 'ES256':
      if (!(key instanceof KeyObject)) throw new Error('ES256 needs a private KeyObject')
      return sign('sha256', data, { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')
    case 'EdDSA': return sign(null, data, key).toString('base64url')
  }
}

/**
 * `base64url(header).base64url(payload).signature`, the signature made with `alg` and `key`
 * (HS256 with JWT_SECRET unless told), whatever algorithm the header claims.
 */
function forge (opts: { header?: Segment, payload: Segment, alg?: SigningAlg, key?: string | Buffer | KeyObject }): string {
  const input = `${encode(opts.header ?? ACCESS_HEADER)}.${encode(opts.payload)}`
  return `${input}.${signature(input, opts.alg ?? 'HS256', opts.key ?? JWT_SECRET)}`
}

/** A real token with one segment replaced, the others (the signature included) kept. */
function splice (token: string, index: 0 | 1, segment: Segment): string {
  const parts = token.split('.')
  parts[index] = encode(segment)
  return parts.join('.')
}

function without (claims: Claims, ...names: string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(claims).filter(([name]) => !names.includes(name)))
}

const nowSeconds = () => Math.floor(Date.now() / 1000)

/** A user signed up through HTTP, with the claims of the access token the app gave them. */
async function victim (app: App) {
  const s = await signup(app)
  const claims = decodeSegment(s.accessToken, 1) as Claims
  // A fresh jti per forged token is what a real issuer would do; the value does not matter here.
  const valid = (): Claims => ({ ...claims, jti: randomUUID() })
  return { ...s, claims, valid }
}

/** The protected routes every refused token is tried on. */
const protectedRoutes = (userId: string) => [
  { method: 'GET' as const, url: '/api/auth/me' },
  { method: 'GET' as const, url: `/api/${userId}/tasks` },
  { method: 'POST' as const, url: '/api/auth/logout-all' }
]

/** `authorization` (the whole header, or none) is refused with 401 `code` on every protected route. */
async function refused (t: Test, app: App, userId: string, authorization: string | undefined, code: string) {
  for (const route of protectedRoutes(userId)) {
    await t.test(`${route.method} ${route.url.replace(userId, ':userId')}`, async (t) => {
      const res = await app.inject({ ...route, headers: authorization === undefined ? {} : { authorization } })
      assertError(t, res, 401, code)
    })
  }
}

/** The user's token still works and their session is live: no refused request changed anything. */
async function stillLoggedIn (t: Test, app: App, token: string, userId: string) {
  const me = await app.inject({ url: '/api/auth/me', headers: bearer(token) })
  t.equal(me.statusCode, 200, 'the real token still works')
  t.equal((me.json() as { id: string }).id, userId, 'as the same user')
  const [session] = await app.db.select().from(sessions).where(eq(sessions.userId, userId))
  t.equal(session?.revokedAt, null, 'the session was not revoked by any refused logout-all')
}

t.test('the forge helper is sound: it reproduces the real token byte for byte, and a forgery with the right secret passes', async (t) => {
  const app = await buildTestApp(t)
  const v = await victim(app)
  const header = decodeSegment(v.accessToken, 0) as Record<string, unknown>
  t.same(header, ACCESS_HEADER, 'the app issues HS256 at+jwt tokens')
  t.same(Object.keys(v.claims).sort(), ['amr', 'aud', 'exp', 'iat', 'iss', 'jti', 'role', 'sid', 'sub'], 'the claims the app puts in')
  t.equal(forge({ header, payload: { ...v.claims } }), v.accessToken, 'same header, claims and secret: the very same token')

  const forged = forge({ payload: { ...v.valid() } })
  const me = await app.inject({ url: '/api/auth/me', headers: bearer(forged) })
  t.equal(me.statusCode, 200, 'GET /api/auth/me accepts the forgery')
  t.same(me.json(), v.user, 'and answers with the user')
  const tasks = await app.inject({ url: `/api/${v.user.id}/tasks`, headers: bearer(forged) })
  t.equal(tasks.statusCode, 200, 'GET /api/:userId/tasks accepts it too')
  t.same(tasks.json(), { items: [], total: 0 }, 'and lists the user\'s (no) tasks')
})

t.test('forged signatures and algorithms are TOKEN_INVALID: alg none, wrong keys, tampering, other algorithms', async (t) => {
  const app = await buildTestApp(t)
  const v = await victim(app)
  const claims = { ...v.valid() }
  const [h, p] = v.accessToken.split('.')
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const ed = generateKeyPairSync('ed25519')
  // The key the app signs MFA challenge tokens with (plugins/jwt.ts): a token of ours, but not an access token.
  const mfaKey = Buffer.from(hkdfSync('sha256', JWT_SECRET, 'gatehouse', 'mfa challenge token v1', 32))

  const cases: Array<[string, string]> = [
    ['alg none with an empty signature', forge({ header: { alg: 'none', typ: 'at+jwt' }, payload: claims, alg: 'none' })],
    ['alg none without even the trailing dot', `${encode({ alg: 'none', typ: 'at+jwt' })}.${encode(claims)}`],
    ['alg none with a valid HS256 signature present', forge({ header: { alg: 'none', typ: 'at+jwt' }, payload: claims })],
    ['alg None', forge({ header: { alg: 'None', typ: 'at+jwt' }, payload: claims, alg: 'none' })],
    ['alg NONE', forge({ header: { alg: 'NONE', typ: 'at+jwt' }, payload: claims, alg: 'none' })],
    ['alg HS256 with an empty signature', forge({ payload: claims, alg: 'none' })],
    ['signed with a wrong secret', forge({ payload: claims, key: 'not-the-secret-but-just-as-long-0123456789abcdef' })],
    ['signed with an empty secret', forge({ payload: claims, key: '' })],
    ['signed with the secret in another case', forge({ payload: claims, key: JWT_SECRET.toUpperCase() })],
    ['signed with the MFA challenge key derived from the secret', forge({ payload: claims, key: mfaKey })],
    ['payload tampered (role admin), old signature kept', splice(v.accessToken, 1, { ...v.claims, role: 'admin' })],
    ['payload tampered (sub changed), old signature kept', splice(v.accessToken, 1, { ...v.claims, sub: randomUUID() })],
    ['payload tampered (exp pushed a day later), old signature kept', splice(v.accessToken, 1, { ...v.claims, exp: v.claims.exp + 86_400 })],
    ['header tampered (kid added), old signature kept', splice(v.accessToken, 0, { ...ACCESS_HEADER, kid: 'k1' })],
    ['header tampered (alg HS512), old signature kept', splice(v.accessToken, 0, { alg: 'HS512', typ: 'at+jwt' })],
    ['payload re-encoded as padded base64, old signature kept', `${h}.${p}=.${v.accessToken.split('.')[2]}`],
    ['alg HS384 signed with the right secret', forge({ header: { alg: 'HS384', typ: 'at+jwt' }, payload: claims, alg: 'HS384' })],
    ['alg HS512 signed with the right secret', forge({ header: { alg: 'HS512', typ: 'at+jwt' }, payload: claims, alg: 'HS512' })],
    ['alg as an array holding HS256', forge({ header: { alg: ['HS256'], typ: 'at+jwt' }, payload: claims })],
    ['RS256 signed with a fresh RSA key', forge({ header: { alg: 'RS256', typ: 'at+jwt' }, payload: claims, alg: 'RS256', key: rsa.privateKey })],
    ['RS256 with the attacker\'s public key embedded as jwk', forge({
      header: { alg: 'RS256', typ: 'at+jwt', jwk: rsa.publicKey.export({ format: 'jwk' }) }, payload: claims, alg: 'RS256', key: rsa.privateKey
    })],
    ['ES256 signed with a fresh P-256 key', forge({ header: { alg: 'ES256', typ: 'at+jwt' }, payload: claims, alg: 'ES256', key: ec.privateKey })],
    ['EdDSA signed with a fresh Ed25519 key', forge({ header: { alg: 'EdDSA', typ: 'at+jwt' }, payload: claims, alg: 'EdDSA', key: ed.privateKey })],
    ['RS256 "signed" by HMAC-SHA256 with the secret', forge({ header: { alg: 'RS256', typ: 'at+jwt' }, payload: claims })],
    ['kid pointing at an empty file, signed with an empty key', forge({ header: { ...ACCESS_HEADER, kid: '../../../../dev/null' }, payload: claims, key: '' })],
    ['a critical header extension the app does not understand', forge({ header: { ...ACCESS_HEADER, crit: ['x-bind'], 'x-bind': 1 }, payload: claims })]
  ]
  for (const [name, token] of cases) {
    await t.test(name, (t) => refused(t, app, v.user.id, `Bearer ${token}`, 'TOKEN_INVALID'))
  }
  await stillLoggedIn(t, app, v.accessToken, v.user.id)
})

t.test('time claims: an expired token is TOKEN_EXPIRED, a token not yet valid or without exp is TOKEN_INVALID', async (t) => {
  const app = await buildTestApp(t)
  const v = await victim(app)
  const now = nowSeconds()
  const expired = { ...v.valid(), iat: now - 905, exp: now - 5 }

  await t.test('exp in the past, correctly signed: TOKEN_EXPIRED, so the client knows to refresh', (t) =>
    refused(t, app, v.user.id, `Bearer ${forge({ payload: expired })}`, 'TOKEN_EXPIRED'))
  await t.test('expired and signed with a wrong secret: TOKEN_INVALID (the signature is checked before exp)', (t) =>
    refused(t, app, v.user.id, `Bearer ${forge({ payload: expired, key: 'wrong-secret-wrong-secret-wrong-secret-0000' })}`, 'TOKEN_INVALID'))
  await t.test('nbf ten minutes ahead: TOKEN_INVALID (not yet valid is not expired: refreshing would not help)', (t) =>
    refused(t, app, v.user.id, `Bearer ${forge({ payload: { ...v.valid(), nbf: now + 600 } })}`, 'TOKEN_INVALID'))
  await t.test('exp missing: TOKEN_INVALID (a token that never expires is not one the app issues)', (t) =>
    refused(t, app, v.user.id, `Bearer ${forge({ payload: without(v.valid(), 'exp') })}`, 'TOKEN_INVALID'))
  await t.test('exp a string far in the future: TOKEN_INVALID', (t) =>
    refused(t, app, v.user.id, `Bearer ${forge({ payload: { ...v.valid(), exp: String(now + 86_400) } })}`, 'TOKEN_INVALID'))
  await t.test('iat missing: TOKEN_INVALID', (t) =>
    refused(t, app, v.user.id, `Bearer ${forge({ payload: without(v.valid(), 'iat') })}`, 'TOKEN_INVALID'))
  await stillLoggedIn(t, app, v.accessToken, v.user.id)
})

t.test('issuer, audience and token type are pinned: anything else is TOKEN_INVALID', async (t) => {
  const app = await buildTestApp(t)
  const v = await victim(app)
  const cases: Array<[string, string]> = [
    ['wrong iss', forge({ payload: { ...v.valid(), iss: 'https://evil.example' } })],
    ['iss missing', forge({ payload: without(v.valid(), 'iss') })],
    ['iss our issuer with different case', forge({ payload: { ...v.valid(), iss: v.claims.iss.toUpperCase() } })],
    ['wrong aud', forge({ payload: { ...v.valid(), aud: 'another-api' } })],
    ['aud missing', forge({ payload: without(v.valid(), 'aud') })],
    ['aud an array without ours', forge({ payload: { ...v.valid(), aud: ['another-api', 'a-third-api'] } })],
    ['aud an empty array', forge({ payload: { ...v.valid(), aud: [] } })],
    ['typ JWT', forge({ header: { alg: 'HS256', typ: 'JWT' }, payload: v.valid() })],
    ['typ mfa+jwt (an MFA challenge token\'s type)', forge({ header: { alg: 'HS256', typ: 'mfa+jwt' }, payload: v.valid() })],
    ['typ missing', forge({ header: { alg: 'HS256' }, payload: v.valid() })],
    ['typ at+jwt in an array', forge({ header: { alg: 'HS256', typ: ['at+jwt'] }, payload: v.valid() })]
  ]
  for (const [name, token] of cases) {
    await t.test(name, (t) => refused(t, app, v.user.id, `Bearer ${token}`, 'TOKEN_INVALID'))
  }
  await stillLoggedIn(t, app, v.accessToken, v.user.id)
})

t.test('subject and session claims: malformed ones are TOKEN_INVALID, a session that does not exist is SESSION_REVOKED', async (t) => {
  const app = await buildTestApp(t)
  const v = await victim(app)
  const invalid: Array<[string, Record<string, unknown>]> = [
    ['sub missing', without(v.valid(), 'sub')],
    ['sub not a UUID', { ...v.valid(), sub: 'admin' }],
    ['sub a number', { ...v.valid(), sub: 1 }],
    ['sid missing', without(v.valid(), 'sid')],
    ['sid not a UUID', { ...v.valid(), sid: 'x\' or 1=1 --' }],
    ['sid an array of the real sid', { ...v.valid(), sid: [v.claims.sid] }],
    ['amr missing', without(v.valid(), 'amr')],
    ['jti missing', without(v.valid(), 'jti')]
  ]
  for (const [name, payload] of invalid) {
    await t.test(`${name}: TOKEN_INVALID (the token is not one the app issues)`, (t) =>
      refused(t, app, v.user.id, `Bearer ${forge({ payload })}`, 'TOKEN_INVALID'))
  }
  await t.test('sid a random UUID: SESSION_REVOKED (well formed, but no live session has that id)', (t) =>
    refused(t, app, v.user.id, `Bearer ${forge({ payload: { ...v.valid(), sid: randomUUID() } })}`, 'SESSION_REVOKED'))
  await t.test('sid and sub of a user that does not exist: SESSION_REVOKED', (t) =>
    refused(t, app, v.user.id, `Bearer ${forge({ payload: { ...v.valid(), sub: randomUUID(), sid: randomUUID() } })}`, 'SESSION_REVOKED'))
  await stillLoggedIn(t, app, v.accessToken, v.user.id)
})

t.test('malformed Authorization headers are 401 AUTH_REQUIRED or TOKEN_INVALID, never 400 or 500', async (t) => {
  const app = await buildTestApp(t)
  const v = await victim(app)
  const [h, p, s] = v.accessToken.split('.')
  const cases: Array<[string, string | undefined, string]> = [
    ['no Authorization header: AUTH_REQUIRED', undefined, 'AUTH_REQUIRED'],
    ['an empty Authorization header: AUTH_REQUIRED', '', 'AUTH_REQUIRED'],
    ['Bearer with no token', 'Bearer', 'TOKEN_INVALID'],
    ['Bearer, a space and no token', 'Bearer ', 'TOKEN_INVALID'],
    ['Basic credentials', `Basic ${Buffer.from(`${v.email}:${PASSWORD}`).toString('base64')}`, 'TOKEN_INVALID'],
    ['the real token without a scheme', v.accessToken, 'TOKEN_INVALID'],
    ['the real token twice', `Bearer ${v.accessToken} ${v.accessToken}`, 'TOKEN_INVALID'],
    ['two segments', `Bearer ${h}.${p}`, 'TOKEN_INVALID'],
    ['four segments', `Bearer ${v.accessToken}.${s}`, 'TOKEN_INVALID'],
    ['one segment', `Bearer ${p}`, 'TOKEN_INVALID'],
    ['three empty segments', 'Bearer ..', 'TOKEN_INVALID'],
    ['non-base64url characters in the payload', `Bearer ${h}.${p}*!$.${s}`, 'TOKEN_INVALID'],
    ['non-base64url characters everywhere', 'Bearer %%%.###.@@@', 'TOKEN_INVALID'],
    ['a payload that is not JSON', `Bearer ${forge({ payload: 'not json' })}`, 'TOKEN_INVALID'],
    ['a payload that is a JSON array', `Bearer ${forge({ payload: JSON.stringify([v.claims]) })}`, 'TOKEN_INVALID'],
    ['a payload that is a JSON string', `Bearer ${forge({ payload: JSON.stringify(v.claims.sub) })}`, 'TOKEN_INVALID'],
    ['a payload that is JSON null', `Bearer ${forge({ payload: 'null' })}`, 'TOKEN_INVALID'],
    ['a payload that is a JSON number', `Bearer ${forge({ payload: '42' })}`, 'TOKEN_INVALID'],
    ['a header that is a JSON array', `Bearer ${forge({ header: JSON.stringify([ACCESS_HEADER]), payload: v.valid() })}`, 'TOKEN_INVALID'],
    ['a 10 KB token of garbage', `Bearer ${'A'.repeat(10 * 1024)}`, 'TOKEN_INVALID'],
    ['a 10 KB well-formed token signed with a wrong secret',
      `Bearer ${forge({ payload: { ...v.valid(), pad: 'x'.repeat(10 * 1024) }, key: 'wrong-secret-wrong-secret-wrong-secret-0000' })}`, 'TOKEN_INVALID']
  ]
  for (const [name, authorization, code] of cases) {
    await t.test(name, (t) => refused(t, app, v.user.id, authorization, code))
  }
  await t.test('the real token in the query string is not read: AUTH_REQUIRED', async (t) => {
    assertError(t, await app.inject({ url: `/api/auth/me?access_token=${v.accessToken}` }), 401, 'AUTH_REQUIRED')
  })
  await stillLoggedIn(t, app, v.accessToken, v.user.id)
})

t.test('a deactivated user\'s tokens, real or forged with the secret, are SESSION_REVOKED', async (t) => {
  const app = await buildTestApp(t)
  const v = await victim(app)
  const forged = forge({ payload: { ...v.valid() } })
  t.equal((await app.inject({ url: '/api/auth/me', headers: bearer(forged) })).statusCode, 200, 'valid before')
  await setUser(app, v.user.id, { isActive: false })
  await t.test('the token the app issued', (t) => refused(t, app, v.user.id, `Bearer ${v.accessToken}`, 'SESSION_REVOKED'))
  await t.test('a fresh forgery with valid claims', (t) => refused(t, app, v.user.id, `Bearer ${forged}`, 'SESSION_REVOKED'))
})

t.test('a deleted user\'s tokens, real or forged with the secret, are SESSION_REVOKED', async (t) => {
  const app = await buildTestApp(t)
  const v = await victim(app)
  const forged = forge({ payload: { ...v.valid() } })
  t.equal((await app.inject({ url: '/api/auth/me', headers: bearer(forged) })).statusCode, 200, 'valid before')
  await deleteUser(app, v.user.id)
  await t.test('the token the app issued', (t) => refused(t, app, v.user.id, `Bearer ${v.accessToken}`, 'SESSION_REVOKED'))
  await t.test('a fresh forgery with valid claims', (t) => refused(t, app, v.user.id, `Bearer ${forged}`, 'SESSION_REVOKED'))
})

t.test('the app\'s other tokens are not access tokens: an mfaToken, the refresh token, a reset token are TOKEN_INVALID', async (t) => {
  const app = await buildTestApp(t)
  const v = await victim(app)

  await t.test('the refresh token from the signup cookie', async (t) => {
    const cookie = (v.res.cookies as Array<{ name: string, value: string }>).find((c) => c.name === 'refresh_token')
    t.match(cookie?.value, /^[A-Za-z0-9_-]{43}$/, 'a real refresh token')
    await refused(t, app, v.user.id, `Bearer ${cookie?.value}`, 'TOKEN_INVALID')
  })

  await t.test('a password-reset token, stored as the app stores one', async (t) => {
    const token = newOpaqueToken()
    const at = new Date()
    await app.db.insert(passwordResetTokens).values({
      userId: v.user.id, tokenHash: hashOpaqueToken(token), createdAt: at, expiresAt: new Date(at.getTime() + 3_600_000)
    })
    await refused(t, app, v.user.id, `Bearer ${token}`, 'TOKEN_INVALID')
  })

  await t.test('the mfaToken of a login that needs a second factor', async (t) => {
    const h = bearer(v.accessToken)
    const setup = await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/setup', headers: h, payload: { password: PASSWORD } })
    t.equal(setup.statusCode, 200, 'TOTP set up')
    const { secret } = setup.json() as { secret: string }
    const code = new TOTP({ secret, algorithm: 'SHA1', digits: 6, period: 30 }).generate()
    const confirm = await app.inject({ method: 'POST', url: '/api/auth/mfa/totp/confirm', headers: h, payload: { code } })
    t.equal(confirm.statusCode, 200, 'TOTP confirmed')
    const res = await login(app, v.email)
    t.equal(res.statusCode, 200)
    const { mfaRequired, mfaToken } = res.json() as { mfaRequired: boolean, mfaToken: string }
    t.equal(mfaRequired, true)
    t.same(decodeSegment(mfaToken, 0), { alg: 'HS256', typ: 'mfa+jwt' }, 'a JWT of the app, of another type')
    await refused(t, app, v.user.id, `Bearer ${mfaToken}`, 'TOKEN_INVALID')
  })
})

// Whoever holds JWT_SECRET and a live session of their own must still not be able to act as
// another user: the session of the sid has to belong to the sub.
t.test('a token with the right secret, another user\'s sub and this user\'s sid never serves the other user\'s data', async (t) => {
  const app = await buildTestApp(t)
  const attacker = await victim(app)
  const target = await signup(app)
  const task = await app.inject({ method: 'POST', url: `/api/${target.user.id}/tasks`, headers: bearer(target.accessToken), payload: { title: 'target secret' } })
  t.equal(task.statusCode, 201)

  const forged = forge({ payload: { ...attacker.valid(), sub: target.user.id } })
  const me = await app.inject({ url: '/api/auth/me', headers: bearer(forged) })
  assertError(t, me, 401, 'TOKEN_INVALID')
  t.notMatch(me.body, target.email, 'and does not show the other user')
  const tasks = await app.inject({ url: `/api/${target.user.id}/tasks`, headers: bearer(forged) })
  t.not(tasks.statusCode, 200, 'GET /api/:userId/tasks of the other user is refused')
  t.notMatch(tasks.body, 'target secret', 'and does not list their tasks')
})
