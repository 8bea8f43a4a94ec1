import type { Config } from '../config.ts'
import type { Db } from '../db/client.ts'
import { type AccessClaims, createAccountService } from './accounts.ts'
import { createAuditLog } from './audit.ts'
import { createPasswordHasher } from './passwords.ts'
import { createSessionService } from './sessions.ts'
import { createTaskService } from './tasks.ts'

export interface ServiceDeps {
  db: Db
  config: Config
  /** The clock; tests inject one to move time instead of sleeping. */
  now: () => Date
  signAccessToken: (claims: AccessClaims) => string
}

/** Wires the domain services together. Nothing here knows about HTTP. */
export function createServices ({ db, config, now, signAccessToken }: ServiceDeps) {
  const passwords = createPasswordHasher({
    memoryCost: config.ARGON2_MEMORY_COST,
    timeCost: config.ARGON2_TIME_COST,
    parallelism: config.ARGON2_PARALLELISM,
    maxConcurrency: config.ARGON2_MAX_CONCURRENCY
  })
  const audit = createAuditLog({ db, now })
  const sessions = createSessionService({
    db, now, refreshDays: config.REFRESH_TOKEN_EXPIRE_DAYS, checkTtlSeconds: config.SESSION_CHECK_TTL_SECONDS
  })
  const accounts = createAccountService({
    db,
    now,
    passwords,
    audit,
    sessions,
    signAccessToken,
    accessTokenSeconds: config.ACCESS_TOKEN_EXPIRE_MINUTES * 60,
    throttle: {
      maxFailures: config.RATE_LIMIT_LOGIN_EMAIL_FAILURES,
      windowMinutes: config.RATE_LIMIT_LOGIN_EMAIL_WINDOW_MINUTES,
      knownIpDays: config.RATE_LIMIT_KNOWN_IP_DAYS
    }
  })
  const tasks = createTaskService({ db, now })
  return { passwords, audit, sessions, accounts, tasks }
}
export type Services = ReturnType<typeof createServices>
