import nodemailer from 'nodemailer'

export interface Email {
  to: string
  subject: string
  text: string
}

/** Delivers one email or throws; the outbox decides about retries (see isPermanentFailure). */
export interface Mailer {
  send: (email: Email) => Promise<void>
}

export interface SmtpSettings {
  host: string
  port: number
  /** Implicit TLS (port 465). */
  secure: boolean
  /** Refuse to send unless the connection is upgraded with STARTTLS (and the certificate verifies). */
  requireTls: boolean
  user?: string
  password?: string
  from: string
}

/** SMTP's own time limits per connection; the outbox also caps a whole send (OutboxSettings.sendTimeoutMs). */
const TIMEOUTS = { connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 20_000 }

/**
 * SMTP through nodemailer. With `requireTls`, a server (or an attacker on the path) that does not
 * offer STARTTLS gets neither the password nor the message; certificates are verified either way.
 */
export function createSmtpMailer (smtp: SmtpSettings): Mailer {
  const transport = nodemailer.createTransport({
    host: smtp.host,
    port: smtp.port,
    secure: smtp.secure,
    requireTLS: smtp.requireTls && !smtp.secure,
    auth: smtp.user === undefined ? undefined : { user: smtp.user, pass: smtp.password ?? '' },
    ...TIMEOUTS
  })
  return {
    async send (email) {
      await transport.sendMail({ from: smtp.from, to: email.to, subject: email.subject, text: email.text })
    }
  }
}

/** Printed instead of sent (development, or MAIL_STDOUT=true): the text may hold links with tokens. */
export function createStdoutMailer (write: (text: string) => void = (t) => process.stdout.write(t)): Mailer {
  return {
    async send (email) {
      write(`\n----- email (not sent: printed to stdout) -----\nTo: ${email.to}\nSubject: ${email.subject}\n\n${email.text}\n----- end of email -----\n`)
    }
  }
}

/**
 * A rejection that retrying cannot fix: an SMTP 5xx reply to the recipient or to the message
 * itself. Connection errors, time-outs, 4xx replies, and 5xx replies to the connection or to
 * authentication (an operator can fix those) are transient.
 */
export function isPermanentFailure (err: unknown): boolean {
  const e = err as { responseCode?: unknown, command?: unknown, code?: unknown }
  if (typeof e.responseCode !== 'number' || e.responseCode < 500 || e.responseCode > 599) return false
  const command = typeof e.command === 'string' ? e.command.toUpperCase() : ''
  return command.startsWith('RCPT') || command.startsWith('DATA') || e.code === 'EENVELOPE' || e.code === 'EMESSAGE'
}
