/**
 * Domain errors with the contract's stable codes (docs/API.md, "Errors").
 * Services throw AppError; the errors plugin turns it into
 * `{ statusCode, code, error, message }`.
 */
export const ERROR_STATUS = {
  VALIDATION_ERROR: 400,
  PASSWORD_TOO_WEAK: 400,
  PASSWORD_BREACHED: 400,
  RESET_TOKEN_INVALID: 400,
  VERIFY_TOKEN_INVALID: 400,
  PASSKEY_REGISTRATION_FAILED: 400,
  AUTH_REQUIRED: 401,
  TOKEN_INVALID: 401,
  TOKEN_EXPIRED: 401,
  SESSION_REVOKED: 401,
  AUTH_INVALID_CREDENTIALS: 401,
  REFRESH_TOKEN_INVALID: 401,
  REFRESH_TOKEN_REUSED: 401,
  MFA_INVALID_CODE: 401,
  MFA_TOKEN_INVALID: 401,
  PASSKEY_INVALID: 401,
  FORBIDDEN: 403,
  ADMIN_REQUIRED: 403,
  ACCOUNT_DISABLED: 403,
  PASSWORD_CHANGE_REQUIRED: 403,
  CSRF_REJECTED: 403,
  EMAIL_NOT_VERIFIED: 403,
  NOT_FOUND: 404,
  EMAIL_TAKEN: 409,
  MFA_ALREADY_ENABLED: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  INTERNAL_ERROR: 500,
  SERVICE_UNAVAILABLE: 503
} as const

export type ErrorCode = keyof typeof ERROR_STATUS

const DEFAULT_MESSAGE: Partial<Record<ErrorCode, string>> = {
  AUTH_REQUIRED: 'Authentication required',
  TOKEN_INVALID: 'Invalid access token',
  TOKEN_EXPIRED: 'Access token expired',
  SESSION_REVOKED: 'Session has been revoked',
  AUTH_INVALID_CREDENTIALS: 'Invalid email or password',
  REFRESH_TOKEN_INVALID: 'Refresh token is invalid or has expired',
  MFA_INVALID_CODE: 'Invalid or already used code',
  MFA_TOKEN_INVALID: 'MFA challenge is invalid or has expired',
  FORBIDDEN: 'Not allowed',
  ADMIN_REQUIRED: 'Administrator role required',
  ACCOUNT_DISABLED: 'Account is disabled',
  PASSWORD_CHANGE_REQUIRED: 'You must change your password first',
  EMAIL_NOT_VERIFIED: 'Confirm your email address first: follow the link we sent you',
  VERIFY_TOKEN_INVALID: 'Verification link is invalid, expired or already used',
  PASSKEY_REGISTRATION_FAILED: 'The passkey could not be registered',
  PASSKEY_INVALID: 'Passkey login failed',
  NOT_FOUND: 'Not found',
  EMAIL_TAKEN: 'An account with this email already exists',
  RATE_LIMITED: 'Too many requests, please try again later',
  SERVICE_UNAVAILABLE: 'Service temporarily unavailable',
  INTERNAL_ERROR: 'Internal Server Error'
}

export class AppError extends Error {
  override name = 'AppError'
  readonly statusCode: number
  /** Seconds, for 429 responses (becomes the Retry-After header). */
  readonly retryAfter?: number

  constructor (readonly code: ErrorCode, message?: string, opts: { retryAfter?: number } = {}) {
    super(message ?? DEFAULT_MESSAGE[code] ?? code)
    this.statusCode = ERROR_STATUS[code]
    if (opts.retryAfter !== undefined) this.retryAfter = opts.retryAfter
  }
}

/** The error codes of RFC 6749 §5.2 (and RFC 7662) that the OAuth endpoints answer with. */
export type OAuthErrorCode = 'invalid_request' | 'invalid_client' | 'unsupported_grant_type' | 'invalid_scope'

/**
 * An error of the OAuth endpoints, which answer in the RFC's shape `{error, error_description}`
 * instead of the contract's: 400, or 401 for `invalid_client` (with `WWW-Authenticate: Basic`
 * when the client tried HTTP Basic).
 */
export class OAuthError extends Error {
  readonly statusCode: number
  constructor (readonly error: OAuthErrorCode, readonly description: string, readonly basic = false) {
    super(description)
    this.statusCode = error === 'invalid_client' ? 401 : 400
  }
}
