/**
 * A software authenticator for tests: it answers the options Gatehouse hands out with the JSON a
 * browser would send (RegistrationResponseJSON, AuthenticationResponseJSON), built from
 * node:crypto keys and CBOR, so passkey tests run without a browser. Its knobs make what no
 * browser would: another origin or RP ID, no user verification, a counter that does not grow,
 * someone else's user handle, a challenge of its choosing, a signature by the wrong key.
 *
 * Attestation is always "none" (WebAuthn §8.7): the attestation object is
 * `{fmt: "none", attStmt: {}, authData}`. Authenticator data (§6.1) is
 *   rpIdHash (32) | flags (1) | signCount (4, big-endian)
 *   [| aaguid (16) | credentialIdLength (2) | credentialId | COSE public key]   (registration: AT)
 * and an assertion's signature covers `authData || SHA-256(clientDataJSON)`.
 */
import { createHash, generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto'
import { type CBORType, encodeCBOR } from '@levischuck/tiny-cbor'
import type {
  AuthenticationResponseJSON, PublicKeyCredentialCreationOptionsJSON, PublicKeyCredentialRequestOptionsJSON, RegistrationResponseJSON
} from '@simplewebauthn/server'

/** COSE algorithm ids (RFC 9053): ES256 (ECDSA P-256 with SHA-256) and EdDSA (Ed25519). */
export const ES256 = -7
export const EDDSA = -8

/** Authenticator data flags (WebAuthn §6.1). */
const FLAG = { up: 0x01, uv: 0x04, be: 0x08, bs: 0x10, at: 0x40 }

export interface Flags {
  /** User present. */
  up: boolean
  /** User verified (PIN, biometrics). */
  uv: boolean
  /** Backup eligible: a synced (multi-device) passkey. */
  be: boolean
  /** Backed up. */
  bs: boolean
}

/** A credential the authenticator made: its key pair and what it keeps with it. */
export interface SoftCredential {
  /** The credential id, base64url. */
  id: string
  alg: typeof ES256 | typeof EDDSA
  privateKey: KeyObject
  /** The public key as COSE (what the server stores). */
  cosePublicKey: Uint8Array
  rpId: string
  /** The `user.id` of the registration options, base64url: returned as `userHandle`. */
  userHandle: string
  /** The signature counter: the last value presented. */
  signCount: number
  /** Whether each assertion adds 1 to the counter; false: it stays 0, as many synced passkeys do. */
  counts: boolean
  flags: Flags
}

/** What a test may change in a registration. */
export interface RegisterKnobs {
  origin?: string
  /** The RP ID the authenticator hashes; default the options' `rp.id`. */
  rpId?: string
  /** The challenge in clientDataJSON; default the options'. */
  challenge?: string
  flags?: Partial<Flags>
  alg?: typeof ES256 | typeof EDDSA
  /** The counter in the attestation (default 0). */
  counter?: number
  counts?: boolean
  transports?: string[]
  /** Present this existing credential again (same id and key) instead of making a new one. */
  credential?: SoftCredential
  /** The ceremony ran in a frame of another site (clientData.crossOrigin). */
  crossOrigin?: boolean
}

/** What a test may change in an assertion. */
export interface AssertKnobs {
  /** The credential to use; default the last one made. */
  credential?: SoftCredential
  origin?: string
  /** The RP ID the authenticator hashes; default the options' `rpId`. */
  rpId?: string
  challenge?: string
  flags?: Partial<Flags>
  /** The counter to present (it becomes the credential's); default the next one. */
  counter?: number
  /** The user handle to return; null: none. Default the credential's. */
  userHandle?: string | null
  /** Sign with a key that is not the credential's. */
  wrongKey?: boolean
  /** The ceremony ran in a frame of another site (clientData.crossOrigin). */
  crossOrigin?: boolean
}

const b64u = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64url')
const sha256 = (data: string | Uint8Array) => createHash('sha256').update(data).digest()

function flagsByte (flags: Flags, attested: boolean): number {
  let byte = attested ? FLAG.at : 0
  for (const name of ['up', 'uv', 'be', 'bs'] as const) if (flags[name]) byte |= FLAG[name]
  return byte
}

/** rpIdHash | flags | signCount, and for a registration the attested credential data after it. */
function authenticatorData (rpId: string, flags: number, counter: number, attested?: Uint8Array): Buffer {
  const head = Buffer.alloc(37)
  sha256(rpId).copy(head, 0)
  head.writeUInt8(flags, 32)
  head.writeUInt32BE(counter, 33)
  return Buffer.concat([head, attested ?? Buffer.alloc(0)])
}

/** A new key pair and its public key as a COSE_Key map (EC2 for ES256, OKP for EdDSA). */
function newKeyPair (alg: typeof ES256 | typeof EDDSA): { privateKey: KeyObject, cosePublicKey: Uint8Array } {
  if (alg === ES256) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const jwk = publicKey.export({ format: 'jwk' })
    // kty: EC2, alg: ES256, crv: P-256, x, y
    const cose = new Map<number, number | Uint8Array>([
      [1, 2], [3, ES256], [-1, 1], [-2, Buffer.from(jwk.x ?? '', 'base64url')], [-3, Buffer.from(jwk.y ?? '', 'base64url')]
    ])
    return { privateKey, cosePublicKey: encodeCBOR(cose) }
  }
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const jwk = publicKey.export({ format: 'jwk' })
  // kty: OKP, alg: EdDSA, crv: Ed25519, x
  const cose = new Map<number, number | Uint8Array>([[1, 1], [3, EDDSA], [-1, 6], [-2, Buffer.from(jwk.x ?? '', 'base64url')]])
  return { privateKey, cosePublicKey: encodeCBOR(cose) }
}

/** ES256: an ASN.1 DER ECDSA signature over SHA-256 (node's default); EdDSA: the raw 64 bytes. */
function signWith (alg: typeof ES256 | typeof EDDSA, key: KeyObject, data: Buffer): Buffer {
  return alg === ES256 ? sign('sha256', data, key) : sign(null, data, key)
}

/** The attestation object (WebAuthn §6.5): `{fmt, attStmt: {}, authData}`, in CBOR; without authData when given none. */
export function encodeAttestationObject (authData?: Uint8Array, fmt = 'none'): Uint8Array {
  const entries: Array<[string, CBORType]> = [['fmt', fmt], ['attStmt', new Map<string, CBORType>()]]
  if (authData !== undefined) entries.push(['authData', authData])
  return encodeCBOR(new Map(entries))
}

const clientData = (type: 'webauthn.create' | 'webauthn.get', challenge: string, origin: string, crossOrigin = false) =>
  Buffer.from(JSON.stringify({ type, challenge, origin, crossOrigin }))

/**
 * A software authenticator used from `origin` (the page's origin, as the browser reports it).
 * It keeps every credential it makes; `assert` uses the last one unless told otherwise.
 */
export function softAuthenticator (origin: string) {
  const credentials: SoftCredential[] = []

  return {
    credentials,

    /** navigator.credentials.create(): a new credential for these options, as RegistrationResponseJSON. */
    register (options: PublicKeyCredentialCreationOptionsJSON, knobs: RegisterKnobs = {}): RegistrationResponseJSON {
      const rpId = knobs.rpId ?? options.rp.id ?? ''
      const flags: Flags = { up: true, uv: true, be: false, bs: false, ...knobs.flags }
      const counter = knobs.counter ?? 0
      const made = knobs.credential ?? (() => {
        const alg = knobs.alg ?? ES256
        const credential: SoftCredential = {
          id: b64u(randomBytes(32)), alg, ...newKeyPair(alg), rpId, userHandle: options.user.id, signCount: counter, counts: knobs.counts ?? true, flags
        }
        credentials.push(credential)
        return credential
      })()
      const idBytes = Buffer.from(made.id, 'base64url')
      const idLength = Buffer.alloc(2)
      idLength.writeUInt16BE(idBytes.length)
      const aaguid = Buffer.alloc(16) // all zeros: no attestation, no model to name
      const authData = authenticatorData(rpId, flagsByte(flags, true), counter, Buffer.concat([aaguid, idLength, idBytes, made.cosePublicKey]))
      const attestationObject = encodeAttestationObject(authData)
      return {
        id: made.id,
        rawId: made.id,
        type: 'public-key',
        response: {
          clientDataJSON: b64u(clientData('webauthn.create', knobs.challenge ?? options.challenge, knobs.origin ?? origin, knobs.crossOrigin)),
          attestationObject: b64u(attestationObject),
          transports: knobs.transports ?? ['internal', 'hybrid']
        },
        authenticatorAttachment: 'platform',
        clientExtensionResults: {}
      }
    },

    /** navigator.credentials.get(): an assertion by a credential for these options, as AuthenticationResponseJSON. */
    assert (options: PublicKeyCredentialRequestOptionsJSON, knobs: AssertKnobs = {}): AuthenticationResponseJSON {
      const credential = knobs.credential ?? credentials.at(-1)
      if (credential === undefined) throw new Error('softAuthenticator: no credential to assert with')
      credential.signCount = knobs.counter ?? (credential.counts ? credential.signCount + 1 : 0)
      const flags: Flags = { ...credential.flags, up: true, uv: true, ...knobs.flags }
      const authData = authenticatorData(knobs.rpId ?? options.rpId ?? credential.rpId, flagsByte(flags, false), credential.signCount)
      const clientDataJSON = clientData('webauthn.get', knobs.challenge ?? options.challenge, knobs.origin ?? origin, knobs.crossOrigin)
      const key = knobs.wrongKey === true ? newKeyPair(credential.alg).privateKey : credential.privateKey
      const signature = signWith(credential.alg, key, Buffer.concat([authData, sha256(clientDataJSON)]))
      const userHandle = knobs.userHandle === undefined ? credential.userHandle : knobs.userHandle
      return {
        id: credential.id,
        rawId: credential.id,
        type: 'public-key',
        response: {
          clientDataJSON: b64u(clientDataJSON),
          authenticatorData: b64u(authData),
          signature: b64u(signature),
          ...(userHandle === null ? {} : { userHandle })
        },
        authenticatorAttachment: 'platform',
        clientExtensionResults: {}
      }
    }
  }
}
export type SoftAuthenticator = ReturnType<typeof softAuthenticator>
