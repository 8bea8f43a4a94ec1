import { createHash, createPrivateKey, createPublicKey, hkdfSync, type KeyObject } from 'node:crypto'

export type SigningAlgorithm = 'HS256' | 'EdDSA' | 'ES256'

/** A public key as published in the JWKS (RFC 7517), with its RFC 7638 thumbprint as `kid`. */
export interface PublicJwk {
  kty: 'OKP' | 'EC'
  crv: 'Ed25519' | 'P-256'
  x: string
  y?: string
  kid: string
  alg: 'EdDSA' | 'ES256'
  use: 'sig'
}

interface VerifyingKey { jwk: PublicJwk, pem: string }

/** Key material that cannot be used, with the variable it came from. */
export class KeyMaterialError extends Error {
  constructor (readonly variable: string, reason: string) {
    super(`Invalid configuration: ${variable} ${reason}`)
  }
}

/** Environment files often hold a PEM on one line with `\n` escapes. */
const unescapePem = (pem: string) => pem.replace(/\\n/g, '\n').trim()

/** Every PEM block of `text` (JWT_PUBLIC_KEYS may hold several, one after the other). */
function pemBlocks (text: string): string[] {
  return unescapePem(text).match(/-----BEGIN [A-Z ]+-----[\s\S]+?-----END [A-Z ]+-----/g) ?? []
}

/** The JWK of a public key, its algorithm and its RFC 7638 thumbprint; only Ed25519 and P-256. */
function describe (key: KeyObject, variable: string): VerifyingKey {
  const jwk = key.export({ format: 'jwk' }) as { kty?: string, crv?: string, x?: string, y?: string }
  let members: Record<string, string>
  let alg: PublicJwk['alg']
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519' && jwk.x !== undefined) {
    members = { crv: jwk.crv, kty: jwk.kty, x: jwk.x }
    alg = 'EdDSA'
  } else if (jwk.kty === 'EC' && jwk.crv === 'P-256' && jwk.x !== undefined && jwk.y !== undefined) {
    members = { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }
    alg = 'ES256'
  } else {
    throw new KeyMaterialError(variable, `must be an Ed25519 or P-256 key (found ${key.asymmetricKeyType ?? 'unknown'}${jwk.crv === undefined ? '' : ` ${jwk.crv}`})`)
  }
  // RFC 7638 §3: the required members in lexicographic order, no whitespace, SHA-256, base64url.
  const kid = createHash('sha256').update(JSON.stringify(members)).digest('base64url')
  return {
    jwk: { ...members, kid, alg, use: 'sig' } as PublicJwk,
    pem: key.export({ format: 'pem', type: 'spki' }).toString()
  }
}

/**
 * Every key Gatehouse signs or verifies with, in one place (after supabase/auth's
 * `internal/conf/jwk.go`):
 *
 * - the access-token signing key: `JWT_PRIVATE_KEY` (Ed25519 → EdDSA, P-256 → ES256, with the
 *   RFC 7638 thumbprint as `kid`) or, without one, HS256 with `JWT_SECRET`;
 * - the verifying keys: the signing key's public half and every `JWT_PUBLIC_KEYS` key (the
 *   previous key during a rotation), looked up by the token header's `kid` and `alg`; with a
 *   private key configured, HS256 and unknown kids are refused (no algorithm confusion);
 * - the internal HMAC keys (refresh-token successors, MFA challenge tokens), derived from
 *   `JWT_SECRET` with HKDF, so rotating the signing key logs no one out and breaks no refresh.
 */
export function createKeyRing (input: { secret: string, privateKeyPem?: string, publicKeysPem?: string }) {
  const { secret } = input
  let signing: { alg: SigningAlgorithm, kid?: string, key: string }
  const verifying = new Map<string, VerifyingKey>()

  if (input.privateKeyPem === undefined) {
    if (input.publicKeysPem !== undefined) throw new KeyMaterialError('JWT_PUBLIC_KEYS', 'needs JWT_PRIVATE_KEY: public keys only verify, something must sign')
    signing = { alg: 'HS256', key: secret }
  } else {
    let privateKey: KeyObject
    try {
      privateKey = createPrivateKey(unescapePem(input.privateKeyPem))
    } catch {
      throw new KeyMaterialError('JWT_PRIVATE_KEY', 'is not a PEM private key (PKCS#8, "-----BEGIN PRIVATE KEY-----")')
    }
    const own = describe(createPublicKey(privateKey), 'JWT_PRIVATE_KEY')
    verifying.set(own.jwk.kid, own)
    signing = { alg: own.jwk.alg, kid: own.jwk.kid, key: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() }
    if (input.publicKeysPem !== undefined) {
      const blocks = pemBlocks(input.publicKeysPem)
      if (blocks.length === 0) throw new KeyMaterialError('JWT_PUBLIC_KEYS', 'holds no PEM public key ("-----BEGIN PUBLIC KEY-----")')
      // Anything around the blocks is a paste gone wrong (a cut-off key), not something to skip.
      const rest = blocks.reduce((text, block) => text.replace(block, ''), unescapePem(input.publicKeysPem))
      if (rest.trim() !== '') throw new KeyMaterialError('JWT_PUBLIC_KEYS', 'holds text that is not a complete PEM block')
      for (const block of blocks) {
        // createPublicKey would quietly derive the public half of a private key: refuse the block.
        if (!block.startsWith('-----BEGIN PUBLIC KEY-----')) {
          throw new KeyMaterialError('JWT_PUBLIC_KEYS', 'must hold public keys only ("-----BEGIN PUBLIC KEY-----"), never a private key')
        }
        let key: KeyObject
        try {
          key = createPublicKey(block)
        } catch {
          throw new KeyMaterialError('JWT_PUBLIC_KEYS', 'holds a block that is not a PEM public key')
        }
        const k = describe(key, 'JWT_PUBLIC_KEYS')
        verifying.set(k.jwk.kid, k)
      }
    }
  }

  const algorithms: SigningAlgorithm[] = signing.alg === 'HS256' ? ['HS256'] : [...new Set([...verifying.values()].map((k) => k.jwk.alg))]

  return {
    /** How access tokens are signed now. */
    signing,
    /** The algorithms a token may carry (pinned at verification). */
    algorithms,
    asymmetric: signing.alg !== 'HS256',

    /**
     * The key that verifies a token with this header, or an error: HS256 only without a private
     * key; otherwise a known `kid` whose key has exactly the header's `alg`.
     */
    verificationKey (header: { alg?: unknown, kid?: unknown }): string {
      if (signing.alg === 'HS256') {
        if (header.alg !== 'HS256') throw new Error('unexpected algorithm')
        return secret
      }
      if (typeof header.kid !== 'string') throw new Error('token has no kid')
      const key = verifying.get(header.kid)
      if (key === undefined) throw new Error('unknown kid')
      if (header.alg !== key.jwk.alg) throw new Error('algorithm does not match the key')
      return key.pem
    },

    /** The JWKS document, or undefined when tokens are signed with HS256 (nothing to publish). */
    jwks (): { keys: PublicJwk[] } | undefined {
      return signing.alg === 'HS256' ? undefined : { keys: [...verifying.values()].map((k) => k.jwk) }
    },

    /** An internal HMAC key for `purpose`, derived from JWT_SECRET (never from the signing key). */
    internalKey (purpose: string): Buffer {
      return Buffer.from(hkdfSync('sha256', secret, 'gatehouse', purpose, 32))
    }
  }
}
export type KeyRing = ReturnType<typeof createKeyRing>
