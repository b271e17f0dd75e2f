/**
 * Addresses and CIDRs, one implementation for the SDK and every part of the server: outbound
 * policies, the daemon's config (--box-subnet, --outbound-private, --outbound-only), the box
 * subnet's /30s and raw-TCP cidrAllowlists. Parsing is ipaddr.js's (a well-kept parser, used
 * by Express's proxy-addr); IPv4 ranges are pairs of numbers, for the firewall's arithmetic.
 */
import ipaddr from "ipaddr.js";

/**
 * An IPv4 address in four-part decimal ("198.51.100.7") as an unsigned 32-bit number, or
 * undefined. The other forms inet_aton(3) reads are refused ("10.1", "3232235777", "0x0a.0.0.1",
 * "010.0.0.1", which is 8.0.0.1): each names another address than the one it seems to.
 */
export function ipv4ToInt(text: string): number | undefined {
  if (!ipaddr.IPv4.isValidFourPartDecimal(text)) return undefined;
  return ipaddr.IPv4.parse(text).octets.reduce((acc, octet) => acc * 256 + octet, 0);
}

export function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => (n >>> shift) & 255).join(".");
}

/** An inclusive range of IPv4 addresses as numbers. */
export type Ipv4Range = readonly [first: number, last: number];

/** "a.b.c.d/n" or a bare address (/32), canonical (host bits cleared), or undefined. */
export function parseIpv4Cidr(text: string): { cidr: string; prefix: number; range: Ipv4Range } | undefined {
  const [address, prefixText, extra] = text.split("/");
  if (extra !== undefined || address === undefined) return undefined;
  const base = ipv4ToInt(address);
  if (base === undefined) return undefined;
  if (prefixText !== undefined && !/^\d{1,2}$/.test(prefixText)) return undefined;
  const prefix = prefixText === undefined ? 32 : Number(prefixText);
  if (prefix > 32) return undefined;
  const size = 2 ** (32 - prefix);
  const first = base - (base % size);
  return { cidr: `${intToIpv4(first)}/${prefix}`, prefix, range: [first, first + size - 1] };
}

/**
 * An IPv4 or IPv6 CIDR in canonical form, or undefined when it does not parse. A bare address
 * means one host (/32 or /128); host bits are cleared ("10.1.2.3/8" is "10.0.0.0/8"); IPv6 is
 * written as RFC 5952 says ("2001:DB8:0::1" is "2001:db8::1/128").
 */
export function normalizeCidr(text: string): string | undefined {
  if (!text.includes(":")) return parseIpv4Cidr(text)?.cidr;
  try {
    if (!text.includes("/")) return `${ipaddr.IPv6.parse(text).toString()}/128`;
    const [, prefix] = ipaddr.IPv6.parseCIDR(text);
    return `${ipaddr.IPv6.networkAddressFromCIDR(text).toString()}/${prefix}`;
  } catch {
    return undefined;
  }
}

/**
 * A predicate over peer addresses for canonical CIDRs (normalizeCidr's); IPv4-mapped IPv6
 * peers (::ffff:a.b.c.d, as a dual-stack socket reports an IPv4 client) match as IPv4. An
 * empty list admits anyone.
 */
export function cidrMatcher(cidrs: readonly string[]): (peer: string | undefined) => boolean {
  if (cidrs.length === 0) return () => true;
  const ranges = cidrs.map((c) => ipaddr.parseCIDR(c));
  return (peer) => {
    if (!peer || !ipaddr.isValid(peer)) return false;
    const parsed = ipaddr.process(peer); // unwraps IPv4-mapped IPv6
    return ranges.some(([range, prefix]) => range.kind() === parsed.kind() && parsed.match([range, prefix] as never));
  };
}

/** Sorted, merged ranges. */
export function mergeRanges(ranges: readonly Ipv4Range[]): Ipv4Range[] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const merged: Array<[number, number]> = [];
  for (const [first, last] of sorted) {
    const previous = merged[merged.length - 1];
    if (previous && first <= previous[1] + 1) previous[1] = Math.max(previous[1], last);
    else merged.push([first, last]);
  }
  return merged;
}

/** `from` without the addresses in `minus`. */
export function subtractRanges(from: readonly Ipv4Range[], minus: readonly Ipv4Range[]): Ipv4Range[] {
  let result = mergeRanges(from);
  for (const [cutFirst, cutLast] of mergeRanges(minus)) {
    result = result.flatMap(([first, last]): Ipv4Range[] => {
      if (cutLast < first || cutFirst > last) return [[first, last]];
      const pieces: Ipv4Range[] = [];
      if (cutFirst > first) pieces.push([first, cutFirst - 1]);
      if (cutLast < last) pieces.push([cutLast + 1, last]);
      return pieces;
    });
  }
  return result;
}

/** Whether every address of `range` is inside `ranges`. */
export function rangeCovered(range: Ipv4Range, ranges: readonly Ipv4Range[]): boolean {
  return subtractRanges([range], ranges).length === 0;
}

export function rangesContain(ranges: readonly Ipv4Range[], address: number): boolean {
  return ranges.some(([first, last]) => address >= first && address <= last);
}

/** The ranges of CIDRs already checked (config, normalized policies). */
export function cidrRanges(cidrs: readonly string[]): Ipv4Range[] {
  return cidrs.map((c) => parseIpv4Cidr(c)!.range);
}
