import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto'

/** A 256-bit key for one purpose, derived from a server secret with HKDF-SHA256. */
export function deriveKey (master: string, purpose: string): Buffer {
  return Buffer.from(hkdfSync('sha256', master, 'gatehouse', purpose, 32))
}

const TAG_BYTES = 16
const IV_BYTES = 12

/**
 * AES-256-GCM for data at rest, as `v1.<iv>.<ciphertext>.<tag>` (base64url). The ciphertext is
 * bound to `context` (additional authenticated data, such as the owning row's id), so a value
 * copied onto another row does not open. The tag length is pinned to 16 bytes: GCM would
 * otherwise accept a truncated tag, which an attacker can forge far more cheaply.
 */
export function createSealer (key: Buffer) {
  return {
    seal (plain: string, context: string): string {
      const iv = randomBytes(IV_BYTES)
      const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES })
      cipher.setAAD(Buffer.from(context))
      const ct = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()])
      return ['v1', iv.toString('base64url'), ct.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.')
    },

    /** Throws when the value was not sealed by this key for this context, or was altered. */
    open (stored: string, context: string): string {
      const [version, iv, ct, tag, ...rest] = stored.split('.')
      if (version !== 'v1' || iv === undefined || ct === undefined || tag === undefined || rest.length > 0) {
        throw new Error('unknown sealed value format')
      }
      const tagBytes = Buffer.from(tag, 'base64url')
      const ivBytes = Buffer.from(iv, 'base64url')
      if (tagBytes.length !== TAG_BYTES || ivBytes.length !== IV_BYTES) throw new Error('sealed value has a wrong IV or tag length')
      const decipher = createDecipheriv('aes-256-gcm', key, ivBytes, { authTagLength: TAG_BYTES })
      decipher.setAAD(Buffer.from(context))
      decipher.setAuthTag(tagBytes)
      return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]).toString('utf8')
    }
  }
}
export type Sealer = ReturnType<typeof createSealer>
