import { Type, type Static } from 'typebox'

/**
 * A UUID in its plain 36-character form. Ajv's `uuid` format also accepts a `urn:uuid:` prefix,
 * which PostgreSQL refuses with an error: the pattern is what validates, the format documents.
 */
export const UUID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
export const UuidSchema = Type.String({ format: 'uuid', pattern: UUID_PATTERN, description: 'UUID' })
export const DateTimeSchema = Type.String({ format: 'date-time' })

/** After trimming and lower-casing (a preValidation hook does both). */
export const EmailSchema = Type.String({ format: 'email', minLength: 3, maxLength: 254 })

export const ErrorSchema = Type.Object({
  statusCode: Type.Integer(),
  code: Type.String(),
  error: Type.String(),
  message: Type.String()
}, { $id: 'Error', description: 'Every error has this shape' })

export const MessageSchema = Type.Object({ message: Type.String() })

/** Error responses for a route's schema, by status code. */
export function errors (...codes: number[]) {
  return Object.fromEntries(codes.map((c) => [c, Type.Ref('Error')])) as Record<number, ReturnType<typeof Type.Ref>>
}

export type ErrorBody = Static<typeof ErrorSchema>
