import { randomBytes } from 'node:crypto'
import { asc, eq, sql } from 'drizzle-orm'
import type { Db, Tx } from '../db/client.ts'
import { type OAuthClientRow, oauthClients } from '../db/schema.ts'
import { transaction } from '../db/transaction.ts'
import { AppError } from '../errors.ts'
import type { AccountStore } from './account-store.ts'
import type { Actor } from './admin.ts'
import type { AuditLog } from './audit.ts'
import { hashOpaqueToken, newOpaqueToken } from './opaque-tokens.ts'

/** The contract's Client object: never the secret, nor its hash. */
export interface PublicClient {
  id: string
  clientId: string
  name: string
  scopes: string[]
  disabled: boolean
  createdAt: string
  lastUsedAt: string | null
}

export const toPublicClient = (c: OAuthClientRow): PublicClient => ({
  id: c.id,
  clientId: c.clientId,
  name: c.name,
  scopes: c.scopes,
  disabled: c.disabled,
  createdAt: c.createdAt.toISOString(),
  lastUsedAt: c.lastUsedAt?.toISOString() ?? null
})

/** `gc_` and 128 random bits: public, but unguessable, so a client id reveals nothing of the others. */
const newClientId = () => `gc_${randomBytes(16).toString('base64url')}`

/** Scopes as a set: each once, in a stable order. */
const scopeSet = (scopes: string[]) => [...new Set(scopes)].sort()

/**
 * Service clients (OAuth 2.0 client credentials), managed by admins: create, list, change, rotate
 * the secret, delete. The secret (256 random bits) is returned once and stored only as its
 * SHA-256; a rotation may keep the previous secret working for a stated overlap, so a deployment
 * can roll. Every change is an audit event whose `userId`/`email` name the acting admin and whose
 * metadata names the client (never a secret).
 */
export function createClientService (deps: { db: Db, now: () => Date, store: AccountStore, audit: AuditLog }) {
  const { db, now, audit } = deps

  /**
   * Records a change in `tx`. The acting admin's email is read before the transaction opens (on the
   * embedded database, a read outside an open transaction would wait for it to end).
   */
  async function recorder (actor: Actor) {
    const email = await deps.store.emailOf(actor.userId)
    return async (tx: Tx, type: 'client_created' | 'client_updated' | 'client_secret_rotated' | 'client_deleted', client: OAuthClientRow, extra: Record<string, unknown> = {}) => {
      await audit.record({
        type, ctx: actor.ctx, userId: actor.userId, email, success: true,
        metadata: { targetClientId: client.id, clientId: client.clientId, name: client.name, ...extra }
      }, tx)
    }
  }

  async function byId (id: string): Promise<OAuthClientRow> {
    const [client] = await db.select().from(oauthClients).where(eq(oauthClients.id, id.toLowerCase()))
    if (client === undefined) throw new AppError('NOT_FOUND', 'Client not found')
    return client
  }

  return {
    async create (actor: Actor, input: { name: string, scopes: string[] }): Promise<{ client: PublicClient, clientSecret: string }> {
      const clientSecret = newOpaqueToken()
      const t = now()
      const record = await recorder(actor)
      return transaction(db, async (tx) => {
        const [client] = await tx.insert(oauthClients).values({
          clientId: newClientId(), name: input.name, scopes: scopeSet(input.scopes), secretHash: hashOpaqueToken(clientSecret),
          createdAt: t, updatedAt: t
        }).returning()
        if (client === undefined) throw new Error('client insert returned no row')
        await record(tx, 'client_created', client, { scopes: client.scopes })
        return { client: toPublicClient(client), clientSecret }
      })
    },

    async list (): Promise<PublicClient[]> {
      return (await db.select().from(oauthClients).orderBy(asc(oauthClients.createdAt), asc(oauthClients.id))).map(toPublicClient)
    },

    /** Name, scopes and/or disabled. Disabling (or narrowing the scopes) holds for tokens already issued within the revocation bound. */
    async update (actor: Actor, id: string, patch: { name?: string, scopes?: string[], disabled?: boolean }): Promise<PublicClient> {
      const before = await byId(id)
      const set = {
        ...(patch.name === undefined ? {} : { name: patch.name }),
        ...(patch.scopes === undefined ? {} : { scopes: scopeSet(patch.scopes) }),
        ...(patch.disabled === undefined ? {} : { disabled: patch.disabled }),
        // Disabling revokes: the tokens issued so far stay refused even if the client is enabled again.
        ...(patch.disabled === true ? { tokenGeneration: sql`${oauthClients.tokenGeneration} + 1` } : {}),
        updatedAt: now()
      }
      const record = await recorder(actor)
      return transaction(db, async (tx) => {
        const [after] = await tx.update(oauthClients).set(set).where(eq(oauthClients.id, before.id)).returning()
        if (after === undefined) throw new AppError('NOT_FOUND', 'Client not found')
        const changes: Record<string, { from: unknown, to: unknown }> = {}
        if (patch.name !== undefined) changes.name = { from: before.name, to: after.name }
        if (patch.scopes !== undefined) changes.scopes = { from: before.scopes, to: after.scopes }
        if (patch.disabled !== undefined) changes.disabled = { from: before.disabled, to: after.disabled }
        await record(tx, 'client_updated', after, { changes })
        return toPublicClient(after)
      })
    },

    /**
     * A new secret. The previous one keeps working for `previousValidSeconds` (0: not at all);
     * a client has at most one previous secret, so a second rotation replaces it.
     */
    async rotateSecret (actor: Actor, id: string, previousValidSeconds: number): Promise<{ client: PublicClient, clientSecret: string }> {
      const before = await byId(id)
      const clientSecret = newOpaqueToken()
      const t = now()
      const keep = previousValidSeconds > 0
      const record = await recorder(actor)
      return transaction(db, async (tx) => {
        // The previous secret is the row's, read by the update itself: of two rotations at once,
        // the second keeps the first one's secret, never the one both replaced. Without an overlap
        // the secret is presumed leaked: the tokens issued with it are revoked too.
        const [after] = await tx.update(oauthClients).set({
          secretHash: hashOpaqueToken(clientSecret),
          previousSecretHash: keep ? sql`${oauthClients.secretHash}` : null,
          previousSecretExpiresAt: keep ? new Date(t.getTime() + previousValidSeconds * 1000) : null,
          ...(keep ? {} : { tokenGeneration: sql`${oauthClients.tokenGeneration} + 1` }),
          updatedAt: t
        }).where(eq(oauthClients.id, before.id)).returning()
        if (after === undefined) throw new AppError('NOT_FOUND', 'Client not found')
        await record(tx, 'client_secret_rotated', after, { previousValidSeconds })
        return { client: toPublicClient(after), clientSecret }
      })
    },

    async remove (actor: Actor, id: string): Promise<void> {
      const client = await byId(id)
      const record = await recorder(actor)
      await transaction(db, async (tx) => {
        const [gone] = await tx.delete(oauthClients).where(eq(oauthClients.id, client.id)).returning({ id: oauthClients.id })
        if (gone === undefined) throw new AppError('NOT_FOUND', 'Client not found')
        await record(tx, 'client_deleted', client)
      })
    }
  }
}
export type ClientService = ReturnType<typeof createClientService>
