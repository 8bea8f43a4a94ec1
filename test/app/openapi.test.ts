/**
 * The OpenAPI document at /docs/json, checked with an independent OpenAPI 3 validator, against
 * the routes the app registered, and against the reference in docs/API.md.
 */
import { readFileSync } from 'node:fs'
import { validate } from '@readme/openapi-parser'
import t from 'tap'
import { buildTestAppWithRoutes } from '../helper.ts'

interface Operation {
  tags?: string[]
  summary?: string
  security?: unknown[]
  requestBody?: unknown
  responses?: Record<string, unknown>
}

/** The documentation UI's own routes and the CORS preflight route are not part of the API. */
const isApiRoute = (r: { method: string, url: string }) => r.method !== 'OPTIONS' && !r.url.startsWith('/docs')
const toOpenApiPath = (url: string) => url.replace(/:(\w+)/g, '{$1}')

t.test('the OpenAPI document is valid, and every route is in it with tags, responses and security', async (t) => {
  const { app, routes } = await buildTestAppWithRoutes(t)
  const res = await app.inject({ url: '/docs/json' })
  // validate() takes the document (a string would be read as a file path) and changes it: a copy.
  const result = await validate(res.json() as Parameters<typeof validate>[0])
  t.same(result, { valid: true, warnings: [], specification: 'OpenAPI' }, 'an OpenAPI 3 validator accepts it')
  const doc = res.json() as {
    openapi: string
    paths: Record<string, Record<string, Operation>>
    components: { securitySchemes: Record<string, unknown> }
  }
  t.match(doc.openapi, /^3\./)
  t.same(Object.keys(doc.components.securitySchemes).sort(), ['bearerAuth', 'clientBasic', 'refreshCookie'])

  const api = routes.filter(isApiRoute)
  t.ok(api.length >= 20, `${api.length} routes`)
  for (const r of api) {
    const op = doc.paths[toOpenApiPath(r.url)]?.[r.method.toLowerCase()]
    t.ok(op, `${r.method} ${r.url} is documented`)
    if (op === undefined) continue
    t.ok((op.tags?.length ?? 0) > 0, `${r.method} ${r.url} has a tag`)
    const statuses = Object.keys(op.responses ?? {})
    t.ok(statuses.some((s) => /^2\d\d$/.test(s)), `${r.method} ${r.url} documents its success`)
    if ((op.security?.length ?? 0) > 0) t.ok(statuses.includes('401'), `${r.method} ${r.url} is secured and documents 401`)
    if (r.schema.body !== undefined) t.ok(op.requestBody, `${r.method} ${r.url} documents its body`)
  }
  const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`))
  const registered = new Set(api.map((r) => `${r.method} ${toOpenApiPath(r.url)}`))
  t.same(documented.filter((d) => !registered.has(d)), [], 'and it documents no route that does not exist')
})

t.test('docs/API.md describes exactly the routes the app registers', async (t) => {
  const { routes } = await buildTestAppWithRoutes(t)
  const reference = readFileSync(new URL('../../docs/API.md', import.meta.url), 'utf8')
  const api = routes.filter(isApiRoute).map((r) => `${r.method} ${r.url}`)
  for (const route of api) t.ok(reference.includes(`\`${route}\``), `${route} is in docs/API.md`)
  const headings = [...reference.matchAll(/^#### `([A-Z]+ \S+)`/gm)].map((m) => m[1])
  t.ok(headings.length >= 20, `${headings.length} route headings`)
  t.same(headings.filter((h) => h !== undefined && !api.includes(h)), [], 'no heading for a route that does not exist')
})
