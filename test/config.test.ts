import { readFileSync } from 'node:fs'
import t from 'tap'
import { ConfigError, ConfigSchema, loadConfig } from '../src/config.ts'

const SECRET = 'x'.repeat(32)

t.test('defaults', async (t) => {
  const c = loadConfig({})
  t.equal(c.NODE_ENV, 'development')
  t.equal(c.PORT, 3000)
  t.equal(c.HOST, '127.0.0.1')
  t.equal(c.DATA_DIR, './data')
  t.equal(c.DATABASE_URL, undefined)
  t.equal(c.ACCESS_TOKEN_EXPIRE_MINUTES, 15)
  t.equal(c.REFRESH_TOKEN_EXPIRE_DAYS, 7)
  t.equal(c.REFRESH_REUSE_GRACE_SECONDS, 10)
  t.equal(c.SESSION_CHECK_TTL_SECONDS, 5)
  t.equal(c.COOKIE_SECURE, true)
  t.same(c.CORS_ORIGINS, [])
  t.equal(c.TRUST_PROXY, false)
  t.equal(c.HIBP_ENABLED, true)
  t.equal(c.HIBP_TIMEOUT_MS, 2000)
  t.equal(c.BODY_LIMIT_BYTES, 16384)
  t.equal(c.ARGON2_MEMORY_COST, 19456)
  t.equal(c.ARGON2_TIME_COST, 2)
  t.equal(c.ARGON2_PARALLELISM, 1)
  t.equal(c.RATE_LIMIT_LOGIN_MAX, 5)
  t.equal(c.RATE_LIMIT_LOGIN_EMAIL_FAILURES, 10)
  t.equal(c.RATE_LIMIT_LOGIN_EMAIL_WINDOW_MINUTES, 15)
  t.equal(c.RATE_LIMIT_KNOWN_IP_DAYS, 30)
})

t.test('numbers, booleans and lists are parsed; empty means unset', async (t) => {
  const c = loadConfig({
    PORT: '8080', COOKIE_SECURE: 'false', HIBP_ENABLED: 'no', RATE_LIMIT_ENABLED: '0',
    CORS_ORIGINS: ' https://a.example.com ,https://b.example.com:8443,, ', COOKIE_DOMAIN: '', JWT_SECRET: SECRET
  })
  t.equal(c.PORT, 8080)
  t.equal(c.COOKIE_SECURE, false)
  t.equal(c.HIBP_ENABLED, false)
  t.equal(c.RATE_LIMIT_ENABLED, false)
  t.same(c.CORS_ORIGINS, ['https://a.example.com', 'https://b.example.com:8443'])
  t.equal(c.COOKIE_DOMAIN, undefined)
  t.equal(loadConfig({ COOKIE_SECURE: 'TRUE' }).COOKIE_SECURE, true)
  t.equal(loadConfig({ COOKIE_SECURE: 'yes' }).COOKIE_SECURE, true)
})

t.test('TRUST_PROXY takes true/false, a hop count, or addresses and CIDRs', async (t) => {
  t.equal(loadConfig({ TRUST_PROXY: 'true' }).TRUST_PROXY, true)
  t.equal(loadConfig({ TRUST_PROXY: 'FALSE' }).TRUST_PROXY, false)
  t.equal(loadConfig({ TRUST_PROXY: '1' }).TRUST_PROXY, 1, '1 is one hop, not "trust everyone"')
  t.equal(loadConfig({ TRUST_PROXY: '2' }).TRUST_PROXY, 2)
  t.throws(() => loadConfig({ TRUST_PROXY: '0' }), /TRUST_PROXY=0 is not a hop count; use false/)
  for (const word of ['yes', 'on', 'no', 'off']) t.throws(() => loadConfig({ TRUST_PROXY: word }), /TRUST_PROXY/, `${word} is not a boolean here`)
  t.same(loadConfig({ TRUST_PROXY: '10.0.0.0/8, 127.0.0.1,::1,fd00::/8,loopback' }).TRUST_PROXY,
    ['10.0.0.0/8', '127.0.0.1', '::1', 'fd00::/8', 'loopback'])
  for (const bad of ['10.0.0.0/33', 'proxy.example.com', '10.0.0.1/8/1', '::1/129']) {
    t.throws(() => loadConfig({ TRUST_PROXY: bad }), /TRUST_PROXY/, bad)
  }
})

t.test('invalid values stop start-up with one line naming the variable', async (t) => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ PORT: '70000' }, /^Invalid configuration: PORT must be <= 65535/],
    [{ PORT: 'abc' }, /^Invalid configuration: PORT /],
    [{ NODE_ENV: 'staging' }, /NODE_ENV/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL/],
    [{ COOKIE_SECURE: 'maybe' }, /COOKIE_SECURE/],
    [{ ACCESS_TOKEN_EXPIRE_MINUTES: '0' }, /ACCESS_TOKEN_EXPIRE_MINUTES/],
    [{ REFRESH_REUSE_GRACE_SECONDS: '-1' }, /REFRESH_REUSE_GRACE_SECONDS/],
    [{ DATABASE_URL: 'mysql://x' }, /DATABASE_URL/],
    [{ CORS_ORIGINS: 'https://ok.example.com,not a url' }, /CORS_ORIGINS/],
    [{ HIBP_TIMEOUT_MS: '1.5' }, /HIBP_TIMEOUT_MS/],
    [{ JWT_SECRET: 'short' }, /JWT_SECRET must be at least 32 bytes/],
    [{ ADMIN_EMAIL: 'admin@example.com' }, /ADMIN_EMAIL and ADMIN_PASSWORD/],
    [{ JWT_PRIVATE_KEY: '-----BEGIN PRIVATE KEY-----' }, /JWT_PRIVATE_KEY/],
    [{ WEBAUTHN_RP_ID: 'https://example.com' }, /WEBAUTHN_RP_ID/],
    [{ WEBAUTHN_ORIGINS: 'https://app.example.com/path' }, /WEBAUTHN_ORIGINS/],
    [{ WEBAUTHN_RP_ID: 'example.com', WEBAUTHN_ORIGINS: 'https://app.example.com,https://evil.com' }, /^Invalid configuration: WEBAUTHN_ORIGINS: https:\/\/evil\.com is not on WEBAUTHN_RP_ID example\.com/],
    [{ WEBAUTHN_RP_ID: 'example.com', WEBAUTHN_ORIGINS: 'https://notexample.com' }, /WEBAUTHN_ORIGINS/]
  ]
  for (const [env, re] of cases) {
    try {
      loadConfig(env)
      t.fail(`accepted ${JSON.stringify(env)}`)
    } catch (err) {
      t.ok(err instanceof ConfigError, 'ConfigError')
      t.match((err as Error).message, re)
      t.notMatch((err as Error).message, /\n/, 'one line')
    }
  }
})

t.test('secrets are never echoed in configuration errors', async (t) => {
  const message = (env: Record<string, string>) => {
    try { loadConfig(env) } catch (err) { return (err as Error).message }
    return 'accepted'
  }
  const short = message({ JWT_SECRET: 'tiny-secret' })
  t.match(short, /JWT_SECRET/)
  t.notMatch(short, /tiny-secret/)
  const long = message({ SMTP_PASSWORD: 'x'.repeat(5000) })
  t.match(long, /SMTP_PASSWORD/)
  t.notMatch(long, /xxxxx/)
  const port = message({ PORT: '99999' })
  t.match(port, /got "99999"/, 'non-secret values are shown')
})

t.test('production requires a JWT_SECRET and an MFA_ENCRYPTION_KEY of at least 32 bytes', async (t) => {
  const MFA_ENCRYPTION_KEY = 'k'.repeat(32)
  t.throws(() => loadConfig({ NODE_ENV: 'production', MFA_ENCRYPTION_KEY }), /JWT_SECRET is required in production/)
  t.throws(() => loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(31), MFA_ENCRYPTION_KEY }), /JWT_SECRET must be at least 32 bytes/)
  t.equal(loadConfig({ NODE_ENV: 'production', JWT_SECRET: SECRET, MFA_ENCRYPTION_KEY, SMTP_HOST: 'smtp.example.com' }).JWT_SECRET, SECRET)
  t.equal(loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'é'.repeat(16), MFA_ENCRYPTION_KEY, MAIL_STDOUT: 'true' }).JWT_SECRET?.length, 16, 'bytes, not characters')
  t.throws(() => loadConfig({ NODE_ENV: 'production', JWT_SECRET: SECRET }), /MFA_ENCRYPTION_KEY is required in production/)
  t.throws(() => loadConfig({ MFA_ENCRYPTION_KEY: 'short' }), /MFA_ENCRYPTION_KEY must be at least 32 bytes/)
})

t.test('production refuses to print emails to stdout unless MAIL_STDOUT=true says so', async (t) => {
  const base = { NODE_ENV: 'production', JWT_SECRET: SECRET, MFA_ENCRYPTION_KEY: SECRET }
  t.throws(() => loadConfig(base), /^Invalid configuration: SMTP_HOST is required in production .*MAIL_STDOUT=true/)
  t.equal(loadConfig({ ...base, MAIL_STDOUT: 'true' }).MAIL_STDOUT, true)
  t.throws(() => loadConfig({ ...base, MAIL_STDOUT: 'true', SMTP_HOST: 'smtp.example.com' }), /MAIL_STDOUT=true and SMTP_HOST are both set/)
  t.equal(loadConfig({ NODE_ENV: 'development' }).MAIL_STDOUT, false, 'development prints without being asked')
})

t.test('SMTP requires TLS unless SMTP_HOST is this machine; SMTP_REQUIRE_TLS overrides', async (t) => {
  for (const host of ['smtp.example.com', '10.0.0.25', 'mail', '127.0.0.1.example.com']) {
    t.equal(loadConfig({ SMTP_HOST: host }).SMTP_REQUIRE_TLS, true, `${host}: required`)
  }
  for (const host of ['localhost', '127.0.0.1', '127.1.2.3', '::1', '[::1]', 'mail.localhost']) {
    t.equal(loadConfig({ SMTP_HOST: host }).SMTP_REQUIRE_TLS, false, `${host}: loopback, not required`)
  }
  t.equal(loadConfig({ SMTP_HOST: 'smtp.example.com', SMTP_REQUIRE_TLS: 'false' }).SMTP_REQUIRE_TLS, false)
  t.equal(loadConfig({ SMTP_HOST: '127.0.0.1', SMTP_REQUIRE_TLS: 'true' }).SMTP_REQUIRE_TLS, true)
})

t.test('PUBLIC_URL defaults to http://localhost:PORT', async (t) => {
  t.equal(loadConfig({ PORT: '8080' }).PUBLIC_URL, 'http://localhost:8080')
  t.equal(loadConfig({ PUBLIC_URL: 'https://auth.example.com' }).PUBLIC_URL, 'https://auth.example.com')
  t.throws(() => loadConfig({ PUBLIC_URL: 'auth.example.com' }), /PUBLIC_URL/)
})

t.test('WebAuthn: the RP ID and origins default to APP_URL\'s; origins may be the RP ID or its subdomains', async (t) => {
  const d = loadConfig({ APP_URL: 'https://app.example.com/base' })
  t.equal(d.WEBAUTHN_RP_ID, 'app.example.com')
  t.same(d.WEBAUTHN_ORIGINS, ['https://app.example.com'])
  t.equal(d.WEBAUTHN_RP_NAME, 'Gatehouse')
  const c = loadConfig({ WEBAUTHN_RP_ID: 'example.com', WEBAUTHN_ORIGINS: 'https://example.com, https://app.example.com:8443', WEBAUTHN_RP_NAME: 'Acme' })
  t.same(c.WEBAUTHN_ORIGINS, ['https://example.com', 'https://app.example.com:8443'])
  t.equal(c.WEBAUTHN_RP_NAME, 'Acme')
})

t.test('.env.example lists every variable the service reads', async (t) => {
  const example = readFileSync(new URL('../.env.example', import.meta.url), 'utf8')
  for (const key of Object.keys(ConfigSchema.properties)) {
    t.match(example, new RegExp(`^#? ?${key}=`, 'm'), key)
  }
})

t.test('a malformed URL is echoed without its password', async (t) => {
  let message = ''
  try {
    loadConfig({ DATABASE_URL: 'mysql://root:hunter2@db.example.com/app' })
  } catch (err) {
    message = (err as Error).message
  }
  t.match(message, /^Invalid configuration: DATABASE_URL .*mysql:\/\/root:\*\*\*@db\.example\.com/)
  t.notMatch(message, /hunter2/)
})

t.test('audit events are kept at least as long as the known-IP exemption reads them', async (t) => {
  t.throws(() => loadConfig({ AUTH_EVENTS_RETENTION_DAYS: '20' }), /AUTH_EVENTS_RETENTION_DAYS must be at least RATE_LIMIT_KNOWN_IP_DAYS/)
  t.equal(loadConfig({ AUTH_EVENTS_RETENTION_DAYS: '20', RATE_LIMIT_KNOWN_IP_DAYS: '14' }).AUTH_EVENTS_RETENTION_DAYS, 20)
  t.equal(loadConfig({}).AUTH_EVENTS_RETENTION_DAYS, 90)
  t.equal(loadConfig({}).OUTBOX_RETENTION_DAYS, 7)
})
