/**
 * The entry point: the only file that reads process.env, listens and handles signals.
 */
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.ts'
import { ConfigError, loadConfig, type Config } from './config.ts'
import { devSecret } from './secrets.ts'

let config: Config
try {
  config = loadConfig(process.env)
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(err.message)
    process.exit(1)
  }
  throw err
}

// Development only (production requires both): secrets generated once and kept under DATA_DIR.
const generated: string[] = []
if (config.JWT_SECRET === undefined) {
  const secret = devSecret(config.DATA_DIR, 'jwt-secret')
  config = { ...config, JWT_SECRET: secret.value }
  generated.push(`JWT_SECRET is not set: using a development secret ${secret.created ? 'generated' : 'loaded'} under ${config.DATA_DIR}; set JWT_SECRET in production`)
}
if (config.MFA_ENCRYPTION_KEY === undefined) {
  const key = devSecret(config.DATA_DIR, 'mfa-encryption-key')
  config = { ...config, MFA_ENCRYPTION_KEY: key.value }
  generated.push(`MFA_ENCRYPTION_KEY is not set: using a development key ${key.created ? 'generated' : 'loaded'} under ${config.DATA_DIR}; set MFA_ENCRYPTION_KEY in production`)
}

const app = await buildApp({ config })
for (const warning of generated) app.log.warn(warning)

// On SIGINT/SIGTERM: stop accepting, let in-flight requests finish, close the database.
closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
  if (err !== undefined) app.log.error({ err }, 'closing after an uncaught error')
  else app.log.info({ signal }, 'shutting down')
  await app.close()
})

try {
  await app.listen({ host: config.HOST, port: config.PORT })
} catch (err) {
  app.log.fatal({ err }, 'could not start')
  await app.close()
  process.exit(1)
}
