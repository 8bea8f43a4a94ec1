import { randomUUID, timingSafeEqual } from 'node:crypto'
import { and, desc, eq, gt, inArray, isNull, lt, or, type SQL, sql } from 'drizzle-orm'
import type { Db, Tx } from '../db/client.ts'
import { transaction } from '../db/transaction.ts'
import { authEvents, type OAuthClientRow, oauthClients } from '../db/schema.ts'
import { AppError, OAuthError } from '../errors.ts'
import { UUID_PATTERN } from '../schemas/common.ts'
import type { AuditLog, RequestContext } from './audit.ts'
import { clientKey } from './client-key.ts'
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
/** The shape of the client ids this service issues (`gc_` and 128 bits): anything else is never looked up nor recorded. */
const ISSUED_CLIENT_ID = /^gc_[A-Za-z0-9_-]{22}$/
/** The advisory-lock key space of the client-authentication limits (any constant of ours). */
const LOCK_SPACE = 724_531
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
 * Failed client authentications are recorded (`client_auth_failure`, with the attempted client
 * id when it has the shape of one, never a secret, and the address it came from) and limited:
 * after RATE_LIMIT_CLIENT_AUTH_FAILURES guesses (an unknown client id or a wrong secret) within
 * the window for one client id, or from one address (IPv6 by its RATE_LIMIT_IPV6_PREFIX prefix,
 * as every per-IP limit), every further attempt there that does not prove an enabled client gets
 * 429 until the window has passed, and is not counted again. Counted in the audit log, so every
 * instance agrees, under an advisory lock per client id and per address, so concurrent guesses
 * count exactly. The right secret of an enabled client always passes: client ids are not secret
 * (every token carries one in `sub`), so a limit that refused it would let anyone lock a service
 * out; and a secret is 256 random bits, so the limit is about noise and load, not about the odds
 * of a guess.
 */
export function createOAuthService (deps: {
  db: Db
  now: () => Date
  audit: AuditLog
  sessions: SessionService
  signServiceToken: (claims: { sub: string, client_id: string, scope: string, jti: string }) => string
  verifyAccessToken: (token: string) => Promise<Record<string, unknown>>
  tokenSeconds: number
  failures: { max: number, windowMinutes: number }
  ipv6Prefix: number
}) {
  const { db, now, audit } = deps

  const byClientId = db.select().from(oauthClients).where(eq(oauthClients.clientId, sql.placeholder('clientId'))).prepare('gatehouse_client_by_client_id')

  /**
   * Guesses within the window, newest first, at most `max`: an unknown client id or a wrong
   * secret. A disabled client presenting its own secret is refused and recorded, but guesses
   * nothing (a stale worker retrying must not lock out the other services behind its address).
   */
  const guesses = (tx: Tx, where: SQL, since: Date) => tx.select({ createdAt: authEvents.createdAt }).from(authEvents)
    .where(and(
      where, eq(authEvents.eventType, 'client_auth_failure'), eq(authEvents.success, false),
      inArray(authEvents.failureReason, ['unknown_client', 'invalid_secret']), gt(authEvents.createdAt, since)
    ))
    .orderBy(desc(authEvents.createdAt)).limit(deps.failures.max)

  /** Seconds until this client id and this address may guess again, or 0 (under the caller's locks). */
  async function blockedFor (tx: Tx, clientId: string | null, address: string): Promise<number> {
    const t = now().getTime()
    const windowMs = deps.failures.windowMinutes * 60_000
    const since = new Date(t - windowMs)
    const lists = [await guesses(tx, sql`(${authEvents.metadata}->>'address') = ${address}`, since)]
    if (clientId !== null) lists.push(await guesses(tx, sql`(${authEvents.metadata}->>'clientId') = ${clientId}`, since))
    let wait = 0
    for (const rows of lists) {
      const nth = rows[deps.failures.max - 1]
      if (nth !== undefined) wait = Math.max(wait, Math.ceil((nth.createdAt.getTime() + windowMs - t) / 1000))
    }
    return Math.max(0, wait)
  }

  /**
   * A failed client authentication: 401 `invalid_client` (recorded), or 429 once the client id or
   * the address has guessed too often. Decided and recorded under advisory locks on both, taken
   * in one order, so concurrent guesses are counted one after the other.
   */
  async function refuse (credentials: ClientCredentials, ctx: RequestContext, reason: string, endpoint: string): Promise<never> {
    const clientId = ISSUED_CLIENT_ID.test(credentials.clientId) ? credentials.clientId : null
    const address = clientKey(ctx.ip, deps.ipv6Prefix)
    const metadata = { clientId, address, method: credentials.method, endpoint }
    const wait = await transaction(db, async (tx) => {
      const keys = [`address:${address}`, ...(clientId === null ? [] : [`client:${clientId}`])].sort()
      for (const key of keys) await tx.execute(sql`select pg_advisory_xact_lock(${LOCK_SPACE}, hashtext(${key}))`)
      const seconds = await blockedFor(tx, clientId, address)
      if (seconds > 0) {
        await audit.record({ type: 'rate_limited', ctx, success: false, failureReason: 'client_auth_failures', metadata }, tx)
      } else {
        await audit.record({ type: 'client_auth_failure', ctx, success: false, failureReason: reason, metadata }, tx)
      }
      return seconds
    })
    if (wait > 0) throw new AppError('RATE_LIMITED', 'Too many failed client authentications, please try again later', { retryAfter: wait })
    throw new OAuthError('invalid_client', 'Client authentication failed', credentials.method === 'client_secret_basic')
  }

  return {
    /**
     * The client these credentials prove, or `invalid_client` (recorded; 429 after too many
     * guesses). The secret is compared as its SHA-256 in constant time, against the current secret
     * and, until it expires, the previous one; an unknown client id costs the same comparison, and
     * an id that is not of the issued shape is never looked up.
     */
    async authenticate (credentials: ClientCredentials, ctx: RequestContext, endpoint: 'token' | 'introspect'): Promise<OAuthClientRow> {
      const { clientId, secret } = credentials
      const [client] = ISSUED_CLIENT_ID.test(clientId) ? await byClientId.execute({ clientId }) : []
      const presented = hashOpaqueToken(secret)
      const current = sameHash(presented, client?.secretHash ?? DUMMY_HASH)
      const previous = client !== undefined && client.previousSecretHash !== null && client.previousSecretExpiresAt !== null &&
        client.previousSecretExpiresAt > now() && sameHash(presented, client.previousSecretHash)
      const proven = client !== undefined && (current || previous)
      if (proven && !client.disabled) return client
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
      const access_token = deps.signServiceToken({
        sub: client.clientId, client_id: client.clientId, scope: granted.join(' '), jti: `${client.tokenGeneration}.${randomUUID()}`
      })
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
        // A session that must change its password first opens no route but that: not live elsewhere either.
        if (!state.active || state.userId !== sub || state.passwordMustChange) return inactive
        return { active: true, ...common, sid, role: state.role, amr }
      }
      if (typeof claims.client_id === 'string' && claims.client_id === sub && typeof claims.scope === 'string') {
        const [client] = ISSUED_CLIENT_ID.test(claims.client_id) ? await byClientId.execute({ clientId: claims.client_id }) : []
        if (client === undefined || client.disabled) return inactive
        // Issued before the client was last disabled or had its secret replaced: revoked.
        const generation = typeof jti === 'string' ? /^(\d+)\./.exec(jti)?.[1] : undefined
        if (generation === undefined || Number(generation) < client.tokenGeneration) return inactive
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
