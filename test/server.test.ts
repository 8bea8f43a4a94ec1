/**
 * The entry point as a newcomer runs it: a real process on the embedded database.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { PASSWORD, startService as start } from './helper.ts'

t.test('production without JWT_SECRET stops with one line naming it', async (t) => {
  const envs: Array<Record<string, string>> = [{ NODE_ENV: 'production' }, { NODE_ENV: 'production', JWT_SECRET: 'too-short' }]
  for (const env of envs) {
    const run = await start(env).exited
    t.equal(run.code, 1)
    const lines = run.stderr.trim().split('\n')
    t.equal(lines.length, 1, 'one line')
    t.match(lines[0], /^Invalid configuration: JWT_SECRET/)
    t.notMatch(run.stderr, /too-short/)
  }
  const bad = await start({ PORT: 'eighty' }).exited
  t.equal(bad.code, 1)
  t.match(bad.stderr.trim(), /^Invalid configuration: PORT [^\n]*$/)
})

t.test('production without SMTP_HOST stops, since reset links would go to stdout, unless MAIL_STDOUT=true says so', async (t) => {
  const secrets = { NODE_ENV: 'production', JWT_SECRET: 'p'.repeat(40), MFA_ENCRYPTION_KEY: 'm'.repeat(40) }
  const run = await start(secrets).exited
  t.equal(run.code, 1)
  t.match(run.stderr.trim(), /^Invalid configuration: SMTP_HOST is required in production \(emails carry reset links\); set MAIL_STDOUT=true to print them to stdout instead$/)

  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-server-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const chosen = start({ ...secrets, MAIL_STDOUT: 'true', DATA_DIR: dataDir, PORT: '0' })
  t.equal((await fetch(`${await chosen.listening}/health/ready`)).status, 200, 'starts when stdout delivery is chosen explicitly')
  chosen.child.kill('SIGTERM')
  const stopped = await chosen.exited
  t.match(stopped.stdout, /MAIL_STDOUT=true: emails, reset links included, are printed to stdout/, 'and says so in the log')
})

t.test('development: embedded database under DATA_DIR, generated secret kept across restarts, graceful stop', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-server-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const env = { DATA_DIR: dataDir, PORT: '0', ARGON2_MEMORY_COST: '8192', ARGON2_TIME_COST: '1' }

  const first = start(env)
  const base = await first.listening
  t.equal((await fetch(`${base}/health/ready`)).status, 200)
  const signup = await fetch(`${base}/api/auth/signup`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'first@example.com', password: PASSWORD })
  })
  t.equal(signup.status, 201)
  const { accessToken } = await signup.json() as { accessToken: string }
  first.child.kill('SIGTERM')
  const run1 = await first.exited
  t.equal(run1.code, 0, 'SIGTERM exits cleanly')
  t.match(run1.stdout, /JWT_SECRET is not set: using a development secret generated/)
  t.match(run1.stdout, /shutting down/)
  t.equal(statSync(join(dataDir, 'jwt-secret')).mode & 0o777, 0o600, 'secret file is private')
  t.equal(statSync(join(dataDir, 'mfa-encryption-key')).mode & 0o777, 0o600, 'MFA key file is private')
  t.match(run1.stdout, /MFA_ENCRYPTION_KEY is not set: using a development key generated/)
  t.notOk(run1.stdout.includes(accessToken), 'token not logged')

  const second = start(env)
  const base2 = await second.listening
  const me = await fetch(`${base2}/api/auth/me`, { headers: { authorization: `Bearer ${accessToken}` } })
  t.equal(me.status, 200, 'same secret and same data after a restart')
  t.equal(((await me.json()) as { email: string }).email, 'first@example.com')
  second.child.kill('SIGINT')
  const run2 = await second.exited
  t.equal(run2.code, 0)
  t.match(run2.stdout, /development secret loaded/)
})
