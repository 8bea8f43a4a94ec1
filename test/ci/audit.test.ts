/**
 * The dependency audit gate, .ci/audit.mjs, run as CI runs it (`node .ci/audit.mjs`) on saved
 * `npm audit --json` reports from test/fixtures/audit/ instead of the registry.
 */
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const root = fileURLToPath(new URL('../..', import.meta.url))
const fixture = (name: string) => join(root, 'test', 'fixtures', 'audit', name)

/** Runs the gate on a saved report, with an allow-list fixture or the committed one. */
function audit (report: string, allowList?: string) {
  const env: NodeJS.ProcessEnv = { ...process.env, AUDIT_REPORT_FILE: report }
  delete env.AUDIT_ALLOWLIST_FILE
  if (allowList !== undefined) env.AUDIT_ALLOWLIST_FILE = allowList
  const run = spawnSync(process.execPath, ['.ci/audit.mjs'], { cwd: root, env, encoding: 'utf8', timeout: 30_000 })
  if (run.error !== undefined) throw run.error
  return { code: run.status, stdout: run.stdout, stderr: run.stderr, output: run.stdout + run.stderr }
}

const HIGH_URL = 'https://github.com/advisories/GHSA-2222-3333-4444'

t.test('a high advisory that is not allowed fails the gate, named with its package, severity, title and url', async (t) => {
  const res = audit(fixture('high.json'), fixture('allow-none.json'))
  t.equal(res.code, 1)
  t.match(res.stderr, /FAILED: 1 high or critical advisory /, 'counted once, not again for the package that depends on it')
  t.match(res.stderr, `- example-jwt: high: Signature bypass in example-jwt ${HIGH_URL}`)
  t.notMatch(res.output, /example-yaml|Prototype pollution/, 'the moderate advisory is not a failure')
  t.notMatch(res.output, /UNAVAILABLE/)
})

t.test('the same advisory on the allow-list passes', async (t) => {
  for (const list of ['allow-high.json', 'allow-high-by-url.json']) {
    const res = audit(fixture('high.json'), fixture(list))
    t.equal(res.code, 0, `${list}: exit 0`)
    t.equal(res.stderr, '', `${list}: nothing on stderr`)
    t.match(res.stdout, /npm audit: OK: .*1 high, 1 moderate/, `${list}: one-line summary`)
    t.match(res.stdout, `allowed until 2999-12-31: example-jwt (high) Signature bypass in example-jwt ${HIGH_URL}`, `${list}: says what it allowed`)
  }
})

t.test('an expired allowance fails the gate again', async (t) => {
  const res = audit(fixture('high.json'), fixture('allow-high-expired.json'))
  t.equal(res.code, 1)
  t.match(res.stderr, `- example-jwt: high: Signature bypass in example-jwt ${HIGH_URL}`)
  t.match(res.stderr, /allowance expired 2000-01-01/)
})

t.test('an allowance covers only its package and its advisory', async (t) => {
  const wrongPackage = audit(fixture('high.json'), fixture('allow-other-package.json'))
  t.equal(wrongPackage.code, 1, 'the advisory allowed for another package still fails')
  t.match(wrongPackage.stderr, /- example-jwt: high:/)

  const critical = audit(fixture('critical.json'), fixture('allow-high.json'))
  t.equal(critical.code, 1, 'a critical advisory next to an allowed high one fails')
  t.match(critical.stderr, /FAILED: 1 high or critical advisory /)
  t.match(critical.stderr, '- example-parser: critical: Remote code execution in example-parser https://github.com/advisories/GHSA-8888-9999-cccc')
  t.notMatch(critical.stderr, /example-jwt/, 'the allowed one is not listed among the failures')
})

t.test('moderate and low advisories only: the gate passes with a one-line summary', async (t) => {
  const res = audit(fixture('moderate.json'), fixture('allow-none.json'))
  t.equal(res.code, 0)
  t.equal(res.stderr, '')
  t.equal(res.stdout.trim().split('\n').length, 1, 'one line')
  t.match(res.stdout, /^npm audit: OK: .*\(1 moderate, 1 low\)\n$/)
})

t.test('the audit endpoint answering an error is reported as UNAVAILABLE and does not fail the build', async (t) => {
  const res = audit(fixture('error.json'), fixture('allow-none.json'))
  t.equal(res.code, 0)
  t.match(res.output, /^npm audit: UNAVAILABLE \(405 Method Not Allowed/m)
  t.match(res.output, /NOT checked/)
  t.notMatch(res.output, /npm audit: OK/, 'never claims the dependencies are fine')

  const text = audit(fixture('not-json.txt'), fixture('allow-none.json'))
  t.equal(text.code, 0, 'output that is not JSON at all: the same')
  t.match(text.output, /^npm audit: UNAVAILABLE \(npm printed no JSON report: npm warn audit 405/m)
  t.notMatch(text.output, /npm audit: OK/)
})

t.test('the committed allow-list is well-formed', async (t) => {
  const res = audit(fixture('moderate.json'))
  t.equal(res.code, 0)
  t.match(res.stdout, /npm audit: OK: /)
  t.notMatch(res.output, /ERROR/)
})

t.test('a malformed allow-list stops the gate (exit 2) even when the audit is unavailable', async (t) => {
  const dir = t.testdir()
  const bad = join(dir, 'allowlist.json')
  writeFileSync(bad, JSON.stringify({ advisories: [{ id: 'GHSA-2222-3333-4444', package: 'example-jwt', reason: 'no expiry given' }] }))
  for (const report of ['high.json', 'error.json']) {
    const res = audit(fixture(report), bad)
    t.equal(res.code, 2, `${report}: exit 2`)
    t.match(res.stderr, /npm audit: ERROR: .*advisories\[0\] needs a non-empty string "expires"/)
  }
  writeFileSync(bad, JSON.stringify({ advisories: [{ id: 'GHSA-2222-3333-4444', package: 'example-jwt', reason: 'r', expires: '2026-02-30' }] }))
  t.match(audit(fixture('high.json'), bad).stderr, /expires must be a date, YYYY-MM-DD/)
})
