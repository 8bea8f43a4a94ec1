import type { FastifyServerOptions } from 'fastify'

/**
 * pino paths that never reach a log line: credentials in headers, and any field that could
 * hold a password, token, code or secret, at the top level or one/two levels down.
 */
const SECRET_FIELDS = [
  'password', 'currentPassword', 'newPassword', 'passwordHash', 'token', 'accessToken', 'refreshToken',
  'mfaToken', 'tokenHash', 'secret', 'totpSecret', 'totpSecretEnc', 'totpPendingSecretEnc', 'backupCode',
  'backupCodes', 'codeHash', 'otpauthUri', 'authorization', 'cookie', 'jwtSecret'
]
// `code` is not in the list: it names error codes (FST_ERR_…, ECONNREFUSED) that operators need.
// Request bodies, where TOTP codes travel, are never logged.
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  ...SECRET_FIELDS,
  ...SECRET_FIELDS.map((f) => `*.${f}`),
  ...SECRET_FIELDS.map((f) => `*.*.${f}`)
]

/** Fastify's logger options: pino with request serialisers that include headers, redacted. */
export function loggerOptions (level: string, stream?: NodeJS.WritableStream): FastifyServerOptions['logger'] {
  return {
    level,
    redact: { paths: REDACT_PATHS, censor: '[Redacted]' },
    ...(stream === undefined ? {} : { stream }),
    serializers: {
      req (req) {
        return {
          method: req.method,
          url: req.url,
          remoteAddress: req.ip,
          headers: req.headers
        }
      }
    }
  }
}
