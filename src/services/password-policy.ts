import { AppError } from '../errors.ts'

export const PASSWORD_MIN_LENGTH = 8
export const PASSWORD_MAX_LENGTH = 128

/**
 * The contract's policy: 8–128 characters (code points), at least one upper-case letter,
 * one lower-case letter and one digit. Throws PASSWORD_TOO_WEAK naming every rule missed.
 */
export function assertPasswordPolicy (password: string): void {
  const length = [...password].length
  const missing: string[] = []
  if (length < PASSWORD_MIN_LENGTH) missing.push(`at least ${PASSWORD_MIN_LENGTH} characters`)
  if (length > PASSWORD_MAX_LENGTH) missing.push(`at most ${PASSWORD_MAX_LENGTH} characters`)
  if (!/\p{Lu}/u.test(password)) missing.push('an upper-case letter')
  if (!/\p{Ll}/u.test(password)) missing.push('a lower-case letter')
  if (!/\p{Nd}/u.test(password)) missing.push('a digit')
  if (missing.length > 0) throw new AppError('PASSWORD_TOO_WEAK', `Password must have ${missing.join(', ')}`)
}
