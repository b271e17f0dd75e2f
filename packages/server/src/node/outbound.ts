import {
  cidrRanges,
  domainMatches,
  forbiddenIpv4Ranges,
  ipv4ToInt,
  isLive,
  mergeRanges,
  normalizeNetworkPolicy,
  parseIpv4Cidr,
  rangeCovered,
  rangesContain,
  sailError,
  subtractRanges,
  type Ipv4Range,
  type NetworkInfo,
  type NetworkPolicyRequest,
} from "@sail/protocol";
import type { OutboundCounters, OutboundRules, Runtime } from "../runtime/runtime.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";
import type { NodeStore } from "./node-store.js";
import { TokenBucket } from "./token-bucket.js";

/** What the operator lets boxes reach at all (`sail up --outbound*`). */
export interface OutboundSettings {
  enabled: boolean;
  privateAllowed: readonly string[];
  only: readonly string[] | null;
  boxSubnet: string;
  /** What one box's lookups may open (tests make them small). */
  resolvedLimits?: { addressesPerBox: number; perSecond: number; burst: number };
}

/** What the resolver does with a name a box asks for. */
export type NameDecision = "refuse" | "nxdomain" | "forward" | "forward-and-allow";

/**
 * What a box's policy says about names, as plain data: the resolver runs on a thread of its
 * own and decides each name from a copy of this (`decideName`), so a query costs the daemon's
 * main thread nothing.
 */
export type NameRules = { mode: "refuse" } | { mode: "open" } | { mode: "allowlist" | "denylist"; domains: string[] };

/** Hears the boxes that need a resolver (a start, a create), each change of their policy, and those that ended. */
export interface ResolverSubscriber {
  added(id: string, hostAddress: string, guestAddress: string, names: NameRules): void;
  changed(id: string, names: NameRules): void;
  removed(id: string): void;
}

/** The resolver's view: which boxes exist, where they ask, and what their policy says. */
export interface ResolverDirectory {
  subscribe(subscriber: ResolverSubscriber): void;
  /** An allowed name answered with these addresses: let the box reach them for `ttl` seconds; resolves once they are reachable. */
  answered(id: string, name: string, addresses: string[], ttl: number): Promise<void>;
}

/** What the resolver does with `name` under `rules` (no rules: a box the resolver does not know, refused). */
export function decideName(rules: NameRules | undefined, name: string): NameDecision {
  if (!rules || rules.mode === "refuse") return "refuse";
  if (rules.mode === "open") return "forward";
  const listed = rules.domains.some((entry) => domainMatches(entry, name));
  if (rules.mode === "allowlist") return listed ? "forward-and-allow" : "nxdomain";
  return listed ? "nxdomain" : "forward";
}

/** A resolved address stays allowed at least this long, whatever the answer's TTL (a TTL of 0 would expire before the connect). */
const MIN_ALLOWED_SECONDS = 30;
const MAX_ALLOWED_SECONDS = 24 * 3600;
/**
 * What one box's lookups may open (allowlist): 4096 addresses at once, and 20 new or renewed
 * ones a second, 200 at once (each costs a firewall change). A box rarely holds more than a
 * few dozen (a CDN answers a handful per name, each kept at least MIN_ALLOWED_SECONDS).
 */
const RESOLVED_LIMITS = { addressesPerBox: 4096, perSecond: 20, burst: 200 };
/** Names remembered per opened address (a policy change keeps an address while one of them is still allowed). */
const NAMES_PER_ADDRESS = 16;
/** Refused destinations logged per check at most (the rest are summed up). */
const REFUSALS_LOGGED_PER_CHECK = 20;

/**
 * Outbound network of boxes: each box's policy (open, blocked, an allowlist or a denylist of
 * IPv4 ranges and domain names) inside the operator's bounds. The runtime enforces addresses
 * on new connections; names are enforced by Sail's resolver, which asks `decide` and reports
 * answers to allowed names, whose addresses the box may then reach for the answer's TTL. A
 * change at run time applies at once and cuts the connections it no longer allows.
 */
export class Outbound implements ResolverDirectory {
  /** Per box: addresses its allowed names answered with, the names, and until when (ms). */
  private readonly resolved = new Map<string, Map<string, { names: Set<string>; until: number }>>();
  private readonly subscribers: ResolverSubscriber[] = [];
  private readonly forbidden: Ipv4Range[];
  private readonly only: Ipv4Range[] | null;
  /** Live boxes' policies (the resolver asks on every query). */
  private readonly policies = new Map<string, NetworkInfo>();
  /** Refused destinations already logged, and when (ms). */
  private readonly logged = new Map<string, number>();
  /** Per box: the rate at which its lookups may change the firewall. */
  private readonly resolveBudgets = new Map<string, TokenBucket>();
  private readonly resolvedLimits: { addressesPerBox: number; perSecond: number; burst: number };

  constructor(
    private readonly store: Pick<NodeStore, "listBoxes" | "setNetworkPolicy">,
    private readonly lifecycle: Lifecycle,
    private readonly runtime: Pick<Runtime, "network" | "setOutbound" | "allowResolved" | "cutOutbound" | "outboundCounters" | "outboundRefusals" | "connectedNetworks">,
    private readonly settings: OutboundSettings,
    private readonly log: Logger,
  ) {
    this.forbidden = forbiddenIpv4Ranges(settings.privateAllowed, settings.boxSubnet);
    this.only = settings.only ? mergeRanges(cidrRanges(settings.only)) : null;
    this.resolvedLimits = settings.resolvedLimits ?? RESOLVED_LIMITS;
    lifecycle.onTransition(({ box, to }) => {
      if (isLive(to)) return;
      this.resolved.delete(box.id);
      this.resolveBudgets.delete(box.id);
      this.policies.delete(box.id);
      for (const s of this.subscribers) s.removed(box.id);
    });
  }

  /**
   * A create's or a change's policy, checked: the shape (normalizeNetworkPolicy), then what
   * depends on this host. An allowOut entry boxes can never reach here is refused rather than
   * silently doing nothing: the fixed rules first, then the networks the host is directly
   * connected to as they are now. Those change at run time, and the firewall follows them
   * whatever was checked: an entry accepted before the host joined its network is refused
   * from then on, one refused here may work once the host has left it.
   */
  check(request: NetworkPolicyRequest): NetworkInfo {
    const policy = normalizeNetworkPolicy(request);
    for (const cidr of policy.allowOut) {
      const parsed = parseIpv4Cidr(cidr);
      if (!parsed) continue;
      if (rangeCovered(parsed.range, this.forbidden)) {
        throw sailError(
          "SAIL_NETWORK_ENTRY_REFUSED",
          `allowOut has ${cidr}, which boxes never reach on this host (private, loopback, link-local, multicast, cloud host endpoints or other boxes' ranges); an operator can open a private range with sail up --outbound-private`,
          { field: "allowOut", entry: cidr },
        );
      }
      if (this.only && !subtractRanges([parsed.range], subtractRanges([parsed.range], this.only)).length) {
        throw sailError("SAIL_NETWORK_ENTRY_REFUSED", `allowOut has ${cidr}, but this host lets boxes reach only ${this.settings.only!.join(", ")}`, { field: "allowOut", entry: cidr });
      }
      if (rangeCovered(parsed.range, [...this.forbidden, ...this.runtime.connectedNetworks()])) {
        throw sailError(
          "SAIL_NETWORK_ENTRY_REFUSED",
          `allowOut has ${cidr}, which is on a network this host is directly connected to (its own LAN: neighbours and gateway), which boxes never reach; an operator can open it with sail up --outbound-private ${cidr}`,
          { field: "allowOut", entry: cidr },
        );
      }
    }
    return policy;
  }

  /**
   * Install a box's rules and tell the resolver. `rulesInPlace`: the runtime already set them
   * (a create passes them along, so they go in while the container starts).
   */
  async install(id: string, policy: NetworkInfo, options: { rulesInPlace?: boolean } = {}): Promise<void> {
    this.policies.set(id, policy);
    if (!options.rulesInPlace) await this.runtime.setOutbound(id, rulesOf(policy));
    const { hostAddress, guestAddress } = this.runtime.network(id);
    for (const s of this.subscribers) s.added(id, hostAddress, guestAddress, this.nameRules(id));
  }

  /** After a node start: every live box's rules again (the table is rebuilt at start). */
  async restoreAll(): Promise<number> {
    let restored = 0;
    for (const box of this.store.listBoxes()) {
      if (box.status === "creating" || box.status === "failed") continue;
      try {
        await this.install(box.id, box.network);
        restored++;
      } catch (err) {
        this.log.error({ sailboxId: box.id, err: String(err) }, "could not restore a sailbox's outbound rules: it has no way out");
      }
    }
    return restored;
  }

  /**
   * A policy as the control plane sends it (NetworkInfo), checked like a request: its shape
   * again (it crossed the wire), then what depends on this host.
   */
  checkInfo(policy: NetworkInfo): NetworkInfo {
    return this.check(requestOf(policy));
  }

  /** Replace a live box's policy: new connections follow it at once, open ones it no longer allows are cut. */
  async set(id: string, given: NetworkInfo): Promise<void> {
    const box = this.lifecycle.get(id);
    const policy = this.checkInfo(given);
    if (!isLive(box.status) || box.status === "creating") {
      throw sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${id} is ${box.status}: only a live sailbox has a network policy to change`, { sailboxId: id, status: box.status });
    }
    await this.lifecycle.withLock(id, async () => {
      const now = Date.now();
      const kept = [...(this.resolved.get(id) ?? [])].filter(([, r]) => r.until > now && [...r.names].some((n) => this.nameAllowed(policy, n)));
      this.resolved.set(id, new Map(kept));
      await this.runtime.setOutbound(
        id,
        rulesOf(policy),
        kept.map(([address, r]) => ({ address, seconds: (r.until - now) / 1000 })),
      );
      this.store.setNetworkPolicy(id, policy);
      this.policies.set(id, policy);
      for (const s of this.subscribers) s.changed(id, this.nameRules(id));
      const cut = await this.runtime.cutOutbound(id, (address) => this.addressAllowed(id, policy, address));
      this.log.info({ sailboxId: id, outbound: policy.outbound, cut }, "sailbox network policy changed");
    });
  }

  decide(id: string, name: string): NameDecision {
    return decideName(this.nameRules(id), name);
  }

  /** A live box's policy about names, for the resolver (refuse all when outbound is off or the box is unknown). */
  nameRules(id: string): NameRules {
    const box = this.policies.get(id);
    if (!box || !this.settings.enabled || box.outbound === "blocked") return { mode: "refuse" };
    const names = (entries: string[]) => entries.filter((entry) => !parseIpv4Cidr(entry));
    if (box.outbound === "allowlist") return { mode: "allowlist", domains: names(box.allowOut) };
    if (box.outbound === "denylist") return { mode: "denylist", domains: names(box.denyOut) };
    return { mode: "open" };
  }

  /**
   * An address already allowed for at least half the new time is left alone (no firewall
   * change), so repeated lookups of a name cost nothing; others are added, or renewed. The
   * policy is asked again first: the resolver decided on its copy, which a change made just
   * before may not have reached yet, and only this thread's policy opens the firewall.
   */
  async answered(id: string, name: string, addresses: string[], ttl: number): Promise<void> {
    if (!addresses.length || this.decide(id, name) !== "forward-and-allow") return;
    const seconds = Math.min(Math.max(ttl, MIN_ALLOWED_SECONDS), MAX_ALLOWED_SECONDS);
    const byAddress = this.resolved.get(id) ?? new Map<string, { names: Set<string>; until: number }>();
    this.resolved.set(id, byAddress);
    const now = Date.now();
    const until = now + seconds * 1000;
    const add = addresses.filter((address) => (byAddress.get(address)?.until ?? 0) <= now);
    let renew = addresses.filter((address) => {
      const left = (byAddress.get(address)?.until ?? 0) - now;
      return left > 0 && left < (seconds * 1000) / 2;
    });
    if (add.length) this.checkCanOpen(id, byAddress, name, add.length, now);
    // past the box's rate a renewal waits for a later lookup: the address is still open for a while
    if (renew.length && this.resolveBudget(id).take(renew.length) > 0) renew = [];
    for (const address of addresses) {
      const entry = byAddress.get(address);
      const kept = entry && entry.until > now ? entry : { names: new Set<string>(), until };
      if (kept.names.size < NAMES_PER_ADDRESS) kept.names.add(name.toLowerCase());
      if (add.includes(address) || renew.includes(address)) kept.until = until;
      byAddress.set(address, kept);
    }
    if (add.length || renew.length) await this.runtime.allowResolved(id, { add, renew }, seconds);
  }

  /**
   * Whether a box's lookup may open `added` more addresses: within its rate, and within its
   * bound (expired ones are forgotten first). If not, the lookup fails (the resolver answers
   * SERVFAIL), so a box resolving ever-new addresses (a wildcard whose DNS it runs) costs the
   * daemon bounded memory and nft work, and only its own lookups fail.
   */
  private checkCanOpen(id: string, byAddress: Map<string, { until: number }>, name: string, added: number, now: number): void {
    const { addressesPerBox, perSecond } = this.resolvedLimits;
    if (byAddress.size + added > addressesPerBox) for (const [address, entry] of byAddress) if (entry.until <= now) byAddress.delete(address);
    if (byAddress.size + added > addressesPerBox) throw new Error(`sailbox ${id} has ${byAddress.size} addresses open by DNS, at most ${addressesPerBox}: ${name} is not opened`);
    if (this.resolveBudget(id).take(added) > 0) throw new Error(`sailbox ${id} opens addresses by DNS faster than ${perSecond} a second: ${name} is not opened`);
  }

  private resolveBudget(id: string): TokenBucket {
    let budget = this.resolveBudgets.get(id);
    if (!budget) this.resolveBudgets.set(id, (budget = new TokenBucket(this.resolvedLimits.perSecond, this.resolvedLimits.burst)));
    return budget;
  }

  subscribe(subscriber: ResolverSubscriber): void {
    this.subscribers.push(subscriber);
  }

  /** Log destinations boxes were refused since the last check, each at most once a minute. */
  async logRefusals(): Promise<void> {
    const now = Date.now();
    for (const [key, at] of this.logged) if (now - at > 60_000) this.logged.delete(key);
    const fresh = (await this.runtime.outboundRefusals()).filter((r) => !this.logged.has(`${r.id} ${r.address} ${r.protocol} ${r.port}`));
    for (const r of fresh) this.logged.set(`${r.id} ${r.address} ${r.protocol} ${r.port}`, now);
    for (const r of fresh.slice(0, REFUSALS_LOGGED_PER_CHECK)) {
      this.log.warn({ sailboxId: r.id, destination: `${r.address}:${r.port}`, protocol: r.protocol }, "outbound connection refused");
    }
    if (fresh.length > REFUSALS_LOGGED_PER_CHECK) this.log.warn({ more: fresh.length - REFUSALS_LOGGED_PER_CHECK }, "more outbound connections refused");
  }

  counters(): Promise<Map<string, OutboundCounters>> {
    return this.runtime.outboundCounters();
  }

  private nameAllowed(policy: NetworkInfo, name: string): boolean {
    if (policy.outbound === "allowlist") return policy.allowOut.some((entry) => !parseIpv4Cidr(entry) && domainMatches(entry, name));
    if (policy.outbound === "denylist") return !policy.denyOut.some((entry) => !parseIpv4Cidr(entry) && domainMatches(entry, name));
    return policy.outbound === "open";
  }

  /** Whether `policy` lets the box keep a connection to `address` (a resolved name's address counts while its time lasts). */
  private addressAllowed(id: string, policy: NetworkInfo, address: string): boolean {
    const n = ipv4ToInt(address);
    if (n === undefined || !this.settings.enabled || rangesContain(this.forbidden, n) || rangesContain(this.runtime.connectedNetworks(), n) || (this.only && !rangesContain(this.only, n)))
      return false;
    const inList = (entries: string[]) =>
      entries.some((entry) => {
        const parsed = parseIpv4Cidr(entry);
        return parsed !== undefined && rangesContain([parsed.range], n);
      });
    if (policy.outbound === "blocked") return false;
    if (policy.outbound === "denylist") return !inList(policy.denyOut);
    if (policy.outbound === "allowlist") return inList(policy.allowOut) || (this.resolved.get(id)?.get(address)?.until ?? 0) > Date.now();
    return true;
  }
}

/** The request a policy answers (normalizeNetworkPolicy gives it back); anything else is refused. */
export function requestOf(policy: NetworkInfo): NetworkPolicyRequest {
  const outbound = (policy as Partial<NetworkInfo> | null)?.outbound;
  if (outbound === "blocked") return { blockNetwork: true };
  if (outbound === "allowlist") return { allowOut: policy.allowOut };
  if (outbound === "denylist") return { denyOut: policy.denyOut };
  if (outbound === "open") return {};
  throw sailError("SAIL_INVALID_ARGUMENT", `A network policy's outbound is open, blocked, allowlist or denylist, not ${JSON.stringify(outbound)}`, { field: "network.outbound" });
}

/** What the runtime enforces for a policy: addresses only (names are the resolver's). */
export function rulesOf(policy: NetworkInfo): OutboundRules {
  const cidrs = (entries: string[]) => entries.filter((entry) => parseIpv4Cidr(entry) !== undefined);
  if (policy.outbound === "allowlist") return { mode: "allow", cidrs: cidrs(policy.allowOut) };
  if (policy.outbound === "denylist") return { mode: "deny", cidrs: cidrs(policy.denyOut) };
  return { mode: policy.outbound === "blocked" ? "blocked" : "open", cidrs: [] };
}
