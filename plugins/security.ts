import { IncomingMessage, ServerResponse } from 'node:http'
import { createRequire } from 'node:module'
import { Socket } from 'node:net'
import cors from '@fastify/cors'
import type { FastifyHelmetOptions } from '@fastify/helmet'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

/** Helmet's options for every response of the API (JSON only). */
export const HELMET_OPTIONS = {
  // The API answers JSON only; the Swagger UI page sets its own CSP (plugins/swagger.ts).
  contentSecurityPolicy: { directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
  crossOriginResourcePolicy: { policy: 'same-site' }
} satisfies FastifyHelmetOptions

type HelmetMiddleware = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void

/**
 * The headers helmet sets with HELMET_OPTIONS, as a record, for the responses written outside
 * Fastify's hooks (src/app.ts: frameworkErrors, clientErrorHandler). Computed by running the very
 * helmet that @fastify/helmet runs (its own dependency, resolved from there) on a blank response,
 * so the two can never disagree. Static: no CSP nonces are used.
 */
function helmetHeaders (options: FastifyHelmetOptions): Readonly<Record<string, string>> {
  const fromFastifyHelmet = createRequire(createRequire(import.meta.url).resolve('@fastify/helmet'))
  const middleware = (fromFastifyHelmet('helmet') as (o: FastifyHelmetOptions) => HelmetMiddleware)(options)
  const res = new ServerResponse(new IncomingMessage(new Socket()))
  middleware(res.req, res, (err) => { if (err !== undefined && err !== null) throw err })
  const headers = Object.entries(res.getHeaders()).map(([name, value]) => [name, String(value)] as const)
  if (headers.length === 0) throw new Error('helmet set no headers')
  return Object.freeze(Object.fromEntries(headers))
}

/** Every security header of an API response, lower-case names: one source of truth. */
export const SECURITY_HEADERS = helmetHeaders(HELMET_OPTIONS)

const HEADER_ENTRIES = Object.entries(SECURITY_HEADERS)

/**
 * Security headers and CORS. The headers are helmet's with HELMET_OPTIONS, computed once at
 * start-up (SECURITY_HEADERS): @fastify/helmet ran helmet's middleware chain on every request,
 * parsing the CSP directives again each time, a tenth of the CPU of an authenticated read. The
 * same hook sets `x-request-id`. Only origins listed in CORS_ORIGINS get CORS headers, and they
 * get them with credentials, so a browser app there can send the refresh cookie.
 * @see https://github.com/fastify/fastify-cors
 */
async function security (fastify: FastifyInstance) {
  fastify.addHook('onRequest', (request, reply, done) => {
    for (const [name, value] of HEADER_ENTRIES) reply.header(name, value)
    reply.header('x-request-id', request.id)
    done()
  })
  const allowed = new Set(fastify.config.CORS_ORIGINS)
  await fastify.register(cors, {
    origin: (origin, cb) => cb(null, origin !== undefined && allowed.has(origin)),
    credentials: true,
    methods: ['GET', 'POST', 'PATCH', 'DELETE'],
    allowedHeaders: ['Content-Type', 'Authorization', 'X-Request-Id'],
    exposedHeaders: ['Retry-After', 'X-Request-Id'],
    maxAge: 600
  })
}

export default fp(security, { name: 'security', fastify: '5.x' })
