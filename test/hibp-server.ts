/**
 * A local stand-in for the Have I Been Pwned range API, answering in the real format:
 * `SUFFIX:COUNT` lines (35 upper-case hex characters, CRLF), padded with count-0 lines when the
 * client sends `Add-Padding: true`.
 */
import { createHash } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Test } from './helper.ts'

export const sha1 = (s: string) => createHash('sha1').update(s).digest('hex').toUpperCase()

export async function startHibp (test: Test, breached: Record<string, number> = {}) {
  const state = {
    mode: 'ok' as 'ok' | 'slow' | 'fail',
    slowMs: 1000,
    requests: [] as Array<{ prefix: string, padding: string | undefined }>,
    /** Suffixes that appear with count 0 (as padding does) for these passwords. */
    zeroCount: new Set<string>()
  }
  const server = createServer((req, res) => {
    const m = /^\/range\/([0-9A-F]{5})$/i.exec(req.url ?? '')
    if (m?.[1] === undefined) { res.writeHead(404).end(); return }
    const prefix = m[1].toUpperCase()
    state.requests.push({ prefix, padding: req.headers['add-padding'] as string | undefined })
    const answer = () => {
      if (state.mode === 'fail') { res.writeHead(503).end('unavailable'); return }
      const lines: string[] = []
      for (const [password, count] of Object.entries(breached)) {
        const h = sha1(password)
        if (h.startsWith(prefix)) lines.push(`${h.slice(5)}:${count}`)
      }
      for (const password of state.zeroCount) {
        const h = sha1(password)
        if (h.startsWith(prefix)) lines.push(`${h.slice(5)}:0`)
      }
      if (req.headers['add-padding'] === 'true') {
        for (let i = 0; i < 50; i++) lines.push(`${createHash('sha1').update(`pad${i}`).digest('hex').toUpperCase().slice(5)}:0`)
      }
      // A few genuine-looking entries for other passwords of the same range.
      lines.push(`${'0'.repeat(34)}1:3`, `${'F'.repeat(34)}E:12`)
      res.writeHead(200, { 'content-type': 'text/plain' }).end(lines.join('\r\n'))
    }
    if (state.mode === 'slow') setTimeout(answer, state.slowMs)
    else answer()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  test.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return { url, state }
}
