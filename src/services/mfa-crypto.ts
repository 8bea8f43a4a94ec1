import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, randomInt } from 'node:crypto'

/**
 * Keys derived from MFA_ENCRYPTION_KEY (HKDF-SHA256, one per purpose): AES-256-GCM for TOTP
 * secrets at rest, HMAC-SHA256 for backup codes. The ciphertext is bound to its user id (AAD),
 * so a secret copied onto another row does not decrypt.
 */
export function createMfaCrypto (masterKey: string) {
  const derive = (info: string) => Buffer.from(hkdfSync('sha256', masterKey, 'gatehouse', info, 32))
  const encKey = derive('totp-secret aes-256-gcm v1')
  const codeKey = derive('backup-code hmac v1')

  return {
    encrypt (plain: string, userId: string): string {
      const iv = randomBytes(12)
      const cipher = createCipheriv('aes-256-gcm', encKey, iv)
      cipher.setAAD(Buffer.from(userId))
      const ct = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()])
      return ['v1', iv.toString('base64url'), ct.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.')
    },

    decrypt (stored: string, userId: string): string {
      const [version, iv, ct, tag] = stored.split('.')
      if (version !== 'v1' || iv === undefined || ct === undefined || tag === undefined) throw new Error('unknown TOTP secret format')
      const decipher = createDecipheriv('aes-256-gcm', encKey, Buffer.from(iv, 'base64url'))
      decipher.setAAD(Buffer.from(userId))
      decipher.setAuthTag(Buffer.from(tag, 'base64url'))
      return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]).toString('utf8')
    },

    /** Keyed hash of a backup code, after normalising what a user may type differently. */
    hashBackupCode (code: string): string {
      return createHmac('sha256', codeKey).update(normaliseBackupCode(code)).digest('hex')
    }
  }
}
export type MfaCrypto = ReturnType<typeof createMfaCrypto>

/** Crockford-style alphabet without look-alikes (no i, l, o, u): 32 symbols = 5 bits each. */
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'

/** `xxxxx-xxxxx`: 10 symbols of 5 bits = 50 bits of randomness. */
export function generateBackupCode (): string {
  let s = ''
  for (let i = 0; i < 10; i++) s += ALPHABET[randomInt(32)]
  return `${s.slice(0, 5)}-${s.slice(5)}`
}

export function normaliseBackupCode (code: string): string {
  return code.trim().toLowerCase().replace(/[\s-]/g, '')
}
