import { Type } from 'typebox'
import { DateTimeSchema, EmailSchema, UuidSchema } from './common.ts'

export const UserSchema = Type.Object({
  id: UuidSchema,
  email: Type.String(),
  emailVerified: Type.Boolean({ description: 'the owner followed a verification link (or completed a password reset)' }),
  role: Type.Union([Type.Literal('user'), Type.Literal('admin')]),
  isActive: Type.Boolean(),
  mfaEnabled: Type.Boolean(),
  passwordMustChange: Type.Boolean(),
  createdAt: DateTimeSchema,
  lastLoginAt: Type.Union([DateTimeSchema, Type.Null()])
}, { $id: 'User' })

export const CredentialsSchema = Type.Object({
  email: EmailSchema,
  // The policy (8–128, upper, lower, digit) is checked by the service so it can answer
  // PASSWORD_TOO_WEAK; this bound only keeps absurd input away from argon2.
  password: Type.String({ minLength: 1, maxLength: 1024 })
}, { additionalProperties: false })

export const TokenResponseSchema = Type.Object({
  user: Type.Ref('User'),
  accessToken: Type.String(),
  tokenType: Type.Literal('Bearer'),
  expiresIn: Type.Integer({ description: 'seconds' })
})

export const SessionListSchema = Type.Object({
  items: Type.Array(Type.Object({
    id: UuidSchema,
    createdAt: DateTimeSchema,
    lastUsedAt: DateTimeSchema,
    ipAddress: Type.Union([Type.String(), Type.Null()]),
    userAgent: Type.Union([Type.String(), Type.Null()]),
    current: Type.Boolean()
  }))
})

export const SessionParamsSchema = Type.Object({ id: UuidSchema })

/** New passwords: the policy (8–128 …) is the service's; this bound keeps absurd input out. */
const NewPassword = Type.String({ minLength: 1, maxLength: 1024 })

export const ForgotPasswordSchema = Type.Object({ email: EmailSchema }, { additionalProperties: false })

export const VerifyEmailSchema = Type.Object({ token: Type.String({ minLength: 1, maxLength: 256 }) }, { additionalProperties: false })

/** Signup's answer under REQUIRE_EMAIL_VERIFICATION: no token, no cookie. */
export const VerificationRequiredSchema = Type.Object({
  user: Type.Ref('User'),
  verificationRequired: Type.Literal(true)
})

export const ResetPasswordSchema = Type.Object({
  token: Type.String({ minLength: 1, maxLength: 256 }),
  newPassword: NewPassword
}, { additionalProperties: false })

export const ChangePasswordSchema = Type.Object({
  currentPassword: Type.String({ minLength: 1, maxLength: 1024 }),
  newPassword: NewPassword
}, { additionalProperties: false })

export const MfaChallengeSchema = Type.Object({
  mfaRequired: Type.Literal(true),
  mfaToken: Type.String(),
  expiresIn: Type.Integer({ description: 'seconds' })
})

const TotpCode = Type.String({ pattern: '^[0-9]{6}$', description: '6-digit TOTP code' })
const BackupCode = Type.String({ minLength: 10, maxLength: 32, description: 'backup code, e.g. abcde-fghjk' })

export const LoginMfaSchema = Type.Object({
  mfaToken: Type.String({ minLength: 1, maxLength: 2048 }),
  code: Type.Optional(TotpCode),
  backupCode: Type.Optional(BackupCode)
}, { additionalProperties: false, description: 'exactly one of code and backupCode' })

export const MfaPasswordSchema = Type.Object({ password: Type.String({ minLength: 1, maxLength: 1024 }) }, { additionalProperties: false })
export const MfaCodeSchema = Type.Object({ code: TotpCode }, { additionalProperties: false })
export const MfaDisableSchema = Type.Object({ password: Type.String({ minLength: 1, maxLength: 1024 }), code: TotpCode }, { additionalProperties: false })
export const MfaSetupResponseSchema = Type.Object({ secret: Type.String(), otpauthUri: Type.String() })
export const BackupCodesSchema = Type.Object({ backupCodes: Type.Array(Type.String()) })
export const MfaStatusSchema = Type.Object({ enabled: Type.Boolean(), backupCodesRemaining: Type.Integer() })
