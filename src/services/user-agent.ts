import { isIP } from 'node:net'

/**
 * A short description of a User-Agent header for emails a user reads: "Firefox 120 on Linux".
 * Only recognised product names and a numeric major version are shown, never the header's own
 * text, so a client cannot smuggle words or links into a genuine security email.
 */
const BROWSERS: Array<[RegExp, string]> = [
  [/\bEdg(?:e|A|iOS)?\/(\d{1,4})/, 'Edge'],
  [/\b(?:OPR|Opera)\/(\d{1,4})/, 'Opera'],
  [/\bSamsungBrowser\/(\d{1,4})/, 'Samsung Internet'],
  [/\b(?:Firefox|FxiOS)\/(\d{1,4})/, 'Firefox'],
  [/\b(?:Chrome|CriOS|Chromium)\/(\d{1,4})/, 'Chrome'],
  [/\bVersion\/(\d{1,4})[\d.]* (?:Mobile\/\S+ )?Safari\//, 'Safari'],
  [/^curl\/(\d{1,4})/, 'curl'],
  [/^Wget\/(\d{1,4})/, 'Wget'],
  [/^python-requests\/(\d{1,4})/, 'Python requests'],
  [/^okhttp\/(\d{1,4})/, 'OkHttp']
]
const SYSTEMS: Array<[RegExp, string]> = [
  [/\b(?:iPhone|iPad|iPod)\b/, 'iOS'],
  [/\bAndroid\b/, 'Android'],
  [/\bWindows\b/, 'Windows'],
  [/\bCrOS\b/, 'ChromeOS'],
  [/\bMac OS X\b|\bMacintosh\b/, 'macOS'],
  [/\bLinux\b/, 'Linux']
]

export function describeUserAgent (ua: string | null | undefined): string {
  if (ua == null || ua.trim() === '') return 'an unknown client'
  const head = ua.slice(0, 512)
  let browser = 'an unrecognised client'
  for (const [pattern, name] of BROWSERS) {
    const m = pattern.exec(head)
    if (m !== null) {
      browser = `${name} ${m[1]}`
      break
    }
  }
  const system = SYSTEMS.find(([pattern]) => pattern.test(head))?.[1]
  return system === undefined ? browser : `${browser} on ${system}`
}

/** The client address as an email shows it: an IP address, or "unknown" for anything else. */
export function displayIp (ip: string | null | undefined): string {
  return ip != null && isIP(ip) !== 0 ? ip : 'unknown'
}
