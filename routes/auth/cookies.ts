import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Config } from '../../src/config.ts'
import { AppError } from '../../src/errors.ts'
import type { IssuedRefreshToken } from '../../src/services/sessions.ts'

export const REFRESH_COOKIE = 'refresh_token'

/**
 * The only place the refresh cookie's attributes live. HttpOnly: scripts never see the token.
 * SameSite=Strict: browsers never attach it to cross-site requests. Path=/api/auth: it is
 * sent to the auth routes only, never to the rest of the API. Secure unless COOKIE_SECURE=false.
 */
function attributes (config: Config) {
  return {
    httpOnly: true,
    sameSite: 'strict' as const,
    path: '/api/auth',
    secure: config.COOKIE_SECURE,
    ...(config.COOKIE_DOMAIN === undefined ? {} : { domain: config.COOKIE_DOMAIN })
  }
}

export function setRefreshCookie (reply: FastifyReply, config: Config, refresh: IssuedRefreshToken, now: Date): void {
  const maxAge = Math.max(0, Math.round((refresh.expiresAt.getTime() - now.getTime()) / 1000))
  reply.setCookie(REFRESH_COOKIE, refresh.token, { ...attributes(config), maxAge })
}

export function clearRefreshCookie (reply: FastifyReply, config: Config): void {
  reply.clearCookie(REFRESH_COOKIE, attributes(config))
}

export function refreshCookie (request: FastifyRequest): string | undefined {
  const value = request.cookies[REFRESH_COOKIE]
  return value === undefined || value === '' ? undefined : value
}

/**
 * CSRF rule for cookie-authenticated requests: an Origin header that is present must be the
 * service's own origin or one of CORS_ORIGINS. No Origin passes (non-browser clients; browsers
 * send Origin on every cross-origin POST). `Origin: null` (sandboxed frames) is rejected.
 */
export function assertAllowedOrigin (request: FastifyRequest, config: Config): void {
  const origin = request.headers.origin
  if (origin === undefined) return
  const own = `${request.protocol}://${request.host}`.toLowerCase()
  const o = origin.toLowerCase()
  if (o === own || config.CORS_ORIGINS.some((allowed) => allowed.toLowerCase() === o)) return
  throw new AppError('CSRF_REJECTED', 'Cross-site request rejected')
}
