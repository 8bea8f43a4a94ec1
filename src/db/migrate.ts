/**
 * `npm run db:migrate`: applies drizzle/ to DATABASE_URL, or to the embedded PGlite
 * database under DATA_DIR when DATABASE_URL is unset. The service also migrates at start-up.
 */
import { loadConfig } from '../config.ts'
import { connect } from './client.ts'

const config = loadConfig(process.env)
const handle = await connect({ databaseUrl: config.DATABASE_URL, dataDir: config.DATA_DIR, poolMax: 1 })
try {
  await handle.migrate()
  console.log(`migrations applied (${handle.kind})`)
} finally {
  await handle.close()
}
