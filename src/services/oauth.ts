import { timingSafeEqual } from 'node:crypto'
import { and, desc, eq, gt, inArray, isNull, lt, or, sql } from 'drizzle-orm'
import type { Db } from '../db/client.ts'
import { authEvents, type OAuthClientRow, oauthClients } from '../db/schema.ts'
import { AppError, OAuthError } from '../errors.ts'
import { UUID_PATTERN } from '../schemas/common.ts'
import type { AuditLog, RequestContext } from './audit.ts'
import { hashOpaqueToken } from './opaque-tokens.ts'
import type { SessionService } from './sessions.ts'

/** How a client authenticated (RFC 8414 names). */
export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post'

export interface ClientCredentials {
  clientId: string
  secret: string
  method: ClientAuthMethod
}

/** RFC 6749 §5.1. */
export interface TokenResponse {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  scope: string
}

/** RFC 7662 §2.2: `{active: false}`, or the live token's claims. */
export type Introspection = { active: false } | ({ active: true, token_type: 'Bearer' } & Record<string, unknown>)

/** A scope token (the contract's pattern). */
const SCOPE = /^[a-z][a-z0-9:._-]{0,63}$/
const UUID = new RegExp(UUID_PATTERN)
/** A client id longer than this was never issued (ours are 25 characters): not looked up. */
const MAX_CLIENT_ID = 100
/** Compared against when the client id is unknown, so an unknown id costs what a wrong secret does. */
const DUMMY_HASH = hashOpaqueToken('gatehouse: no such client')
/** `lastUsedAt` moves at most once a minute per client. */
const LAST_USED_STEP_MS = 60_000

const sameHash = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b))

/**
 * The OAuth 2.0 half of service clients: client authentication (RFC 6749 §2.3.1, HTTP Basic or
 * the body), the client-credentials grant (§4.4) issuing RFC 9068 JWT access tokens, and token
 * introspection (RFC 7662) for user and service tokens alike.
 *
 * Failed client authentications are recorded (`client_auth_failure`, with the attempted
 * client_id in the metadata, never a secret) and limited: after RATE_LIMIT_CLIENT_AUTH_FAILURES
 * guesses (an unknown client id or a wrong secret) within the window for one client id, or from
 * one address, counted in the audit log (so every instance agrees), every further attempt there
 * that does not prove an enabled client gets 429 until the window has passed, and is not counted
 * again. The right secret of an enabled client always passes: client ids are not secret (every
 * token carries one in `sub`), so a limit that refused it would let anyone lock a service out;
 * and a secret is 256 random bits, so the limit is about noise and load, not about the odds of a
 * guess.
 */
export function createOAuthService (deps: {
  db: Db
  now: () => Date
  audit: AuditLog
  sessions: SessionService
  signServiceToken: (claims: { sub: string, client_id: string, scope: string }) => string
  verifyAccessToken: (token: string) => Promise<Record<string, unknown>>
  tokenSeconds: number
  failures: { max: number, windowMinutes: number }
}) {
  const { db, now, audit } = deps

  const byClientId = db.select().from(oauthClients).where(eq(oauthClients.clientId, sql.placeholder('clientId'))).prepare('gatehouse_client_by_client_id')
  // Guesses count: an unknown client id or a wrong secret. A disabled client presenting its own
  // secret is refused and recorded, but guesses nothing (a stale worker retrying must not lock out
  // the other services behind its address).
  const failure = and(
    eq(authEvents.eventType, 'client_auth_failure'), eq(authEvents.success, false),
    inArray(authEvents.failureReason, ['unknown_client', 'invalid_secret']), gt(authEvents.createdAt, sql.placeholder('since'))
  )
  const failuresOfIp = db.select({ createdAt: authEvents.createdAt }).from(authEvents)
    .where(and(eq(authEvents.ipAddress, sql.placeholder('ip')), failure))
    .orderBy(desc(authEvents.createdAt)).limit(deps.failures.max).prepare('gatehouse_client_failures_of_ip')
  const failuresOfClient = db.select({ createdAt: authEvents.createdAt }).from(authEvents)
    .where(and(sql`(${authEvents.metadata}->>'clientId') = ${sql.placeholder('clientId')}`, failure))
    .orderBy(desc(authEvents.createdAt)).limit(deps.failures.max).prepare('gatehouse_client_failures_of_client')

  /** Seconds until this client id and this address may try again, or 0. */
  async function blockedFor (clientId: string, ip: string): Promise<number> {
    const t = now().getTime()
    const windowMs = deps.failures.windowMinutes * 60_000
    const since = new Date(t - windowMs).toISOString()
    const [ofIp, ofClient] = await Promise.all([failuresOfIp.execute({ ip, since }), failuresOfClient.execute({ clientId, since })])
    let wait = 0
    for (const rows of [ofIp, ofClient]) {
      const nth = rows[deps.failures.max - 1]
      if (nth !== undefined) wait = Math.max(wait, Math.ceil((nth.createdAt.getTime() + windowMs - t) / 1000))
    }
    return Math.max(0, wait)
  }

  async function refuse (credentials: ClientCredentials, ctx: RequestContext, reason: string, endpoint: string): Promise<never> {
    await audit.record({
      type: 'client_auth_failure', ctx, success: false, failureReason: reason,
      metadata: { clientId: credentials.clientId.slice(0, MAX_CLIENT_ID), method: credentials.method, endpoint }
    })
    throw new OAuthError('invalid_client', 'Client authentication failed', credentials.method === 'client_secret_basic')
  }

  return {
    /**
     * The client these credentials prove, or `invalid_client` (recorded). The secret is compared
     * as its SHA-256 in constant time, against the current secret and, until it expires, the
     * previous one; an unknown client id costs the same comparison.
     */
    async authenticate (credentials: ClientCredentials, ctx: RequestContext, endpoint: 'token' | 'introspect'): Promise<OAuthClientRow> {
      const { clientId, secret } = credentials
      const [wait, [client]] = await Promise.all([
        blockedFor(clientId.slice(0, MAX_CLIENT_ID), ctx.ip),
        clientId.length <= MAX_CLIENT_ID ? byClientId.execute({ clientId }) : Promise.resolve([])
      ])
      const presented = hashOpaqueToken(secret)
      const current = sameHash(presented, client?.secretHash ?? DUMMY_HASH)
      const previous = client !== undefined && client.previousSecretHash !== null && client.previousSecretExpiresAt !== null &&
        client.previousSecretExpiresAt > now() && sameHash(presented, client.previousSecretHash)
      const proven = client !== undefined && (current || previous)
      if (proven && !client.disabled) return client
      if (wait > 0) {
        await audit.record({ type: 'rate_limited', ctx, success: false, failureReason: 'client_auth_failures', metadata: { clientId: clientId.slice(0, MAX_CLIENT_ID), endpoint } })
        throw new AppError('RATE_LIMITED', 'Too many failed client authentications, please try again later', { retryAfter: wait })
      }
      return refuse(credentials, ctx, client === undefined ? 'unknown_client' : proven ? 'client_disabled' : 'invalid_secret', endpoint)
    },

    /**
     * The client-credentials grant: a service token with the requested scopes (space-separated,
     * each one of the client's), or all of the client's without a `scope`.
     */
    async issueToken (client: OAuthClientRow, scope: string | undefined): Promise<TokenResponse> {
      let granted = client.scopes
      if (scope !== undefined) {
        const asked = scope.split(' ')
        if (asked.some((s) => !SCOPE.test(s))) throw new OAuthError('invalid_scope', 'scope must be space-separated scope tokens')
        const unknown = asked.filter((s) => !client.scopes.includes(s))
        if (unknown.length > 0) throw new OAuthError('invalid_scope', `Not granted to this client: ${unknown.join(' ')}`)
        granted = [...new Set(asked)].sort()
      }
      const t = now()
      await db.update(oauthClients).set({ lastUsedAt: t }).where(and(
        eq(oauthClients.id, client.id),
        or(isNull(oauthClients.lastUsedAt), lt(oauthClients.lastUsedAt, new Date(t.getTime() - LAST_USED_STEP_MS)))
      ))
      const access_token = deps.signServiceToken({ sub: client.clientId, client_id: client.clientId, scope: granted.join(' ') })
      return { access_token, token_type: 'Bearer', expires_in: deps.tokenSeconds, scope: granted.join(' ') }
    },

    /**
     * RFC 7662: what a token is, if it is live now. A user's token is live while its session is
     * (the session check every route uses: at once on this instance, within
     * SESSION_CHECK_TTL_SECONDS elsewhere) and reports the user's current role; a service
     * token while its client exists and is enabled (read from the database: at once everywhere),
     * with its scopes narrowed to the client's current ones. Anything else, including a refresh
     * token or a token that fails verification, is `{active: false}`.
     */
    async introspect (token: string): Promise<Introspection> {
      const inactive = { active: false } as const
      let claims: Record<string, unknown>
      try {
        claims = await deps.verifyAccessToken(token)
      } catch {
        return inactive
      }
      const { sub, iss, aud, exp, iat, jti } = claims
      const common = { sub, iss, aud, exp, iat, jti, token_type: 'Bearer' as const }
      if (typeof claims.sid === 'string') {
        const { sid, amr } = claims
        if (typeof sub !== 'string' || !UUID.test(sub) || !UUID.test(sid) || !Array.isArray(amr) || 'client_id' in claims) return inactive
        const state = await deps.sessions.state(sid)
        if (!state.active || state.userId !== sub) return inactive
        return { active: true, ...common, sid, role: state.role, amr }
      }
      if (typeof claims.client_id === 'string' && claims.client_id === sub && typeof claims.scope === 'string') {
        const [client] = claims.client_id.length <= MAX_CLIENT_ID ? await byClientId.execute({ clientId: claims.client_id }) : []
        if (client === undefined || client.disabled) return inactive
        const scope = claims.scope.split(' ').filter((s) => client.scopes.includes(s)).join(' ')
        return { active: true, ...common, client_id: client.clientId, scope }
      }
      return inactive
    },

    /** Every scope an enabled client holds (the metadata's scopes_supported). */
    async scopesInUse (): Promise<string[]> {
      const rows = await db.select({ scopes: oauthClients.scopes }).from(oauthClients).where(eq(oauthClients.disabled, false))
      return [...new Set(rows.flatMap((r) => r.scopes))].sort()
    }
  }
}
export type OAuthService = ReturnType<typeof createOAuthService>
