import { randomBytes } from 'node:crypto'
import { hash, parseOptions, verify } from '@node-rs/argon2'
import { createSemaphore } from './semaphore.ts'

export interface Argon2Params {
  memoryCost: number
  timeCost: number
  parallelism: number
}

/** Argon2id. @node-rs/argon2's Algorithm is a const enum that is `{}` at run time, so the literal. */
const ARGON2ID = 2

/**
 * NIST SP 800-63B asks verifiers to normalise Unicode passwords, so the same password typed on
 * two keyboards (composed or decomposed accents) matches. Applied before hashing and verifying.
 */
const normalise = (password: string) => password.normalize('NFKC')

export function createPasswordHasher (params: Argon2Params & { maxConcurrency: number }) {
  const options = {
    algorithm: ARGON2ID,
    memoryCost: params.memoryCost,
    timeCost: params.timeCost,
    parallelism: params.parallelism
  }
  const gate = createSemaphore(params.maxConcurrency)
  // Verified for unknown emails so they cost the same time as a wrong password.
  let dummyHash: Promise<string> | undefined

  const hasher = {
    hash: (password: string) => gate.run(() => hash(normalise(password), options)),

    async verify (stored: string, password: string): Promise<boolean> {
      try {
        return await gate.run(() => verify(stored, normalise(password)))
      } catch {
        return false // a malformed stored hash never matches
      }
    },

    /** Spends one verification's time and always fails. */
    async verifyDummy (password: string): Promise<false> {
      dummyHash ??= hasher.hash(randomBytes(18).toString('base64url'))
      await hasher.verify(await dummyHash, password)
      return false
    },

    /** True when the stored hash was made with other parameters than the current ones. */
    needsRehash (stored: string): boolean {
      try {
        const p = parseOptions(stored)
        return p.algorithm !== ARGON2ID || p.memoryCost !== options.memoryCost ||
          p.timeCost !== options.timeCost || p.parallelism !== options.parallelism
      } catch {
        return true
      }
    }
  }
  return hasher
}
export type PasswordHasher = ReturnType<typeof createPasswordHasher>
