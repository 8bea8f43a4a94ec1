import { STATUS_CODES } from 'node:http'
import type { FastifyError, FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { AppError, type ErrorCode } from '../src/errors.ts'
import type { ErrorBody } from '../src/schemas/common.ts'

/** Codes for errors that Fastify or a library raise with a statusCode but no contract code. */
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE'
}
const BY_STATUS: Record<number, ErrorCode> = {
  400: 'VALIDATION_ERROR',
  401: 'AUTH_REQUIRED',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  413: 'PAYLOAD_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  429: 'RATE_LIMITED'
}

/** Database errors that mean "unreachable", for 503 rather than 500. */
const DB_DOWN_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'CONNECTION_ENDED', 'CONNECTION_CLOSED',
  'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT', '57P01', '57P02', '57P03', '53300'
])

function isDatabaseDown (err: unknown): boolean {
  for (let e = err as { code?: unknown, message?: unknown, cause?: unknown } | undefined, depth = 0; e != null && depth < 5; e = e.cause as typeof e, depth++) {
    // SQLSTATE class 08 is "connection exception"; 3D000: the database itself is gone.
    if (typeof e.code === 'string' && (DB_DOWN_CODES.has(e.code) || /^08[0-9A-Z]{3}$/.test(e.code) || e.code === '3D000')) return true
    if (typeof e.message === 'string' && /PGlite is closed/i.test(e.message)) return true
  }
  return false
}

/** True when any string (or key) in a parsed JSON value holds U+0000. Iterative: bodies may nest deeply. */
function hasNul (root: unknown): boolean {
  const stack: unknown[] = [root]
  while (stack.length > 0) {
    const value = stack.pop()
    if (typeof value === 'string') {
      if (value.includes('\u0000')) return true
    } else if (Array.isArray(value)) {
      stack.push(...value)
    } else if (value !== null && typeof value === 'object') {
      for (const [k, v] of Object.entries(value)) {
        if (k.includes('\u0000')) return true
        stack.push(v)
      }
    }
  }
  return false
}

/** The contract's error body; `error` is the status text. */
export const errorBody = (statusCode: number, code: string, message: string): ErrorBody =>
  ({ statusCode, code, error: STATUS_CODES[statusCode] ?? 'Error', message })

/** Maps anything thrown to the contract's error body; 5xx never reveal internals. */
export function toErrorBody (err: FastifyError | AppError | Error): ErrorBody {
  if (err instanceof AppError) return errorBody(err.statusCode, err.code, err.message)
  const e = err as FastifyError
  if (e.validation !== undefined) return errorBody(400, 'VALIDATION_ERROR', e.message)
  if (e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || (e instanceof SyntaxError && e.statusCode === 400)) {
    return errorBody(400, 'VALIDATION_ERROR', 'Body is not valid JSON')
  }
  const status = e.statusCode
  if (status !== undefined && status >= 400 && status < 500) {
    const code = FASTIFY_CODES[e.code] ?? BY_STATUS[status] ?? 'VALIDATION_ERROR'
    return errorBody(status, code, e.message)
  }
  if (isDatabaseDown(err)) return errorBody(503, 'SERVICE_UNAVAILABLE', 'Service temporarily unavailable')
  return errorBody(500, 'INTERNAL_ERROR', 'Internal Server Error')
}

/**
 * One error shape for everything: validation, 404, 413, 415, 429, domain errors and crashes.
 * Also owns body parsing: JSON only (415 otherwise), and no NUL characters, which PostgreSQL
 * text cannot store.
 */
async function errors (fastify: FastifyInstance) {
  fastify.removeContentTypeParser(['text/plain'])
  const parseJson = fastify.getDefaultJsonParser('error', 'error')
  fastify.removeContentTypeParser('application/json')
  fastify.addContentTypeParser('application/json', { parseAs: 'string' }, (req, raw, done) => {
    parseJson(req, raw as string, (err, value) => {
      if (err !== null) return done(err, undefined)
      if (typeof raw === 'string' && raw.includes('\\u0000') && hasNul(value)) {
        return done(new AppError('VALIDATION_ERROR', 'body must not contain NUL characters'), undefined)
      }
      done(null, value)
    })
  })

  fastify.setErrorHandler(function handler (err, request, reply) {
    const out = toErrorBody(err as Error)
    if (out.statusCode >= 500) {
      request.log.error({ err }, 'request failed')
    } else if (out.statusCode !== 401 && out.statusCode !== 404) {
      request.log.info({ code: out.code, msg: out.message }, 'request rejected')
    }
    if (err instanceof AppError && err.retryAfter !== undefined) reply.header('retry-after', String(err.retryAfter))
    return reply.code(out.statusCode).type('application/json; charset=utf-8').send(out)
  })

  // Plugins that answer on their own (@fastify/cors: `400 Invalid Preflight Request` as text)
  // bypass the error handler: their error responses get the contract's shape here.
  fastify.addHook('onSend', async (_request, reply, payload) => {
    if (reply.statusCode < 400 || String(reply.getHeader('content-type')).startsWith('application/json')) return payload
    const status = reply.statusCode
    const text = STATUS_CODES[status] ?? 'Error'
    const out = status >= 500
      ? errorBody(status, status === 503 ? 'SERVICE_UNAVAILABLE' : 'INTERNAL_ERROR', text)
      : errorBody(status, BY_STATUS[status] ?? 'VALIDATION_ERROR', typeof payload === 'string' && payload !== '' && payload.length <= 200 ? payload : text)
    reply.type('application/json; charset=utf-8')
    return JSON.stringify(out)
  })

  fastify.setNotFoundHandler(function notFound (request, reply) {
    return reply.code(404).send(errorBody(404, 'NOT_FOUND', `Route ${request.method} ${request.url.split('?')[0]} not found`))
  })
}

export default fp(errors, { name: 'errors', fastify: '5.x' })
