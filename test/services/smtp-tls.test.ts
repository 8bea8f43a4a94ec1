/**
 * SMTP without TLS hands SMTP_PASSWORD and every reset link to whoever sits on the path, and
 * opportunistic STARTTLS is stripped by deleting one line of the server's greeting. With
 * SMTP_REQUIRE_TLS (the default for any host but loopback) nothing is said before TLS is up and
 * the server's certificate verifies.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SMTPServer } from 'smtp-server'
import t from 'tap'
import { emailOutbox } from '../../src/db/schema.ts'
import { buildTestApp, isVerificationMail, PASSWORD, round, startService, type Test, uniqueEmail } from '../helper.ts'

/** A test CA and a server certificate it signed for 127.0.0.1 and localhost (openssl CLI). */
function certificates (test: Test) {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-tls-'))
  test.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = (name: string) => join(dir, name)
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' })
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  openssl('req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '1', '-subj', '/CN=Gatehouse test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign')
  openssl('req', ...ec, '-keyout', file('server.key'), '-out', file('server.csr'), '-subj', '/CN=localhost')
  writeFileSync(file('ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n')
  openssl('x509', '-req', '-in', file('server.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial',
    '-out', file('server.pem'), '-days', '1', '-extfile', file('ext.cnf'))
  return { caFile: file('ca.pem'), key: readFileSync(file('server.key')), cert: readFileSync(file('server.pem')) }
}

/** A real SMTP server on 127.0.0.1 that records AUTH attempts, whether each session was encrypted, and messages. */
async function smtpServer (test: Test, tls: { key: Buffer, cert: Buffer } | undefined) {
  const seen = { auth: [] as string[], messages: [] as Array<{ secure: boolean, raw: string }> }
  const server = new SMTPServer({
    logger: false,
    disabledCommands: tls === undefined ? ['STARTTLS'] : [],
    ...(tls ?? {}),
    allowInsecureAuth: true,
    authOptional: true,
    onAuth (auth, _session, callback) {
      seen.auth.push(`${auth.username}:${auth.password}`)
      callback(null, { user: auth.username })
    },
    onData (stream, session, callback) {
      const chunks: Buffer[] = []
      stream.on('data', (c: Buffer) => chunks.push(c))
      stream.on('end', () => { seen.messages.push({ secure: session.secure, raw: Buffer.concat(chunks).toString() }); callback() })
    }
  })
  server.on('error', () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  test.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { port: (server.server.address() as AddressInfo).port, seen }
}

const credentials = { SMTP_USER: 'gatehouse', SMTP_PASSWORD: 'smtp-secret-password', SMTP_REQUIRE_TLS: 'true' }

t.test('a server that offers no STARTTLS gets neither the password nor the message', async (t) => {
  const smtp = await smtpServer(t, undefined)
  const app = await buildTestApp(t, { env: { SMTP_HOST: '127.0.0.1', SMTP_PORT: String(smtp.port), ...credentials } })
  await app.services.outbox.enqueue(app.db, 'password_reset', { to: 'a@example.com', subject: 'Reset', text: 'https://app/reset-password?token=secret' })
  t.same(await app.services.outbox.runOnce(), round({ retry: 1 }), 'a transient failure: it stays queued for a server that does TLS')
  t.same(smtp.seen, { auth: [], messages: [] })
  const [row] = await app.db.select().from(emailOutbox)
  t.match(row?.lastError, /STARTTLS/i)
})

t.test('a certificate that does not verify (self-made, as an attacker on the path would present) stops the delivery', async (t) => {
  const smtp = await smtpServer(t, certificates(t))
  const app = await buildTestApp(t, { env: { SMTP_HOST: '127.0.0.1', SMTP_PORT: String(smtp.port), ...credentials } })
  await app.services.outbox.enqueue(app.db, 'password_reset', { to: 'b@example.com', subject: 'Reset', text: 'https://app/reset-password?token=secret' })
  t.same(await app.services.outbox.runOnce(), round({ retry: 1 }))
  t.same(smtp.seen, { auth: [], messages: [] })
})

t.test('without SMTP_REQUIRE_TLS, a loopback server is used in plain text (development)', async (t) => {
  const smtp = await smtpServer(t, undefined)
  const app = await buildTestApp(t, { env: { SMTP_HOST: '127.0.0.1', SMTP_PORT: String(smtp.port) } })
  await app.services.outbox.enqueue(app.db, 'password_changed', { to: 'c@example.com', subject: 'Notice', text: 'plain' })
  t.same(await app.services.outbox.runOnce(), round({ sent: 1 }))
  t.equal(smtp.seen.messages[0]?.secure, false)
})

t.test('the service as a process: STARTTLS to a server whose certificate verifies, then AUTH and the reset link', async (t) => {
  const certs = certificates(t)
  const smtp = await smtpServer(t, certs)
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-tls-data-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const service = startService({
    NODE_EXTRA_CA_CERTS: certs.caFile, // how an operator trusts a private CA
    PORT: '0',
    DATA_DIR: dataDir,
    HIBP_ENABLED: 'false',
    OUTBOX_POLL_INTERVAL_MS: '100',
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(smtp.port),
    ...credentials
  })
  t.teardown(async () => { service.child.kill('SIGTERM'); await service.exited })
  const base = await service.listening
  const until = async <T>(probe: () => T | undefined, what: string): Promise<T> => {
    for (let i = 0; i < 300; i++) {
      const value = probe()
      if (value !== undefined) return value
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    throw new Error(`timed out waiting for ${what}`)
  }
  const email = uniqueEmail()
  const post = (path: string, body: object) => fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  t.equal((await post('/api/auth/signup', { email, password: PASSWORD })).status, 201)
  t.equal((await post('/api/auth/password/forgot', { email })).status, 202)
  const mail = await until(() => smtp.seen.messages.find((m) => /reset-password\?token=/.test(m.raw)), 'the reset email')
  // The signup's verification mail goes out too, in a session of its own.
  const verification = await until(() => smtp.seen.messages.find((m) => isVerificationMail({ text: m.raw })), 'the signup\'s verification mail')
  t.equal(smtp.seen.messages.length, 2, 'the reset email and the signup\'s verification mail')
  t.equal(mail.secure, true, 'the session was encrypted (STARTTLS)')
  t.equal(verification.secure, true, 'and the verification mail\'s session')
  const auth = `${credentials.SMTP_USER}:${credentials.SMTP_PASSWORD}`
  t.same(smtp.seen.auth, [auth, auth], 'AUTH came after TLS, once in each session')
  t.match(mail.raw, /reset-password\?token=/)
})
