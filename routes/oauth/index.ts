import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import { AppError, OAuthError } from '../../src/errors.ts'
import { errors } from '../../src/schemas/common.ts'
import type { ClientCredentials } from '../../src/services/oauth.ts'
import { requestContext } from '../context.ts'

const OAuthErrorSchema = Type.Object({
  error: Type.Union(['invalid_request', 'invalid_client', 'unsupported_grant_type', 'invalid_scope'].map((e) => Type.Literal(e))),
  error_description: Type.Optional(Type.String())
}, { description: 'RFC 6749 §5.2' })

const TokenResponseSchema = Type.Object({
  access_token: Type.String(),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer(),
  scope: Type.String({ description: 'the granted scopes, space-separated' })
})

const IntrospectionSchema = Type.Object({
  active: Type.Boolean(),
  sub: Type.Optional(Type.String()),
  client_id: Type.Optional(Type.String()),
  scope: Type.Optional(Type.String()),
  sid: Type.Optional(Type.String()),
  role: Type.Optional(Type.String({ description: "the user's role now" })),
  amr: Type.Optional(Type.Array(Type.String())),
  iss: Type.Optional(Type.String()),
  aud: Type.Optional(Type.String()),
  exp: Type.Optional(Type.Integer()),
  iat: Type.Optional(Type.Integer()),
  jti: Type.Optional(Type.String()),
  token_type: Type.Optional(Type.Literal('Bearer'))
}, { description: 'RFC 7662 §2.2' })

/** Form or JSON body fields, as strings; anything else is malformed. */
type Params = Record<string, string>

/**
 * `application/x-www-form-urlencoded` (RFC 6749 §3.2): each parameter at most once, and no NUL
 * (`%00`), which PostgreSQL text cannot store (the JSON parser refuses it too).
 */
function parseForm (body: string): Params {
  const params: Params = {}
  for (const [key, value] of new URLSearchParams(body)) {
    if (key.includes('\u0000') || value.includes('\u0000')) throw new OAuthError('invalid_request', 'Parameters must not contain NUL characters')
    if (Object.hasOwn(params, key)) throw new OAuthError('invalid_request', `Parameter ${key} is given more than once`)
    params[key] = value
  }
  return params
}

function paramsOf (body: unknown): Params {
  if (body === undefined || body === null) return {}
  if (typeof body !== 'object' || Array.isArray(body)) throw new OAuthError('invalid_request', 'The body must be a form or a JSON object')
  for (const [key, value] of Object.entries(body)) {
    if (typeof value !== 'string') throw new OAuthError('invalid_request', `Parameter ${key} must be a string`)
  }
  return body as Params
}

/** RFC 6749 §2.3.1: HTTP Basic with the form-encoded id and secret, or both in the body; never both ways. */
function credentialsOf (request: FastifyRequest, params: Params): ClientCredentials {
  const header = request.headers.authorization
  if (header !== undefined) {
    const basic = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header.trim())
    if (basic === null) throw new OAuthError('invalid_client', 'Client authentication must use HTTP Basic or the body', true)
    if (params.client_secret !== undefined) throw new OAuthError('invalid_request', 'Use one way of client authentication, not two')
    const decoded = Buffer.from(basic[1] ?? '', 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    let clientId: string
    let secret: string
    try {
      clientId = decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, ' '))
      secret = decodeURIComponent(decoded.slice(colon + 1).replace(/\+/g, ' '))
    } catch {
      throw new OAuthError('invalid_client', 'Malformed HTTP Basic credentials', true)
    }
    if (colon < 1 || secret === '' || clientId.includes('\u0000')) throw new OAuthError('invalid_client', 'Malformed HTTP Basic credentials', true)
    if (params.client_id !== undefined && params.client_id !== clientId) throw new OAuthError('invalid_request', 'client_id does not match the HTTP Basic credentials')
    return { clientId, secret, method: 'client_secret_basic' }
  }
  const { client_id: clientId, client_secret: secret } = params
  if (clientId === undefined || clientId === '' || secret === undefined || secret === '') {
    throw new OAuthError('invalid_client', 'Client authentication is required (HTTP Basic, or client_id and client_secret)')
  }
  return { clientId, secret, method: 'client_secret_post' }
}

/**
 * The OAuth 2.0 endpoints for service clients, which answer as the RFCs say rather than in the
 * contract's error shape: `POST /oauth/token` (client credentials, RFC 6749 §4.4), `POST
 * /oauth/introspect` (RFC 7662) and `GET /.well-known/oauth-authorization-server` (RFC 8414).
 * Bodies are forms (JSON too); every answer carries `Cache-Control: no-store`. A 429 (the per-IP
 * limit, or too many failed client authentications) keeps the contract's shape.
 */
const oauthRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { oauth } = fastify.services
  const { config } = fastify
  const base = (config.PUBLIC_URL ?? `http://localhost:${config.PORT}`).replace(/\/+$/, '')

  fastify.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, parseForm(body as string))
    } catch (err) {
      done(err as Error, undefined)
    }
  })

  fastify.setErrorHandler((error, _request, reply) => {
    if (error instanceof OAuthError) {
      if (error.basic) reply.header('www-authenticate', 'Basic realm="gatehouse", charset="UTF-8"')
      return reply.code(error.statusCode).header('cache-control', 'no-store').header('pragma', 'no-cache')
        .send({ error: error.error, error_description: error.description })
    }
    const status = (error as { statusCode?: number }).statusCode
    // A body that cannot be parsed (not a form or JSON, malformed JSON): invalid_request.
    const unparsable = error instanceof AppError && (error.code === 'VALIDATION_ERROR' || error.code === 'UNSUPPORTED_MEDIA_TYPE')
    if (unparsable || status === 400 || status === 415) {
      return reply.code(400).header('cache-control', 'no-store').header('pragma', 'no-cache')
        .send({ error: 'invalid_request', error_description: 'The body must be a form or a JSON object' })
    }
    throw error // the contract's shape (429, 413, 500)
  })

  const tags = ['oauth']

  fastify.post('/oauth/token', {
    schema: {
      tags, summary: 'Client credentials grant (RFC 6749 §4.4): a service access token',
      security: [{ clientBasic: [] }, {}],
      consumes: ['application/x-www-form-urlencoded', 'application/json'],
      response: { 200: TokenResponseSchema, 400: OAuthErrorSchema, 401: OAuthErrorSchema, ...errors(413, 429) }
    }
  }, async (request, reply) => {
    // The body is checked here, not by a schema, so that its errors keep the RFC's shape.
    reply.header('cache-control', 'no-store').header('pragma', 'no-cache')
    const params = paramsOf(request.body)
    const credentials = credentialsOf(request, params)
    const client = await oauth.authenticate(credentials, requestContext(request), 'token')
    if (params.grant_type === undefined) throw new OAuthError('invalid_request', 'grant_type is required')
    if (params.grant_type !== 'client_credentials') throw new OAuthError('unsupported_grant_type', 'Only client_credentials is supported')
    return oauth.issueToken(client, params.scope)
  })

  fastify.post('/oauth/introspect', {
    schema: {
      tags, summary: 'Token introspection (RFC 7662): is this token live, and what does it say',
      security: [{ clientBasic: [] }, {}],
      consumes: ['application/x-www-form-urlencoded', 'application/json'],
      response: { 200: IntrospectionSchema, 400: OAuthErrorSchema, 401: OAuthErrorSchema, ...errors(413, 429) }
    }
  }, async (request, reply) => {
    reply.header('cache-control', 'no-store').header('pragma', 'no-cache')
    const params = paramsOf(request.body)
    const credentials = credentialsOf(request, params)
    await oauth.authenticate(credentials, requestContext(request), 'introspect')
    if (params.token === undefined) throw new OAuthError('invalid_request', 'token is required')
    return oauth.introspect(params.token)
  })

  fastify.get('/.well-known/oauth-authorization-server', {
    logLevel: 'warn',
    schema: {
      tags, summary: 'Authorization server metadata (RFC 8414)',
      response: { 200: Type.Object({}, { additionalProperties: true }) }
    }
  }, async (_request, reply) => {
    reply.header('cache-control', 'public, max-age=60')
    return {
      issuer: config.JWT_ISSUER,
      token_endpoint: `${base}/oauth/token`,
      introspection_endpoint: `${base}/oauth/introspect`,
      ...(fastify.keys.jwks() === undefined ? {} : { jwks_uri: `${base}/.well-known/jwks.json` }),
      grant_types_supported: ['client_credentials'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
      introspection_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
      response_types_supported: [],
      scopes_supported: await oauth.scopesInUse()
    }
  })
}

export default oauthRoutes
