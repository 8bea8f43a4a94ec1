/**
 * Who the client is: the address per-IP limits and audit rows use (TRUST_PROXY, IPv6 prefixes),
 * and which origins may send the refresh cookie (own origin from configuration, not the request).
 */
import t from 'tap'
import type { App } from '../../src/app.ts'
import { assertError, bearer, buildTestApp, login, PASSWORD, signup, uniqueEmail } from '../helper.ts'

const PROXY = '10.0.0.5'
/** The leftmost entry is what the client wrote; the rightmost what the proxy appended. */
const FORGED_CHAIN = '203.0.113.66, 198.51.100.7'

/** Signs up through a request with these headers, and returns the IP the session recorded. */
async function recordedIp (app: App, remoteAddress: string, headers: Record<string, string>): Promise<string | null> {
  const res = await app.inject({ method: 'POST', url: '/api/auth/signup', payload: { email: uniqueEmail(), password: PASSWORD }, remoteAddress, headers })
  const sessions = await app.inject({ url: '/api/auth/sessions', headers: bearer(res.json().accessToken) })
  return sessions.json().items[0].ipAddress
}

t.test('TRUST_PROXY decides which X-Forwarded-For entry is the client', async (t) => {
  const xff = { 'x-forwarded-for': FORGED_CHAIN }
  const cases: Array<[string, string, string, string]> = [
    ['1', PROXY, '198.51.100.7', 'one trusted hop: the address our proxy saw; the forged entry is ignored'],
    ['2', PROXY, '203.0.113.66', 'two trusted hops'],
    ['true', PROXY, '203.0.113.66', 'true trusts every hop, so the leftmost (client-written) entry wins'],
    ['false', PROXY, PROXY, 'false: the header is ignored'],
    ['10.0.0.0/8', PROXY, '198.51.100.7', 'a CIDR trust list: a proxy inside it is believed'],
    ['10.0.0.0/8', '192.0.2.1', '192.0.2.1', 'a CIDR trust list: a client outside it cannot forge']
  ]
  for (const [trust, remote, expected, why] of cases) {
    const app = await buildTestApp(t, { env: { TRUST_PROXY: trust } })
    t.equal(await recordedIp(app, remote, xff), expected, `TRUST_PROXY=${trust} from ${remote}: ${why}`)
  }
})

t.test('TRUST_PROXY=1: a forged X-Forwarded-For does not escape the per-IP login limit', async (t) => {
  const app = await buildTestApp(t, { env: { TRUST_PROXY: '1', RATE_LIMIT_LOGIN_MAX: '2' } })
  const s = await signup(app)
  const attempt = (i: number) => app.inject({
    method: 'POST', url: '/api/auth/login', remoteAddress: PROXY,
    payload: { email: s.email, password: 'Wrong-Passw0rd-1' },
    headers: { 'x-forwarded-for': `203.0.113.${i}, 198.51.100.7` }
  })
  t.equal((await attempt(1)).statusCode, 401)
  t.equal((await attempt(2)).statusCode, 401)
  assertError(t, await attempt(3), 429, 'RATE_LIMITED')
})

t.test('IPv6 clients are limited per /64 (RATE_LIMIT_IPV6_PREFIX); IPv4-mapped addresses count as IPv4', async (t) => {
  const tryLogin = (app: App, email: string, remoteAddress: string) => login(app, email, 'Wrong-Passw0rd-1', remoteAddress)

  const app = await buildTestApp(t, { env: { RATE_LIMIT_LOGIN_MAX: '2' } })
  const s = await signup(app)
  t.equal((await tryLogin(app, s.email, '2001:db8:1:1::1')).statusCode, 401)
  t.equal((await tryLogin(app, s.email, '2001:db8:1:1:abcd::2')).statusCode, 401)
  assertError(t, await tryLogin(app, s.email, '2001:db8:1:1:ffff:ffff:ffff:9'), 429, 'RATE_LIMITED')
  t.equal((await tryLogin(app, s.email, '2001:db8:1:2::1')).statusCode, 401, 'the next /64 is another client')

  t.equal((await tryLogin(app, s.email, '::ffff:192.0.2.1')).statusCode, 401)
  t.equal((await tryLogin(app, s.email, '192.0.2.1')).statusCode, 401)
  assertError(t, await tryLogin(app, s.email, '::ffff:192.0.2.1'), 429, 'RATE_LIMITED')

  const perAddress = await buildTestApp(t, { env: { RATE_LIMIT_LOGIN_MAX: '1', RATE_LIMIT_IPV6_PREFIX: '128' } })
  const p = await signup(perAddress)
  t.equal((await tryLogin(perAddress, p.email, '2001:db8::1')).statusCode, 401)
  t.equal((await tryLogin(perAddress, p.email, '2001:db8::2')).statusCode, 401, 'prefix 128: every address on its own')
})

t.test('behind a TLS proxy without TRUST_PROXY, the own origin comes from PUBLIC_URL and APP_URL', async (t) => {
  const app = await buildTestApp(t, { env: { PUBLIC_URL: 'https://auth.example.com', APP_URL: 'https://app.example.com/portal' } })
  const s = await signup(app)
  let cookie = s.res.cookies.find((c) => c.name === 'refresh_token')?.value ?? ''
  // The proxy speaks plain http to us: request.protocol is http, but browsers send the https origin.
  for (const origin of ['https://auth.example.com', 'https://app.example.com', 'HTTPS://AUTH.EXAMPLE.COM']) {
    const res = await app.inject({ method: 'POST', url: '/api/auth/refresh', cookies: { refresh_token: cookie }, headers: { origin, host: 'auth.example.com' } })
    t.equal(res.statusCode, 200, `${origin} is our own`)
    cookie = res.cookies.find((c) => c.name === 'refresh_token')?.value ?? ''
  }
  for (const [origin, host] of [['http://auth.example.com', 'auth.example.com'], ['https://evil.example', 'evil.example'], ['http://localhost:80', 'localhost:80']]) {
    const res = await app.inject({ method: 'POST', url: '/api/auth/refresh', cookies: { refresh_token: cookie }, headers: { origin: origin!, host: host!, 'x-forwarded-proto': 'https' } })
    assertError(t, res, 403, 'CSRF_REJECTED')
  }
})
