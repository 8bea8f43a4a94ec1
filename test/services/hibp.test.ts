import t from 'tap'
import { createBreachChecker } from '../../src/services/hibp.ts'
import { silentTelemetry } from '../../src/services/telemetry.ts'
import { startHibp, sha1 } from '../hibp-server.ts'
import { testClock, type Test } from '../helper.ts'

const BREACHED = 'P@ssw0rd123'

async function setup (t: Test, opts: { failClosed?: boolean, timeoutMs?: number } = {}) {
  const hibp = await startHibp(t, { [BREACHED]: 52000 })
  const clock = testClock()
  const unavailable: unknown[] = []
  const quiet = silentTelemetry()
  const checker = createBreachChecker(
    { enabled: true, apiUrl: hibp.url, timeoutMs: opts.timeoutMs ?? 500, failClosed: opts.failClosed ?? false, cacheTtlMs: 60_000 },
    { now: clock.now, telemetry: { ...quiet, log: { ...quiet.log, warn: (obj) => unavailable.push((obj as { err: unknown }).err) } } }
  )
  return { hibp, clock, checker, unavailable }
}

t.test('k-anonymity: only the 5-character prefix is sent, with Add-Padding', async (t) => {
  const { hibp, checker } = await setup(t)
  t.equal(await checker.isBreached(BREACHED), true)
  t.equal(hibp.state.requests.length, 1)
  t.equal(hibp.state.requests[0]?.prefix, sha1(BREACHED).slice(0, 5))
  t.equal(hibp.state.requests[0]?.padding, 'true')
  t.equal(await checker.isBreached('Unbreached-Passw0rd-4711'), false)
})

t.test('padding lines (count 0) never count as breached', async (t) => {
  const { hibp, checker } = await setup(t)
  hibp.state.zeroCount.add('Zero-Count-Passw0rd')
  t.equal(await checker.isBreached('Zero-Count-Passw0rd'), false)
})

t.test('answers are cached per prefix for the TTL; concurrent look-ups share one request', async (t) => {
  const { hibp, checker, clock } = await setup(t)
  const results = await Promise.all(Array.from({ length: 10 }, () => checker.isBreached(BREACHED)))
  t.same(results, Array(10).fill(true))
  t.equal(hibp.state.requests.length, 1, 'coalesced')
  await checker.isBreached(BREACHED)
  t.equal(hibp.state.requests.length, 1, 'cached')
  clock.advance(61_000)
  await checker.isBreached(BREACHED)
  t.equal(hibp.state.requests.length, 2, 'refetched after the TTL')
})

t.test('fail-open by default: timeout or error passes and is reported', async (t) => {
  const { hibp, checker, unavailable } = await setup(t, { timeoutMs: 100 })
  hibp.state.mode = 'slow'
  const started = Date.now()
  await t.resolves(checker.assertNotBreached(BREACHED), 'slow API: passes')
  t.ok(Date.now() - started < 900, 'gave up at the timeout')
  hibp.state.mode = 'fail'
  await t.resolves(checker.assertNotBreached('Another-Passw0rd-1'), '503 from the API: passes')
  t.equal(unavailable.length, 2)
  t.equal(checker.stats.failures, 2)
  hibp.state.mode = 'ok'
  await t.rejects(checker.assertNotBreached(BREACHED), { code: 'PASSWORD_BREACHED' })
})

t.test('fail-closed turns an unavailable API into 503', async (t) => {
  const { hibp, checker } = await setup(t, { failClosed: true })
  hibp.state.mode = 'fail'
  await t.rejects(checker.assertNotBreached('Whatever-Passw0rd-1'), { code: 'SERVICE_UNAVAILABLE', statusCode: 503 })
})
