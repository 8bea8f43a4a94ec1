import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/**
 * Development convenience: a secret generated once and kept under DATA_DIR (mode 0600), so
 * tokens survive restarts without any set-up. Production requires the real variable instead.
 */
export function devSecret (dataDir: string, name: string): { value: string, created: boolean } {
  const file = join(dataDir, name)
  try {
    const value = readFileSync(file, 'utf8').trim()
    if (Buffer.byteLength(value) >= 32) return { value, created: false }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  mkdirSync(dataDir, { recursive: true })
  const value = randomBytes(48).toString('base64url')
  writeFileSync(file, `${value}\n`, { mode: 0o600 })
  return { value, created: true }
}
