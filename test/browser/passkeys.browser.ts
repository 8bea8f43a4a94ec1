/**
 * Passkeys through @gatehouse/client in real headless Chromium: the built client on the test app
 * (http://localhost:<app port>, the WebAuthn origin, RP ID `localhost`), the real service
 * (http://localhost:<service port>), and a CDP virtual authenticator per page (CTAP2, internal,
 * resident keys, user verification that always succeeds, presence simulated).
 *
 * Chromium's virtual authenticator keeps a signature counter per credential: 1 after the
 * registration and one more per assertion (checked below, not assumed), so the service sees a
 * counter that grows and, for a copied key, one that does not.
 */
import { and, eq } from 'drizzle-orm'
import type { BrowserContext, CDPSession, Page } from 'playwright-core'
import t from 'tap'
import type { App } from '../../src/app.ts'
import { authEvents, passkeys, sessions } from '../../src/db/schema.ts'
import { decodeJwt, enrolMfa, listeningTestApp, PASSWORD, setUser, testClock, testDb, totpCode, uniqueEmail, type Test } from '../helper.ts'
import {
  loadApp, newContext, openTab, refreshCookieIn, service as baseService, signupIn, site, states, status, thrownWith as thrown, tokenOf, waitForStatus,
  type Window
} from './client-app.ts'

// ---------------------------------------------------------------------------------------------
// Fixtures

/** The service, and its passkey requests from a point on (preflights left out), as `METHOD path status`. */
async function service (test: Test, opts: { now?: () => Date } = {}) {
  const s = await baseService(test, opts)
  const passkeyCallsFromNow = () => {
    const calls = s.requestsFromNow((w) => w.method !== 'OPTIONS' && w.path.startsWith('/api/auth/passkeys'))
    return () => calls().map((w) => `${w.method} ${w.path} ${w.status}`)
  }
  return { ...s, passkeyCallsFromNow }
}

/**
 * A virtual authenticator for `page` (what a platform authenticator with a fingerprint reader
 * would be): CTAP2, internal, resident keys, user verification that succeeds, presence simulated.
 */
async function authenticatorFor (context: BrowserContext, page: Page) {
  const cdp: CDPSession = await context.newCDPSession(page)
  await cdp.send('WebAuthn.enable')
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true }
  })
  return {
    cdp,
    authenticatorId,
    /** The credentials it holds, private keys included (CDP's binary fields are base64). */
    credentials: async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials
  }
}

const amrOf = async (page: Page) => decodeJwt((await tokenOf(page)) ?? '').amr
const logout = (page: Page) => page.evaluate(() => (globalThis as unknown as Window).gh.logout())
const registerPasskey = (page: Page, name?: string) => page.evaluate((name) => (globalThis as unknown as Window).gh.registerPasskey(name), name)
const loginWithPasskey = (page: Page) => page.evaluate(() => (globalThis as unknown as Window).gh.loginWithPasskey())

/** GET `path` of the service through the client's fetch wrapper: the status and the body. */
const get = (page: Page, gatehouse: string, path: string) => page.evaluate(async (url) => {
  const res = await (globalThis as unknown as Window).gh.fetch(url)
  return { status: res.status, body: await res.json() }
}, gatehouse + path)

/** base64 (CDP) to base64url (WebAuthn JSON, the service's column). */
const b64url = (b64: string) => Buffer.from(b64, 'base64').toString('base64url')

const passkeysOf = (app: App, userId: string) => app.db.select().from(passkeys).where(eq(passkeys.userId, userId))
const sessionsOf = (app: App, userId: string) => app.db.select({ id: sessions.id, amr: sessions.amr, revokedAt: sessions.revokedAt }).from(sessions).where(eq(sessions.userId, userId))
const eventsOf = (app: App, userId: string, type: string) =>
  app.db.select().from(authEvents).where(and(eq(authEvents.userId, userId), eq(authEvents.eventType, type)))

/**
 * A user signed up through the client in a fresh context, with a passkey registered on that
 * page's virtual authenticator, then logged out; the page, its authenticator and the user.
 */
async function userWithPasskey (test: Test, url: string) {
  const context = await newContext(test)
  const page = await openTab(context, url)
  const authenticator = await authenticatorFor(context, page)
  const email = uniqueEmail()
  const { user } = await signupIn(page, email)
  const passkey = await registerPasskey(page, 'Laptop')
  await logout(page)
  return { context, page, authenticator, email, userId: user.id, passkey }
}

// ---------------------------------------------------------------------------------------------

t.test('register a passkey while signed in, then log in with it: no password, amr ["passkey"], the counter grows', async (t) => {
  const { app, url, passkeyCallsFromNow } = await service(t)
  const context = await newContext(t)
  const tab = await openTab(context, url)
  const authenticator = await authenticatorFor(context, tab)
  const email = uniqueEmail()
  const { user } = await signupIn(tab, email)
  t.same(await authenticator.credentials(), [], 'the authenticator starts empty')

  const calls = passkeyCallsFromNow()
  const passkey = await registerPasskey(tab, 'Laptop')
  t.match(passkey, { name: 'Laptop', lastUsedAt: null, backedUp: false }, 'registerPasskey gives the new passkey')
  t.same(calls(), ['POST /api/auth/passkeys/register/options 200', 'POST /api/auth/passkeys/register/verify 201'])

  const [credential, ...others] = await authenticator.credentials()
  t.same(others, [], 'one credential on the authenticator')
  t.equal(credential?.isResidentCredential, true, 'a discoverable credential')
  t.equal(credential?.rpId, 'localhost')
  t.equal(credential?.signCount, 1, 'the virtual authenticator counted the registration')

  const listed = await get(tab, url, '/api/auth/passkeys')
  t.equal(listed.status, 200)
  t.same(listed.body['items'], [passkey], 'the passkey is listed')
  const [row, ...more] = await passkeysOf(app, user.id)
  t.same(more, [], 'one passkey row')
  t.equal(row?.credentialId, b64url(credential!.credentialId), 'the row holds the authenticator\'s credential')
  t.equal(row?.userHandle, b64url(credential!.userHandle ?? ''), 'and the user handle the authenticator stored')
  t.not(row?.userHandle, Buffer.from(email).toString('base64url'), 'an opaque handle, not the email')
  t.equal(row?.counter, credential?.signCount, 'the counter as registered')
  t.equal((await eventsOf(app, user.id, 'passkey_registered')).length, 1, 'passkey_registered recorded')

  const other = await openTab(context, url)
  await logout(tab)
  await waitForStatus(other, 'signed-out')
  t.equal(await status(tab), 'signed-out')
  const signedIn = await loginWithPasskey(tab)
  t.equal(signedIn.email, email, 'loginWithPasskey gives the user')
  t.equal(await status(tab), 'signed-in')
  t.same((await states(tab)).slice(-2), ['signed-out', 'signed-in'])
  t.same(await amrOf(tab), ['passkey'], 'the access token says a passkey was used')
  await waitForStatus(other, 'signed-in')
  t.equal(await tokenOf(other), await tokenOf(tab), 'the other tab is signed in too, with the same token')
  const me = await get(tab, url, '/api/auth/me')
  t.same({ status: me.status, email: me.body['email'] }, { status: 200, email }, '/api/auth/me works with it')
  const live = (await sessionsOf(app, user.id)).filter((s) => s.revokedAt === null)
  t.same(live.map((s) => s.amr), [['passkey']], 'one live session, opened by the passkey')
  t.same((await eventsOf(app, user.id, 'login_success')).map((e) => e.metadata), [{ amr: ['passkey'] }], 'login_success recorded with its amr')

  const afterFirst = { device: (await authenticator.credentials())[0]!.signCount, stored: (await passkeysOf(app, user.id))[0]!.counter }
  t.same(afterFirst, { device: 2, stored: 2 }, 'one assertion: the counter moved on both sides')
  const lastUsedAt = (await passkeysOf(app, user.id))[0]!.lastUsedAt
  t.not(lastUsedAt, null, 'lastUsedAt set')
  t.match((await get(tab, url, '/api/auth/passkeys')).body, { items: [{ id: passkey.id, lastUsedAt: lastUsedAt?.toISOString() }] }, 'and listed')

  await logout(tab)
  await loginWithPasskey(tab)
  t.equal(await status(tab), 'signed-in', 'a second passkey login')
  const afterSecond = { device: (await authenticator.credentials())[0]!.signCount, stored: (await passkeysOf(app, user.id))[0]!.counter }
  t.same(afterSecond, { device: 3, stored: 3 }, 'the stored counter follows the authenticator\'s')
  t.ok(afterSecond.stored > afterFirst.stored, 'and increases')
})

t.test('the same authenticator cannot register a second passkey for the user (excludeCredentials)', async (t) => {
  const { app, url, passkeyCallsFromNow } = await service(t)
  const context = await newContext(t)
  const tab = await openTab(context, url)
  const authenticator = await authenticatorFor(context, tab)
  const { user } = await signupIn(tab, uniqueEmail())
  const first = await registerPasskey(tab, 'Laptop')

  const calls = passkeyCallsFromNow()
  const refused = await thrown(tab, 'registerPasskey', 'Laptop again')
  t.match(refused, { isGatehouseError: true, name: 'GatehouseError', code: 'PASSKEY_CEREMONY_FAILED', status: 0 },
    'the browser refuses: this authenticator already holds one of the excluded credentials')
  t.equal(refused?.cause.name, 'InvalidStateError', `the browser's error is the cause (${refused?.message})`)
  t.same(calls(), ['POST /api/auth/passkeys/register/options 200'], 'nothing was sent to register/verify')
  t.equal((await authenticator.credentials()).length, 1, 'the authenticator made no new credential')
  t.same((await passkeysOf(app, user.id)).map((p) => p.id), [first.id], 'the database still holds one passkey')
  t.equal(await status(tab), 'signed-in', 'the failed ceremony leaves the session alone')
})

t.test('a cloned credential (its counter reset) is refused: PASSKEY_INVALID, passkey_clone_suspected, no session', async (t) => {
  const { app, url } = await service(t)
  const original = await userWithPasskey(t, url)
  await loginWithPasskey(original.page)
  await logout(original.page)
  const [credential] = await original.authenticator.credentials()
  const stored = (await passkeysOf(app, original.userId))[0]!.counter
  t.ok(stored > 0, `the original has logged in: stored counter ${stored}`)

  // The private key copied onto another device, whose counter starts again.
  const elsewhere = await newContext(t)
  const clonePage = await openTab(elsewhere, url)
  const clone = await authenticatorFor(elsewhere, clonePage)
  await clone.cdp.send('WebAuthn.addCredential', { authenticatorId: clone.authenticatorId, credential: { ...credential!, signCount: 0 } })
  const sessionsBefore = (await sessionsOf(app, original.userId)).length

  t.same(await thrown(clonePage, 'loginWithPasskey'), {
    isGatehouseError: true, name: 'GatehouseError', code: 'PASSKEY_INVALID', status: 401, message: 'Passkey login failed', cause: {}
  }, 'the valid signature with a counter that went back is refused')
  t.equal((await clone.credentials())[0]?.signCount, 1, 'the clone signed with counter 1')
  t.equal(await status(clonePage), 'signed-out')
  t.equal(await tokenOf(clonePage), null)
  t.equal((await sessionsOf(app, original.userId)).length, sessionsBefore, 'no session created')
  t.equal(await refreshCookieIn(elsewhere, url), undefined, 'and no refresh cookie')
  const [suspected, ...again] = await eventsOf(app, original.userId, 'passkey_clone_suspected')
  t.same(again, [], 'passkey_clone_suspected recorded once')
  t.match(suspected, {
    success: false, failureReason: 'counter_not_increasing',
    metadata: { passkeyId: original.passkey.id, storedCounter: stored, presentedCounter: 1 }
  })
  t.match((await eventsOf(app, original.userId, 'login_failure')).map((e) => e.failureReason), ['passkey_clone_suspected'], 'and a login_failure')
  t.equal((await passkeysOf(app, original.userId))[0]!.counter, stored, 'the stored counter did not move')

  await loginWithPasskey(original.page)
  t.equal(await status(original.page), 'signed-in', 'the original authenticator, whose counter still grows, logs in')
})

t.test('a passkey of a deactivated account: ACCOUNT_DISABLED 403, no session', async (t) => {
  const { app, url } = await service(t)
  const { page, userId } = await userWithPasskey(t, url)
  await setUser(app, userId, { isActive: false })
  const sessionsBefore = (await sessionsOf(app, userId)).length

  t.match(await thrown(page, 'loginWithPasskey'), { isGatehouseError: true, name: 'GatehouseError', code: 'ACCOUNT_DISABLED', status: 403 })
  t.equal(await status(page), 'signed-out')
  t.equal((await sessionsOf(app, userId)).length, sessionsBefore, 'no session created')
  t.match((await eventsOf(app, userId, 'login_failure')).map((e) => e.failureReason), ['account_disabled'], 'the refusal is recorded')

  await setUser(app, userId, { isActive: true })
  await loginWithPasskey(page)
  t.equal(await status(page), 'signed-in', 'reactivated, the passkey works again')
})

t.test('an MFA user logs in with a passkey without a TOTP step', async (t) => {
  const clock = testClock(new Date())
  const { app, url } = await service(t, { now: clock.now })
  const enrolled = await enrolMfa(app, clock)
  const context = await newContext(t)
  const tab = await openTab(context, url)
  const authenticator = await authenticatorFor(context, tab)

  t.same(await tab.evaluate(({ email, password }) => (globalThis as unknown as Window).gh.login(email, password), { email: enrolled.email, password: PASSWORD }), { mfaRequired: true })
  await tab.evaluate((code) => (globalThis as unknown as Window).gh.loginMfa(code), totpCode(enrolled.secret, clock.now()))
  t.same(await amrOf(tab), ['pwd', 'otp'])
  await registerPasskey(tab)
  t.equal((await authenticator.credentials()).length, 1)
  t.equal((await passkeysOf(app, enrolled.user.id))[0]?.name, 'Passkey', 'the default name')
  await logout(tab)

  const from = (await states(tab)).length
  const user = await loginWithPasskey(tab)
  t.equal(user.email, enrolled.email)
  t.same((await states(tab)).slice(from), ['signed-in'], 'straight to signed in: no mfa-required step')
  t.same(await amrOf(tab), ['passkey'])
  const me = await get(tab, url, '/api/auth/me')
  t.same({ status: me.status, email: me.body['email'] }, { status: 200, email: enrolled.email })
})


t.test('ceremonies the browser does not complete: PASSKEY_CEREMONY_FAILED, nothing sent for verification', async (t) => {
  const { url, passkeyCallsFromNow } = await service(t)
  const context = await newContext(t)
  const tab = await openTab(context, url)
  const authenticator = await authenticatorFor(context, tab)

  let calls = passkeyCallsFromNow()
  t.match(await thrown(tab, 'registerPasskey'), { isGatehouseError: true, code: 'AUTH_REQUIRED', status: 401 }, 'registering needs a signed-in client')
  t.same(calls(), ['POST /api/auth/passkeys/register/options 401'])

  calls = passkeyCallsFromNow()
  t.match(await thrown(tab, 'loginWithPasskey'), { isGatehouseError: true, code: 'PASSKEY_CEREMONY_FAILED', status: 0, cause: { name: 'NotAllowedError' } },
    'no passkey for this site on the device')
  t.same(calls(), ['POST /api/auth/passkeys/login/options 200'], 'login/verify never called')
  t.equal(await status(tab), 'signed-out')

  await signupIn(tab, uniqueEmail())
  await registerPasskey(tab)
  await logout(tab)
  await authenticator.cdp.send('WebAuthn.setUserVerified', { authenticatorId: authenticator.authenticatorId, isUserVerified: false })
  calls = passkeyCallsFromNow()
  t.match(await thrown(tab, 'loginWithPasskey'), { isGatehouseError: true, code: 'PASSKEY_CEREMONY_FAILED', status: 0, cause: { name: 'NotAllowedError' } },
    'the user is not verified (the service requires it)')
  t.same(calls(), ['POST /api/auth/passkeys/login/options 200'])
  t.equal(await status(tab), 'signed-out')
})

t.test('a service that does not list the page\'s origin refuses both ceremonies', async (t) => {
  const { app, url } = await service(t)
  // Another service on the same database whose WebAuthn origin is some other app on localhost.
  const other = await listeningTestApp(t, {
    db: await testDb(),
    env: { COOKIE_SECURE: 'false', CORS_ORIGINS: site.origin, WEBAUTHN_RP_ID: 'localhost', WEBAUTHN_ORIGINS: 'http://localhost:1' }
  })
  t.teardown(() => other.app.server.closeAllConnections())
  const elsewhere = `http://localhost:${other.port}`

  const { page, userId } = await userWithPasskey(t, url)
  await loadApp(page, elsewhere)
  const sessionsBefore = (await sessionsOf(app, userId)).length
  t.match(await thrown(page, 'loginWithPasskey'), { isGatehouseError: true, code: 'PASSKEY_INVALID', status: 401 }, 'a login: PASSKEY_INVALID')
  t.equal(await status(page), 'signed-out')
  t.equal((await sessionsOf(app, userId)).length, sessionsBefore, 'no session created')
  const [failure] = await eventsOf(app, userId, 'login_failure')
  t.equal(failure?.failureReason, 'passkey_verification_failed')
  t.match(failure?.metadata, { method: 'passkey', detail: new RegExp(`origin "${site.origin}"`) }, 'recorded with the origin it refused')

  const context = await newContext(t)
  const tab = await openTab(context, elsewhere)
  const authenticator = await authenticatorFor(context, tab)
  const { user } = await signupIn(tab, uniqueEmail())
  t.match(await thrown(tab, 'registerPasskey'), { isGatehouseError: true, code: 'PASSKEY_REGISTRATION_FAILED', status: 400 }, 'a registration: PASSKEY_REGISTRATION_FAILED')
  t.same(await passkeysOf(app, user.id), [], 'no passkey stored')
  t.same(await eventsOf(app, user.id, 'passkey_registered'), [])
  t.equal((await authenticator.credentials()).length, 1, 'the browser did make a credential: the service just does not know it')
  t.equal(await status(tab), 'signed-in', 'the refusal leaves the session alone')
})
