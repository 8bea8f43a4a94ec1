import nodemailer from 'nodemailer'

export interface Email {
  to: string
  subject: string
  text: string
}

/** Delivers one email or throws; the outbox decides about retries. */
export interface Mailer {
  send: (email: Email) => Promise<void>
}

export interface SmtpSettings {
  host: string
  port: number
  secure: boolean
  user?: string
  password?: string
  from: string
}

/** SMTP through nodemailer (STARTTLS when the server offers it, implicit TLS with SMTP_SECURE). */
export function createSmtpMailer (smtp: SmtpSettings): Mailer {
  const transport = nodemailer.createTransport({
    host: smtp.host,
    port: smtp.port,
    secure: smtp.secure,
    auth: smtp.user === undefined ? undefined : { user: smtp.user, pass: smtp.password ?? '' },
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 20_000
  })
  return {
    async send (email) {
      await transport.sendMail({ from: smtp.from, to: email.to, subject: email.subject, text: email.text })
    }
  }
}

/** Development: no SMTP server configured, so emails are printed (they may hold links with tokens). */
export function createStdoutMailer (write: (text: string) => void = (t) => process.stdout.write(t)): Mailer {
  return {
    async send (email) {
      write(`\n----- email (SMTP_HOST is not set) -----\nTo: ${email.to}\nSubject: ${email.subject}\n\n${email.text}\n----- end of email -----\n`)
    }
  }
}
