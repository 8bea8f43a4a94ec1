/**
 * @gatehouse/client: the browser half of Gatehouse's cookie design.
 *
 * - The access token lives in this module's memory only (never localStorage or a readable
 *   cookie). On page load it is obtained from the httpOnly `refresh_token` cookie (or from
 *   another tab that holds a fresh one), and it is refreshed a little before it expires.
 * - One refresh for all tabs of an origin: a Web Lock serialises refreshes, and a
 *   BroadcastChannel hands the new access token to every other tab, so N tabs cost one
 *   rotation. A tab that waited for the lock, or that wakes with an expired token, first takes
 *   the token another tab just obtained instead of rotating again.
 * - Logging out in one tab logs out every tab; `onChange` tells the app.
 *
 * No runtime dependencies (@simplewebauthn/browser, for the passkey ceremonies, is bundled into
 * the build). Browsers without Web Locks or BroadcastChannel still work, one tab at
 * a time (each tab then refreshes on its own, which the server's idempotent refresh tolerates).
 */

/** The user object of the HTTP contract. */
export interface User {
  id: string
  email: string
  emailVerified: boolean
  role: 'user' | 'admin'
  isActive: boolean
  mfaEnabled: boolean
  passwordMustChange: boolean
  createdAt: string
  lastLoginAt: string | null
}

import { startAuthentication, startRegistration } from '@simplewebauthn/browser'

/** A passkey of the signed-in user. */
export interface Passkey {
  id: string
  name: string
  createdAt: string
  lastUsedAt: string | null
  backedUp: boolean
}

/** What the app is told through `onChange`. */
export type AuthState =
  | { status: 'loading', user: null }
  | { status: 'signed-in', user: User }
  | { status: 'signed-out', user: null }
  | { status: 'mfa-required', user: null }

/** The contract's error codes, plus `NETWORK_ERROR` (no answer) and the client's own. */
export type ErrorCode =
  | 'VALIDATION_ERROR' | 'PASSWORD_TOO_WEAK' | 'PASSWORD_BREACHED' | 'RESET_TOKEN_INVALID' | 'VERIFY_TOKEN_INVALID'
  | 'PASSKEY_REGISTRATION_FAILED' | 'AUTH_REQUIRED' | 'TOKEN_INVALID' | 'TOKEN_EXPIRED' | 'SESSION_REVOKED'
  | 'AUTH_INVALID_CREDENTIALS' | 'REFRESH_TOKEN_INVALID' | 'REFRESH_TOKEN_REUSED' | 'MFA_INVALID_CODE' | 'MFA_TOKEN_INVALID'
  | 'PASSKEY_INVALID' | 'FORBIDDEN' | 'ADMIN_REQUIRED' | 'ACCOUNT_DISABLED' | 'PASSWORD_CHANGE_REQUIRED' | 'CSRF_REJECTED'
  | 'EMAIL_NOT_VERIFIED' | 'NOT_FOUND' | 'EMAIL_TAKEN' | 'MFA_ALREADY_ENABLED' | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE' | 'RATE_LIMITED' | 'SERVICE_UNAVAILABLE'
  /** The request got no answer (offline, DNS, CORS refused, aborted). `status` is 0. */
  | 'NETWORK_ERROR'
  /** `loginMfa` without a pending MFA login in this tab. */
  | 'MFA_NOT_PENDING'
  /** `client.fetch` to an origin that is not in `apiOrigins` (the token is not sent there). */
  | 'ORIGIN_NOT_ALLOWED'
  /** An answer that is not the contract's shape (a proxy's error page, for example). */
  | 'UNEXPECTED_RESPONSE'
  /**
   * The browser's WebAuthn ceremony did not complete: cancelled, timed out, an authenticator
   * already registered, no passkey for this site. `cause` is the browser's error.
   */
  | 'PASSKEY_CEREMONY_FAILED'

/** Every failure of the client: the HTTP status (0 without an answer) and the contract's `code`. */
export class GatehouseError extends Error {
  override readonly name = 'GatehouseError'
  readonly status: number
  readonly code: ErrorCode
  /** Seconds from `Retry-After` on a 429. */
  readonly retryAfter: number | undefined

  constructor (status: number, code: ErrorCode, message: string, opts: { retryAfter?: number, cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.status = status
    this.code = code
    this.retryAfter = opts.retryAfter
  }
}

export interface GatehouseClientOptions {
  /** Where Gatehouse answers, e.g. `https://auth.example.com` (no path, or the path it is mounted under). */
  baseUrl: string
  /**
   * Origins `client.fetch` sends the access token to. Default: Gatehouse's origin and the page's
   * own. Add your API services' origins here.
   */
  apiOrigins?: string[]
  /** Refresh this many seconds before the access token expires (default 60; at most a quarter of its lifetime). */
  refreshMarginSeconds?: number
  /**
   * How long a tab waits at most for the other open tabs to answer before it rotates itself
   * (default 1000 ms). It waits only while a tab that is open has not answered: a frozen one.
   */
  peerWaitMs?: number
  /** Gives up on a request to Gatehouse after this long (default 15 000 ms): `NETWORK_ERROR`. */
  requestTimeoutMs?: number
  /** The `fetch` to use (default the global one). */
  fetch?: typeof fetch
}

export type SignupResult = { user: User, verificationRequired: false } | { user: User, verificationRequired: true }
export type LoginResult = { mfaRequired: false, user: User } | { mfaRequired: true }
export type MfaCode = string | { code: string } | { backupCode: string }

export interface GatehouseClient {
  /** Creates the account; signed in unless the service requires a verified email first. */
  signup (email: string, password: string): Promise<SignupResult>
  /** Signs in, or answers `{ mfaRequired: true }`: then call `loginMfa` with a code. */
  login (email: string, password: string): Promise<LoginResult>
  /** Completes a login that needs a second factor: a TOTP code, or `{ backupCode }`. */
  loginMfa (code: MfaCode): Promise<User>
  /** Consumes the token of a verification link (`/verify-email?token=…`); signs nobody in. */
  verifyEmail (token: string): Promise<void>
  /** Asks for a new verification link; always resolves (the service answers 202 whatever the email). */
  resendVerification (email: string): Promise<void>
  /** Creates a passkey on this device for the signed-in user and registers it. */
  registerPasskey (name?: string): Promise<Passkey>
  /** Signs in with a passkey (the browser offers the ones it has for this site); no password, no TOTP step. */
  loginWithPasskey (): Promise<User>
  /** Ends this session on the server and signs out every tab. */
  logout (): Promise<void>
  /** Ends every session of the user (all devices); returns how many were revoked. */
  logoutAll (): Promise<number>
  /** The signed-in user, fresh from `GET /api/auth/me`, or null when signed out. */
  getUser (): Promise<User | null>
  /** A valid access token (refreshed when it is about to expire), or null when signed out. */
  getAccessToken (): Promise<string | null>
  /**
   * `fetch` with `Authorization: Bearer …`; on 401 `TOKEN_EXPIRED` it refreshes once and retries.
   * HTTP errors come back as responses, as with `fetch`; no answer at all is a GatehouseError
   * `NETWORK_ERROR`.
   */
  fetch (input: RequestInfo | URL, init?: RequestInit): Promise<Response>
  /** Calls `listener` on every change of state (and once now); returns the unsubscribe function. */
  onChange (listener: (state: AuthState) => void): () => void
  /** The current state, without waiting. */
  readonly state: AuthState
  /** Resolves once the page-load check (cookie or another tab) has settled. */
  readonly ready: Promise<AuthState>
  /** Stops timers and listeners (tests, hot reload). */
  close (): void
}

interface Session { accessToken: string, expiresAt: number, lifetimeMs: number, user: User }

type Message =
  | { type: 'ask', id: string }
  | { type: 'here', re: string }
  | { type: 'token', re?: string, accessToken: string, expiresAt: number, lifetimeMs: number, user: User }
  | { type: 'signed-out' }
  | { type: 'user', user: User }

/**
 * When a refresh got no answer, the next try: the first within 1–2 s, well inside the server's
 * grace window (default 10 s), so a rotation whose answer was lost is replayed, not taken for
 * reuse; then backing off to a minute, with jitter so tabs and devices do not come back at once.
 */
const retryDelayMs = (attempt: number, retryAfter?: number) =>
  retryAfter !== undefined ? retryAfter * 1000 : Math.min(60_000, 1000 * 5 ** Math.min(attempt, 3)) * (1 + Math.random())

export function createGatehouseClient (options: GatehouseClientOptions): GatehouseClient {
  const base = options.baseUrl.replace(/\/+$/, '')
  const baseOrigin = new URL(base).origin
  const pageOrigin = typeof location === 'undefined' ? undefined : location.origin
  const apiOrigins = new Set([baseOrigin, ...(pageOrigin === undefined ? [] : [pageOrigin]), ...(options.apiOrigins ?? []).map((o) => new URL(o).origin)])
  const marginSeconds = options.refreshMarginSeconds ?? 60
  const peerWaitMs = options.peerWaitMs ?? 1000
  const requestTimeoutMs = options.requestTimeoutMs ?? 15_000
  const doFetch: typeof fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init))
  const name = `gatehouse:${base}`

  let session: Session | null = null
  let state: AuthState = { status: 'loading', user: null }
  let mfaToken: string | null = null
  /**
   * Moves on every sign-in and sign-out, here or in another tab: a refresh begun before one
   * neither signs back in nor replaces the new session.
   */
  let generation = 0
  /** The page-load check got no answer: whether there is a session is still unknown. */
  let unsettled = false
  let failedAttempts = 0
  let closed = false
  let renewing: Promise<Session | null> | null = null
  let refreshTimer: ReturnType<typeof setTimeout> | undefined
  const listeners = new Set<(s: AuthState) => void>()
  const pendingAsks = new Map<string, (s: Session | null) => void>()

  // -------------------------------------------------------------------------------------------
  // State

  const marginMs = (s: Session) => Math.min(marginSeconds * 1000, s.lifetimeMs / 4)
  const isFresh = (s: Session | null): s is Session => s !== null && s.expiresAt - Date.now() > marginMs(s)

  const tell = (listener: (s: AuthState) => void) => {
    try { listener(state) } catch (err) { queueMicrotask(() => { throw err }) }
  }

  function setState (next: AuthState) {
    if (next.status === state.status && JSON.stringify(next.user) === JSON.stringify(state.user)) return
    state = next
    for (const listener of [...listeners]) tell(listener)
  }

  function schedule () {
    clearTimeout(refreshTimer)
    if (session === null || closed) return
    const s = session
    refreshTimer = setTimeout(() => {
      renew(s).catch(() => { /* kept signed in; retried on 'online' and by the next call */ })
    }, Math.max(0, s.expiresAt - marginMs(s) - Date.now()))
  }

  /** Takes a session (ours or another tab's) if it is newer than the one held. */
  function adopt (s: Session, announce: boolean) {
    if (session !== null && session.expiresAt >= s.expiresAt) return
    if (session === null || session.user.id !== s.user.id) generation++
    session = s
    mfaToken = null
    unsettled = false
    failedAttempts = 0
    if (announce) post({ type: 'token', ...s })
    setState({ status: 'signed-in', user: s.user })
    schedule()
  }

  /** No session any more. Announced to the other tabs only when this tab was signed in. */
  function signedOut (announce: boolean) {
    const wasSignedIn = session !== null
    generation++
    session = null
    unsettled = false
    clearTimeout(refreshTimer)
    if (announce && wasSignedIn) post({ type: 'signed-out' })
    // Another tab's logout does not cancel the MFA step this tab is in the middle of.
    if (state.status !== 'mfa-required') setState({ status: 'signed-out', user: null })
  }

  function sessionFrom (body: { accessToken?: unknown, expiresIn?: unknown, user?: unknown }, previous: User | null): Session {
    if (typeof body.accessToken !== 'string' || typeof body.expiresIn !== 'number') {
      throw new GatehouseError(200, 'UNEXPECTED_RESPONSE', 'The token response has no accessToken or expiresIn')
    }
    const user = (body.user as User | undefined) ?? previous
    if (user === null) throw new GatehouseError(200, 'UNEXPECTED_RESPONSE', 'The token response has no user')
    const lifetimeMs = body.expiresIn * 1000
    return { accessToken: body.accessToken, expiresAt: Date.now() + lifetimeMs, lifetimeMs, user }
  }

  // -------------------------------------------------------------------------------------------
  // Other tabs

  const channel = typeof BroadcastChannel === 'undefined' ? null : new BroadcastChannel(name)
  const post = (m: Message) => { if (!closed) channel?.postMessage(m) }

  channel?.addEventListener('message', (event: MessageEvent<Message>) => {
    const m = event.data
    if (m.type === 'ask') {
      if (isFresh(session)) post({ type: 'token', re: m.id, ...session })
      else post({ type: 'here', re: m.id })
    } else if (m.type === 'here') {
      pendingAsks.get(m.re)?.(null)
    } else if (m.type === 'token') {
      const s: Session = { accessToken: m.accessToken, expiresAt: m.expiresAt, lifetimeMs: m.lifetimeMs, user: m.user }
      if (m.re !== undefined) pendingAsks.get(m.re)?.(s)
      adopt(s, false)
    } else if (m.type === 'signed-out') {
      if (session !== null) signedOut(false)
    } else if (m.type === 'user') {
      if (session !== null && session.user.id === m.user.id) {
        session = { ...session, user: m.user }
        if (state.status === 'signed-in') setState({ status: 'signed-in', user: m.user })
      }
    }
  })

  /**
   * A fresh session from another open tab, or null once every open tab has answered that it has
   * none (at once when this tab is alone; after `peerWaitMs` when one does not answer).
   */
  async function askPeers (): Promise<Session | null> {
    if (channel === null) return null
    const open = await openTabs()
    if (open === 0) return null
    const id = Math.random().toString(36).slice(2) + Date.now().toString(36)
    return new Promise((resolve) => {
      let waiting = open ?? Number.POSITIVE_INFINITY
      const finish = (s: Session | null) => {
        clearTimeout(timer)
        pendingAsks.delete(id)
        resolve(s)
      }
      const timer = setTimeout(() => finish(null), peerWaitMs)
      pendingAsks.set(id, (s) => {
        if (s !== null) finish(s)
        else if (--waiting <= 0) finish(null)
      })
      post({ type: 'ask', id })
    })
  }

  // -------------------------------------------------------------------------------------------
  // One refresh at a time, across tabs

  const locks = typeof navigator !== 'undefined' && 'locks' in navigator ? navigator.locks : null
  let localQueue: Promise<unknown> = Promise.resolve()

  // Each tab holds a lock of its own while it lives, so a tab can count the others
  // (navigator.locks.query) and knows whom to wait for.
  const tabPrefix = `${name}#tab:`
  const tabLock = tabPrefix + Math.random().toString(36).slice(2)
  let releaseTabLock = () => {}
  let tabLockRequest: AbortController | null = null
  const holdTabLock = () => {
    if (locks === null || closed) return
    tabLockRequest = new AbortController() // close() withdraws a request not yet granted
    locks.request(tabLock, { signal: tabLockRequest.signal }, () => closed
      ? undefined
      : new Promise<void>((resolve) => { releaseTabLock = resolve })).catch(() => undefined)
  }
  holdTabLock()

  /** How many other tabs of this origin run a client for this service (undefined: cannot tell). */
  async function openTabs (): Promise<number | undefined> {
    if (locks === null) return undefined
    try {
      const { held = [] } = await locks.query()
      return held.filter((l) => l.name?.startsWith(tabPrefix) === true && l.name !== tabLock).length
    } catch {
      return undefined
    }
  }

  /** Runs `work` while holding the origin-wide lock (a per-tab queue without Web Locks). */
  function exclusive<T> (work: () => Promise<T>): Promise<T> {
    if (locks !== null) {
      // A holder that hangs (a request stuck past its timeout) does not freeze every tab: after
      // a while, go ahead without the lock (the server's grace window absorbs a rare race).
      return (locks.request(name, { signal: AbortSignal.timeout(requestTimeoutMs * 2) }, work) as Promise<T>).catch((err: unknown) => {
        if (err instanceof DOMException && (err.name === 'TimeoutError' || err.name === 'AbortError')) return work()
        throw err
      })
    }
    const run = localQueue.then(work, work)
    localQueue = run.catch(() => undefined)
    return run
  }

  /**
   * A session newer than `stale` (the one that is about to expire or was refused), or null when
   * signed out. One call per tab at a time; across tabs, the lock makes the others wait and then
   * take the token the first one obtained.
   */
  function renew (stale: Session | null): Promise<Session | null> {
    // A sign-in or sign-out from now on (here, or another tab's that we wait behind) makes this
    // refresh moot: its result is not taken.
    const gen = generation
    renewing ??= exclusive(async () => {
      if (session !== stale && isFresh(session)) return session // another tab refreshed meanwhile
      // Its message may still be on the way: ask the others before rotating.
      const peer = await askPeers()
      if (peer !== null && peer.expiresAt > (stale?.expiresAt ?? 0)) {
        adopt(peer, false)
        return session
      }
      if (gen !== generation) return session // signed in or out (here or in another tab) while waiting
      let body: Record<string, unknown>
      try {
        body = await call('/api/auth/refresh', { method: 'POST' })
      } catch (err) {
        if (err instanceof GatehouseError && err.status === 401) {
          if (gen === generation) signedOut(true)
          return gen === generation ? null : session
        }
        throw err
      }
      if (gen !== generation) return session // a login or logout won the race: its session stands
      adopt(sessionFrom(body, stale?.user ?? session?.user ?? null), true)
      return session
    }).catch((err: unknown) => {
      // No answer, a 5xx or a 429: keep the session (the cookie may still work) and try again.
      const transient = err instanceof GatehouseError && (err.status === 0 || err.status === 429 || err.status >= 500)
      if (transient && !closed) {
        clearTimeout(refreshTimer)
        const delay = retryDelayMs(failedAttempts++, err.retryAfter)
        refreshTimer = setTimeout(() => { renew(session).catch(() => undefined) }, delay)
      }
      throw err
    }).finally(() => { renewing = null })
    return renewing
  }

  // -------------------------------------------------------------------------------------------
  // HTTP

  async function call (path: string, init: { method?: string, body?: unknown, token?: string | null } = {}): Promise<Record<string, unknown>> {
    const headers: Record<string, string> = {}
    if (init.body !== undefined) headers['content-type'] = 'application/json'
    if (init.token != null) headers['authorization'] = `Bearer ${init.token}`
    let res: Response
    try {
      res = await doFetch(base + path, {
        method: init.method ?? 'GET',
        credentials: 'include',
        headers,
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
        signal: AbortSignal.timeout(requestTimeoutMs)
      })
    } catch (err) {
      throw new GatehouseError(0, 'NETWORK_ERROR', `No answer from ${base}`, { cause: err })
    }
    const text = await res.text().catch(() => '')
    let body: Record<string, unknown> = {}
    try { body = text === '' ? {} : JSON.parse(text) } catch { /* not JSON: handled below */ }
    if (res.ok) return body
    throw errorOf(res, body)
  }

  function errorOf (res: Response, body: Record<string, unknown>): GatehouseError {
    const retryAfter = Number(res.headers.get('retry-after'))
    const code = typeof body['code'] === 'string' ? body['code'] as ErrorCode : 'UNEXPECTED_RESPONSE'
    const message = typeof body['message'] === 'string' ? body['message'] : `HTTP ${res.status}`
    return new GatehouseError(res.status, code, message, Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfter } : {})
  }

  async function codeOf (res: Response): Promise<string | undefined> {
    try {
      const body = await res.clone().json() as { code?: unknown }
      return typeof body.code === 'string' ? body.code : undefined
    } catch {
      return undefined
    }
  }

  async function tokenResponse (body: Record<string, unknown>): Promise<User> {
    const s = sessionFrom(body, null)
    session = null // a new login replaces whatever was held, even a longer-lived token
    generation++
    adopt(s, true)
    return s.user
  }

  /**
   * A request that sets the refresh cookie (signup, the logins), under the same lock as the
   * refreshes: a refresh in flight in another tab cannot overwrite the new cookie.
   */
  const signIn = (path: string, body: unknown) => exclusive(() => call(path, { method: 'POST', body }))

  // -------------------------------------------------------------------------------------------
  // Page load, waking up, going online

  async function start (): Promise<AuthState> {
    if (state.status === 'loading') {
      try { await renew(null) } catch { unsettled = true /* offline or 5xx: signed out until it answers */ }
    }
    if (state.status === 'loading') setState({ status: 'signed-out', user: null })
    return state
  }

  const ready = start()

  /** After sleep, a hidden period or an outage: refresh now if the token is (nearly) expired. */
  const wake = () => {
    if (closed) return
    if (session !== null && !isFresh(session)) renew(session).catch(() => undefined)
    else if (session === null && unsettled) renew(null).then(() => { unsettled = false }, () => undefined)
  }
  const onVisible = () => { if (document.visibilityState === 'visible') wake() }
  // A held lock keeps a page out of the back/forward cache: let go while the page is hidden in it.
  const onPageHide = () => releaseTabLock()
  const onPageShow = (event: PageTransitionEvent) => {
    if (event.persisted) holdTabLock()
    wake()
  }
  /** The page events the client listens to (added now, removed by close()). */
  const pageEvents: Array<[EventTarget, string, (event: never) => void]> = typeof window === 'undefined'
    ? []
    : [[window, 'online', wake], [window, 'pagehide', onPageHide], [window, 'pageshow', onPageShow], [window, 'focus', wake], [document, 'visibilitychange', onVisible]]
  for (const [target, type, handler] of pageEvents) target.addEventListener(type, handler as EventListener)

  // -------------------------------------------------------------------------------------------
  // The API

  async function getAccessToken (): Promise<string | null> {
    await ready
    if (isFresh(session)) return session.accessToken
    if (session === null) return null
    return (await renew(session))?.accessToken ?? null
  }

  async function authFetch (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> {
    // One Request, resolved as fetch resolves it (against the document's base URL, <base href>
    // included): the origin checked is the origin the token goes to.
    const request = new Request(input, init)
    const origin = new URL(request.url).origin
    if (!apiOrigins.has(origin)) {
      throw new GatehouseError(0, 'ORIGIN_NOT_ALLOWED', `${origin} is not in apiOrigins: the access token is not sent there`)
    }
    // The caller's own Authorization header is sent as it is, and its 401 is the caller's.
    const own = request.headers.has('authorization')
    const send = async (token: string | null) => {
      const headers = new Headers(request.headers)
      if (token !== null && !own) headers.set('authorization', `Bearer ${token}`)
      try {
        return await doFetch(new Request(request.clone(), { headers }))
      } catch (err) {
        throw new GatehouseError(0, 'NETWORK_ERROR', `No answer from ${origin}`, { cause: err })
      }
    }
    await ready
    const used = session
    const token = own ? null : await getAccessToken()
    const res = await send(token)
    if (res.status !== 401 || token === null) return res
    const code = await codeOf(res)
    if (code === 'TOKEN_EXPIRED') {
      // The server says the token is expired although it looked fresh here (a skewed clock, a
      // suspended tab): refresh once, then retry once.
      const next = await renew(session !== null && session.accessToken === token ? session : used)
      return next === null ? res : send(next.accessToken)
    }
    // Only Gatehouse itself can say that the session has ended.
    if (code === 'SESSION_REVOKED' && origin === baseOrigin && session?.accessToken === token) signedOut(true)
    return res
  }

  const json = async (res: Response) => await res.json().catch(() => ({})) as Record<string, unknown>

  /** POST a JSON body to Gatehouse with the access token; the body of a 2xx, else a GatehouseError. */
  async function authedPost (path: string, body: unknown): Promise<Record<string, unknown>> {
    const res = await authFetch(base + path, { method: 'POST', credentials: 'include', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const data = await json(res)
    if (!res.ok) throw errorOf(res, data)
    return data
  }

  /** Runs a browser WebAuthn ceremony; its failures become PASSKEY_CEREMONY_FAILED. */
  async function ceremony<T> (run: () => Promise<T>): Promise<T> {
    try {
      return await run()
    } catch (err) {
      throw new GatehouseError(0, 'PASSKEY_CEREMONY_FAILED', err instanceof Error ? err.message : String(err), { cause: err })
    }
  }

  return {
    get state () { return state },
    ready,

    async signup (email, password) {
      const body = await signIn('/api/auth/signup', { email, password })
      if (body['verificationRequired'] === true) return { user: body['user'] as User, verificationRequired: true }
      return { user: await tokenResponse(body), verificationRequired: false }
    },

    async login (email, password) {
      const body = await signIn('/api/auth/login', { email, password })
      if (body['mfaRequired'] === true && typeof body['mfaToken'] === 'string') {
        mfaToken = body['mfaToken']
        setState({ status: 'mfa-required', user: null })
        return { mfaRequired: true }
      }
      return { mfaRequired: false, user: await tokenResponse(body) }
    },

    async loginMfa (code) {
      if (mfaToken === null) throw new GatehouseError(0, 'MFA_NOT_PENDING', 'No MFA login is pending in this tab: call login first')
      const factor = typeof code === 'string' ? { code } : code
      try {
        return await tokenResponse(await signIn('/api/auth/login/mfa', { mfaToken, ...factor }))
      } catch (err) {
        // An exhausted or expired challenge cannot be retried: back to the password step.
        if (err instanceof GatehouseError && err.code === 'MFA_TOKEN_INVALID') {
          mfaToken = null
          setState(session === null ? { status: 'signed-out', user: null } : { status: 'signed-in', user: session.user })
        }
        throw err
      }
    },

    async verifyEmail (token) {
      await call('/api/auth/email/verify', { method: 'POST', body: { token } })
    },

    async resendVerification (email) {
      await call('/api/auth/email/verify/resend', { method: 'POST', body: { email } })
    },

    async registerPasskey (name) {
      const { challengeId, options } = await authedPost('/api/auth/passkeys/register/options', {})
      const response = await ceremony(() => startRegistration({ optionsJSON: options as Parameters<typeof startRegistration>[0]['optionsJSON'] }))
      const body = await authedPost('/api/auth/passkeys/register/verify', { challengeId, response, ...(name === undefined ? {} : { name }) })
      return body['passkey'] as Passkey
    },

    async loginWithPasskey () {
      const { challengeId, options } = await call('/api/auth/passkeys/login/options', { method: 'POST', body: {} })
      const response = await ceremony(() => startAuthentication({ optionsJSON: options as Parameters<typeof startAuthentication>[0]['optionsJSON'] }))
      return tokenResponse(await signIn('/api/auth/passkeys/login/verify', { challengeId, response }))
    },

    logout () {
      return exclusive(async () => {
        const token = session?.accessToken ?? null
        let failure: unknown
        try {
          await call('/api/auth/logout', { method: 'POST', token })
        } catch (err) {
          // Already logged out (revoked session, no cookie) is what was asked for.
          if (!(err instanceof GatehouseError && err.status === 401)) failure = err
        }
        // Every tab lets go of the token whatever the server said; if it was not reached
        // (offline, 5xx) the caller learns it from the error, and the session lives on there.
        signedOut(true)
        if (failure !== undefined) throw failure
      })
    },

    async logoutAll () {
      const res = await authFetch(`${base}/api/auth/logout-all`, { method: 'POST', credentials: 'include' })
      const body = await json(res)
      if (!res.ok) throw errorOf(res, body)
      signedOut(true)
      return typeof body['revoked'] === 'number' ? body['revoked'] : 0
    },

    async getUser () {
      await ready
      if (session === null) return null
      const res = await authFetch(`${base}/api/auth/me`)
      const body = await json(res)
      if (res.status === 401) return null
      if (!res.ok) throw errorOf(res, body)
      const user = body as unknown as User
      if (session !== null && session.user.id === user.id) {
        session = { ...session, user }
        setState({ status: 'signed-in', user })
        post({ type: 'user', user })
      }
      return user
    },

    getAccessToken,
    fetch: authFetch,

    onChange (listener) {
      listeners.add(listener)
      tell(listener)
      return () => { listeners.delete(listener) }
    },

    close () {
      closed = true
      clearTimeout(refreshTimer)
      channel?.close()
      tabLockRequest?.abort()
      releaseTabLock()
      listeners.clear()
      for (const [target, type, handler] of pageEvents) target.removeEventListener(type, handler as EventListener)
    }
  }
}
