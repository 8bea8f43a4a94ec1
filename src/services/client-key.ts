import ipaddr from 'ipaddr.js'

/**
 * The key per-IP limits count under. An IPv4 address is one client; an IPv6 client usually holds
 * a whole /64 (2^64 addresses), so IPv6 addresses count by their first `v6PrefixLength` bits.
 * IPv4-mapped IPv6 addresses (::ffff:1.2.3.4) count as the IPv4 address.
 */
export function clientKey (ip: string, v6PrefixLength: number): string {
  if (!ipaddr.isValid(ip)) return ip
  const address = ipaddr.process(ip)
  if (address.kind() === 'ipv4' || v6PrefixLength >= 128) return address.toString()
  return `${ipaddr.IPv6.networkAddressFromCIDR(`${address.toString()}/${v6PrefixLength}`).toString()}/${v6PrefixLength}`
}
