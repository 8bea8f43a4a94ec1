import { randomBytes, randomUUID } from 'node:crypto'
import { encodeCBOR } from '@levischuck/tiny-cbor'
import { and, eq, isNull } from 'drizzle-orm'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { authEvents, passkeys, sessions, webauthnChallenges } from '../../src/db/schema.ts'
import {
  assertError, bearer, buildTestApp, decodeJwt, enrolMfa, login, PASSWORD, readMail, refreshCookieIn, signup, signupAdmin, testClock, testDb
} from '../helper.ts'
import { type AssertKnobs, EDDSA, encodeAttestationObject, type RegisterKnobs, type SoftAuthenticator, softAuthenticator } from '../webauthn.ts'

/** The page's origin: APP_URL's default, http://localhost:3000; its host name is the RP ID. */
const ORIGIN = 'http://localhost:3000'
const RP_ID = 'localhost'
const FIVE_MINUTES = 5 * 60_000
const PASSKEY_KEYS = ['backedUp', 'createdAt', 'id', 'lastUsedAt', 'name']
const TOKEN_RESPONSE_KEYS = ['accessToken', 'expiresIn', 'tokenType', 'user']
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const B64U = /^[A-Za-z0-9_-]+$/

interface Passkey { id: string, name: string, createdAt: string, lastUsedAt: string | null, backedUp: boolean }

const b64u = (data: string | Uint8Array) => Buffer.from(data).toString('base64url')

// ---- the HTTP calls ----------------------------------------------------------------------

const registerOptions = (app: App, token: string) =>
  app.inject({ method: 'POST', url: '/api/auth/passkeys/register/options', headers: bearer(token), payload: {} })
const registerVerify = (app: App, token: string, payload: unknown) =>
  app.inject({ method: 'POST', url: '/api/auth/passkeys/register/verify', headers: bearer(token), payload: payload as Record<string, unknown> })
const loginOptions = (app: App, remoteAddress = '10.0.0.1') =>
  app.inject({ method: 'POST', url: '/api/auth/passkeys/login/options', payload: {}, remoteAddress })
const loginVerify = (app: App, payload: unknown, remoteAddress = '10.0.0.1') =>
  app.inject({ method: 'POST', url: '/api/auth/passkeys/login/verify', payload: payload as Record<string, unknown>, remoteAddress })
const listPasskeys = (app: App, token: string) => app.inject({ url: '/api/auth/passkeys', headers: bearer(token) })
const renamePasskey = (app: App, token: string, id: string, payload: unknown) =>
  app.inject({ method: 'PATCH', url: `/api/auth/passkeys/${id}`, headers: bearer(token), payload: payload as Record<string, unknown> })
const removePasskey = (app: App, token: string, id: string) =>
  app.inject({ method: 'DELETE', url: `/api/auth/passkeys/${id}`, headers: bearer(token) })
const me = (app: App, token: string) => app.inject({ url: '/api/auth/me', headers: bearer(token) })
const refresh = (app: App, cookie: string) => app.inject({ method: 'POST', url: '/api/auth/refresh', cookies: { refresh_token: cookie } })

/** Registration options for the user of `token`: `{challengeId, options}`. */
async function newRegistration (app: App, token: string) {
  const res = await registerOptions(app, token)
  if (res.statusCode !== 200) throw new Error(`register/options failed: ${res.statusCode} ${res.body}`)
  return res.json() as { challengeId: string, options: Parameters<SoftAuthenticator['register']>[0] }
}

/** Login options: `{challengeId, options}`. */
async function newLogin (app: App, remoteAddress = '10.0.0.1') {
  const res = await loginOptions(app, remoteAddress)
  if (res.statusCode !== 200) throw new Error(`login/options failed: ${res.statusCode} ${res.body}`)
  return res.json() as { challengeId: string, options: Parameters<SoftAuthenticator['assert']>[0] }
}

/** The whole registration ceremony: options, the authenticator's answer (with `knobs`), verify. */
async function register (app: App, token: string, authenticator: SoftAuthenticator, knobs: RegisterKnobs = {}, name?: string) {
  const { challengeId, options } = await newRegistration(app, token)
  const response = authenticator.register(options, knobs)
  const res = await registerVerify(app, token, { challengeId, response, ...(name === undefined ? {} : { name }) })
  return { res, challengeId, options, response }
}

/** The whole login ceremony: options, the authenticator's assertion (with `knobs`), verify. */
async function passkeyLogin (app: App, authenticator: SoftAuthenticator, knobs: AssertKnobs = {}, remoteAddress = '10.0.0.1') {
  const { challengeId, options } = await newLogin(app, remoteAddress)
  return loginVerify(app, { challengeId, response: authenticator.assert(options, knobs) }, remoteAddress)
}

/** A new user with one passkey on an authenticator of its own. */
async function userWithPasskey (app: App, knobs: RegisterKnobs = {}) {
  const session = await signup(app)
  const authenticator = softAuthenticator(ORIGIN)
  const { res, options } = await register(app, session.accessToken, authenticator, knobs)
  if (res.statusCode !== 201) throw new Error(`registration failed: ${res.statusCode} ${res.body}`)
  const credential = authenticator.credentials.at(-1)
  if (credential === undefined) throw new Error('no credential')
  return { ...session, authenticator, credential, userHandle: options.user.id, passkey: res.json().passkey as Passkey }
}

// ---- the database ------------------------------------------------------------------------

const eventsOf = (app: App, type: string) =>
  app.db.select().from(authEvents).where(eq(authEvents.eventType, type)).orderBy(authEvents.createdAt, authEvents.id)
const passkeysOf = (app: App, userId: string) => app.db.select().from(passkeys).where(eq(passkeys.userId, userId))
async function passkeyRow (app: App, id: string) {
  const [row] = await app.db.select().from(passkeys).where(eq(passkeys.id, id))
  return row
}
const liveSessionsOf = (app: App, userId: string) =>
  app.db.select().from(sessions).where(and(eq(sessions.userId, userId), isNull(sessions.revokedAt)))

// ---- registration ------------------------------------------------------------------------

t.test('registration options follow the contract: the RP, an opaque user id, ES256 and EdDSA, a resident key, no attestation', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const res = await registerOptions(app, s.accessToken)
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.same(Object.keys(body).sort(), ['challengeId', 'options'])
  t.match(body.challengeId, UUID)
  const { options } = body

  t.same(options.rp, { id: RP_ID, name: 'Gatehouse' })
  t.same(Object.keys(options.user).sort(), ['displayName', 'id', 'name'])
  t.equal(options.user.name, s.email)
  t.type(options.user.displayName, 'string')
  t.match(options.user.id, B64U)
  const handle = Buffer.from(options.user.id, 'base64url')
  t.ok(handle.length >= 16 && handle.length <= 64, 'user.id: random bytes, at most 64 (WebAuthn §5.4.3)')
  for (const secret of [s.email, s.email.split('@')[0] ?? '', s.user.id]) {
    t.notOk(options.user.id.includes(secret), `user.id does not contain ${secret}`)
    t.notOk(handle.toString('latin1').includes(secret), `nor do its bytes: ${secret}`)
  }
  t.notOk(handle.includes(Buffer.from(s.user.id.replaceAll('-', ''), 'hex')), 'nor the user id\'s 16 bytes')

  t.match(options.challenge, B64U)
  t.ok(Buffer.from(options.challenge, 'base64url').length >= 16, 'a challenge of at least 16 random bytes')
  const algs = options.pubKeyCredParams.map((p: { alg: number }) => p.alg)
  t.ok(algs.includes(-7), 'ES256')
  t.ok(algs.includes(-8), 'EdDSA')
  t.ok(options.pubKeyCredParams.every((p: { type: string }) => p.type === 'public-key'))
  t.equal(options.authenticatorSelection.residentKey, 'required')
  t.equal(options.attestation, 'none')
  t.same(options.excludeCredentials, [], 'no passkeys yet')

  const [challenge] = await app.db.select().from(webauthnChallenges).where(eq(webauthnChallenges.id, body.challengeId))
  t.match(challenge, { kind: 'registration', userId: s.user.id, usedAt: null })
  t.notOk(JSON.stringify(challenge).includes(options.challenge), 'the challenge itself is not stored')

  const again = (await registerOptions(app, s.accessToken)).json()
  t.not(again.challengeId, body.challengeId)
  t.not(again.options.challenge, options.challenge, 'a new challenge each time')
  const other = await signup(app)
  t.not((await registerOptions(app, other.accessToken)).json().options.user.id, options.user.id, 'each user a user.id of its own')
})

t.test('every passkey route but the login ones needs a Bearer token', async (t) => {
  const app = await buildTestApp(t)
  const id = randomUUID()
  for (const req of [
    { method: 'POST' as const, url: '/api/auth/passkeys/register/options', payload: {} },
    { method: 'POST' as const, url: '/api/auth/passkeys/register/verify', payload: {} },
    { method: 'GET' as const, url: '/api/auth/passkeys' },
    { method: 'PATCH' as const, url: `/api/auth/passkeys/${id}`, payload: { name: 'x' } },
    { method: 'DELETE' as const, url: `/api/auth/passkeys/${id}` }
  ]) {
    assertError(t, await app.inject(req), 401, 'AUTH_REQUIRED')
  }
})

t.test('registering a passkey: 201 {passkey}, the credential stored, passkey_registered and a notice mail', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const s = await signup(app)
  clock.advance(60_000)
  const authenticator = softAuthenticator(ORIGIN)
  const { res, options } = await register(app, s.accessToken, authenticator, { flags: { be: true, bs: true }, transports: ['internal', 'hybrid'] }, 'Work laptop')
  t.equal(res.statusCode, 201)
  t.same(Object.keys(res.json()), ['passkey'])
  const { passkey } = res.json()
  t.same(Object.keys(passkey).sort(), PASSKEY_KEYS)
  t.match(passkey.id, UUID)
  t.same({ ...passkey, id: 'x' }, { id: 'x', name: 'Work laptop', createdAt: clock.now().toISOString(), lastUsedAt: null, backedUp: true })

  const credential = authenticator.credentials[0]!
  const [row] = await passkeysOf(app, s.user.id)
  t.match(row, {
    id: passkey.id,
    userId: s.user.id,
    credentialId: credential.id,
    publicKey: b64u(credential.cosePublicKey),
    userHandle: options.user.id,
    counter: 0,
    transports: ['internal', 'hybrid'],
    deviceType: 'multiDevice',
    backedUp: true,
    name: 'Work laptop',
    lastUsedAt: null
  })

  const [event, ...more] = await eventsOf(app, 'passkey_registered')
  t.same(more, [], 'one event')
  t.match(event, { userId: s.user.id, email: s.email, success: true, ipAddress: '127.0.0.1', metadata: { passkeyId: passkey.id } })

  const mail = await readMail(app)
  t.equal(mail.length, 1, 'one notice')
  t.equal(mail[0]?.to, s.email)
  t.match(mail[0]?.subject, /a passkey was added to your account/i)
  t.match(mail[0]?.text, /A passkey was added to your account/)
  t.notMatch(mail[0]?.text, /Work laptop/, 'the name is the user\'s text (or a token thief\'s): a security notice does not quote it')

  t.same((await listPasskeys(app, s.accessToken)).json(), { items: [passkey] })

  // The next options exclude it, and offer the same user handle (one per user).
  const next = await newRegistration(app, s.accessToken)
  t.same(next.options.excludeCredentials, [{ id: credential.id, type: 'public-key', transports: ['internal', 'hybrid'] }])
  t.equal(next.options.user.id, options.user.id)
})

t.test('a passkey registered without a name is called "Passkey"; a single-device one is not backed up; the counter is kept', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const { res } = await register(app, s.accessToken, softAuthenticator(ORIGIN), { counter: 7, transports: ['usb'] })
  t.equal(res.statusCode, 201)
  t.match(res.json().passkey, { name: 'Passkey', backedUp: false })
  t.match(await passkeyRow(app, res.json().passkey.id), { counter: 7, deviceType: 'singleDevice', backedUp: false, transports: ['usb'] })
})

t.test('an EdDSA (Ed25519) passkey registers and logs in', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app, { alg: EDDSA })
  t.equal(u.credential.alg, EDDSA)
  const res = await passkeyLogin(app, u.authenticator)
  t.equal(res.statusCode, 200)
  t.equal(res.json().user.id, u.user.id)
})

t.test('a registration the server did not ask for is refused: 400 PASSKEY_REGISTRATION_FAILED, nothing stored', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const cases: Array<[string, RegisterKnobs]> = [
    ['another origin', { origin: 'https://evil.example.com' }],
    ['another port', { origin: 'http://localhost:3001' }],
    ['another RP ID', { rpId: 'evil.example.com' }],
    ['a challenge the server did not issue', { challenge: b64u(randomBytes(32)) }],
    ['no user verification', { flags: { uv: false } }],
    ['no user presence', { flags: { up: false } }]
  ]
  for (const [what, knobs] of cases) {
    const { res } = await register(app, s.accessToken, softAuthenticator(ORIGIN), knobs)
    assertError(t, res, 400, 'PASSKEY_REGISTRATION_FAILED')
    t.comment(what)
  }
  t.same(await passkeysOf(app, s.user.id), [], 'no passkey stored')
  t.same(await eventsOf(app, 'passkey_registered'), [])
  t.same(await readMail(app), [], 'no notice')
})

t.test('a registration challenge is single use, even when the registration is refused', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const authenticator = softAuthenticator(ORIGIN)
  const { res, challengeId, options } = await register(app, s.accessToken, authenticator)
  t.equal(res.statusCode, 201)
  const replay = await registerVerify(app, s.accessToken, { challengeId, response: authenticator.register(options) })
  assertError(t, replay, 400, 'PASSKEY_REGISTRATION_FAILED')

  const refused = await newRegistration(app, s.accessToken)
  const wrong = await registerVerify(app, s.accessToken, { challengeId: refused.challengeId, response: authenticator.register(refused.options, { origin: 'https://evil.example.com' }) })
  assertError(t, wrong, 400, 'PASSKEY_REGISTRATION_FAILED')
  const retry = await registerVerify(app, s.accessToken, { challengeId: refused.challengeId, response: authenticator.register(refused.options) })
  assertError(t, retry, 400, 'PASSKEY_REGISTRATION_FAILED')
  t.equal((await passkeysOf(app, s.user.id)).length, 1, 'only the first')
})

t.test('a registration challenge lives 5 minutes', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const s = await signup(app)
  const authenticator = softAuthenticator(ORIGIN)

  const late = await newRegistration(app, s.accessToken)
  clock.advance(FIVE_MINUTES)
  assertError(t, await registerVerify(app, s.accessToken, { challengeId: late.challengeId, response: authenticator.register(late.options) }), 400, 'PASSKEY_REGISTRATION_FAILED')

  const inTime = await newRegistration(app, s.accessToken)
  clock.advance(FIVE_MINUTES - 1000)
  t.equal((await registerVerify(app, s.accessToken, { challengeId: inTime.challengeId, response: authenticator.register(inTime.options) })).statusCode, 201)
})

t.test('a registration challenge belongs to the user who asked for it', async (t) => {
  const app = await buildTestApp(t)
  const alice = await signup(app)
  const mallory = await signup(app)
  const { challengeId, options } = await newRegistration(app, alice.accessToken)
  const authenticator = softAuthenticator(ORIGIN)
  assertError(t, await registerVerify(app, mallory.accessToken, { challengeId, response: authenticator.register(options) }), 400, 'PASSKEY_REGISTRATION_FAILED')
  t.same(await passkeysOf(app, mallory.user.id), [])
  t.same(await passkeysOf(app, alice.user.id), [])

  const res = await registerVerify(app, alice.accessToken, { challengeId, response: authenticator.register(options) })
  t.equal(res.statusCode, 201, 'the attempt did not use up Alice\'s challenge')
})

t.test('login challenges do not register passkeys', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const { challengeId, options } = await newLogin(app)
  const registration = await newRegistration(app, s.accessToken)
  const response = softAuthenticator(ORIGIN).register({ ...registration.options, challenge: options.challenge })
  assertError(t, await registerVerify(app, s.accessToken, { challengeId, response }), 400, 'PASSKEY_REGISTRATION_FAILED')
  t.same(await passkeysOf(app, s.user.id), [])
})

t.test('a credential is registered once: again, by its user or anyone, is 400 PASSKEY_REGISTRATION_FAILED', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app)
  const again = await register(app, u.accessToken, u.authenticator, { credential: u.credential })
  assertError(t, again.res, 400, 'PASSKEY_REGISTRATION_FAILED')
  const other = await signup(app)
  const stolen = await register(app, other.accessToken, u.authenticator, { credential: u.credential })
  assertError(t, stolen.res, 400, 'PASSKEY_REGISTRATION_FAILED')
  t.equal((await passkeysOf(app, u.user.id)).length, 1)
  t.same(await passkeysOf(app, other.user.id), [])
  t.equal((await eventsOf(app, 'passkey_registered')).length, 1)
  t.same((await newRegistration(app, other.accessToken)).options.excludeCredentials, [], 'only one\'s own passkeys are excluded')
})

// ---- login -------------------------------------------------------------------------------

t.test('login options follow the contract: the RP ID, user verification required, no allowCredentials', async (t) => {
  const app = await buildTestApp(t)
  const res = await loginOptions(app)
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.same(Object.keys(body).sort(), ['challengeId', 'options'])
  t.match(body.challengeId, UUID)
  t.equal(body.options.rpId, RP_ID)
  t.equal(body.options.userVerification, 'required')
  t.notOk('allowCredentials' in body.options, 'discoverable credentials: no allowCredentials')
  t.match(body.options.challenge, B64U)
  t.ok(Buffer.from(body.options.challenge, 'base64url').length >= 16)
  const [challenge] = await app.db.select().from(webauthnChallenges).where(eq(webauthnChallenges.id, body.challengeId))
  t.match(challenge, { kind: 'authentication', userId: null, usedAt: null })
})

t.test('logging in with a passkey: the token response, the refresh cookie, amr ["passkey"], login_success, the passkey marked used', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const u = await userWithPasskey(app)
  clock.advance(60_000)
  const res = await passkeyLogin(app, u.authenticator, {}, '10.2.2.2')
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.same(Object.keys(body).sort(), TOKEN_RESPONSE_KEYS)
  t.match(body, { user: { id: u.user.id, email: u.email, lastLoginAt: clock.now().toISOString() }, tokenType: 'Bearer', expiresIn: 900 })
  const claims = decodeJwt(body.accessToken)
  t.same(claims.amr, ['passkey'])
  t.equal(claims.sub, u.user.id)
  const cookie = refreshCookieIn(res)
  t.not(cookie, '', 'a refresh cookie')

  const [session] = await app.db.select().from(sessions).where(eq(sessions.id, claims.sid))
  t.match(session, { userId: u.user.id, amr: ['passkey'], ipAddress: '10.2.2.2', revokedAt: null })
  const [event, ...more] = await eventsOf(app, 'login_success')
  t.same(more, [])
  t.match(event, { userId: u.user.id, email: u.email, success: true, ipAddress: '10.2.2.2', metadata: { amr: ['passkey'] } })
  t.match(await passkeyRow(app, u.passkey.id), { counter: 1, lastUsedAt: clock.now() })
  t.match((await listPasskeys(app, body.accessToken)).json().items[0], { id: u.passkey.id, lastUsedAt: clock.now().toISOString() })

  t.equal((await me(app, body.accessToken)).statusCode, 200)
  const refreshed = await refresh(app, cookie)
  t.equal(refreshed.statusCode, 200)
  t.same(decodeJwt(refreshed.json().accessToken).amr, ['passkey'], 'a refresh keeps the amr')

  clock.advance(60_000)
  t.equal((await passkeyLogin(app, u.authenticator)).statusCode, 200)
  t.match(await passkeyRow(app, u.passkey.id), { counter: 2, lastUsedAt: clock.now() })
})

t.test('a user with MFA logs in with a passkey and no TOTP step', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const s = await enrolMfa(app, clock)
  const authenticator = softAuthenticator(ORIGIN)
  t.equal((await register(app, s.accessToken, authenticator)).res.statusCode, 201)
  t.equal((await login(app, s.email, PASSWORD)).json().mfaRequired, true, 'a password login asks for the code')

  const res = await passkeyLogin(app, authenticator)
  t.equal(res.statusCode, 200)
  t.same(Object.keys(res.json()).sort(), TOKEN_RESPONSE_KEYS, 'tokens, no mfaToken')
  t.same(decodeJwt(res.json().accessToken).amr, ['passkey'])
  t.match(res.json().user, { id: s.user.id, mfaEnabled: true })
})

t.test('a signature counter that does not grow means a cloned authenticator: 401 PASSKEY_INVALID and passkey_clone_suspected', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app)
  t.equal((await passkeyLogin(app, u.authenticator, { counter: 5 })).statusCode, 200)

  for (const counter of [5, 3, 0]) {
    assertError(t, await passkeyLogin(app, u.authenticator, { counter }), 401, 'PASSKEY_INVALID')
  }
  const suspected = await eventsOf(app, 'passkey_clone_suspected')
  t.equal(suspected.length, 3)
  t.match(suspected[0], { userId: u.user.id, success: false, metadata: { passkeyId: u.passkey.id, storedCounter: 5, presentedCounter: 5 } })
  t.same(suspected.map((e) => e.metadata?.presentedCounter), [5, 3, 0])
  const failures = await eventsOf(app, 'login_failure')
  t.equal(failures.length, 3, 'each a login_failure too')
  t.ok(failures.every((f) => f.userId === u.user.id && f.metadata?.method === 'passkey'))
  t.equal((await passkeyRow(app, u.passkey.id))?.counter, 5, 'the stored counter stays')
  t.equal((await liveSessionsOf(app, u.user.id)).length, 2, 'signup and the one login')

  t.equal((await passkeyLogin(app, u.authenticator, { counter: 6 })).statusCode, 200, 'a larger counter passes')
  t.equal((await passkeyRow(app, u.passkey.id))?.counter, 6)
})

t.test('an authenticator that keeps no counter (0 on both sides) logs in again and again', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app, { counts: false })
  for (let i = 0; i < 3; i++) t.equal((await passkeyLogin(app, u.authenticator)).statusCode, 200, `login ${i + 1}`)
  t.equal((await passkeyRow(app, u.passkey.id))?.counter, 0)
  t.same(await eventsOf(app, 'passkey_clone_suspected'), [])
  // A counter appearing later is larger than 0: fine; 0 after it is not.
  t.equal((await passkeyLogin(app, u.authenticator, { counter: 1 })).statusCode, 200)
  assertError(t, await passkeyLogin(app, u.authenticator, { counter: 0 }), 401, 'PASSKEY_INVALID')
})

t.test('an assertion the server did not ask for is refused: 401 PASSKEY_INVALID, login_failure, no session', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app)
  const other = await userWithPasskey(app)
  // A credential made for Gatehouse's options but never registered.
  const stranger = softAuthenticator(ORIGIN)
  stranger.register((await newRegistration(app, u.accessToken)).options)

  const cases: Array<[string, SoftAuthenticator, AssertKnobs, string]> = [
    ['another origin', u.authenticator, { origin: 'https://evil.example.com' }, 'passkey_verification_failed'],
    ['another RP ID', u.authenticator, { rpId: 'evil.example.com' }, 'passkey_verification_failed'],
    ['a challenge the server did not issue', u.authenticator, { challenge: b64u(randomBytes(32)) }, 'passkey_verification_failed'],
    ['no user verification', u.authenticator, { flags: { uv: false } }, 'passkey_verification_failed'],
    ['no user presence', u.authenticator, { flags: { up: false } }, 'passkey_verification_failed'],
    ['a signature by another key', u.authenticator, { wrongKey: true }, 'passkey_verification_failed'],
    ['another user\'s user handle', u.authenticator, { userHandle: other.userHandle }, 'user_handle_mismatch'],
    ['no user handle', u.authenticator, { userHandle: null }, 'user_handle_mismatch'],
    ['an unknown credential', stranger, {}, 'unknown_credential']
  ]
  const bodies = new Set<string>()
  for (const [what, authenticator, knobs, reason] of cases) {
    const res = await passkeyLogin(app, authenticator, knobs)
    assertError(t, res, 401, 'PASSKEY_INVALID')
    bodies.add(res.body)
    const failure = (await eventsOf(app, 'login_failure')).at(-1)
    t.match(failure, { success: false, failureReason: reason, metadata: { method: 'passkey' } }, what)
    t.equal(failure?.userId ?? null, reason === 'unknown_credential' ? null : u.user.id, `${what}: the event names the credential's owner`)
  }
  t.equal(bodies.size, 1, 'one body for every refusal')
  t.equal((await eventsOf(app, 'login_failure')).length, cases.length)
  t.same(await eventsOf(app, 'login_success'), [])
  t.equal((await liveSessionsOf(app, u.user.id)).length, 1, 'only the signup session')
  t.equal((await liveSessionsOf(app, other.user.id)).length, 1)
  t.match(await passkeyRow(app, u.passkey.id), { counter: 0, lastUsedAt: null })

  t.equal((await passkeyLogin(app, u.authenticator)).statusCode, 200, 'the genuine assertion still passes')
})

t.test('a login challenge is single use, even when the login is refused', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app)
  const { challengeId, options } = await newLogin(app)
  t.equal((await loginVerify(app, { challengeId, response: u.authenticator.assert(options) })).statusCode, 200)
  assertError(t, await loginVerify(app, { challengeId, response: u.authenticator.assert(options) }), 401, 'PASSKEY_INVALID')

  const refused = await newLogin(app)
  assertError(t, await loginVerify(app, { challengeId: refused.challengeId, response: u.authenticator.assert(refused.options, { origin: 'https://evil.example.com' }) }), 401, 'PASSKEY_INVALID')
  assertError(t, await loginVerify(app, { challengeId: refused.challengeId, response: u.authenticator.assert(refused.options) }), 401, 'PASSKEY_INVALID')
  const failures = await eventsOf(app, 'login_failure')
  t.same(failures.map((f) => f.failureReason), ['challenge_invalid', 'passkey_verification_failed', 'challenge_invalid'])
  t.equal((await liveSessionsOf(app, u.user.id)).length, 2, 'signup and the one login')
})

t.test('a login challenge lives 5 minutes', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const u = await userWithPasskey(app)
  const late = await newLogin(app)
  clock.advance(FIVE_MINUTES)
  assertError(t, await loginVerify(app, { challengeId: late.challengeId, response: u.authenticator.assert(late.options) }), 401, 'PASSKEY_INVALID')
  const inTime = await newLogin(app)
  clock.advance(FIVE_MINUTES - 1000)
  t.equal((await loginVerify(app, { challengeId: inTime.challengeId, response: u.authenticator.assert(inTime.options) })).statusCode, 200)
})

t.test('registration challenges do not log in', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app)
  const { challengeId, options } = await newRegistration(app, u.accessToken)
  const response = u.authenticator.assert({ rpId: RP_ID, challenge: options.challenge })
  assertError(t, await loginVerify(app, { challengeId, response }), 401, 'PASSKEY_INVALID')
  t.equal((await liveSessionsOf(app, u.user.id)).length, 1)
})

t.test('a deactivated user\'s passkey logs nobody in: 403 ACCOUNT_DISABLED, told only to the key\'s holder', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const u = await userWithPasskey(app)
  const deactivate = (isActive: boolean) =>
    app.inject({ method: 'PATCH', url: `/api/admin/users/${u.user.id}`, headers: bearer(admin.accessToken), payload: { isActive } })
  t.equal((await deactivate(false)).statusCode, 200)

  assertError(t, await passkeyLogin(app, u.authenticator), 403, 'ACCOUNT_DISABLED')
  assertError(t, await passkeyLogin(app, u.authenticator, { wrongKey: true }), 401, 'PASSKEY_INVALID')
  t.same((await eventsOf(app, 'login_failure')).map((f) => f.failureReason), ['account_disabled', 'passkey_verification_failed'])
  t.same(await liveSessionsOf(app, u.user.id), [], 'no session')
  t.match(await passkeyRow(app, u.passkey.id), { lastUsedAt: null }, 'nor is the passkey marked used')

  t.equal((await deactivate(true)).statusCode, 200)
  t.equal((await passkeyLogin(app, u.authenticator)).statusCode, 200, 'reactivated, the passkey works again')
})

t.test('the per-IP login limit applies to passkey logins (each route its own count)', async (t) => {
  const app = await buildTestApp(t, { env: { RATE_LIMIT_LOGIN_MAX: '3' } })
  const u = await userWithPasskey(app)
  // Options from elsewhere; the verifies from 10.9.9.9.
  const attempt = async (i: number, knobs: AssertKnobs = {}) => {
    const { challengeId, options } = await newLogin(app, `10.1.0.${i}`)
    return loginVerify(app, { challengeId, response: u.authenticator.assert(options, knobs) }, '10.9.9.9')
  }
  t.equal((await attempt(1)).statusCode, 200)
  t.equal((await attempt(2, { wrongKey: true })).statusCode, 401)
  t.equal((await attempt(3, { wrongKey: true })).statusCode, 401)
  const limited = await attempt(4)
  assertError(t, limited, 429, 'RATE_LIMITED')
  t.ok(Number(limited.headers['retry-after']) > 0 && Number(limited.headers['retry-after']) <= 60, 'Retry-After')

  t.equal((await passkeyLogin(app, u.authenticator, {}, '10.9.9.10')).statusCode, 200, 'another IP is not affected')
  for (let i = 0; i < 3; i++) t.equal((await loginOptions(app, '10.8.8.8')).statusCode, 200)
  assertError(t, await loginOptions(app, '10.8.8.8'), 429, 'RATE_LIMITED')
})

t.test('two verifies racing with one challenge: exactly one logs in', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app)
  const { challengeId, options } = await newLogin(app)
  const response = u.authenticator.assert(options)
  const results = await Promise.all([loginVerify(app, { challengeId, response }), loginVerify(app, { challengeId, response })])
  t.same(results.map((r) => r.statusCode).sort(), [200, 401])
  t.equal((await liveSessionsOf(app, u.user.id)).length, 2, 'signup and one login')
  t.equal((await eventsOf(app, 'login_success')).length, 1)
})

t.test('two assertions with one counter racing (a clone): exactly one logs in, the other is flagged', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app)
  const [a, b] = [await newLogin(app), await newLogin(app)]
  const results = await Promise.all([
    loginVerify(app, { challengeId: a.challengeId, response: u.authenticator.assert(a.options, { counter: 9 }) }),
    loginVerify(app, { challengeId: b.challengeId, response: u.authenticator.assert(b.options, { counter: 9 }) })
  ])
  t.same(results.map((r) => r.statusCode).sort(), [200, 401])
  t.equal((await eventsOf(app, 'passkey_clone_suspected')).length, 1)
  t.equal((await passkeyRow(app, u.passkey.id))?.counter, 9)
})

t.test('WEBAUTHN_RP_ID and WEBAUTHN_ORIGINS: every listed origin works, no other', async (t) => {
  const app = await buildTestApp(t, { env: { WEBAUTHN_RP_ID: 'example.com', WEBAUTHN_ORIGINS: 'https://app.example.com,https://login.example.com' } })
  const s = await signup(app)
  const { options } = await newRegistration(app, s.accessToken)
  t.equal(options.rp.id, 'example.com')
  t.equal((await newLogin(app)).options.rpId, 'example.com')

  const app1 = softAuthenticator('https://app.example.com')
  t.equal((await register(app, s.accessToken, app1)).res.statusCode, 201)
  t.equal((await passkeyLogin(app, app1)).statusCode, 200)
  t.equal((await passkeyLogin(app, app1, { origin: 'https://login.example.com' })).statusCode, 200, 'the same passkey from the other origin')
  assertError(t, await passkeyLogin(app, app1, { origin: ORIGIN }), 401, 'PASSKEY_INVALID')
  assertError(t, await passkeyLogin(app, app1, { origin: 'https://evil.example.com' }), 401, 'PASSKEY_INVALID')
  assertError(t, (await register(app, s.accessToken, softAuthenticator(ORIGIN))).res, 400, 'PASSKEY_REGISTRATION_FAILED')
  assertError(t, (await register(app, s.accessToken, softAuthenticator('https://app.example.com'), { rpId: RP_ID })).res, 400, 'PASSKEY_REGISTRATION_FAILED')
})

// ---- management --------------------------------------------------------------------------

t.test('listing, renaming and removing one\'s passkeys', async (t) => {
  const clock = testClock()
  const app = await buildTestApp(t, { now: clock.now })
  const s = await signup(app)
  const phone = softAuthenticator(ORIGIN)
  const laptop = softAuthenticator(ORIGIN)
  const first = (await register(app, s.accessToken, phone, {}, 'Phone')).res.json().passkey as Passkey
  clock.advance(1000)
  const second = (await register(app, s.accessToken, laptop, {}, 'Laptop')).res.json().passkey as Passkey
  const noticesOfAdding = (await readMail(app)).length

  const list = await listPasskeys(app, s.accessToken)
  t.equal(list.statusCode, 200)
  t.same(Object.keys(list.json()), ['items'])
  t.same(list.json().items.map((p: Passkey) => p.name), ['Phone', 'Laptop'], 'oldest first')
  t.ok(list.json().items.every((p: Passkey) => Object.keys(p).sort().join() === PASSKEY_KEYS.join()))

  const renamed = await renamePasskey(app, s.accessToken, first.id, { name: '  Old phone  ' })
  t.equal(renamed.statusCode, 200)
  t.same(Object.keys(renamed.json()).sort(), PASSKEY_KEYS)
  t.same(renamed.json(), { ...first, name: 'Old phone' })
  t.equal((await passkeyRow(app, first.id))?.name, 'Old phone')

  const removed = await removePasskey(app, s.accessToken, first.id)
  t.equal(removed.statusCode, 204)
  t.equal(removed.body, '')
  t.same((await listPasskeys(app, s.accessToken)).json(), { items: [second] })
  t.equal(await passkeyRow(app, first.id), undefined)
  const [event, ...more] = await eventsOf(app, 'passkey_removed')
  t.same(more, [])
  t.match(event, { userId: s.user.id, email: s.email, success: true, metadata: { passkeyId: first.id, name: 'Old phone' } })
  const mail = (await readMail(app)).slice(noticesOfAdding)
  t.equal(mail.length, 1)
  t.equal(mail[0]?.to, s.email)
  t.match(mail[0]?.subject, /a passkey was removed from your account/i)
  t.notMatch(mail[0]?.text, /Old phone/, 'the name is not quoted')

  assertError(t, await passkeyLogin(app, phone), 401, 'PASSKEY_INVALID')
  t.equal((await passkeyLogin(app, laptop)).statusCode, 200, 'the other one still works')
  t.same((await newRegistration(app, s.accessToken)).options.excludeCredentials?.map((c) => c.id), [laptop.credentials[0]!.id])
  assertError(t, await removePasskey(app, s.accessToken, first.id), 404, 'NOT_FOUND')
})

t.test('a passkey name is 1 to 64 characters, not only blanks, no control or format characters: 400 VALIDATION_ERROR otherwise', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app)
  const controls = ['a\nb', 'tab\there', 'x\u202e', 'bell\u0007', 'zero\u200bwidth']
  for (const payload of [{}, { name: '' }, { name: '   ' }, { name: 'x'.repeat(65) }, { name: 42 }, { name: null }, { name: 'ok', extra: true }, ...controls.map((name) => ({ name }))]) {
    assertError(t, await renamePasskey(app, u.accessToken, u.passkey.id, payload), 400, 'VALIDATION_ERROR')
  }
  t.equal((await renamePasskey(app, u.accessToken, u.passkey.id, { name: 'x'.repeat(64) })).statusCode, 200)
  const { challengeId, options } = await newRegistration(app, u.accessToken)
  const res = await registerVerify(app, u.accessToken, { challengeId, response: softAuthenticator(ORIGIN).register(options), name: 'x'.repeat(65) })
  assertError(t, res, 400, 'VALIDATION_ERROR')
})

t.test('someone else\'s passkey does not exist for you: 404 NOT_FOUND; a malformed id is 400', async (t) => {
  const app = await buildTestApp(t)
  const alice = await userWithPasskey(app)
  const mallory = await signup(app)
  assertError(t, await renamePasskey(app, mallory.accessToken, alice.passkey.id, { name: 'mine now' }), 404, 'NOT_FOUND')
  assertError(t, await removePasskey(app, mallory.accessToken, alice.passkey.id), 404, 'NOT_FOUND')
  t.match(await passkeyRow(app, alice.passkey.id), { name: 'Passkey', userId: alice.user.id }, 'untouched')
  t.same((await listPasskeys(app, mallory.accessToken)).json(), { items: [] })
  t.same(await eventsOf(app, 'passkey_removed'), [])

  for (const id of [randomUUID()]) {
    assertError(t, await renamePasskey(app, alice.accessToken, id, { name: 'x' }), 404, 'NOT_FOUND')
    assertError(t, await removePasskey(app, alice.accessToken, id), 404, 'NOT_FOUND')
  }
  for (const id of ['not-a-uuid', '1', `urn:uuid:${alice.passkey.id}`]) {
    assertError(t, await renamePasskey(app, alice.accessToken, id, { name: 'x' }), 400, 'VALIDATION_ERROR')
    assertError(t, await removePasskey(app, alice.accessToken, id), 400, 'VALIDATION_ERROR')
  }
  t.equal((await passkeysOf(app, alice.user.id)).length, 1)
})

// ---- passkey sessions are sessions -------------------------------------------------------

t.test('an admin\'s deactivation ends passkey sessions', async (t) => {
  const app = await buildTestApp(t)
  const admin = await signupAdmin(app)
  const u = await userWithPasskey(app)
  const res = await passkeyLogin(app, u.authenticator)
  t.equal((await me(app, res.json().accessToken)).statusCode, 200)
  const patched = await app.inject({ method: 'PATCH', url: `/api/admin/users/${u.user.id}`, headers: bearer(admin.accessToken), payload: { isActive: false } })
  t.equal(patched.statusCode, 200)
  assertError(t, await me(app, res.json().accessToken), 401, 'SESSION_REVOKED')
  assertError(t, await refresh(app, refreshCookieIn(res)), 401, 'REFRESH_TOKEN_INVALID')
  t.same(await liveSessionsOf(app, u.user.id), [])
})

t.test('log out everywhere ends passkey sessions', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app)
  const viaPasskey = await passkeyLogin(app, u.authenticator)
  const viaPassword = await login(app, u.email)
  const out = await app.inject({ method: 'POST', url: '/api/auth/logout-all', headers: bearer(viaPassword.json().accessToken) })
  t.equal(out.statusCode, 200)
  assertError(t, await me(app, viaPasskey.json().accessToken), 401, 'SESSION_REVOKED')
  assertError(t, await refresh(app, refreshCookieIn(viaPasskey)), 401, 'REFRESH_TOKEN_INVALID')
  t.same(await liveSessionsOf(app, u.user.id), [])

  // And from a passkey session, the other way round.
  const again = await passkeyLogin(app, u.authenticator)
  const password = await login(app, u.email)
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout-all', headers: bearer(again.json().accessToken) })).statusCode, 200)
  assertError(t, await me(app, password.json().accessToken), 401, 'SESSION_REVOKED')
  assertError(t, await me(app, again.json().accessToken), 401, 'SESSION_REVOKED')
})

// ---- malformed input ---------------------------------------------------------------------

t.test('malformed registration bodies are 400s, never 500s', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const authenticator = softAuthenticator(ORIGIN)
  const fresh = async () => {
    const { challengeId, options } = await newRegistration(app, s.accessToken)
    return { challengeId, response: authenticator.register(options) }
  }

  const { challengeId, response } = await fresh()
  const invalid: unknown[] = [
    {},
    { challengeId },
    { response },
    { challengeId: 'not-a-uuid', response },
    { challengeId, response: 'a string' },
    { challengeId, response: { ...response, response: { clientDataJSON: response.response.clientDataJSON } } },
    { challengeId, response: { ...response, type: 'password' } },
    { challengeId, response: { ...response, id: 'not base64url!' } },
    { challengeId, response: { ...response, response: { ...response.response, clientDataJSON: '' } } },
    { challengeId, response: { ...response, response: { ...response.response, transports: ['telepathy'] } } },
    { challengeId, response: { ...response, response: { ...response.response, attestationObject: 'A'.repeat(12_001) } } },
    { challengeId, response, name: '' },
    { challengeId, response, extra: 1 }
  ]
  for (const payload of invalid) assertError(t, await registerVerify(app, s.accessToken, payload), 400, 'VALIDATION_ERROR')
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/passkeys/register/options', headers: bearer(s.accessToken), payload: { user: 'x' } }), 400, 'VALIDATION_ERROR')

  // Well-formed JSON that is no attestation: refused as one.
  const garbage: Array<(r: typeof response) => typeof response> = [
    (r) => ({ ...r, response: { ...r.response, clientDataJSON: b64u('not json') } }),
    (r) => ({ ...r, response: { ...r.response, clientDataJSON: b64u('{"type":"webauthn.create"}') } }),
    (r) => ({ ...r, response: { ...r.response, attestationObject: b64u('not cbor at all') } }),
    (r) => ({ ...r, response: { ...r.response, attestationObject: b64u(encodeAttestationObject()) } }),
    (r) => ({ ...r, response: { ...r.response, attestationObject: b64u(encodeAttestationObject(randomBytes(10))) } }),
    (r) => ({ ...r, response: { ...r.response, attestationObject: b64u(encodeAttestationObject(randomBytes(37), 'packed')) } }),
    (r) => ({ ...r, response: { ...r.response, attestationObject: b64u(encodeCBOR([1, 2, 3])) } }),
    (r) => ({ ...r, rawId: b64u(randomBytes(32)) })
  ]
  for (const spoil of garbage) {
    const ok = await fresh()
    assertError(t, await registerVerify(app, s.accessToken, { challengeId: ok.challengeId, response: spoil(ok.response) }), 400, 'PASSKEY_REGISTRATION_FAILED')
  }
  t.same(await passkeysOf(app, s.user.id), [])
})

t.test('malformed login bodies are 400s or 401 PASSKEY_INVALID, never 500s', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app)
  const fresh = async () => {
    const { challengeId, options } = await newLogin(app)
    return { challengeId, response: u.authenticator.assert(options) }
  }

  const { challengeId, response } = await fresh()
  const invalid: unknown[] = [
    {},
    { challengeId },
    { challengeId: 'x', response },
    { challengeId, response: [] },
    { challengeId, response: { ...response, response: { ...response.response, signature: undefined } } },
    { challengeId, response: { ...response, response: { ...response.response, userHandle: 'A'.repeat(129) } } },
    { challengeId, response: { ...response, response: { ...response.response, authenticatorData: '!!' } } },
    { challengeId, response: { ...response, clientExtensionResults: 'none' } },
    { challengeId, response, extra: true }
  ]
  for (const payload of invalid) assertError(t, await loginVerify(app, payload), 400, 'VALIDATION_ERROR')
  assertError(t, await app.inject({ method: 'POST', url: '/api/auth/passkeys/login/options', payload: { userVerification: 'discouraged' } }), 400, 'VALIDATION_ERROR')

  const garbage: Array<(r: typeof response) => typeof response> = [
    (r) => ({ ...r, response: { ...r.response, clientDataJSON: b64u('not json') } }),
    (r) => ({ ...r, response: { ...r.response, clientDataJSON: b64u('[]') } }),
    (r) => ({ ...r, response: { ...r.response, authenticatorData: b64u('short') } }),
    (r) => ({ ...r, response: { ...r.response, authenticatorData: b64u(randomBytes(600)) } }),
    (r) => ({ ...r, response: { ...r.response, signature: b64u('x') } }),
    (r) => ({ ...r, rawId: b64u(randomBytes(32)) }),
    (r) => ({ ...r, id: b64u(randomBytes(32)), rawId: b64u(randomBytes(32)) })
  ]
  for (const spoil of garbage) {
    const ok = await fresh()
    assertError(t, await loginVerify(app, { challengeId: ok.challengeId, response: spoil(ok.response) }), 401, 'PASSKEY_INVALID')
  }
  t.equal((await liveSessionsOf(app, u.user.id)).length, 1, 'no session')
  t.same(await eventsOf(app, 'login_success'), [])
})

t.test('a ceremony run in a frame of another site (clientData.crossOrigin) is refused', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app)
  const framed = await register(app, u.accessToken, softAuthenticator(ORIGIN), { crossOrigin: true })
  assertError(t, framed.res, 400, 'PASSKEY_REGISTRATION_FAILED')
  t.equal((await passkeysOf(app, u.user.id)).length, 1, 'nothing stored')
  assertError(t, await passkeyLogin(app, u.authenticator, { crossOrigin: true }), 401, 'PASSKEY_INVALID')
  t.match((await eventsOf(app, 'login_failure')).at(-1), { failureReason: 'cross_origin' })
  t.equal((await passkeyLogin(app, u.authenticator)).statusCode, 200, 'the same passkey, not framed, logs in')
})

t.test('REQUIRE_EMAIL_VERIFICATION holds for passkeys too: an unverified account is 403 EMAIL_NOT_VERIFIED', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app) // registered while the requirement was off
  // The setting turned on: a second app on the same database.
  const strict = await buildTestApp(t, { db: await testDb(), env: { REQUIRE_EMAIL_VERIFICATION: 'true' } })
  const before = (await liveSessionsOf(strict, u.user.id)).length
  assertError(t, await passkeyLogin(strict, u.authenticator), 403, 'EMAIL_NOT_VERIFIED')
  t.equal((await liveSessionsOf(strict, u.user.id)).length, before, 'no new session')
  t.match((await eventsOf(strict, 'login_failure')).at(-1), { failureReason: 'email_not_verified', metadata: { method: 'passkey' } })
  t.equal((await passkeyLogin(app, u.authenticator)).statusCode, 200, 'without the requirement it logs in')
})

t.test('a credential id must be the one the authenticator signed, and at most 1023 bytes', async (t) => {
  const app = await buildTestApp(t)
  const s = await signup(app)
  const { challengeId, options } = await newRegistration(app, s.accessToken)
  const response = softAuthenticator(ORIGIN).register(options)
  const res = await registerVerify(app, s.accessToken, { challengeId, response: { ...response, id: 'AAAA', rawId: 'AAAA' } })
  assertError(t, res, 400, 'PASSKEY_REGISTRATION_FAILED')
  t.same(await passkeysOf(app, s.user.id), [])
})

t.test('client data echoed in a refusal cannot break its audit row (a NUL in the origin): 401 and recorded, not a 500', async (t) => {
  const app = await buildTestApp(t)
  const u = await userWithPasskey(app)
  assertError(t, await passkeyLogin(app, u.authenticator, { origin: 'http://evil\u0000.example' }), 401, 'PASSKEY_INVALID')
  const failure = (await eventsOf(app, 'login_failure')).at(-1)
  t.match(failure, { failureReason: 'passkey_verification_failed', userId: u.user.id })
  t.notMatch(JSON.stringify(failure?.metadata), /\\u0000/, 'no control character stored')
})
