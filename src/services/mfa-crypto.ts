import { createHmac, randomInt } from 'node:crypto'
import { createSealer, deriveKey } from './sealing.ts'

/**
 * Keys derived from MFA_ENCRYPTION_KEY (HKDF-SHA256, one per purpose): AES-256-GCM for TOTP
 * secrets at rest, HMAC-SHA256 for backup codes. The ciphertext is bound to its user id (AAD),
 * so a secret copied onto another row does not decrypt.
 */
export function createMfaCrypto (masterKey: string) {
  const sealer = createSealer(deriveKey(masterKey, 'totp-secret aes-256-gcm v1'))
  const codeKey = deriveKey(masterKey, 'backup-code hmac v1')

  return {
    encrypt: (plain: string, userId: string): string => sealer.seal(plain, userId),
    decrypt: (stored: string, userId: string): string => sealer.open(stored, userId),

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
