import ipaddr from "ipaddr.js";

/**
 * A CIDR in canonical form, or undefined when it does not parse. A bare address means
 * one host (/32 or /128); host bits are cleared ("10.1.2.3/8" is "10.0.0.0/8").
 */
export function normalizeCidr(text: string): string | undefined {
  try {
    if (!text.includes("/")) {
      const address = ipaddr.parse(text);
      return `${address.toString()}/${address.kind() === "ipv4" ? 32 : 128}`;
    }
    const [address, prefix] = ipaddr.parseCIDR(text);
    const network = address.kind() === "ipv4" ? ipaddr.IPv4.networkAddressFromCIDR(text) : ipaddr.IPv6.networkAddressFromCIDR(text);
    return `${network.toString()}/${prefix}`;
  } catch {
    return undefined;
  }
}

/** A predicate over peer addresses; IPv4-mapped IPv6 peers (::ffff:a.b.c.d) match as IPv4. Empty list: anyone. */
export function cidrMatcher(cidrs: readonly string[]): (peer: string | undefined) => boolean {
  if (cidrs.length === 0) return () => true;
  const ranges = cidrs.map((c) => ipaddr.parseCIDR(c));
  return (peer) => {
    if (!peer || !ipaddr.isValid(peer)) return false;
    const parsed = ipaddr.process(peer); // unwraps IPv4-mapped IPv6
    return ranges.some(([range, prefix]) => range.kind() === parsed.kind() && parsed.match([range, prefix] as never));
  };
}
