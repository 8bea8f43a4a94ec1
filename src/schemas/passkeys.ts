import { Type } from 'typebox'
import { DateTimeSchema, UuidSchema } from './common.ts'

/** base64url, as WebAuthn's JSON serialisation writes binary fields. */
const B64u = (maxLength: number) => Type.String({ pattern: '^[A-Za-z0-9_-]*$', minLength: 1, maxLength })

export const PasskeySchema = Type.Object({
  id: UuidSchema,
  name: Type.String(),
  createdAt: DateTimeSchema,
  lastUsedAt: Type.Union([DateTimeSchema, Type.Null()]),
  backedUp: Type.Boolean()
})

export const PasskeyResponseSchema = Type.Object({ passkey: PasskeySchema })
export const PasskeyListSchema = Type.Object({ items: Type.Array(PasskeySchema) })
export const PasskeyParamsSchema = Type.Object({ id: UuidSchema })
/**
 * 1–64 characters, not only spaces, and no control characters, line or paragraph separators, or
 * the invisible format characters (soft hyphen, zero-width, bidi marks, embeddings, overrides and
 * isolates, word joiners, BOM) that could disguise a name in a list or a mail.
 */
const HIDDEN = '\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u206f\\ufeff\\ufff9-\\ufffb'
export const PasskeyNameSchema = Type.String({ minLength: 1, maxLength: 64, pattern: `^[^${HIDDEN}]*[^\\s${HIDDEN}][^${HIDDEN}]*$` })
export const RenamePasskeySchema = Type.Object({ name: PasskeyNameSchema }, { additionalProperties: false })
export const EmptyBodySchema = Type.Object({}, { additionalProperties: false })

/** `{challengeId, options}`: the options are WebAuthn Level 3 JSON, passed to the browser as they are. */
export const CeremonyOptionsSchema = Type.Object({
  challengeId: UuidSchema,
  options: Type.Object({}, { additionalProperties: true })
})

const Transports = Type.Array(Type.Union(['ble', 'cable', 'hybrid', 'internal', 'nfc', 'smart-card', 'usb'].map((t) => Type.Literal(t))), { maxItems: 16 })
const Attachment = Type.Optional(Type.Union([Type.Literal('platform'), Type.Literal('cross-platform')]))
const ClientExtensionResults = Type.Object({}, { additionalProperties: true })

/** RegistrationResponseJSON (WebAuthn Level 3 §5.1, `toJSON()`), bounded. */
export const RegistrationResponseSchema = Type.Object({
  id: B64u(1366),
  rawId: B64u(1366),
  type: Type.Literal('public-key'),
  response: Type.Object({
    clientDataJSON: B64u(4096),
    attestationObject: B64u(12_000),
    authenticatorData: Type.Optional(B64u(8192)),
    transports: Type.Optional(Transports),
    publicKeyAlgorithm: Type.Optional(Type.Integer()),
    publicKey: Type.Optional(B64u(4096))
  }),
  authenticatorAttachment: Attachment,
  clientExtensionResults: ClientExtensionResults
})

/** AuthenticationResponseJSON, bounded. */
export const AuthenticationResponseSchema = Type.Object({
  id: B64u(1366),
  rawId: B64u(1366),
  type: Type.Literal('public-key'),
  response: Type.Object({
    clientDataJSON: B64u(4096),
    authenticatorData: B64u(8192),
    signature: B64u(2048),
    userHandle: Type.Optional(B64u(128))
  }),
  authenticatorAttachment: Attachment,
  clientExtensionResults: ClientExtensionResults
})

export const RegisterVerifySchema = Type.Object({
  challengeId: UuidSchema,
  response: RegistrationResponseSchema,
  name: Type.Optional(PasskeyNameSchema)
}, { additionalProperties: false })

export const LoginVerifySchema = Type.Object({
  challengeId: UuidSchema,
  response: AuthenticationResponseSchema
}, { additionalProperties: false })
