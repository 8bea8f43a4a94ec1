import { createHash, randomBytes } from 'node:crypto'
import type { AuthenticationResponseJSON, AuthenticatorTransport, RegistrationResponseJSON, VerifiedRegistrationResponse } from '@simplewebauthn/server'
import { and, asc, count, eq, gt, isNull, lt, or, sql } from 'drizzle-orm'
import type { Db, Tx } from '../db/client.ts'
import { passkeys, webauthnChallenges } from '../db/schema.ts'
import { transaction } from '../db/transaction.ts'
import { AppError } from '../errors.ts'
import type { AccountStore } from './account-store.ts'
import type { AuditLog, RequestContext } from './audit.ts'
import type { Outbox } from './outbox.ts'
import { displayIp } from './user-agent.ts'

const CHALLENGE_MS = 5 * 60_000
/** More than anyone needs; bounds the excludeCredentials list every registration sends. */
const MAX_PASSKEYS_PER_USER = 50
/** WebAuthn §5.8.3: a credential id is at most 1023 bytes (1364 base64url characters). */
const MAX_CREDENTIAL_ID_CHARS = 1364
/** EdDSA, ES256 and RS256 (COSE ids): the contract asks for the first two; RS256 is for Windows Hello. */
const ALGORITHMS = [-8, -7, -257]

export interface PasskeySettings {
  rpId: string
  rpName: string
  origins: string[]
  /** REQUIRE_EMAIL_VERIFICATION: a passkey logs in only an account whose address is verified, as a password does. */
  requireVerifiedEmail: boolean
}

export interface PublicPasskey {
  id: string
  name: string
  createdAt: string
  lastUsedAt: string | null
  backedUp: boolean
}

type PasskeyRow = typeof passkeys.$inferSelect

const toPublic = (p: PasskeyRow): PublicPasskey => ({
  id: p.id,
  name: p.name,
  createdAt: p.createdAt.toISOString(),
  lastUsedAt: p.lastUsedAt?.toISOString() ?? null,
  backedUp: p.backedUp
})

/**
 * @simplewebauthn/server and its ASN.1/X.509 dependencies take about 300 ms to load: loaded at
 * the first ceremony, not at start-up (BENCHMARKS.md, start to ready).
 */
let library: Promise<typeof import('@simplewebauthn/server')> | undefined
const webauthn = () => { library ??= import('@simplewebauthn/server'); return library }

const sha256 = (s: string) => createHash('sha256').update(s).digest('base64url')

/** A library message for the audit log: it may echo client data (origin, challenge), so no control characters. */
const detailOf = (err: unknown) => (err instanceof Error ? err.message : String(err)).replace(/\p{Cc}/gu, '?').slice(0, 200)

/**
 * A ceremony run inside a frame of another site (clientData.crossOrigin) is refused: the
 * origin checks speak for the page the user sees, which a framed page is not.
 */
function crossOrigin (clientDataJSON: string): boolean {
  try {
    return (JSON.parse(Buffer.from(clientDataJSON, 'base64url').toString('utf8')) as { crossOrigin?: unknown }).crossOrigin === true
  } catch {
    return false // not JSON: the library refuses it
  }
}

/**
 * Passkeys (WebAuthn) on @simplewebauthn/server: registration for a signed-in user, login
 * without a password by a discoverable credential, and their management. The verification of
 * attestations and assertions (CBOR, COSE keys, signatures, origin, RP ID, flags) is the
 * library's; this module keeps challenges single use and bound to their user, the signature
 * counter monotonic (a counter that does not grow is a cloned authenticator), and the records.
 */
export function createPasskeyService (deps: {
  db: Db
  now: () => Date
  store: AccountStore
  audit: AuditLog
  outbox: Outbox
  settings: PasskeySettings
}) {
  const { db, now, store, audit, settings } = deps

  /** A challenge row for the options just generated; only the challenge's hash is kept. */
  async function saveChallenge (kind: 'registration' | 'authentication', challenge: string, user?: { id: string, handle: string }) {
    const t = now()
    const [row] = await db.insert(webauthnChallenges).values({
      kind, userId: user?.id ?? null, userHandle: user?.handle ?? null, challengeHash: sha256(challenge),
      createdAt: t, expiresAt: new Date(t.getTime() + CHALLENGE_MS)
    }).returning({ id: webauthnChallenges.id })
    return row!.id
  }

  /**
   * Uses up a challenge: single use, atomically (of two requests with one challenge, one gets
   * it), unexpired, of the right kind and, for a registration, asked for by this user.
   */
  async function consumeChallenge (tx: Tx, id: string, kind: 'registration' | 'authentication', userId?: string) {
    const t = now()
    const [row] = await tx.update(webauthnChallenges).set({ usedAt: t })
      .where(and(
        eq(webauthnChallenges.id, id), eq(webauthnChallenges.kind, kind), isNull(webauthnChallenges.usedAt), gt(webauthnChallenges.expiresAt, t),
        userId === undefined ? undefined : eq(webauthnChallenges.userId, userId)
      ))
      .returning({ challengeHash: webauthnChallenges.challengeHash, userHandle: webauthnChallenges.userHandle })
    return row
  }

  async function ownPasskey (userId: string, id: string, q: Db | Tx = db) {
    const [row] = await q.select().from(passkeys).where(and(eq(passkeys.id, id), eq(passkeys.userId, userId)))
    if (row === undefined) throw new AppError('NOT_FOUND', 'Passkey not found')
    return row
  }

  function notice (kind: 'passkey_added' | 'passkey_removed', email: string, t: Date, ctx: RequestContext) {
    const added = kind === 'passkey_added'
    return {
      to: email,
      subject: added ? 'A passkey was added to your account' : 'A passkey was removed from your account',
      // The name is the user's text (and, with a stolen token, an attacker's): not quoted here.
      text: [
        `A passkey was ${added ? 'added to' : 'removed from'} your account at ${t.toISOString()} from IP ${displayIp(ctx.ip)}.`,
        added
          ? 'It can sign in to your account without your password. If this was not you, remove it, change your password and log out everywhere.'
          : 'If this was not you, change your password and log out everywhere.'
      ].join('\n')
    }
  }

  return {
    /** Registration options for a signed-in user: their passkeys excluded, a resident key with user verification. */
    async registrationOptions (userId: string) {
      const user = await store.userById(userId)
      if (user === undefined) throw new AppError('AUTH_REQUIRED')
      const existing = await db.select({ credentialId: passkeys.credentialId, transports: passkeys.transports, userHandle: passkeys.userHandle })
        .from(passkeys).where(eq(passkeys.userId, userId)).orderBy(asc(passkeys.createdAt))
      // One opaque handle per user (the authenticator files credentials under it); never the email.
      const handle = existing[0]?.userHandle ?? randomBytes(32).toString('base64url')
      const { generateRegistrationOptions } = await webauthn()
      const options = await generateRegistrationOptions({
        rpName: settings.rpName,
        rpID: settings.rpId,
        userID: Buffer.from(handle, 'base64url'),
        userName: user.email,
        userDisplayName: user.email,
        attestationType: 'none',
        excludeCredentials: existing.map((p) => ({ id: p.credentialId, transports: p.transports as AuthenticatorTransport[] })),
        authenticatorSelection: { residentKey: 'required', requireResidentKey: true, userVerification: 'required' },
        supportedAlgorithmIDs: ALGORITHMS,
        timeout: CHALLENGE_MS
      })
      return { challengeId: await saveChallenge('registration', options.challenge, { id: userId, handle }), options }
    },

    /**
     * Verifies a registration against its challenge, the origins and the RP ID, and stores the
     * passkey. The challenge is used up whatever the outcome (its own statement, not rolled back
     * with a refused registration): single use means one attempt.
     */
    async register (userId: string, input: { challengeId: string, response: RegistrationResponseJSON, name?: string }, ctx: RequestContext): Promise<PublicPasskey> {
      const failed = (why: string) => new AppError('PASSKEY_REGISTRATION_FAILED', `The passkey could not be registered: ${why}`)
      const challenge = await transaction(db, (tx) => consumeChallenge(tx, input.challengeId, 'registration', userId))
      if (challenge === undefined) throw failed('the challenge is unknown, expired, used or not yours')
      if (crossOrigin(input.response.response.clientDataJSON)) throw failed('created inside a frame of another site')
      const { verifyRegistrationResponse } = await webauthn()
      let verification: VerifiedRegistrationResponse
      try {
        verification = await verifyRegistrationResponse({
          response: input.response,
          expectedChallenge: (c) => sha256(c) === challenge.challengeHash,
          expectedOrigin: settings.origins,
          expectedRPID: settings.rpId,
          requireUserVerification: true,
          supportedAlgorithmIDs: ALGORITHMS
        })
      } catch (err) {
        throw failed(detailOf(err))
      }
      if (!verification.verified) throw failed('the response does not verify')
      const info = verification.registrationInfo
      // The id the authenticator put in its signed data is the one stored and looked up at login.
      if (info.credential.id !== input.response.id || info.credential.id.length > MAX_CREDENTIAL_ID_CHARS) {
        throw failed('the credential id is not the one in the authenticator data, or is too long')
      }
      return transaction(db, async (tx) => {
        const user = await store.lockUser(tx, userId)
        if (user === undefined) throw new AppError('AUTH_REQUIRED')
        const [held] = await tx.select({ n: count() }).from(passkeys).where(eq(passkeys.userId, userId))
        if ((held?.n ?? 0) >= MAX_PASSKEYS_PER_USER) throw failed(`an account holds at most ${MAX_PASSKEYS_PER_USER} passkeys`)
        const t = now()
        const [row] = await tx.insert(passkeys).values({
          userId,
          credentialId: info.credential.id,
          publicKey: Buffer.from(info.credential.publicKey).toString('base64url'),
          userHandle: challenge.userHandle ?? '',
          counter: info.credential.counter,
          transports: info.credential.transports ?? input.response.response.transports ?? [],
          deviceType: info.credentialDeviceType,
          backedUp: info.credentialBackedUp,
          aaguid: info.aaguid,
          name: input.name?.trim() ?? 'Passkey',
          createdAt: t
        }).onConflictDoNothing({ target: passkeys.credentialId }).returning()
        if (row === undefined) throw failed('this credential is already registered')
        await audit.record({ type: 'passkey_registered', ctx, userId, email: user.email, success: true, metadata: { passkeyId: row.id, name: row.name, backedUp: row.backedUp } }, tx)
        await deps.outbox.enqueue(tx, 'passkey_added', notice('passkey_added', user.email, t, ctx))
        return toPublic(row)
      })
    },

    async list (userId: string): Promise<PublicPasskey[]> {
      const rows = await db.select().from(passkeys).where(eq(passkeys.userId, userId)).orderBy(asc(passkeys.createdAt), asc(passkeys.id))
      return rows.map(toPublic)
    },

    async rename (userId: string, id: string, name: string): Promise<PublicPasskey> {
      const [row] = await db.update(passkeys).set({ name: name.trim() })
        .where(and(eq(passkeys.id, id), eq(passkeys.userId, userId))).returning()
      if (row === undefined) throw new AppError('NOT_FOUND', 'Passkey not found')
      return toPublic(row)
    },

    async remove (userId: string, id: string, ctx: RequestContext): Promise<void> {
      await transaction(db, async (tx) => {
        const user = await store.lockUser(tx, userId)
        const passkey = await ownPasskey(userId, id, tx)
        await tx.delete(passkeys).where(eq(passkeys.id, passkey.id))
        if (user === undefined) return
        const t = now()
        await audit.record({ type: 'passkey_removed', ctx, userId, email: user.email, success: true, metadata: { passkeyId: passkey.id, name: passkey.name } }, tx)
        await deps.outbox.enqueue(tx, 'passkey_removed', notice('passkey_removed', user.email, t, ctx))
      })
    },

    /** Login options: discoverable credentials (no allowCredentials), user verification required. */
    async authenticationOptions () {
      // No allowCredentials at all (the library would write an empty list): the browser offers
      // the passkeys it holds for the RP ID.
      const { generateAuthenticationOptions } = await webauthn()
      const { allowCredentials: _none, ...options } = await generateAuthenticationOptions({
        rpID: settings.rpId,
        userVerification: 'required',
        timeout: CHALLENGE_MS
      })
      return { challengeId: await saveChallenge('authentication', options.challenge), options }
    },

    /**
     * A login by passkey: the challenge (used up whatever the outcome), the credential, its
     * owner's user handle, the signature, origin, RP ID and user verification, then the counter.
     * 401 PASSKEY_INVALID for every failure (recorded with its reason); 403 ACCOUNT_DISABLED
     * for a deactivated owner, told only to someone who proved they hold the key.
     */
    async login<T> (input: { challengeId: string, response: AuthenticationResponseJSON }, ctx: RequestContext, complete: (tx: Tx, userId: string) => Promise<T>): Promise<T> {
      const t = now()
      const refuse = async (reason: string, user?: { id: string, email: string }, metadata: Record<string, unknown> = {}) => {
        await audit.record({
          type: 'login_failure', ctx, userId: user?.id ?? null, email: user?.email ?? null, success: false, failureReason: reason,
          metadata: { method: 'passkey', ...metadata }
        })
        return new AppError('PASSKEY_INVALID')
      }
      const challenge = await transaction(db, (tx) => consumeChallenge(tx, input.challengeId, 'authentication'))
      if (challenge === undefined) throw await refuse('challenge_invalid')
      if (crossOrigin(input.response.response.clientDataJSON)) throw await refuse('cross_origin')
      const [passkey] = await db.select().from(passkeys).where(eq(passkeys.credentialId, input.response.id))
      if (passkey === undefined) throw await refuse('unknown_credential')
      const owner = await store.userById(passkey.userId)
      if (owner === undefined) throw await refuse('unknown_credential')
      const who = { id: owner.id, email: owner.email }
      // The user handle the authenticator returns must be the one the credential was made for.
      if (input.response.response.userHandle !== passkey.userHandle) throw await refuse('user_handle_mismatch', who, { passkeyId: passkey.id })
      const { verifyAuthenticationResponse } = await webauthn()
      let newCounter: number
      try {
        const verification = await verifyAuthenticationResponse({
          response: input.response,
          expectedChallenge: (c) => sha256(c) === challenge.challengeHash,
          expectedOrigin: settings.origins,
          expectedRPID: settings.rpId,
          // The counter is checked below, against the stored value under a lock, and recorded.
          credential: { id: passkey.credentialId, publicKey: Buffer.from(passkey.publicKey, 'base64url'), counter: 0 },
          requireUserVerification: true
        })
        if (!verification.verified) throw new Error('the assertion does not verify')
        newCounter = verification.authenticationInfo.newCounter
      } catch (err) {
        throw await refuse('passkey_verification_failed', who, { passkeyId: passkey.id, detail: detailOf(err) })
      }

      type Outcome = { refused: 'unknown_credential' | 'passkey_clone_suspected' | 'account_disabled' | 'email_not_verified' } | { done: T }
      const outcome = await transaction(db, async (tx): Promise<Outcome> => {
        const user = await store.lockUser(tx, passkey.userId)
        if (user === undefined) return { refused: 'unknown_credential' as const }
        // WebAuthn §6.1.1 / §7.2 step 22: when either counter is non-zero it must grow, or the
        // authenticator may have been cloned. A deactivated owner's passkey logs nobody in, so it
        // is not marked used (its counter still moves: the authenticator's has).
        const [moved] = await tx.update(passkeys).set({ counter: newCounter, ...(user.isActive ? { lastUsedAt: t } : {}) })
          .where(and(eq(passkeys.id, passkey.id), or(
            and(eq(passkeys.counter, 0), sql`${newCounter}::bigint = 0`),
            lt(passkeys.counter, newCounter)
          )))
          .returning({ id: passkeys.id })
        if (moved === undefined) {
          const [current] = await tx.select({ counter: passkeys.counter }).from(passkeys).where(eq(passkeys.id, passkey.id))
          await audit.record({
            type: 'passkey_clone_suspected', ctx, userId: user.id, email: user.email, success: false, failureReason: 'counter_not_increasing',
            metadata: { passkeyId: passkey.id, storedCounter: current?.counter ?? null, presentedCounter: newCounter }
          }, tx)
          return { refused: 'passkey_clone_suspected' as const }
        }
        if (!user.isActive) return { refused: 'account_disabled' as const }
        if (settings.requireVerifiedEmail && !user.emailVerified) return { refused: 'email_not_verified' as const }
        return { done: await complete(tx, user.id) }
      })
      if ('done' in outcome) return outcome.done
      if (outcome.refused === 'account_disabled') {
        await refuse('account_disabled', who, { passkeyId: passkey.id })
        throw new AppError('ACCOUNT_DISABLED')
      }
      if (outcome.refused === 'email_not_verified') {
        await refuse('email_not_verified', who, { passkeyId: passkey.id })
        throw new AppError('EMAIL_NOT_VERIFIED')
      }
      throw await refuse(outcome.refused, who, { passkeyId: passkey.id })
    }
  }
}
export type PasskeyService = ReturnType<typeof createPasskeyService>
