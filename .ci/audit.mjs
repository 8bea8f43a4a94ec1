#!/usr/bin/env node
/**
 * Dependency audit gate (`npm run audit`): runs `npm audit --omit=dev --json` and fails (exit 1)
 * when a production dependency has a high or critical advisory that .ci/audit-allowlist.json
 * does not allow, or allows no longer (its `expires` date has passed). Exit 0 otherwise, with a
 * one-line summary. Exit 2 when the allow-list or the report cannot be read.
 *
 * AUDIT UNAVAILABLE IS NOT A FAILURE. When npm cannot get an answer from the registry's audit
 * endpoint (offline, a proxy, or a registry mirror that does not implement it: the one this
 * project's machines use answers 405 and npm prints "audit endpoint returned an error"), npm's
 * JSON has an `error` object, or npm prints no JSON at all. Then this script prints a warning
 * line starting with "npm audit: UNAVAILABLE" and exits 0: a build must not fail for an endpoint
 * it cannot reach. That line means the dependencies were NOT checked; watch for it in CI logs.
 *
 * Allow-list, .ci/audit-allowlist.json:
 *   { "advisories": [ { "id": "GHSA-xxxx-xxxx-xxxx" or "https://github.com/advisories/GHSA-...",
 *                       "package": "name", "reason": "why this is acceptable",
 *                       "expires": "YYYY-MM-DD" } ] }
 * An entry allows the advisory with that GHSA id (or URL) in that package, up to and including
 * its `expires` day (UTC). Entries that match no advisory are reported, so the list stays short.
 *
 * Environment (tests): AUDIT_REPORT_FILE reads a saved `npm audit --json` report (npm 7+
 * format) instead of running npm; AUDIT_ALLOWLIST_FILE replaces the allow-list's path.
 * Plain Node, no dependencies.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const GATED = new Set(['high', 'critical'])
const SEVERITIES = ['critical', 'high', 'moderate', 'low', 'info']
const GHSA = /GHSA(?:-[0-9a-z]{4}){3}/i

class UsageError extends Error {}

/** The allow-list's entries, validated; a missing file is an empty list. */
function readAllowList (path) {
  if (!existsSync(path)) return []
  let parsed
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'))
  } catch (err) {
    throw new UsageError(`${path} is not valid JSON: ${err.message}`)
  }
  if (parsed === null || typeof parsed !== 'object' || !Array.isArray(parsed.advisories)) {
    throw new UsageError(`${path} must be { "advisories": [ ... ] }`)
  }
  return parsed.advisories.map((entry, i) => {
    const where = `${path}: advisories[${i}]`
    if (entry === null || typeof entry !== 'object') throw new UsageError(`${where} is not an object`)
    for (const field of ['id', 'package', 'reason', 'expires']) {
      if (typeof entry[field] !== 'string' || entry[field].trim() === '') throw new UsageError(`${where} needs a non-empty string "${field}"`)
    }
    const day = /^\d{4}-\d{2}-\d{2}$/.test(entry.expires) ? new Date(`${entry.expires}T00:00:00Z`) : undefined
    if (day === undefined || Number.isNaN(day.getTime()) || day.toISOString().slice(0, 10) !== entry.expires) {
      throw new UsageError(`${where}: expires must be a date, YYYY-MM-DD (got "${entry.expires}")`)
    }
    return { ...entry, ghsa: GHSA.exec(entry.id)?.[0].toUpperCase() }
  })
}

/** npm's report: from AUDIT_REPORT_FILE, or from running npm. Returns { report } or { unavailable }. */
function loadReport (root) {
  let text
  const file = process.env.AUDIT_REPORT_FILE
  if (file !== undefined && file !== '') {
    try {
      text = readFileSync(file, 'utf8')
    } catch (err) {
      throw new UsageError(`cannot read AUDIT_REPORT_FILE: ${err.message}`)
    }
  } else {
    const run = spawnSync('npm', ['audit', '--omit=dev', '--json'], { cwd: root, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 })
    // npm audit exits non-zero both when it finds vulnerabilities and when it fails: the JSON tells.
    if (run.error !== undefined) return { unavailable: `could not run npm: ${run.error.message}` }
    text = run.stdout
  }
  let report
  try {
    report = JSON.parse(text)
  } catch {
    const first = text.trim().split('\n')[0] ?? ''
    return { unavailable: first === '' ? 'npm printed no report' : `npm printed no JSON report: ${first.slice(0, 200)}` }
  }
  if (report === null || typeof report !== 'object') return { unavailable: 'npm printed no JSON report' }
  if (report.error !== undefined && report.error !== null) {
    const e = report.error
    const detail = [report.message, e.code, e.summary, e.detail].find((s) => typeof s === 'string' && s.trim() !== '')
    return { unavailable: detail ?? 'npm reported an error' }
  }
  if (report.vulnerabilities === null || typeof report.vulnerabilities !== 'object') {
    throw new UsageError(`unrecognised npm audit report (auditReportVersion ${report.auditReportVersion}): no "vulnerabilities" object`)
  }
  return { report }
}

/**
 * One entry per advisory. In npm's report a package's `via` lists its own advisories as objects
 * and, as plain names, the vulnerable packages it depends on, whose advisories sit under their
 * own names: only the objects are collected, so nothing is counted twice.
 */
function advisoriesOf (report) {
  const byKey = new Map()
  for (const [key, vuln] of Object.entries(report.vulnerabilities)) {
    for (const via of Array.isArray(vuln?.via) ? vuln.via : []) {
      if (via === null || typeof via !== 'object') continue
      const advisory = {
        package: typeof via.name === 'string' ? via.name : key,
        severity: String(via.severity ?? vuln.severity ?? 'unknown').toLowerCase(),
        title: String(via.title ?? '(no title)'),
        url: String(via.url ?? ''),
        range: typeof via.range === 'string' ? via.range : undefined,
        source: via.source
      }
      advisory.ghsa = GHSA.exec(advisory.url)?.[0].toUpperCase()
      byKey.set(`${advisory.package}\0${advisory.url}\0${advisory.source}\0${advisory.title}`, advisory)
    }
  }
  return [...byKey.values()]
}

const matches = (entry, advisory) => entry.package === advisory.package &&
  (entry.id === advisory.url || (entry.ghsa !== undefined && entry.ghsa === advisory.ghsa))

function main () {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..')
  const allowListPath = process.env.AUDIT_ALLOWLIST_FILE || join(root, '.ci', 'audit-allowlist.json')
  const shownPath = relative(process.cwd(), allowListPath) || allowListPath
  const allowList = readAllowList(allowListPath)

  const loaded = loadReport(root)
  if (loaded.unavailable !== undefined) {
    console.warn(`npm audit: UNAVAILABLE (${loaded.unavailable}); production dependencies were NOT checked for known vulnerabilities`)
    return 0
  }

  const today = new Date().toISOString().slice(0, 10)
  const advisories = advisoriesOf(loaded.report)
  const used = new Set()
  const failures = []
  const allowed = []
  for (const advisory of advisories) {
    if (!GATED.has(advisory.severity)) continue
    const entries = allowList.filter((e) => matches(e, advisory))
    for (const e of entries) used.add(e)
    const live = entries.find((e) => e.expires >= today)
    if (live !== undefined) {
      allowed.push({ advisory, entry: live })
    } else {
      const expired = entries.map((e) => e.expires).sort().at(-1)
      failures.push({ advisory, expired })
    }
  }

  for (const { advisory, entry } of allowed) {
    console.log(`npm audit: allowed until ${entry.expires}: ${advisory.package} (${advisory.severity}) ${advisory.title} ${advisory.url} (${entry.reason})`)
  }
  for (const entry of allowList) {
    if (!used.has(entry)) console.log(`npm audit: note: allow-list entry ${entry.id} (${entry.package}) matches no high or critical advisory; remove it from ${shownPath}`)
  }

  const counts = SEVERITIES.map((s) => [s, advisories.filter((a) => a.severity === s).length]).filter(([, n]) => n > 0)
  const tally = counts.length === 0 ? 'no advisories' : counts.map(([s, n]) => `${n} ${s}`).join(', ')
  if (failures.length > 0) {
    console.error(`npm audit: FAILED: ${failures.length} high or critical advisor${failures.length === 1 ? 'y' : 'ies'} in production dependencies not allowed by ${shownPath}:`)
    for (const { advisory, expired } of failures) {
      const range = advisory.range === undefined ? '' : `, vulnerable ${advisory.range}`
      const allowance = expired === undefined ? '' : ` [allowance expired ${expired}]`
      console.error(`  - ${advisory.package}: ${advisory.severity}: ${advisory.title} ${advisory.url}${range}${allowance}`)
    }
    console.error('Upgrade the package (npm audit fix, or a newer version of what depends on it), or allow the advisory in the allow-list with a reason and an expiry date.')
    return 1
  }
  const allowedNote = allowed.length > 0 ? `; ${allowed.length} high or critical allowed by ${shownPath}` : ''
  console.log(`npm audit: OK: no high or critical advisory in production dependencies left unallowed (${tally}${allowedNote})`)
  return 0
}

try {
  process.exitCode = main()
} catch (err) {
  if (!(err instanceof UsageError)) throw err
  console.error(`npm audit: ERROR: ${err.message}`)
  process.exitCode = 2
}
