import { createHash, randomBytes } from 'node:crypto'

/**
 * Opaque bearer secrets (refresh tokens, reset tokens): 256 random bits, base64url without
 * padding. Only their SHA-256 is ever stored, so a database leak reveals no usable token.
 */
export const OPAQUE_TOKEN_FORMAT = /^[A-Za-z0-9_-]{43}$/
export const newOpaqueToken = () => randomBytes(32).toString('base64url')
export const hashOpaqueToken = (token: string) => createHash('sha256').update(token).digest('hex')
