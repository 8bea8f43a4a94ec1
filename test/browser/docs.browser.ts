/** The Swagger UI at /docs renders every route in real Chromium (its CSP lets it run). */
import { mkdtemp, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import t from 'tap'
import { buildTestApp } from '../helper.ts'

t.test('the Swagger UI at /docs renders the documented routes', async (t) => {
  const app = await buildTestApp(t)
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.server.closeAllConnections())
  const dir = await mkdtemp(join(tmpdir(), 'gatehouse-chromium-docs-'))
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  t.teardown(async () => { await context.close(); await rm(dir, { recursive: true, force: true }) })
  const page = await context.newPage()
  const blockedScripts: string[] = []
  page.on('console', (m) => { if (m.type() === 'error' && /script-src/.test(m.text())) blockedScripts.push(m.text()) })
  await page.goto(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}/docs`)
  await page.waitForSelector('.opblock', { timeout: 20_000 })
  // An operation with two tags is shown twice; compare the distinct paths.
  const shown = new Set((await page.locator('.opblock-summary-path').allTextContents()).map((p) => p.replace(/\u200b/g, '').trim()))
  const doc = (await app.inject({ url: '/docs/json' })).json() as { paths: Record<string, unknown> }
  t.same([...shown].sort(), Object.keys(doc.paths).sort(), 'every documented path is shown')
  t.ok(shown.has('/api/auth/login/mfa'), 'login/mfa is listed')
  t.same(blockedScripts, [], 'no script blocked by the CSP')
})
