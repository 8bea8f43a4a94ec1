/**
 * Asymmetric access tokens and key rotation: JWT_PRIVATE_KEY (Ed25519 → EdDSA, P-256 → ES256,
 * `kid` the RFC 7638 thumbprint), JWT_PUBLIC_KEYS (verify only), GET /.well-known/jwks.json.
 * Keys are made here with node:crypto; `jose` is the independent verifier and forger, so the
 * tests never trust the app's own signer or thumbprint code.
 */
import { generateKeyPairSync, type KeyObject, randomUUID } from 'node:crypto'
import { calculateJwkThumbprint, createRemoteJWKSet, type JWK, jwtVerify, SignJWT } from 'jose'
import t from 'tap'
import type { App } from '../../src/app.ts'
import {
  assertError, bearer, buildTestApp, decodeJwt, enrolMfa, JWT_SECRET, listeningTestApp, login, mfaChallenge,
  refreshCookieIn, signup, testClock, testConfig, testDb, totpCode, type Test
} from '../helper.ts'

interface KeyPair {
  privateKey: KeyObject
  publicKey: KeyObject
  privatePem: string
  publicPem: string
  /** The public key as a JWK, exported by node:crypto (not by the app). */
  jwk: JWK
}

function keyPair (type: 'ed25519' | 'p256' | 'rsa' | 'ed448' | 'p384' | 'secp256k1'): KeyPair {
  const { privateKey, publicKey } =
    type === 'ed25519' ? generateKeyPairSync('ed25519')
      : type === 'ed448' ? generateKeyPairSync('ed448')
        : type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 })
          : generateKeyPairSync('ec', { namedCurve: type === 'p256' ? 'P-256' : type === 'p384' ? 'P-384' : 'secp256k1' })
  return {
    privateKey,
    publicKey,
    privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    jwk: publicKey.export({ format: 'jwk' }) as JWK
  }
}

/** RFC 7638 thumbprint, computed by jose from node's JWK of the public key. */
const thumbprint = (k: KeyPair) => calculateJwkThumbprint(k.jwk)

const segment = (token: string, index: number): Record<string, unknown> =>
  JSON.parse(Buffer.from(token.split('.')[index] ?? '', 'base64url').toString())
const headerOf = (token: string) => segment(token, 0)
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')

const me = (app: App, token: string) => app.inject({ url: '/api/auth/me', headers: bearer(token) })
const jwksOf = (app: App) => app.inject({ url: '/.well-known/jwks.json' })
const refresh = (app: App, cookie: string) => app.inject({ method: 'POST', url: '/api/auth/refresh', cookies: { refresh_token: cookie } })

/** The token works on /api/auth/me and answers for `userId`. */
async function works (t: Test, app: App, token: string, userId: string, what: string) {
  const res = await me(app, token)
  t.equal(res.statusCode, 200, `${what}: /me is 200`)
  t.equal(res.json().id, userId, `${what}: /me answers for the user`)
}

/** Claims exactly as the app issues them (taken from a real token), with a fresh jti and times. */
function claimsOf (realToken: string): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000)
  return { ...decodeJwt(realToken), jti: randomUUID(), iat: now, exp: now + 600 }
}

/** A JWT signed by jose with `alg` and `key`, the header given as is. */
function forge (header: { alg: string, kid?: string, typ?: string }, payload: Record<string, unknown>, key: KeyObject | Uint8Array) {
  return new SignJWT(payload).setProtectedHeader(header).sign(key)
}

t.test('with an Ed25519 JWT_PRIVATE_KEY, tokens are EdDSA with typ at+jwt and the RFC 7638 thumbprint as kid, published in the JWKS', async (t) => {
  const k = keyPair('ed25519')
  const app = await buildTestApp(t, { env: { JWT_PRIVATE_KEY: k.privatePem } })
  const s = await signup(app)
  const kid = await thumbprint(k)
  t.strictSame(headerOf(s.accessToken), { alg: 'EdDSA', typ: 'at+jwt', kid }, 'header: EdDSA, at+jwt, the thumbprint of the public key')
  await works(t, app, s.accessToken, s.user.id, 'the issued token')

  const jwks = await jwksOf(app)
  t.equal(jwks.statusCode, 200)
  t.equal(jwks.headers['cache-control'], 'public, max-age=300')
  t.match(jwks.headers['content-type'], /^application\/json/)
  t.strictSame(jwks.json(), { keys: [{ kty: 'OKP', crv: 'Ed25519', x: k.jwk.x, kid, alg: 'EdDSA', use: 'sig' }] }, 'the one public key, nothing private')
  t.equal(await calculateJwkThumbprint(jwks.json().keys[0]), headerOf(s.accessToken).kid, 'jose\'s thumbprint of the published JWK is the token\'s kid')
})

t.test('with a P-256 JWT_PRIVATE_KEY, tokens are ES256 and the published JWK has x and y', async (t) => {
  const k = keyPair('p256')
  const app = await buildTestApp(t, { env: { JWT_PRIVATE_KEY: k.privatePem } })
  const s = await signup(app)
  const kid = await thumbprint(k)
  t.strictSame(headerOf(s.accessToken), { alg: 'ES256', typ: 'at+jwt', kid })
  await works(t, app, s.accessToken, s.user.id, 'the issued token')

  const jwks = await jwksOf(app)
  t.equal(jwks.statusCode, 200)
  t.equal(jwks.headers['cache-control'], 'public, max-age=300')
  t.strictSame(jwks.json(), { keys: [{ kty: 'EC', crv: 'P-256', x: k.jwk.x, y: k.jwk.y, kid, alg: 'ES256', use: 'sig' }] })
  t.equal(await calculateJwkThumbprint(jwks.json().keys[0]), kid)
  // The signature is the JWS form (r || s, 64 bytes), not DER.
  t.equal(Buffer.from(s.accessToken.split('.')[2] ?? '', 'base64url').length, 64, 'ES256 signature is 64 bytes (IEEE P1363)')
})

t.test('an independent verifier (jose) with only the JWKS URL accepts a real token and refuses one with a flipped signature byte', async (t) => {
  const k = keyPair('ed25519')
  const { app, base } = await listeningTestApp(t, { env: { JWT_PRIVATE_KEY: k.privatePem } })
  const s = await signup(app)
  const jwks = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`))
  const options = { issuer: 'gatehouse', audience: 'gatehouse', typ: 'at+jwt', algorithms: ['EdDSA'] }

  const { payload, protectedHeader } = await jwtVerify(s.accessToken, jwks, options)
  t.equal(payload.sub, s.user.id, 'jose verified the token of the user')
  t.equal(protectedHeader.kid, await thumbprint(k))

  const [h, p, sig] = s.accessToken.split('.')
  const bytes = Buffer.from(sig ?? '', 'base64url')
  bytes[10] = (bytes[10] ?? 0) ^ 0x01
  const flipped = `${h}.${p}.${bytes.toString('base64url')}`
  t.not(flipped, s.accessToken)
  await t.rejects(jwtVerify(flipped, jwks, options), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' }, 'jose refuses the tampered token')
  assertError(t, await me(app, flipped), 401, 'TOKEN_INVALID')
})

t.test('without JWT_PRIVATE_KEY, the JWKS is 404 NOT_FOUND and tokens are HS256 with JWT_SECRET, without kid', async (t) => {
  const app = await buildTestApp(t)
  assertError(t, await jwksOf(app), 404, 'NOT_FOUND')
  const s = await signup(app)
  t.strictSame(headerOf(s.accessToken), { alg: 'HS256', typ: 'at+jwt' })
  const { payload } = await jwtVerify(s.accessToken, new TextEncoder().encode(JWT_SECRET), { issuer: 'gatehouse', audience: 'gatehouse', typ: 'at+jwt', algorithms: ['HS256'] })
  t.equal(payload.sub, s.user.id, 'jose verifies it with JWT_SECRET')
  await works(t, app, s.accessToken, s.user.id, 'the HS256 token')
})

t.test('with a private key, HS256, unknown kids, a missing kid, an alg that is not its kid\'s and alg none are all 401 TOKEN_INVALID', async (t) => {
  const signer = keyPair('ed25519')
  const verifier = keyPair('p256') // verify-only, in JWT_PUBLIC_KEYS: two algorithms are accepted
  const other = keyPair('ed25519')
  const app = await buildTestApp(t, { env: { JWT_PRIVATE_KEY: signer.privatePem, JWT_PUBLIC_KEYS: verifier.publicPem } })
  const s = await signup(app)
  const claims = () => claimsOf(s.accessToken)
  const kid = await thumbprint(signer)
  const verifierKid = await thumbprint(verifier)
  const secret = new TextEncoder().encode(JWT_SECRET)

  // Controls: the forger makes tokens the app accepts when key, alg and kid are right.
  await works(t, app, await forge({ alg: 'EdDSA', typ: 'at+jwt', kid }, claims(), signer.privateKey), s.user.id, 'control: EdDSA by the signing key')
  await works(t, app, await forge({ alg: 'ES256', typ: 'at+jwt', kid: verifierKid }, claims(), verifier.privateKey), s.user.id, 'control: ES256 by the JWT_PUBLIC_KEYS key')

  const none = (header: object) => `${b64(header)}.${b64(claims())}.`
  const cases: Array<[string, string]> = [
    ['HS256 signed with JWT_SECRET, no kid', await forge({ alg: 'HS256', typ: 'at+jwt' }, claims(), secret)],
    ['HS256 signed with JWT_SECRET, the signing key\'s kid', await forge({ alg: 'HS256', typ: 'at+jwt', kid }, claims(), secret)],
    ['HS256 keyed with the public PEM of the signing key (algorithm confusion)', await forge({ alg: 'HS256', typ: 'at+jwt', kid }, claims(), new TextEncoder().encode(signer.publicPem))],
    ['an unknown kid, signed by another Ed25519 key', await forge({ alg: 'EdDSA', typ: 'at+jwt', kid: await thumbprint(other) }, claims(), other.privateKey)],
    ['the signing key\'s kid, signed by another Ed25519 key', await forge({ alg: 'EdDSA', typ: 'at+jwt', kid }, claims(), other.privateKey)],
    ['no kid, signed by the signing key itself', await forge({ alg: 'EdDSA', typ: 'at+jwt' }, claims(), signer.privateKey)],
    ['ES256 header with the Ed25519 kid, signed by the trusted P-256 key', await forge({ alg: 'ES256', typ: 'at+jwt', kid }, claims(), verifier.privateKey)],
    ['EdDSA header with the P-256 kid, signed by the Ed25519 signing key', await forge({ alg: 'EdDSA', typ: 'at+jwt', kid: verifierKid }, claims(), signer.privateKey)],
    ['alg none with the signing key\'s kid', none({ alg: 'none', typ: 'at+jwt', kid })],
    ['alg none without kid', none({ alg: 'none', typ: 'at+jwt' })]
  ]
  for (const [name, token] of cases) {
    await t.test(name, async (t) => { assertError(t, await me(app, token), 401, 'TOKEN_INVALID') })
  }
  await works(t, app, s.accessToken, s.user.id, 'the real token, after the attempts')
})

t.test('rotating the signing key in three steps on one database ends no session and fails no refresh', async (t) => {
  const a = keyPair('ed25519')
  const b = keyPair('p256')
  const kidA = await thumbprint(a)
  const kidB = await thumbprint(b)
  const clock = testClock(new Date())

  // Step 0: key A only.
  const app0 = await buildTestApp(t, { env: { JWT_PRIVATE_KEY: a.privatePem }, now: clock.now })
  const db = await testDb()
  const u = await signup(app0)
  const loggedIn = await login(app0, u.email)
  t.equal(loggedIn.statusCode, 200, 'step 0: login')
  const tokenA = loggedIn.json().accessToken as string
  const cookie0 = refreshCookieIn(loggedIn)
  t.not(cookie0, '', 'step 0: a refresh cookie')
  t.equal(headerOf(tokenA).kid, kidA, 'step 0: token A has kid A')
  const sid = decodeJwt(tokenA).sid
  const mfaUser = await enrolMfa(app0, clock)
  const mfaToken = await mfaChallenge(app0, mfaUser.email)

  // Step 1: B signs, A still verifies.
  const app1 = await buildTestApp(t, { db, env: { JWT_PRIVATE_KEY: b.privatePem, JWT_PUBLIC_KEYS: a.publicPem }, now: clock.now })
  const jwks1 = await jwksOf(app1)
  t.equal(jwks1.statusCode, 200)
  t.strictSame((jwks1.json().keys as Array<{ kid: string }>).map((k) => k.kid).sort(), [kidA, kidB].sort(), 'step 1: the JWKS lists A and B')
  await works(t, app1, tokenA, u.user.id, 'step 1: token A')
  const refreshed1 = await refresh(app1, cookie0)
  t.equal(refreshed1.statusCode, 200, 'step 1: refresh with the step-0 cookie')
  const tokenB = refreshed1.json().accessToken as string
  t.strictSame(headerOf(tokenB), { alg: 'ES256', typ: 'at+jwt', kid: kidB }, 'step 1: the new token is signed by B')
  t.equal(decodeJwt(tokenB).sid, sid, 'step 1: same session')
  await works(t, app1, tokenB, u.user.id, 'step 1: token B')
  const cookie1 = refreshCookieIn(refreshed1)
  t.not(cookie1, '', 'step 1: a new refresh cookie')
  t.not(cookie1, cookie0)
  // During the rollout the step-0 instance (signing with A) still runs: a client retrying that
  // refresh there (same cookie, within the grace window) gets the very same successor, so the
  // successor's derivation key cannot depend on the signing key.
  const retried = await refresh(app0, cookie0)
  t.equal(retried.statusCode, 200, 'step 1: the retry on the old instance is inside the grace window, not reuse')
  t.equal(refreshCookieIn(retried), cookie1, 'step 1: the old instance hands out the same successor')
  await app0.close()
  await app1.close()

  // Step 2: B only; A is gone.
  const app2 = await buildTestApp(t, { db, env: { JWT_PRIVATE_KEY: b.privatePem }, now: clock.now })
  const jwks2 = await jwksOf(app2)
  t.strictSame((jwks2.json().keys as Array<{ kid: string }>).map((k) => k.kid), [kidB], 'step 2: the JWKS lists B only')
  assertError(t, await me(app2, tokenA), 401, 'TOKEN_INVALID')
  await works(t, app2, tokenB, u.user.id, 'step 2: token B')
  const refreshed2 = await refresh(app2, cookie1)
  t.equal(refreshed2.statusCode, 200, 'step 2: refresh with the step-1 cookie')
  const tokenB2 = refreshed2.json().accessToken as string
  t.equal(headerOf(tokenB2).kid, kidB)
  t.equal(decodeJwt(tokenB2).sid, sid, 'step 2: still the same session')
  await works(t, app2, tokenB2, u.user.id, 'step 2: the refreshed token')

  // The MFA challenge started under A completes under B.
  const done = await app2.inject({ method: 'POST', url: '/api/auth/login/mfa', payload: { mfaToken, code: totpCode(mfaUser.secret, clock.now()) }, remoteAddress: '10.0.0.1' })
  t.equal(done.statusCode, 200, 'step 2: the MFA challenge from step 0 is answered')
  const mfaAccess = done.json().accessToken as string
  t.equal(headerOf(mfaAccess).kid, kidB)
  await works(t, app2, mfaAccess, mfaUser.user.id, 'step 2: the token of the MFA login')
})

t.test('a bad key stops start-up with one line naming the variable; a one-line PEM with \\n escapes works', async (t) => {
  const ed = keyPair('ed25519')
  const p256 = keyPair('p256')
  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ['an RSA private key', { JWT_PRIVATE_KEY: keyPair('rsa').privatePem }, /JWT_PRIVATE_KEY/],
    ['an Ed448 private key', { JWT_PRIVATE_KEY: keyPair('ed448').privatePem }, /JWT_PRIVATE_KEY/],
    ['a P-384 private key', { JWT_PRIVATE_KEY: keyPair('p384').privatePem }, /JWT_PRIVATE_KEY/],
    ['a secp256k1 private key', { JWT_PRIVATE_KEY: keyPair('secp256k1').privatePem }, /JWT_PRIVATE_KEY/],
    ['garbage as the private key', { JWT_PRIVATE_KEY: 'not a key at all' }, /JWT_PRIVATE_KEY/],
    ['a PEM block of garbage as the private key', { JWT_PRIVATE_KEY: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----' }, /JWT_PRIVATE_KEY/],
    ['a public key as the private key', { JWT_PRIVATE_KEY: ed.publicPem }, /JWT_PRIVATE_KEY/],
    ['a private key inside JWT_PUBLIC_KEYS', { JWT_PRIVATE_KEY: ed.privatePem, JWT_PUBLIC_KEYS: p256.privatePem }, /JWT_PUBLIC_KEYS/],
    ['a private key after a public key inside JWT_PUBLIC_KEYS', { JWT_PRIVATE_KEY: ed.privatePem, JWT_PUBLIC_KEYS: p256.publicPem + keyPair('ed25519').privatePem }, /JWT_PUBLIC_KEYS/],
    ['an RSA public key inside JWT_PUBLIC_KEYS', { JWT_PRIVATE_KEY: ed.privatePem, JWT_PUBLIC_KEYS: keyPair('rsa').publicPem }, /JWT_PUBLIC_KEYS/],
    ['garbage inside JWT_PUBLIC_KEYS', { JWT_PRIVATE_KEY: ed.privatePem, JWT_PUBLIC_KEYS: 'garbage' }, /JWT_PUBLIC_KEYS/],
    ['a PEM block of garbage after a good one in JWT_PUBLIC_KEYS', { JWT_PRIVATE_KEY: ed.privatePem, JWT_PUBLIC_KEYS: `${p256.publicPem}-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n` }, /JWT_PUBLIC_KEYS/],
    ['JWT_PUBLIC_KEYS without JWT_PRIVATE_KEY', { JWT_PUBLIC_KEYS: p256.publicPem }, /JWT_PUBLIC_KEYS/],
    ['a cut-off second key after a good one in JWT_PUBLIC_KEYS', { JWT_PRIVATE_KEY: ed.privatePem, JWT_PUBLIC_KEYS: `${p256.publicPem}\n${keyPair('ed25519').publicPem.slice(0, 60)}` }, /JWT_PUBLIC_KEYS/]
  ]
  for (const [name, env, variable] of cases) {
    await t.test(name, async (t) => {
      let error: unknown
      try {
        testConfig(env)
      } catch (err) {
        error = err
      }
      t.type(error, Error, 'loadConfig throws')
      const message = (error as Error | undefined)?.message ?? ''
      t.match(message, variable, 'the message names the variable')
      t.notMatch(message, /\n/, 'on one line')
      const material = Object.values(env).flatMap((v) => v.split('\n')).filter((line) => line.length >= 4 && !line.startsWith('-----'))
      t.strictSame(material.filter((line) => message.includes(line)), [], 'without the key material')
    })
  }

  await t.test('one-line \\n-escaped PEMs (two public keys concatenated) are read', async (t) => {
    const other = keyPair('ed25519')
    const oneLine = (pem: string) => pem.replace(/\n/g, '\\n')
    const env = { JWT_PRIVATE_KEY: oneLine(ed.privatePem), JWT_PUBLIC_KEYS: oneLine(p256.publicPem + other.publicPem) }
    t.doesNotThrow(() => testConfig(env))
    t.notMatch(env.JWT_PRIVATE_KEY, /\n/, 'the variable really is one line')
    const app = await buildTestApp(t, { env })
    const s = await signup(app)
    t.equal(headerOf(s.accessToken).kid, await thumbprint(ed), 'signs with the escaped key')
    await works(t, app, s.accessToken, s.user.id, 'its token')
    const kids = ((await jwksOf(app)).json().keys as Array<{ kid: string }>).map((k) => k.kid).sort()
    t.strictSame(kids, [await thumbprint(ed), await thumbprint(p256), await thumbprint(other)].sort(), 'every escaped public key is published')
  })
})
