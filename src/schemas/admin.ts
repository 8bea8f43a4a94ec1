import { Type } from 'typebox'
import { EVENT_TYPES } from '../services/audit.ts'
import { DateTimeSchema, UUID_PATTERN, UuidSchema } from './common.ts'

export const AdminUserListQuerySchema = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 50 }),
  offset: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 0 }),
  q: Type.Optional(Type.String({ maxLength: 254, description: 'part of the email, case-insensitive' }))
}, { additionalProperties: false })

export const AdminUserListSchema = Type.Object({
  items: Type.Array(Type.Ref('User')),
  total: Type.Integer()
})

export const AdminUserParamsSchema = Type.Object({ id: UuidSchema })

export const AdminUserPatchSchema = Type.Object({
  isActive: Type.Optional(Type.Boolean({ description: 'false revokes every session of the user' })),
  role: Type.Optional(Type.Union([Type.Literal('user'), Type.Literal('admin')]))
}, { additionalProperties: false, minProperties: 1 })

export const RevokedCountSchema = Type.Object({ revoked: Type.Integer() })

/** IPv4 or IPv6 text as the service records it; anything else cannot match a row. */
const IpSchema = Type.String({ minLength: 2, maxLength: 45, pattern: '^[0-9A-Fa-f:.]+$' })

export const AuthEventQuerySchema = Type.Object({
  userId: Type.Optional(UuidSchema),
  email: Type.Optional(Type.String({ minLength: 1, maxLength: 254, description: 'exact, compared trimmed and lower-cased' })),
  type: Type.Optional(Type.Union(EVENT_TYPES.map((t) => Type.Literal(t)))),
  ip: Type.Optional(IpSchema),
  since: Type.Optional(Type.String({ format: 'date-time', description: 'events at or after this time' })),
  before: Type.Optional(Type.String({ format: 'date-time', description: 'events strictly older than this time (paging)' })),
  beforeId: Type.Optional(Type.String({ format: 'uuid', pattern: UUID_PATTERN, description: 'with before: the id of the last event of the previous page; events at that same time with a smaller id are included, so paging skips nothing' })),
  limit: Type.Integer({ minimum: 1, maximum: 500, default: 100 })
}, { additionalProperties: false })

export const AuthEventSchema = Type.Object({
  id: UuidSchema,
  userId: Type.Union([UuidSchema, Type.Null()]),
  email: Type.Union([Type.String(), Type.Null()]),
  eventType: Type.String(),
  ipAddress: Type.Union([Type.String(), Type.Null()]),
  userAgent: Type.Union([Type.String(), Type.Null()]),
  success: Type.Boolean(),
  failureReason: Type.Union([Type.String(), Type.Null()]),
  createdAt: DateTimeSchema,
  metadata: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()], {
    description: 'what the event concerns (session ids, changes, the target of an admin action); never a secret'
  })
}, { $id: 'Event' })

export const AuthEventListSchema = Type.Object({ items: Type.Array(Type.Ref('Event')) })

export const SuspiciousQuerySchema = Type.Object({
  windowMinutes: Type.Integer({ minimum: 1, maximum: 10_080, default: 15 }),
  threshold: Type.Integer({ minimum: 1, maximum: 100_000, default: 5 })
}, { additionalProperties: false })

export const SuspiciousReportSchema = Type.Object({
  windowMinutes: Type.Integer(),
  threshold: Type.Integer(),
  byIp: Type.Array(Type.Object({ ip: Type.String(), failures: Type.Integer(), lastAt: DateTimeSchema })),
  byEmail: Type.Array(Type.Object({ email: Type.String(), failures: Type.Integer(), lastAt: DateTimeSchema })),
  stuffing: Type.Array(Type.Object({ ip: Type.String(), distinctEmails: Type.Integer(), failures: Type.Integer() }), {
    description: 'one IP failing against many accounts (credential stuffing)'
  }),
  spraying: Type.Array(Type.Object({ email: Type.String(), distinctIps: Type.Integer(), failures: Type.Integer() }), {
    description: 'one account failing from many IPs'
  })
})

/** A scope: `^[a-z][a-z0-9:._-]{0,63}$` (the contract). */
export const ScopeSchema = Type.String({ pattern: '^[a-z][a-z0-9:._-]{0,63}$', maxLength: 64 })

export const ClientSchema = Type.Object({
  id: UuidSchema,
  clientId: Type.String({ description: 'the OAuth client_id (opaque)' }),
  name: Type.String(),
  scopes: Type.Array(Type.String()),
  disabled: Type.Boolean(),
  createdAt: DateTimeSchema,
  lastUsedAt: Type.Union([DateTimeSchema, Type.Null()], { description: 'the last token issued to it, to the minute' })
}, { $id: 'Client' })

export const ClientListSchema = Type.Object({ items: Type.Array(Type.Ref('Client')) })

export const ClientWithSecretSchema = Type.Object({
  client: Type.Ref('Client'),
  clientSecret: Type.String({ description: 'shown once; only its hash is stored' })
})

const ClientNameSchema = Type.String({ minLength: 1, maxLength: 100 })
const ClientScopesSchema = Type.Array(ScopeSchema, { maxItems: 20 })

export const ClientCreateSchema = Type.Object({
  name: ClientNameSchema,
  scopes: ClientScopesSchema
}, { additionalProperties: false })

export const ClientPatchSchema = Type.Object({
  name: Type.Optional(ClientNameSchema),
  scopes: Type.Optional(ClientScopesSchema),
  disabled: Type.Optional(Type.Boolean({ description: 'true: no new tokens, and its tokens stop working within the revocation bound' }))
}, { additionalProperties: false, minProperties: 1 })

export const ClientSecretRotateSchema = Type.Object({
  previousValidSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 604_800, default: 0, description: 'how long the previous secret keeps working' }))
}, { additionalProperties: false })
