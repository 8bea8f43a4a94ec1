import { createHash } from 'node:crypto'
import { AppError } from '../errors.ts'
import type { Telemetry } from './telemetry.ts'

export interface HibpSettings {
  enabled: boolean
  /** Base URL of the range API, e.g. https://api.pwnedpasswords.com */
  apiUrl: string
  timeoutMs: number
  /** true: an unavailable API rejects the password (503); false (default): it passes. */
  failClosed: boolean
  cacheTtlMs: number
  cacheMaxEntries?: number
}

/**
 * Have I Been Pwned, k-anonymity range API: only the first 5 hex characters of the password's
 * SHA-1 leave the service. Answers are cached per prefix for a short time (LRU), concurrent
 * look-ups of one prefix share one request, and `Add-Padding: true` hides the answer's size
 * (padding lines have a count of 0 and are ignored).
 */
export function createBreachChecker (settings: HibpSettings, deps: {
  now: () => Date
  telemetry: Telemetry
  fetch?: typeof fetch
}) {
  const doFetch = deps.fetch ?? fetch
  const maxEntries = settings.cacheMaxEntries ?? 1000
  const cache = new Map<string, { suffixes: Set<string>, until: number }>()
  const inflight = new Map<string, Promise<Set<string>>>()
  const stats = { lookups: 0, requests: 0, cacheHits: 0, failures: 0 }

  async function fetchRange (prefix: string): Promise<Set<string>> {
    stats.requests++
    const res = await doFetch(`${settings.apiUrl.replace(/\/+$/, '')}/range/${prefix}`, {
      headers: { 'Add-Padding': 'true', 'User-Agent': 'gatehouse-auth' },
      signal: AbortSignal.timeout(settings.timeoutMs)
    })
    if (!res.ok) throw new Error(`HIBP answered ${res.status}`)
    const suffixes = new Set<string>()
    for (const line of (await res.text()).split('\n')) {
      const [suffix, count] = line.trim().split(':')
      if (suffix === undefined || count === undefined || !/^[0-9A-F]{35}$/i.test(suffix)) continue
      if (Number.parseInt(count, 10) > 0) suffixes.add(suffix.toUpperCase())
    }
    return suffixes
  }

  async function range (prefix: string): Promise<Set<string>> {
    const t = deps.now().getTime()
    const hit = cache.get(prefix)
    if (hit !== undefined && hit.until > t) {
      stats.cacheHits++
      cache.delete(prefix) // refresh LRU position
      cache.set(prefix, hit)
      return hit.suffixes
    }
    let pending = inflight.get(prefix)
    if (pending === undefined) {
      pending = fetchRange(prefix).then((suffixes) => {
        cache.set(prefix, { suffixes, until: deps.now().getTime() + settings.cacheTtlMs })
        while (cache.size > maxEntries) cache.delete(cache.keys().next().value as string)
        return suffixes
      }).finally(() => inflight.delete(prefix))
      inflight.set(prefix, pending)
    }
    return pending
  }

  return {
    stats,
    /** True when the password appears in a breach (count > 0). */
    async isBreached (password: string): Promise<boolean> {
      const sha1 = createHash('sha1').update(password.normalize('NFKC')).digest('hex').toUpperCase()
      stats.lookups++
      return (await range(sha1.slice(0, 5))).has(sha1.slice(5))
    },

    /** Throws PASSWORD_BREACHED; when the API is unavailable, passes (or 503 if fail-closed). */
    async assertNotBreached (password: string): Promise<void> {
      if (!settings.enabled) return
      const { hibpChecks } = deps.telemetry.metrics
      let breached: boolean
      try {
        breached = await this.isBreached(password)
      } catch (err) {
        stats.failures++
        hibpChecks.inc({ outcome: 'unavailable' })
        deps.telemetry.log.warn({ err }, settings.failClosed
          ? 'Have I Been Pwned check unavailable: password refused (HIBP_FAIL_CLOSED=true)'
          : 'Have I Been Pwned check unavailable: password accepted unchecked')
        if (settings.failClosed) throw new AppError('SERVICE_UNAVAILABLE', 'Password breach check is unavailable, please try again later')
        return
      }
      hibpChecks.inc({ outcome: breached ? 'breached' : 'ok' })
      if (breached) {
        throw new AppError('PASSWORD_BREACHED', 'This password has appeared in a data breach; choose another one')
      }
    }
  }
}
export type BreachChecker = ReturnType<typeof createBreachChecker>
