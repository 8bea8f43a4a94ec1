import { randomUUID } from 'node:crypto'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import cookie from '@fastify/cookie'
import SerializerSelector, { type Serializer, type SerializerFactory } from '@fastify/fast-json-stringify-compiler'
import { Ajv } from 'ajv'
import addFormatsModule from 'ajv-formats'
import Fastify, { type FastifyReply, type FastifyServerOptions } from 'fastify'
import authPlugin from '../plugins/auth.ts'
import dbPlugin from '../plugins/db.ts'
import errorsPlugin, { errorBody, toErrorBody } from '../plugins/errors.ts'
import jwtPlugin from '../plugins/jwt.ts'
import statePlugin from '../plugins/state.ts'
import rateLimitPlugin from '../plugins/rate-limit.ts'
import securityPlugin, { SECURITY_HEADERS } from '../plugins/security.ts'
import jobsPlugin from '../plugins/jobs.ts'
import servicesPlugin from '../plugins/services.ts'
import swaggerPlugin from '../plugins/swagger.ts'
import telemetryPlugin from '../plugins/telemetry.ts'
import routes from '../routes/index.ts'
import type { Config } from './config.ts'
import type { DbHandle } from './db/client.ts'
import type { Mailer } from './services/mailer.ts'
import { loggerOptions, requestLogger } from './logger.ts'
import { ErrorSchema } from './schemas/common.ts'
import { UserSchema } from './schemas/auth.ts'
import { TaskSchema } from './schemas/tasks.ts'
import { AuthEventSchema, ClientSchema } from './schemas/admin.ts'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    /** True from the moment shutdown starts (readiness turns 503). */
    isClosing: () => boolean
  }
}

export interface BuildAppOptions {
  config: Config
  /** Fastify logger options; defaults to pino at LOG_LEVEL with redaction. */
  logger?: FastifyServerOptions['logger']
  /** A database the caller owns (tests); otherwise the app connects and migrates from config. */
  db?: DbHandle
  /** The clock (tests inject one to move time). */
  now?: () => Date
  /** Replaces the mailer chosen from SMTP_* (tests). */
  mailer?: Mailer
}

/**
 * Fastify's own response serializers (fast-json-stringify), each compiled once per distinct
 * schema instead of once per route and status: most routes share their error responses (the
 * `Error` schema), and compiling them again for every route was a tenth of the start-up time.
 */
const sharedSerializers: SerializerFactory = (externalSchemas, options) => {
  const compile = SerializerSelector()(externalSchemas, options)
  const compiled = new Map<string, Serializer>()
  return (route) => {
    const key = JSON.stringify(route.schema)
    let serialize = compiled.get(key)
    if (serialize === undefined) {
      serialize = compile(route)
      compiled.set(key, serialize)
    }
    return serialize
  }
}

// ajv-formats is CommonJS with a default export.
const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default

/**
 * Bodies are validated strictly (a number is not a string, extra fields are refused);
 * query strings and path params are coerced, since they arrive as text.
 */
function validators () {
  const make = (coerceTypes: boolean | 'array') => {
    const ajv = new Ajv({ coerceTypes, useDefaults: true, removeAdditional: false, allErrors: false, strict: false })
    addFormats(ajv)
    return ajv
  }
  const strict = make(false)
  const coercing = make('array')
  // One compilation per distinct schema (many routes share params and query schemas).
  const compiled = new Map<string, ReturnType<Ajv['compile']>>()
  return ({ schema, httpPart }: { schema: object, httpPart?: string }) => {
    const body = httpPart === 'body'
    const key = `${body ? 'strict' : 'coercing'}:${JSON.stringify(schema)}`
    let validate = compiled.get(key)
    if (validate === undefined) {
      validate = (body ? strict : coercing).compile(schema)
      compiled.set(key, validate)
    }
    return validate
  }
}

/**
 * Validation messages name the field: `body/email must match format "email"`, and for a field
 * that is not allowed, `body must NOT have additional property 'role'`.
 */
function formatSchemaErrors (errors: Array<{ instancePath?: string, message?: string, keyword?: string, params?: Record<string, unknown> }>, dataVar: string) {
  return errors.map((e) => {
    const where = `${dataVar}${e.instancePath ?? ''}`
    if (e.keyword === 'additionalProperties') return `${where} must NOT have additional property '${String(e.params?.additionalProperty)}'`
    return `${where} ${e.message ?? 'is invalid'}`
  }).join(', ')
}

const REQUEST_ID = /^[\w.:-]{1,64}$/

/**
 * TRUST_PROXY for Fastify. A hop count n trusts the n nearest hops (the peer and n-1 proxies
 * before it, as Express does): Fastify itself refuses numbers, since a client that can reach the
 * service directly is then trusted as a proxy. See the README: a CIDR list is safer.
 */
function trustProxyOption (trust: Config['TRUST_PROXY']): boolean | string[] | ((address: string, hop: number) => boolean) {
  return typeof trust === 'number' ? (_address, hop) => hop < trust : trust
}

/** Builds the application without listening: server.ts listens, tests inject. */
export async function buildApp (opts: BuildAppOptions) {
  const { config } = opts
  const app = Fastify({
    schemaController: { compilersFactory: { buildSerializer: sharedSerializers } },
    logger: opts.logger ?? loggerOptions(config.LOG_LEVEL),
    childLoggerFactory: requestLogger,
    bodyLimit: config.BODY_LIMIT_BYTES,
    trustProxy: trustProxyOption(config.TRUST_PROXY),
    // A caller's X-Request-Id is kept when it is sane, so logs join up across services.
    requestIdHeader: false,
    schemaErrorFormatter: (errors, dataVar) => new Error(formatSchemaErrors(errors, dataVar)),
    genReqId: (req) => {
      const given = req.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
    },
    // While draining, requests still reach the routes: /health/ready answers 503 in the
    // contract's shape (Fastify's own 503 would not be), the rest finish normally.
    return503OnClosing: false,
    // Errors Fastify raises before routing (a malformed URL) bypass the error handler.
    // Its onRequest hooks (the security headers' among them) have not run: the headers come from here.
    frameworkErrors: (error, _request, reply: FastifyReply) => {
      const out = toErrorBody(error)
      reply.code(out.statusCode).headers(SECURITY_HEADERS).send(out)
    },
    // Requests Node's HTTP parser rejects never reach Fastify's error handler: answer them in
    // the contract's shape too.
    clientErrorHandler: (err: NodeJS.ErrnoException, socket) => {
      if (err.code === 'ECONNRESET' || !socket.writable) {
        socket.destroy()
        return
      }
      const out = err.code === 'HPE_HEADER_OVERFLOW'
        ? errorBody(431, 'PAYLOAD_TOO_LARGE', 'Request headers are too large')
        : errorBody(400, 'VALIDATION_ERROR', 'Malformed HTTP request')
      const body = JSON.stringify(out)
      const headers = Object.entries({
        ...SECURITY_HEADERS,
        'content-type': 'application/json; charset=utf-8',
        'content-length': String(Buffer.byteLength(body)),
        connection: 'close'
      }).map(([name, value]) => `${name}: ${value}\r\n`).join('')
      socket.end(`HTTP/1.1 ${out.statusCode} ${out.error}\r\n${headers}\r\n${body}`)
    },
    forceCloseConnections: 'idle'
  }).withTypeProvider<TypeBoxTypeProvider>()

  if (config.NODE_ENV === 'production' && (config.TRUST_PROXY === true || typeof config.TRUST_PROXY === 'number')) {
    app.log.warn('TRUST_PROXY is true or a hop count: a client that reaches the service without the proxy can choose its own IP; list the proxies\' addresses instead')
  }
  app.setValidatorCompiler(validators())
  app.decorate('config', config)
  let closing = false
  let drainTimer: NodeJS.Timeout | undefined
  app.decorate('isClosing', () => closing)
  app.addHook('preClose', async () => {
    closing = true
    // Requests in flight get SHUTDOWN_DRAIN_MS to finish. Then every connection is closed, including
    // ones a browser opened ahead of time and never used: Node does not count those as idle,
    // and they would hold the shutdown open until its request timeout.
    drainTimer = setTimeout(() => app.server.closeAllConnections(), config.SHUTDOWN_DRAIN_MS)
    drainTimer.unref()
  })
  app.addHook('onClose', async () => { clearTimeout(drainTimer) })
  app.addSchema(ErrorSchema)
  app.addSchema(UserSchema)
  app.addSchema(TaskSchema)
  app.addSchema(AuthEventSchema)
  app.addSchema(ClientSchema)

  await app.register(errorsPlugin)
  await app.register(telemetryPlugin)
  await app.register(securityPlugin)
  await app.register(swaggerPlugin)
  await app.register(dbPlugin, { handle: opts.db })
  await app.register(statePlugin)
  await app.register(rateLimitPlugin)
  await app.register(cookie)
  await app.register(jwtPlugin)
  await app.register(servicesPlugin, { now: opts.now, mailer: opts.mailer })
  await app.register(jobsPlugin)
  await app.register(authPlugin)
  await app.register(routes)
  return app
}
export type App = Awaited<ReturnType<typeof buildApp>>
