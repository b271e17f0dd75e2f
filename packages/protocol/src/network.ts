/**
 * Outbound network rules: what a box's policy may say, and the IPv4 ranges the server
 * enforces it with (the arithmetic is in cidr.ts). Pure, so the SDK could check a policy before sending it; the server
 * runs the same functions and also checks what depends on the host (private ranges).
 */
import { cidrRanges, mergeRanges, parseIpv4Cidr, subtractRanges, type Ipv4Range } from "./cidr.js";
import { sailError } from "./errors.js";
import type { NetworkInfo, NetworkPolicyRequest } from "./types.js";

/** At most this many entries in `allowOut` or `denyOut`. */
export const NETWORK_ENTRIES_MAX = 256;

/**
 * Destinations a box never reaches, whatever its policy (an operator may open some with
 * `sail up --outbound-private`): "this network", RFC 1918, shared address space (CGNAT),
 * loopback, link-local, IETF protocol assignments, benchmarking, multicast, reserved and
 * broadcast, and the clouds' host endpoints: services a VM reaches without credentials
 * because of where it stands. Most sit in those ranges already: instance metadata at
 * 169.254.169.254 (AWS, GCP, Azure, Oracle, OpenStack, DigitalOcean, Hetzner), AWS's DNS
 * 169.254.169.253, time 169.254.169.123 and ECS task metadata 169.254.170.2, Scaleway's
 * 169.254.42.42, Tencent's 169.254.0.23, Alibaba's metadata 100.100.100.200 and DNS
 * 100.100.2.136 (CGNAT), Oracle Classic's 192.0.0.192; Azure's wire server 168.63.129.16
 * (VM agent, DHCP, DNS, health probes: a public address) is listed on its own. The host
 * itself and other boxes are refused separately (they are not reached by forwarding), and so
 * are the networks the host is directly connected to (they change at run time:
 * connectedIpv4Ranges).
 */
export const NEVER_REACHED_IPV4: readonly string[] = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "168.63.129.16/32",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "224.0.0.0/4",
  "240.0.0.0/4",
];

/**
 * What a daemon's boxes never reach, merged: NEVER_REACHED_IPV4 less the private ranges its
 * operator opened, plus its own box subnet (other boxes). The firewall enforces it; the
 * policy checks refuse allowOut entries inside it.
 */
export function forbiddenIpv4Ranges(privateAllowed: readonly string[], boxSubnet: string): Ipv4Range[] {
  return mergeRanges([...subtractRanges(cidrRanges(NEVER_REACHED_IPV4), cidrRanges(privateAllowed)), ...cidrRanges([boxSubnet])]);
}

/**
 * The part of the host's directly connected networks (`prefixes`: its addresses' networks and
 * its routes without a gateway) that a daemon's boxes are refused beyond `forbiddenIpv4Ranges`:
 * less what is refused already (the box subnet, loopback, private ranges) and less what its
 * operator opened with `--outbound-private`. A directly connected network is the host's LAN:
 * its neighbours and its gateway, reached without a router in between, even when the range is
 * public.
 */
export function connectedIpv4Ranges(prefixes: readonly string[], privateAllowed: readonly string[], boxSubnet: string): Ipv4Range[] {
  return subtractRanges(cidrRanges(prefixes), [...forbiddenIpv4Ranges(privateAllowed, boxSubnet), ...cidrRanges(privateAllowed)]);
}

const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

/** A domain entry in canonical form ("Example.COM." is "example.com"; "*.example.com" keeps its "*."), or undefined. */
export function parseDomainEntry(text: string): string | undefined {
  const lower = text.toLowerCase().replace(/\.$/, "");
  const wildcard = lower.startsWith("*.");
  const name = wildcard ? lower.slice(2) : lower;
  const labels = name.split(".");
  if (name.length > 253 || labels.length < 2 || !labels.every((l) => LABEL.test(l))) return undefined;
  if (/^\d+$/.test(labels[labels.length - 1]!)) return undefined; // a top-level label is never numeric (that is an address)
  return wildcard ? `*.${name}` : name;
}

/** Whether a DNS name matches an entry: "example.com" only itself, "*.example.com" any name below it (not itself). */
export function domainMatches(entry: string, name: string): boolean {
  const n = name.toLowerCase().replace(/\.$/, "");
  return entry.startsWith("*.") ? n.endsWith(entry.slice(1)) && n.length > entry.length - 1 : n === entry;
}

/** A policy entry: an IPv4 CIDR (a bare address is /32) or a domain; anything else refuses the request. */
export function parseNetworkEntry(entry: unknown, field: "allowOut" | "denyOut"): { kind: "cidr"; cidr: string; range: Ipv4Range } | { kind: "domain"; domain: string } {
  if (typeof entry === "string") {
    const cidr = parseIpv4Cidr(entry.trim());
    if (cidr) return { kind: "cidr", ...cidr };
    const domain = parseDomainEntry(entry.trim());
    if (domain) return { kind: "domain", domain };
    if (entry.includes(":")) {
      throw sailError("SAIL_NETWORK_ENTRY_INVALID", `${field} has ${JSON.stringify(entry)}: boxes reach the outside over IPv4 only, so IPv6 entries cannot apply`, { field, entry });
    }
  }
  throw sailError(
    "SAIL_NETWORK_ENTRY_INVALID",
    `${field} has ${JSON.stringify(entry)}, which is neither an IPv4 address or CIDR ("198.51.100.7", "203.0.113.0/24") nor a domain ("example.com", "*.example.com")`,
    { field, entry: typeof entry === "string" ? entry : String(entry) },
  );
}

/**
 * A box's outbound policy from its request: nothing given is open; `blockNetwork: true` lets
 * nothing out; `allowOut` lets only those out; `denyOut` everything but those. One of the
 * three at a time. Entries come back canonical and de-duplicated.
 */
export function normalizeNetworkPolicy(request: NetworkPolicyRequest): NetworkInfo {
  const { blockNetwork, allowOut, denyOut } = request;
  if (blockNetwork !== undefined && blockNetwork !== null && typeof blockNetwork !== "boolean") {
    throw sailError("SAIL_INVALID_ARGUMENT", `blockNetwork must be true or false, got ${JSON.stringify(blockNetwork)}`, { field: "blockNetwork" });
  }
  const lists = { allowOut, denyOut } as Record<"allowOut" | "denyOut", unknown>;
  const entries = { allowOut: [] as string[], denyOut: [] as string[] };
  for (const field of ["allowOut", "denyOut"] as const) {
    const list = lists[field];
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) throw sailError("SAIL_NETWORK_ENTRY_INVALID", `${field} must be a list of IPv4 CIDRs and domains, e.g. ["198.51.100.0/24", "*.example.com"]`, { field });
    if (list.length > NETWORK_ENTRIES_MAX) throw sailError("SAIL_NETWORK_ENTRY_INVALID", `${field} has ${list.length} entries; at most ${NETWORK_ENTRIES_MAX} are allowed`, { field });
    const canonical = list.map((entry: unknown) => {
      const parsed = parseNetworkEntry(entry, field);
      return parsed.kind === "cidr" ? parsed.cidr : parsed.domain;
    });
    entries[field] = [...new Set(canonical)];
  }
  const given = [blockNetwork === true && "blockNetwork", entries.allowOut.length > 0 && "allowOut", entries.denyOut.length > 0 && "denyOut"].filter(Boolean);
  if (given.length > 1) {
    throw sailError("SAIL_NETWORK_POLICY_CONFLICT", `${given.join(" and ")} cannot be combined: block everything, allow only a list, or deny a list (an allowlist already denies everything else)`, {
      field: given[1] as string,
    });
  }
  if (blockNetwork === true) return { outbound: "blocked", allowOut: [], denyOut: [] };
  if (entries.allowOut.length) return { outbound: "allowlist", allowOut: entries.allowOut, denyOut: [] };
  if (entries.denyOut.length) return { outbound: "denylist", allowOut: [], denyOut: entries.denyOut };
  return { outbound: "open", allowOut: [], denyOut: [] };
}

/** The policy a box gets when its create says nothing: everything but what is never reached. */
export const OPEN_NETWORK: NetworkInfo = { outbound: "open", allowOut: [], denyOut: [] };
