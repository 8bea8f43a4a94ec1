/**
 * Generators for the fuzzing suite (fuzz.test.ts). A generated request is a plain description,
 * not the bytes: huge strings are `{ huge, times }`, the test users' ids and tokens are
 * `{ ref }`, so a counterexample prints short and exact, and replays against fresh users.
 * `materialise` turns a description into app.inject options.
 */
import fc from 'fast-check'

// ---------------------------------------------------------------------------------------------
// Descriptions
// ---------------------------------------------------------------------------------------------

/** Values of the test's users, resolved when the request is built. */
export type Ref =
  | 'actorId' | 'actorSid' | 'actorEmail' | 'actorTaskId' | 'actorToken'
  | 'victimId' | 'victimSid' | 'victimEmail' | 'victimTaskId' | 'password'

/** How an id is dressed up: as is, upper-case, `urn:uuid:…`, `{…}`, without hyphens, padded… */
export type Form = 'plain' | 'upper' | 'urn' | 'braces' | 'bare' | 'padded' | 'newline' | 'number'

/** A string: literal, a user's value, `huge` repeated `times` times, or pieces joined. */
export type Str =
  | string
  | { ref: Ref, form: Form }
  | { huge: string, times: number }
  | { concat: Str[] }

/** A JSON value written as raw text, so `__proto__` keys and duplicate keys survive. */
export type Json =
  | Str | number | boolean | null
  | { raw: string }
  | { items: Json[] }
  | { entries: Array<[Str, Json]> }

export type Body =
  | { kind: 'none' }
  | { kind: 'json', value: Json, contentType: Str | null }
  | { kind: 'text', text: Str, contentType: Str | null }
  /** `open` × depth, `inner`, the closing half × depth, optionally as the value of `field`. */
  | { kind: 'deep', depth: number, open: '[' | '{"a":' | '{"__proto__":', inner: string, field: string | null, contentType: Str | null }
  | { kind: 'longArray', length: number, item: string, field: string | null, contentType: Str | null }

/** A path parameter: text that is percent-encoded, or raw URL text put in as is. */
export type Param = { text: Str, whole?: true } | { verbatim: string }

export type Query =
  | { kind: 'none' }
  | { kind: 'pairs', pairs: Array<[Str, Str]> }
  | { kind: 'verbatim', text: string }

export type Forgery = 'alg-none' | 'sub-victim' | 'truncated' | 'doubled' | 'extra-space'

export type Auth =
  | { kind: 'none' }
  /** The actor's valid access token, with this spelling of the scheme. */
  | { kind: 'actor', scheme: string }
  /** The actor's token, re-signed with alg none, or with its payload changed. */
  | { kind: 'forged', how: Forgery }
  | { kind: 'value', value: Str }

export interface Headers {
  cookie?: Str
  /** Access-Control-Request-Method, as a CORS preflight sends it. */
  preflight?: Str
  origin?: Str
  requestId?: Str
  forwardedFor?: Str
  userAgent?: Str
}

export interface FuzzCase {
  params: Record<string, Param>
  pathTweak: 'none' | 'trailing-slash' | 'double-slash' | 'upper-case'
  query: Query
  body: Body
  auth: Auth
  headers: Headers
}

// ---------------------------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------------------------

export const SQL_STRINGS = ["' OR 1=1 --", "'; drop table users; --", '" OR ""="', '1); delete from tasks; --', "admin'--", '1 union select null, null --']
export const TRAVERSAL = ['../../../../etc/passwd', '..\\..\\windows\\win.ini', '....//....//', '/etc/passwd', '%2e%2e%2f%2e%2e%2f', './.', '..']
export const UNICODE = [
  '\ud800', '\udfff', 'a\ud800b', '\udc00\ud800', '\u202e\u202dabc', '\u200f\u200e', '\ufeff', '😀', '👨‍👩‍👧', '\u{10ffff}',
  'ﬁ', 'Ａ', 'ℌ', 'Ⅻ', '㍿', 'e\u0301', 'İ', 'ß', 'Σ', '\u2028\u2029', '\u0085', 'x\u0000y', '\u0000', '\u0000\u0000'
]
export const MISC = [
  '', ' ', '\t', '\n', '\r\n', '%', '%00', '%ZZ', '\\', '"', "'", '`', '{}', '[]', 'null', 'undefined', 'true', 'false', 'NaN',
  '0', '-1', '1e309', '0x10', '__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString', '\u0024{jndi:ldap://x/a}',
  '{{7*7}}', '<script>alert(1)</script>', 'admin', '*', '?', '#', '&', '=', ';', ','
]
export const NASTY = [...SQL_STRINGS, ...TRAVERSAL, ...UNICODE, ...MISC]

const huge = (chars: string[], lengths: fc.Arbitrary<number>): fc.Arbitrary<Str> =>
  fc.record({ huge: fc.constantFrom(...chars), times: lengths })

/** Lengths around the limits that matter: field bounds, the 16 KiB body limit, and past it. */
const LIMITS = [6, 10, 32, 43, 64, 128, 200, 254, 256, 1024, 2000, 2048, 16 * 1024]
const nearLimit = fc.oneof(
  fc.constantFrom(...LIMITS).chain((n) => fc.integer({ min: n - 1, max: n + 1 })),
  fc.integer({ min: 1, max: 20_000 })
)

export const hugeString = huge(['a', 'é', '😀', '\u0000', ' ', '\ud800', '%'], nearLimit)

export const nastyString: fc.Arbitrary<Str> = fc.oneof(
  { arbitrary: fc.constantFrom(...NASTY), weight: 5 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 30 }), weight: 2 },
  { arbitrary: fc.string({ unit: 'grapheme', maxLength: 30 }), weight: 2 },
  { arbitrary: fc.string({ maxLength: 30 }), weight: 2 },
  { arbitrary: hugeString, weight: 1 },
  { arbitrary: fc.tuple(fc.constantFrom(...NASTY), fc.constantFrom(...NASTY)).map(([a, b]) => a + b), weight: 1 }
)

/** Characters a header value may hold once it has crossed Node's HTTP parser. */
const headerChar = fc.oneof(
  { arbitrary: fc.integer({ min: 0x20, max: 0x7e }), weight: 9 },
  { arbitrary: fc.integer({ min: 0x80, max: 0xff }), weight: 1 }
).map((c) => String.fromCharCode(c))
export const headerString: fc.Arbitrary<Str> = fc.oneof(
  { arbitrary: fc.string({ unit: headerChar, maxLength: 40 }), weight: 4 },
  {
    arbitrary: fc.constantFrom(...NASTY.filter((s) => /^[\t\x20-\x7e\x80-\xff]*$/.test(s))),
    weight: 3
  },
  { arbitrary: huge(['a', '=', ';', ',', ' ', '\xff'], fc.integer({ min: 100, max: 20_000 })), weight: 1 }
)

// ---------------------------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------------------------

const FORMS: Form[] = ['plain', 'upper', 'urn', 'braces', 'bare', 'padded', 'newline', 'number']
const uuidRefs: Ref[] = ['actorId', 'actorSid', 'actorTaskId', 'victimId', 'victimSid', 'victimTaskId']

/** The refs a parameter of this name most likely wants (the actor's own first). */
function refsFor (name: string): Ref[] {
  if (/user/i.test(name)) return ['actorId', 'actorId', 'actorId', 'victimId']
  if (/task/i.test(name)) return ['actorTaskId', 'actorTaskId', 'victimTaskId']
  if (/^id$|session/i.test(name)) return ['actorSid', 'victimSid']
  return uuidRefs
}

/** Ids for a path parameter: the right one often, every wrong spelling of it sometimes. */
export function idText (name: string): fc.Arbitrary<Str> {
  const refs = refsFor(name)
  return fc.oneof(
    { arbitrary: fc.constantFrom(...refs).map((ref): Str => ({ ref, form: 'plain' })), weight: 8 },
    { arbitrary: fc.record({ ref: fc.constantFrom(...uuidRefs), form: fc.constantFrom(...FORMS) }), weight: 3 },
    { arbitrary: fc.uuid(), weight: 2 },
    { arbitrary: fc.constantFrom('00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF', 'g0000000-0000-0000-0000-000000000000', '1', '0', '-1', '1.5', '1e3', '9999999999999999999999', 'null'), weight: 2 },
    { arbitrary: nastyString, weight: 2 }
  )
}

// ---------------------------------------------------------------------------------------------
// JSON bodies from the route's schema
// ---------------------------------------------------------------------------------------------

/** The part of JSON Schema (as TypeBox writes it) the generators read. */
export interface Schema {
  type?: string | string[]
  properties?: Record<string, Schema>
  required?: string[]
  anyOf?: Schema[]
  const?: unknown
  format?: string
  pattern?: string
  minLength?: number
  maxLength?: number
  minimum?: number
  maximum?: number
  items?: Schema
}

const emailText: fc.Arbitrary<Str> = fc.oneof(
  { arbitrary: fc.constantFrom<Ref>('actorEmail', 'victimEmail').chain((ref) => fc.constantFrom<Form>('plain', 'upper', 'padded', 'newline').map((form): Str => ({ ref, form }))), weight: 3 },
  { arbitrary: fc.emailAddress(), weight: 3 },
  { arbitrary: fc.mixedCase(fc.emailAddress()).map((e) => ` ${e}\t`), weight: 1 },
  { arbitrary: fc.constantFrom('a@b', '@b.cd', 'a@', 'a@@b.cd', 'ü@ß.de', 'a@b.cd\u0000', "'; drop table users; --@x.io", '"a b"@x.io', 'a@b.cd, c@d.ef'), weight: 2 },
  { arbitrary: fc.integer({ min: 240, max: 300 }).map((n): Str => ({ concat: [{ huge: 'a', times: n }, '@example.com'] })), weight: 1 }
)

const passwordText: fc.Arbitrary<Str> = fc.oneof(
  { arbitrary: fc.constant<Str>({ ref: 'password', form: 'plain' }), weight: 4 },
  { arbitrary: fc.string({ minLength: 8, maxLength: 20 }).map((s) => `Aa1${s}`), weight: 2 },
  { arbitrary: fc.constantFrom('short', 'alllowercase1', 'ALLUPPER1', 'NoDigitsHere', 'Correct-Horse-9 ', 'Correct-Horse-\u0669'), weight: 2 },
  { arbitrary: fc.constantFrom(127, 128, 129, 1024, 1025, 5000).map((n): Str => ({ concat: ['Aa1', { huge: 'x', times: n - 3 }] })), weight: 1 }
)

const tokenText: fc.Arbitrary<Str> = fc.oneof(
  { arbitrary: fc.constant<Str>({ ref: 'actorToken', form: 'plain' }), weight: 2 },
  { arbitrary: fc.base64String({ minLength: 40, maxLength: 48 }).map((s) => s.replace(/\+/g, '-').replace(/\//g, '_').replace(/=/g, '')), weight: 2 },
  { arbitrary: fc.constantFrom('eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.', 'a.b.c', '..', 'e30.e30.e30'), weight: 1 },
  { arbitrary: nastyString, weight: 2 }
)

/** Values a field of this schema (and name) accepts, or nearly: the valid end of the spectrum. */
export function validValue (schema: Schema, name: string): fc.Arbitrary<Json> {
  if (/email/i.test(name)) return emailText
  if (/password/i.test(name)) return passwordText
  if (/token/i.test(name)) return tokenText
  if (/^backupCode$/.test(name)) return fc.stringMatching(/^[a-z2-9]{5}-[a-z2-9]{5}$/)
  if (schema.const !== undefined) return fc.constant(schema.const as Json)
  if (schema.anyOf !== undefined) return fc.oneof(...schema.anyOf.map((s) => validValue(s, name)))
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type
  switch (type) {
    case 'string': {
      const min = schema.minLength ?? 0
      const max = Math.min(schema.maxLength ?? 40, 40)
      if (schema.format === 'uuid') return fc.oneof(fc.uuid(), fc.constantFrom<Ref>(...uuidRefs).map((ref): Str => ({ ref, form: 'plain' })))
      if (schema.format === 'email') return emailText
      if (schema.format === 'date-time') return fc.date({ noInvalidDate: true }).map((d) => d.toISOString())
      const edges: fc.Arbitrary<Str>[] = schema.maxLength === undefined
        ? []
        : [fc.constantFrom(schema.maxLength, schema.maxLength + 1).map((n): Str => ({ huge: 'x', times: n }))]
      const base = schema.pattern === undefined
        ? fc.string({ unit: 'grapheme', minLength: min, maxLength: Math.max(min, max) })
        : fc.stringMatching(new RegExp(schema.pattern, 'u'), { size: 'xsmall' }).filter((s) => s.length >= min && s.length <= (schema.maxLength ?? Infinity))
      return fc.oneof({ arbitrary: base, weight: 6 }, ...edges.map((arbitrary) => ({ arbitrary, weight: 1 })))
    }
    case 'integer':
      return fc.integer({ min: schema.minimum ?? -1_000, max: schema.maximum ?? 1_000 })
    case 'number':
      return fc.double({ min: schema.minimum ?? -1e6, max: schema.maximum ?? 1e6, noNaN: true })
    case 'boolean':
      return fc.boolean()
    case 'null':
      return fc.constant(null)
    case 'array':
      return fc.array(validValue(schema.items ?? {}, name), { maxLength: 3 }).map((items): Json => ({ items }))
    case 'object':
      return objectOf(schema, false)
    default:
      return jsonValue
  }
}

/** Any small JSON value. */
export const jsonValue: fc.Arbitrary<Json> = fc.jsonValue({ maxDepth: 2 }).map(toJson)

function toJson (v: unknown): Json {
  if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v
  if (Array.isArray(v)) return { items: v.map(toJson) }
  return { entries: Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, toJson(x)]) }
}

/** Wrong types and odd numbers, for a field that wants something else. */
export const wrongType: fc.Arbitrary<Json> = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom<Json>({ raw: '1e999' }, { raw: '-0' }, { raw: '123456789012345678901234567890' }, { raw: '0.1e-400' }, { items: [] }, { entries: [] }),
  fc.array(nastyString, { maxLength: 3 }).map((items): Json => ({ items })),
  fc.array(fc.tuple(nastyString, nastyString), { maxLength: 3 }).map((entries): Json => ({ entries }))
)

/** Keys nobody asked for: prototype pollution, privilege fields, NULs, odd unicode. */
export const extraKey: fc.Arbitrary<Str> = fc.oneof(
  { arbitrary: fc.constantFrom('__proto__', 'constructor', 'prototype', 'role', 'isActive', 'isAdmin', 'userId', 'id', 'mfaEnabled', 'passwordHash', '\u0000', 'a\u0000', '', ' '), weight: 4 },
  { arbitrary: nastyString, weight: 2 }
)

const pollution: fc.Arbitrary<Json> = fc.constantFrom<Json>(
  { entries: [['role', 'admin'], ['isAdmin', true]] },
  { entries: [['prototype', { entries: [['role', 'admin']] }]] },
  { entries: [['__proto__', { entries: [['polluted', true]] }]] },
  'admin'
)

/** A field's value: mostly what it wants, often the wrong type or a nasty string. */
export function fieldValue (schema: Schema, name: string): fc.Arbitrary<Json> {
  return fc.oneof(
    { arbitrary: validValue(schema, name), weight: 8 },
    { arbitrary: wrongType, weight: 1 },
    { arbitrary: nastyString, weight: 1 }
  )
}

/** An object for this schema: each field present (or not), plus extra keys now and then. */
export function objectOf (schema: Schema, extras = true): fc.Arbitrary<Json> {
  const props = Object.entries(schema.properties ?? {})
  const required = new Set(schema.required ?? [])
  const fields = props.map(([key, s]) => fc.option(fieldValue(s, key), {
    nil: undefined,
    freq: required.has(key) ? 12 : 2
  }).map((v): Array<[Str, Json]> => (v === undefined ? [] : [[key, v]])))
  const extra = extras
    ? fc.oneof(
      { arbitrary: fc.constant<Array<[Str, Json]>>([]), weight: 8 },
      { arbitrary: fc.array(fc.tuple(extraKey, fc.oneof(pollution, wrongType, nastyString)), { minLength: 1, maxLength: 3 }), weight: 2 },
      // The same field twice: which one wins?
      ...(props.length === 0 ? [] : [{ arbitrary: fc.constantFrom(...props.map(([k]) => k)).chain((k) => fieldValue(props.find(([p]) => p === k)?.[1] ?? {}, k).map((v): Array<[Str, Json]> => [[k, v]])), weight: 1 }])
    )
    : fc.constant<Array<[Str, Json]>>([])
  return fc.tuple(fc.tuple(...fields), extra, fc.boolean()).map(([parts, more, extraFirst]): Json => {
    const own = parts.flat()
    return { entries: extraFirst ? [...more, ...own] : [...own, ...more] }
  })
}

// ---------------------------------------------------------------------------------------------
// Bodies, content types, queries, headers
// ---------------------------------------------------------------------------------------------

export const JSON_TYPE = 'application/json'
export const contentType: fc.Arbitrary<Str | null> = fc.oneof(
  { arbitrary: fc.constant<Str | null>(JSON_TYPE), weight: 12 },
  {
    arbitrary: fc.constantFrom<Str | null>(
      null, 'application/json; charset=utf-8', 'application/json; charset=utf-16', 'application/json;charset=UTF-8',
      'application/json; charset=latin1', 'APPLICATION/JSON', 'application/json ; foo=bar', 'application/json; charset="utf-8"',
      'application/vnd.api+json', 'application/json-patch+json', 'application/jsonx', 'text/json', 'text/plain',
      'text/plain; charset=utf-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=----fuzz',
      'application/xml', 'application/octet-stream', '*/*', '', ';', 'application/', 'json'
    ),
    weight: 4
  },
  { arbitrary: fc.integer({ min: 100, max: 5_000 }).map((n): Str => ({ concat: ['application/json; ', { huge: 'a=b; ', times: n }] })), weight: 1 },
  { arbitrary: fc.integer({ min: 1_000, max: 20_000 }).map((n): Str => ({ concat: ['application/json; charset=', { huge: 'u', times: n }] })), weight: 1 }
)

const BROKEN_JSON = [
  '', ' ', '{', '}', '{"a":}', '[1,]', "{'a':1}", 'NaN', 'undefined', '\ufeff{}', '{"a":1}garbage', '{"a":1}{"b":2}', '"',
  '{"a":"\u0000"}', '{"a":"\\u0000"}', '{"\\u0000":1}', '{"a":"\\ud800"}', '\u0000', 'email=a%40b.cd&password=x',
  '------fuzz\r\nContent-Disposition: form-data; name="email"\r\n\r\na@b.cd\r\n------fuzz--', '<a/>', '1e999', '-', 'true',
  'null', '[]', '{}', '0', '"a"', '{"__proto__":{"isAdmin":true}}', '{"constructor":{"prototype":{"isAdmin":true}}}',
  '{"a":1,"a":2}', '{"a":1,}', '{"a":.5}', '{"a":01}', '{"a":"\t"}', '{"a"\n:\n1}', '[' + '{}'.repeat(3) + ']'
]

export function bodyArb (schema: Schema | undefined): fc.Arbitrary<Body> {
  const fields = Object.keys(schema?.properties ?? {})
  const field = fields.length === 0 ? fc.constant(null) : fc.option(fc.constantFrom(...fields), { nil: null, freq: 2 })
  const shaped = schema?.properties === undefined ? jsonValue : objectOf(schema)
  return fc.oneof(
    { arbitrary: fc.constant<Body>({ kind: 'none' }), weight: 2 },
    { arbitrary: fc.record({ kind: fc.constant('json' as const), value: shaped, contentType }), weight: 20 },
    { arbitrary: fc.record({ kind: fc.constant('json' as const), value: fc.oneof(jsonValue, wrongType, nastyString), contentType }), weight: 2 },
    { arbitrary: fc.record({ kind: fc.constant('text' as const), text: fc.oneof(fc.constantFrom(...BROKEN_JSON), hugeString), contentType }), weight: 3 },
    {
      arbitrary: fc.record({
        kind: fc.constant('deep' as const),
        depth: fc.oneof(fc.constant(10_000), fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 3_000, max: 8_190 })),
        open: fc.constantFrom<'[' | '{"a":' | '{"__proto__":'>('[', '{"a":', '{"__proto__":'),
        inner: fc.constantFrom('1', '"\\u0000"', '"x"', '{}', '[]', 'null'),
        field,
        contentType: fc.constant<Str | null>(JSON_TYPE)
      }),
      weight: 2
    },
    {
      arbitrary: fc.record({
        kind: fc.constant('longArray' as const),
        length: fc.oneof(fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 3_000, max: 8_200 })),
        item: fc.constantFrom('1', '"a"', '{}', '[]', 'null', '"\\u0000"'),
        field,
        contentType: fc.constant<Str | null>(JSON_TYPE)
      }),
      weight: 1
    }
  )
}

/** Query strings from the route's querystring schema (or none), with extras and repeats. */
export function queryArb (schema: Schema | undefined): fc.Arbitrary<Query> {
  const props = Object.entries(schema?.properties ?? {})
  const known = props.map(([key, s]) => fc.tuple(
    fc.constant<Str>(key),
    fc.oneof(
      { arbitrary: validValue(s, key).map((v): Str => (typeof v === 'number' || typeof v === 'boolean' ? String(v) : typeof v === 'string' ? v : 'x')), weight: 5 },
      { arbitrary: fc.constantFrom('', '-1', '0', '1.5', '1e3', '1e400', '0x10', 'true', 'yes', 'null', '[]', '101', '1000001', '  7  '), weight: 3 },
      { arbitrary: nastyString, weight: 2 }
    )
  ))
  const pair = fc.oneof(
    ...(known.length === 0 ? [] : [{ arbitrary: fc.oneof(...known), weight: 6 }]),
    { arbitrary: fc.tuple(extraKey, nastyString), weight: 2 },
    { arbitrary: fc.tuple(fc.constantFrom<Str>('__proto__[role]', 'constructor[prototype][x]', 'a[]', 'a[0]', 'a.b'), nastyString), weight: 1 }
  )
  return fc.oneof(
    { arbitrary: fc.constant<Query>({ kind: 'none' }), weight: 3 },
    { arbitrary: fc.array(pair, { minLength: 1, maxLength: 6 }).map((pairs): Query => ({ kind: 'pairs', pairs })), weight: 6 },
    {
      arbitrary: fc.constantFrom('%', '%ZZ', '&&&', '===', 'a=%E0%A4%A', 'a=%ED%A0%80', '__proto__=1', 'limit=1&limit=2', '%00=%00', '?', 'a=1#frag', 'x=' + 'y'.repeat(20_000))
        .map((text): Query => ({ kind: 'verbatim', text })),
      weight: 1
    }
  )
}

/** Raw URL text for a path parameter that encodes nothing: bad escapes, traversal, separators. */
const VERBATIM_PARAMS = ['%', '%ZZ', '%00', '%ED%A0%80', '%C0%AF', '%FF', '..%2F..%2F', '%2e%2e', '..', '.', '%20', '%2F', 'a%2Fb', '%7B%7D', '%25', '%E2%80%AE', '%F0%9F%98%80', ';', 'a;b=c', '!$&\'()*+,=:@']

/** For a `*` route (CORS preflight): any path, the API's own most of the time. */
const anyPath: fc.Arbitrary<Param> = fc.oneof(
  fc.constantFrom('/api/auth/login', '/api/auth/refresh', '/api/auth/me', '/health/live', '/docs/json', '/', '/nope', '//', '/api/%ZZ', '/api/%00/tasks'),
  fc.tuple(nastyString, fc.boolean()).map(([s, raw]): Str => ({ concat: ['/api/', raw ? s : { ref: 'actorId', form: 'plain' }, '/tasks'] })).map((text): Param => ({ text, whole: true }))
).map((p): Param => (typeof p === 'string' ? { verbatim: p } : p))

export function paramArb (name: string): fc.Arbitrary<Param> {
  if (name === '*') return anyPath
  return fc.oneof(
    { arbitrary: idText(name).map((text): Param => ({ text })), weight: 9 },
    { arbitrary: fc.constantFrom(...VERBATIM_PARAMS).map((verbatim): Param => ({ verbatim })), weight: 1 }
  )
}

/** Allowed by the fuzzing app's CORS_ORIGINS. */
export const ALLOWED_ORIGIN = 'http://app.example'
const ORIGINS = [ALLOWED_ORIGIN, 'http://APP.example', 'http://app.example.evil', 'null', 'http://localhost', 'http://localhost:80', 'https://evil.example', 'http://localhost.evil.example', 'file://', 'HTTP://LOCALHOST', ' http://localhost', 'http://[::1]']

/** Refresh tokens in the right format (43 base64url characters) that no session issued. */
const refreshLike = fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'), minLength: 43, maxLength: 43 })

const someHeaders: fc.Arbitrary<Headers> = fc.record({
  cookie: fc.oneof(
    refreshLike.map((v): Str => `refresh_token=${v}`),
    fc.tuple(fc.constantFrom('refresh_token=', 'refresh_token=; refresh_token=', 'a=b; refresh_token=', 'refresh_token="', '=;refresh_token=', 'REFRESH_TOKEN='), headerString)
      .map(([prefix, v]): Str => ({ concat: [prefix, v] })),
    headerString
  ),
  origin: fc.oneof(fc.constantFrom(...ORIGINS), headerString),
  requestId: headerString,
  forwardedFor: fc.oneof(
    fc.constantFrom('1.2.3.4', '1.2.3.4, 5.6.7.8', '::1', '::ffff:1.2.3.4', '999.999.999.999', ', ,', 'unknown', '1.2.3.4:80', '[::1]:80', 'fe80::1%eth0'),
    headerString
  ),
  userAgent: headerString,
  preflight: fc.oneof(fc.constantFrom('POST', 'GET', 'DELETE', 'PUT', 'TRACE', 'post', ''), headerString)
}, { requiredKeys: [] })

export const headersArb: fc.Arbitrary<Headers> = fc.oneof(fc.constant<Headers>({}), someHeaders)

const authArb: fc.Arbitrary<Auth> = fc.oneof(
  { arbitrary: fc.constant<Auth>({ kind: 'none' }), weight: 3 },
  { arbitrary: fc.constantFrom('Bearer', 'Bearer', 'bearer', 'BEARER').map((scheme): Auth => ({ kind: 'actor', scheme })), weight: 9 },
  { arbitrary: fc.constantFrom<Forgery>('alg-none', 'sub-victim', 'truncated', 'doubled', 'extra-space').map((how): Auth => ({ kind: 'forged', how })), weight: 1 },
  {
    arbitrary: fc.oneof(
      fc.constantFrom<Str>('Bearer', 'Bearer ', 'Bearer null', 'Bearer undefined', 'Basic dXNlcjpwYXNz', 'Basic', 'Digest x', 'Token abc', ' ', 'Bearer a.b.c', 'Bearer e30.e30.'),
      headerString.map((v): Str => ({ concat: ['Bearer ', v] })),
      headerString
    ).map((value): Auth => ({ kind: 'value', value })),
    weight: 2
  }
)

/** Every request to one route: path parameters named in its URL, then the rest. */
export function caseArb (route: { url: string, schema: { body?: Schema, querystring?: Schema } }): fc.Arbitrary<FuzzCase> {
  const names = paramNames(route.url)
  return fc.record({
    params: fc.record(Object.fromEntries(names.map((n) => [n, paramArb(n)]))),
    pathTweak: fc.oneof(
      { arbitrary: fc.constant('none' as const), weight: 20 },
      { arbitrary: fc.constantFrom('trailing-slash' as const, 'double-slash' as const, 'upper-case' as const), weight: 1 }
    ),
    query: queryArb(route.schema.querystring),
    body: bodyArb(route.schema.body),
    auth: authArb,
    headers: headersArb
  })
}

/** `:name` segments of a route URL; `*` counts as a parameter named `*`. */
export function paramNames (url: string): string[] {
  return [...url.matchAll(/:(\w+)|\*/g)].map((m) => m[1] ?? '*')
}

// ---------------------------------------------------------------------------------------------
// From description to request
// ---------------------------------------------------------------------------------------------

export type Refs = Record<Ref, string>

function dress (value: string, form: Form): string {
  switch (form) {
    case 'plain': return value
    case 'upper': return value.toUpperCase()
    case 'urn': return `urn:uuid:${value}`
    case 'braces': return `{${value}}`
    case 'bare': return value.replace(/-/g, '')
    case 'padded': return ` ${value} `
    case 'newline': return `${value}\n`
    case 'number': return String(Number.parseInt(value.replace(/-/g, '').slice(0, 12), 16))
  }
}

export function text (s: Str, refs: Refs): string {
  if (typeof s === 'string') return s
  if ('ref' in s) return dress(refs[s.ref], s.form)
  if ('huge' in s) return s.huge.repeat(s.times)
  return s.concat.map((p) => text(p, refs)).join('')
}

/** JSON text; strings through JSON.stringify (lone surrogates come out as \ud800 escapes). */
export function jsonText (v: Json, refs: Refs): string {
  if (v === null || typeof v === 'number' || typeof v === 'boolean') return JSON.stringify(v)
  if (typeof v === 'string') return JSON.stringify(v)
  if ('raw' in v) return v.raw
  if ('items' in v) return `[${v.items.map((i) => jsonText(i, refs)).join(',')}]`
  if ('entries' in v) return `{${v.entries.map(([k, x]) => `${JSON.stringify(text(k, refs))}:${jsonText(x, refs)}`).join(',')}}`
  return JSON.stringify(text(v, refs))
}

/** Percent-encodes the UTF-8 bytes of everything but unreserved characters (lone surrogates become U+FFFD). */
export function encode (s: string): string {
  let out = ''
  for (const byte of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(byte)
    out += /[A-Za-z0-9\-._~]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}

/** As `encode`, but slashes stay: a whole path. */
export const encodePath = (s: string) => s.split('/').map(encode).join('/')

const CLOSE: Record<string, string> = { '[': ']', '{"a":': '}', '{"__proto__":': '}' }

export function bodyText (b: Body, refs: Refs): string | undefined {
  switch (b.kind) {
    case 'none': return undefined
    case 'json': return jsonText(b.value, refs)
    case 'text': return text(b.text, refs)
    case 'deep': {
      const nested = b.open.repeat(b.depth) + b.inner + (CLOSE[b.open] ?? '').repeat(b.depth)
      return b.field === null ? nested : `{${JSON.stringify(b.field)}:${nested}}`
    }
    case 'longArray': {
      const array = `[${new Array<string>(b.length).fill(b.item).join(',')}]`
      return b.field === null ? array : `{${JSON.stringify(b.field)}:${array}}`
    }
  }
}

/** Every string a request carries, for telling an echo of the input from a leak. */
export function inputStrings (c: FuzzCase, refs: Refs): string[] {
  const out: string[] = []
  const walk = (v: Json): void => {
    if (v === null || typeof v === 'number' || typeof v === 'boolean') return
    if (typeof v === 'string' || 'ref' in v || 'huge' in v || 'concat' in v) { out.push(text(v, refs)); return }
    if ('raw' in v) { out.push(v.raw); return }
    if ('items' in v) { v.items.forEach(walk); return }
    for (const [k, x] of v.entries) { out.push(text(k, refs)); walk(x) }
  }
  for (const p of Object.values(c.params)) out.push('verbatim' in p ? p.verbatim : text(p.text, refs))
  if (c.query.kind === 'pairs') for (const [k, v] of c.query.pairs) out.push(text(k, refs), text(v, refs))
  if (c.query.kind === 'verbatim') out.push(...c.query.text.split(/[&=]/))
  if (c.body.kind === 'json') walk(c.body.value)
  if (c.body.kind === 'text') out.push(text(c.body.text, refs))
  for (const v of Object.values(c.headers)) out.push(text(v as Str, refs))
  return out.filter((s) => s.length >= 3)
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')

/** The Authorization header for this case, if any. */
export function authorization (a: Auth, refs: Refs): string | undefined {
  switch (a.kind) {
    case 'none': return undefined
    case 'actor': return `${a.scheme} ${refs.actorToken}`
    case 'value': return text(a.value, refs)
    case 'forged': {
      const [header = '', payload = '', signature = ''] = refs.actorToken.split('.')
      const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>
      switch (a.how) {
        case 'alg-none': return `Bearer ${b64({ alg: 'none', typ: 'at+jwt' })}.${payload}.`
        case 'sub-victim': return `Bearer ${header}.${b64({ ...claims, sub: refs.victimId })}.${signature}`
        case 'truncated': return `Bearer ${refs.actorToken.slice(0, -2)}`
        case 'doubled': return `Bearer ${refs.actorToken} ${refs.actorToken}`
        case 'extra-space': return `Bearer  ${refs.actorToken}`
      }
    }
  }
}

export interface InjectRequest {
  method: string
  url: string
  headers: Record<string, string>
  payload?: string
}

/** The request for a case against a route (`method`, `url` as registered). */
export function materialise (route: { method: string, url: string }, c: FuzzCase, refs: Refs): InjectRequest {
  let path = route.url.replace(/:(\w+)|\*/g, (_m, name: string | undefined) => {
    const p = c.params[name ?? '*']
    if (p === undefined) return 'x'
    if ('verbatim' in p) return p.verbatim
    return p.whole === true ? encodePath(text(p.text, refs)) : encode(text(p.text, refs))
  })
  if (c.pathTweak === 'trailing-slash') path += '/'
  if (c.pathTweak === 'double-slash') path = path.replace('/', '//')
  if (c.pathTweak === 'upper-case') path = path.toUpperCase()
  const query = c.query.kind === 'none'
    ? ''
    : c.query.kind === 'verbatim'
      ? `?${c.query.text}`
      : `?${c.query.pairs.map(([k, v]) => `${encode(text(k, refs))}=${encode(text(v, refs))}`).join('&')}`
  const headers: Record<string, string> = {}
  const auth = authorization(c.auth, refs)
  if (auth !== undefined) headers.authorization = auth
  const h = c.headers
  if (h.cookie !== undefined) headers.cookie = text(h.cookie, refs)
  if (h.origin !== undefined) headers.origin = text(h.origin, refs)
  if (h.requestId !== undefined) headers['x-request-id'] = text(h.requestId, refs)
  if (h.forwardedFor !== undefined) headers['x-forwarded-for'] = text(h.forwardedFor, refs)
  if (h.userAgent !== undefined) headers['user-agent'] = text(h.userAgent, refs)
  if (h.preflight !== undefined) headers['access-control-request-method'] = text(h.preflight, refs)
  const payload = bodyText(c.body, refs)
  if (c.body.kind !== 'none' && c.body.contentType !== null) headers['content-type'] = text(c.body.contentType, refs)
  return { method: route.method, url: path + query, headers, ...(payload === undefined ? {} : { payload }) }
}
