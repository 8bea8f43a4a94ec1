/**
 * A real SMTP server on loopback (the smtp-server package) for tests that read the mail the
 * service sends.
 */
import type { AddressInfo } from 'node:net'
import { SMTPServer, type SMTPServerSession } from 'smtp-server'
import type { Test } from './helper.ts'

export interface Received {
  raw: string
  mailFrom: string
  rcptTo: string[]
  headers: Map<string, string>
  body: string
}

/** Splits a raw RFC 5322 message into unfolded headers (lower-cased names) and its body. */
export function parseMessage (raw: string): { headers: Map<string, string>, body: string } {
  const split = raw.indexOf('\r\n\r\n')
  const head = split === -1 ? raw : raw.slice(0, split)
  const body = split === -1 ? '' : raw.slice(split + 4)
  const headers = new Map<string, string>()
  for (const line of head.replace(/\r\n[ \t]+/g, ' ').split('\r\n')) {
    const colon = line.indexOf(':')
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim())
  }
  return { headers, body: body.replace(/\r\n/g, '\n').replace(/\n+$/, '') }
}

export interface SmtpOptions {
  /** Listen on this port (a restarted server); 0 picks a free one. */
  port?: number
  /** Reject RCPT TO with this message, e.g. to make every attempt fail. */
  reject?: (attempt: number) => string | undefined
  /** The reply code of those rejections: 550 (permanent, the default) or a 4xx (try again later). */
  rejectCode?: number
  /** Holds the reply to DATA until `release()` is called (a slow server). */
  hold?: boolean
}

/** A real SMTP server on 127.0.0.1 that records each message it accepts; closed at teardown. */
export async function startSmtp (test: Test, opts: SmtpOptions = {}) {
  const messages: Received[] = []
  let rcptAttempts = 0
  let releaseHeld: () => void = () => {}
  const held = new Promise<void>((resolve) => { releaseHeld = resolve })
  let dataArrived: () => void = () => {}
  const arrived = new Promise<void>((resolve) => { dataArrived = resolve })
  const server = new SMTPServer({
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    closeTimeout: 1000,
    onRcptTo (_address, _session, callback) {
      const message = opts.reject?.(++rcptAttempts)
      if (message === undefined) return callback()
      const err = Object.assign(new Error(message), { responseCode: opts.rejectCode ?? 550 })
      callback(err)
    },
    onData (stream, session: SMTPServerSession, callback) {
      const chunks: Buffer[] = []
      stream.on('data', (chunk: Buffer) => chunks.push(chunk))
      stream.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8')
        const finish = () => {
          messages.push({
            raw,
            mailFrom: session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address,
            rcptTo: session.envelope.rcptTo.map((a) => a.address),
            ...parseMessage(raw)
          })
          callback()
        }
        dataArrived()
        if (opts.hold === true) held.then(finish, finish)
        else finish()
      })
    }
  })
  server.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject)
    server.listen(opts.port ?? 0, '127.0.0.1', () => {
      server.server.off('error', reject)
      resolve()
    })
  })
  const port = (server.server.address() as AddressInfo).port
  let closing: Promise<void> | undefined
  const close = () => {
    releaseHeld()
    closing ??= new Promise<void>((resolve) => server.close(() => resolve()))
    return closing
  }
  test.teardown(close)
  return { port, messages, close, release: releaseHeld, arrived }
}

