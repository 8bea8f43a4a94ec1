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
 * The origins a cookie-authenticated request may come from: the service's own (PUBLIC_URL), the
 * app's (APP_URL) and CORS_ORIGINS. Taken from configuration, never from the request: behind a
 * TLS-terminating proxy the request looks like plain http, and Host is the client's to choose.
 */
const allowedOrigins = new WeakMap<Config, Set<string>>()
function originsOf (config: Config): Set<string> {
  let set = allowedOrigins.get(config)
  if (set === undefined) {
    const own = [config.PUBLIC_URL, config.APP_URL].flatMap((url) => (url === undefined ? [] : [new URL(url).origin]))
    set = new Set([...own, ...config.CORS_ORIGINS].map((o) => o.toLowerCase()))
    allowedOrigins.set(config, set)
  }
  return set
}

/**
 * CSRF rule for cookie-authenticated requests: an Origin header that is present must be one of
 * the allowed origins above. No Origin passes (non-browser clients; browsers send Origin on
 * every cross-origin POST). `Origin: null` (sandboxed frames) is rejected.
 */
export function assertAllowedOrigin (request: FastifyRequest, config: Config): void {
  const origin = request.headers.origin
  if (origin === undefined) return
  if (originsOf(config).has(origin.toLowerCase())) return
  throw new AppError('CSRF_REJECTED', 'Cross-site request rejected')
}
