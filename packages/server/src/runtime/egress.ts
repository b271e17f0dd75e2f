import { setTimeout as sleep } from "node:timers/promises";
import { cidrRanges, connectedIpv4Ranges, forbiddenIpv4Ranges, intToIpv4, mergeRanges, parseIpv4Cidr, rangesContain, subtractRanges, ipv4ToInt, type Ipv4Range } from "@sail/protocol";
import { mustRun, runCommand } from "./commands.js";
import type { OutboundCounters, OutboundRefusal, OutboundRules } from "./runtime.js";

/** What the operator allows boxes at all (`sail up --outbound*`); each box's policy applies inside it. */
export interface OutboundBounds {
  /** Off: no box reaches beyond the host, whatever its policy. */
  enabled: boolean;
  /** Ranges boxes may reach although they are private or directly connected (e.g. a package mirror on 10.1.2.3/32). */
  privateAllowed: readonly string[];
  /** When set, the only ranges boxes may reach. */
  only: readonly string[] | null;
}

/** allowResolved requests run in one nft transaction at most (a bound on its input, ~100 bytes each). */
const ALLOW_BATCH = 256;
/**
 * Resolved addresses reach the firewall at most once per this long while requests queue up:
 * an `nft -f` costs ~40 ms of CPU here (it reads the ruleset), so 5 a second at most keeps
 * boxes that open addresses fast from taking a core; an idle queue runs at once.
 */
const ALLOW_INTERVAL_MS = 200;
/** How long a refused destination is remembered (so it is logged once per this time). */
const REFUSED_MEMORY_SECONDS = 60;
/** Each nft or conntrack call that follows the host's networks gets this long (it runs without a request waiting). */
const COMMAND_TIMEOUT_MS = 10_000;

/** Merged ranges as nft writes an interval set's elements (and the logs show them): "a.b.c.d" or "a.b.c.d-e.f.g.h". */
export const rangeTexts = (list: readonly Ipv4Range[]): string[] => mergeRanges(list).map(([first, last]) => (first === last ? intToIpv4(first) : `${intToIpv4(first)}-${intToIpv4(last)}`));
const elements = (list: readonly Ipv4Range[]): string => rangeTexts(list).join(", ");
/** nft identifiers for a box (ids are [a-z0-9-]). */
const ident = (id: string) => id.replace(/[^a-z0-9]/g, "_");

/**
 * Outbound traffic of boxes, in the daemon's nftables table: each box's packets reach a chain
 * of its own (a verdict map keyed by its address, which the reverse-path check makes
 * unspoofable) that refuses the never-reached ranges, the networks the host is directly
 * connected to, the operator's bounds and then applies the box's policy. New connections only:
 * an established one goes on until `cut` ends it. Refused attempts are counted per box and
 * remembered in a set the daemon reads to log them.
 */
export class EgressFirewall {
  /** Boxes whose chain exists in this table (the table is rebuilt at each daemon start). */
  private readonly installed = new Set<string>();
  /** What the `connected` set holds: the host's directly connected networks, less what is refused anyway or opened. */
  private connected: Ipv4Range[] = [];
  /** allowResolved requests waiting for the next nft call, and whether one runs. */
  private readonly allowing: Array<{ input: string; addOnly: string; resolve: () => void; reject: (err: unknown) => void }> = [];
  private allowRunning = false;

  constructor(
    private readonly table: string,
    private readonly subnet: string,
    private readonly bounds: OutboundBounds,
  ) {}

  /** The table's shared egress pieces, part of the table definition (see BoxNetworks). */
  baseDefinition(): string {
    const forbidden = forbiddenIpv4Ranges(this.bounds.privateAllowed, this.subnet);
    const only = this.bounds.only;
    return [
      `  set forbidden { type ipv4_addr; flags interval; elements = { ${elements(forbidden)} } }`,
      '  set connected { type ipv4_addr; flags interval; comment "the networks the host is directly connected to (its LAN), followed at run time"; }',
      only ? `  set only { type ipv4_addr; flags interval;${only.length ? ` elements = { ${elements(cidrRanges(only))} }` : ""} }` : "",
      "  set resolvers { type ipv4_addr . ipv4_addr; }",
      `  set refused { type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags dynamic, timeout; timeout ${REFUSED_MEMORY_SECONDS}s; size 4096; }`,
      "  map boxes { type ipv4_addr : verdict; }",
      "  chain postrouting {",
      "    type nat hook postrouting priority srcnat; policy accept;",
      `    ip saddr ${this.subnet} oifname != "sv*" masquerade`,
      "  }",
    ]
      .filter(Boolean)
      .join("\n");
  }

  /** The forward-chain rules for packets from this daemon's boxes. */
  forwardRules(veths: string): string {
    return [
      `    iifname ${veths} ip saddr ${this.subnet} ip saddr vmap @boxes`,
      `    iifname ${veths} ip saddr ${this.subnet} counter drop comment "a box without an outbound chain (the daemon is down or it is gone)"`,
    ].join("\n");
  }

  /** The input-chain rule that lets a box ask its own resolver (on its host-side address, port 53). */
  inputRules(veths: string): string {
    return [`    iifname ${veths} ip saddr . ip daddr @resolvers udp dport 53 accept`, `    iifname ${veths} ip saddr . ip daddr @resolvers tcp dport 53 accept`].join("\n");
  }

  /**
   * Install or replace a box's rules, atomically (one nft transaction). `resolved` are the
   * addresses its allowed names answered with, and for how long, which stay allowed.
   */
  async apply(id: string, guest: string, host: string, rules: OutboundRules, resolved: ReadonlyArray<{ address: string; seconds: number }> = [], signal?: AbortSignal): Promise<void> {
    const t = `inet ${this.table}`;
    const x = ident(id);
    const accept = `counter name "out_${x}" accept`;
    const lines = [
      `add chain ${t} box_${x}`,
      `flush chain ${t} box_${x}`,
      `add chain ${t} refuse_${x}`,
      `flush chain ${t} refuse_${x}`,
      `add counter ${t} out_${x}`,
      `add counter ${t} refused_${x}`,
      `add set ${t} cidrs_${x} { type ipv4_addr; flags interval; }`,
      `flush set ${t} cidrs_${x}`,
      `add set ${t} dns_${x} { type ipv4_addr; flags timeout; }`,
      `flush set ${t} dns_${x}`,
    ];
    const listed = rules.cidrs.length ? elements(cidrRanges(rules.cidrs)) : "";
    if (listed) lines.push(`add element ${t} cidrs_${x} { ${listed} }`);
    const fresh = resolved.filter((r) => r.seconds > 0);
    if (fresh.length) lines.push(`add element ${t} dns_${x} { ${fresh.map((r) => `${r.address} timeout ${Math.ceil(r.seconds)}s`).join(", ")} }`);
    lines.push(
      `add rule ${t} refuse_${x} counter name "refused_${x}"`,
      `add rule ${t} refuse_${x} meta l4proto { tcp, udp } add @refused { ip saddr . ip daddr . meta l4proto . th dport }`,
      `add rule ${t} refuse_${x} meta l4proto tcp reject with tcp reset`,
      `add rule ${t} refuse_${x} reject with icmpx admin-prohibited`,
      `add rule ${t} box_${x} ct state established,related ${accept}`,
      `add rule ${t} box_${x} ip daddr @forbidden goto refuse_${x}`,
      `add rule ${t} box_${x} ip daddr @connected goto refuse_${x}`,
    );
    if (this.bounds.only) lines.push(`add rule ${t} box_${x} ip daddr != @only goto refuse_${x}`);
    const mode = this.bounds.enabled ? rules.mode : "blocked";
    if (mode === "open") lines.push(`add rule ${t} box_${x} ${accept}`);
    if (mode === "allow") lines.push(`add rule ${t} box_${x} ip daddr @cidrs_${x} ${accept}`, `add rule ${t} box_${x} ip daddr @dns_${x} ${accept}`);
    if (mode === "deny") lines.push(`add rule ${t} box_${x} ip daddr @cidrs_${x} goto refuse_${x}`, `add rule ${t} box_${x} ${accept}`);
    lines.push(`add rule ${t} box_${x} goto refuse_${x}`);
    if (!this.installed.has(id)) lines.push(`add element ${t} boxes { ${guest} : jump box_${x} }`, `add element ${t} resolvers { ${guest} . ${host} }`);
    await mustRun("nft", ["-f", "-"], { input: lines.join("\n") + "\n", signal });
    this.installed.add(id);
  }

  /**
   * Let a box reach addresses its resolver answered with, for `seconds`. A renewed address is
   * deleted and added again (re-adding alone does not restart an element's time on every
   * kernel). One nft call runs at a time for every box, at most one per ALLOW_INTERVAL_MS:
   * requests that arrive meanwhile go together in the next one, so lookups that open
   * addresses cost a few processes a second, not one each. If the transaction fails (a renewed address expired just before, so its deletion
   * fails; a box went away), each request is run alone, and a failed one once more as a plain add.
   */
  allowResolved(id: string, addresses: { add: readonly string[]; renew: readonly string[] }, seconds: number): Promise<void> {
    if (!this.installed.has(id)) return Promise.resolve();
    const set = `inet ${this.table} dns_${ident(id)}`;
    const all = [...addresses.add, ...addresses.renew];
    if (!all.length) return Promise.resolve();
    const timed = all.map((a) => `${a} timeout ${Math.ceil(seconds)}s`).join(", ");
    const renew = addresses.renew.length ? `delete element ${set} { ${addresses.renew.join(", ")} }\n` : "";
    const addOnly = `add element ${set} { ${timed} }\n`;
    return new Promise((resolve, reject) => {
      this.allowing.push({ input: renew + addOnly, addOnly, resolve, reject });
      void this.runAllowing();
    });
  }

  private async runAllowing(): Promise<void> {
    if (this.allowRunning) return;
    this.allowRunning = true;
    while (this.allowing.length) {
      const started = Date.now();
      const batch = this.allowing.splice(0, ALLOW_BATCH);
      const together = await runCommand("nft", ["-f", "-"], { input: batch.map((r) => r.input).join("") }).catch(() => undefined);
      if (together?.code === 0) {
        for (const request of batch) request.resolve();
        continue;
      }
      for (const request of batch) {
        try {
          const alone = await runCommand("nft", ["-f", "-"], { input: request.input });
          if (alone.code !== 0) await mustRun("nft", ["-f", "-"], { input: request.addOnly });
          request.resolve();
        } catch (err) {
          request.reject(err);
        }
      }
      // the next batch waits for the interval, and gathers what arrives meanwhile
      if (this.allowing.length) await sleep(ALLOW_INTERVAL_MS - (Date.now() - started));
    }
    this.allowRunning = false;
  }

  /** The ranges in the `connected` set. */
  get connectedRanges(): readonly Ipv4Range[] {
    return this.connected;
  }

  /**
   * Follow the host's directly connected networks (`prefixes`, see HostNetworkWatch): the
   * `connected` set is replaced in one nft transaction, then boxes' connections into ranges
   * that joined it are cut. The kernel ends a masqueraded flow whose way out changed interface,
   * but not one that keeps it (the host took another address on the link it already used):
   * that one would go on, now to a neighbour on the host's LAN. Returns the ranges that joined
   * and left, or undefined when nothing changed.
   */
  async setConnected(prefixes: readonly string[]): Promise<{ joined: Ipv4Range[]; left: Ipv4Range[] } | undefined> {
    const next = mergeRanges(connectedIpv4Ranges(prefixes, this.bounds.privateAllowed, this.subnet));
    const joined = subtractRanges(next, this.connected);
    const left = subtractRanges(this.connected, next);
    if (!joined.length && !left.length) return undefined;
    const set = `inet ${this.table} connected`;
    await mustRun("nft", ["-f", "-"], { input: `flush set ${set}\n${next.length ? `add element ${set} { ${elements(next)} }\n` : ""}`, timeoutMs: COMMAND_TIMEOUT_MS });
    this.connected = next;
    if (joined.length) await this.cutInto(joined);
    return { joined, left };
  }

  /** Delete the conntrack entries of this daemon's boxes to destinations in `ranges` (their next packet meets the chain). */
  private async cutInto(ranges: readonly Ipv4Range[]): Promise<void> {
    const subnet = parseIpv4Cidr(this.subnet)!;
    const mask = intToIpv4((2 ** 32 - (subnet.range[1] - subnet.range[0] + 1)) >>> 0);
    const listed = await runCommand("conntrack", ["-L", "-s", intToIpv4(subnet.range[0]), "--mask-src", mask], { timeoutMs: COMMAND_TIMEOUT_MS });
    const pairs = new Set<string>();
    for (const line of listed.stdout.split("\n")) {
      const m = /\bsrc=(\d+\.\d+\.\d+\.\d+) dst=(\d+\.\d+\.\d+\.\d+)/.exec(line);
      if (m && rangesContain(ranges, ipv4ToInt(m[2]!)!)) pairs.add(`${m[1]} ${m[2]}`);
    }
    for (const pair of pairs) {
      const [src, dst] = pair.split(" ");
      await runCommand("conntrack", ["-D", "-s", src!, "-d", dst!], { timeoutMs: COMMAND_TIMEOUT_MS });
    }
  }

  /** Remove a box's chain, sets and counters. Idempotent. */
  async remove(id: string, guest: string, host: string, signal?: AbortSignal): Promise<void> {
    const t = `inet ${this.table}`;
    const x = ident(id);
    const steps = [
      `delete element ${t} boxes { ${guest} }`,
      `delete element ${t} resolvers { ${guest} . ${host} }`,
      `delete chain ${t} box_${x}`,
      `delete chain ${t} refuse_${x}`,
      `delete set ${t} cidrs_${x}`,
      `delete set ${t} dns_${x}`,
      `delete counter ${t} out_${x}`,
      `delete counter ${t} refused_${x}`,
    ];
    this.installed.delete(id);
    const all = await runCommand("nft", ["-f", "-"], { input: steps.join("\n") + "\n", signal });
    if (all.code !== 0) for (const step of steps) await runCommand("nft", ["-f", "-"], { input: step + "\n", signal });
  }

  /** Boxes lose their way out (the daemon stops while they keep running): their packets meet the final drop. */
  async closeAll(): Promise<void> {
    await runCommand("nft", ["flush", "map", "inet", this.table, "boxes"]);
    await runCommand("nft", ["flush", "set", "inet", this.table, "resolvers"]);
    this.installed.clear();
  }

  /**
   * End a box's connections to destinations `keep` no longer allows: their conntrack entries go,
   * so the next packet is a new connection, which the box's chain refuses (a TCP reset to the
   * box). Returns the destinations cut.
   */
  async cut(guest: string, keep: (address: string) => boolean): Promise<string[]> {
    const listed = await runCommand("conntrack", ["-L", "-s", guest]);
    const destinations = new Set<string>();
    for (const line of listed.stdout.split("\n")) {
      const dst = /\bdst=(\d+\.\d+\.\d+\.\d+)/.exec(line)?.[1];
      if (dst) destinations.add(dst);
    }
    const cut = [...destinations].filter((d) => !keep(d));
    for (const dst of cut) await runCommand("conntrack", ["-D", "-s", guest, "-d", dst]);
    return cut;
  }

  /** Bytes out and refused packets of each box with rules here. */
  async counters(idOf: (ident: string) => string | undefined): Promise<Map<string, OutboundCounters>> {
    const listed = await runCommand("nft", ["-j", "list", "counters", "table", "inet", this.table]);
    const result = new Map<string, OutboundCounters>();
    if (listed.code !== 0) return result;
    const objects = (JSON.parse(listed.stdout) as { nftables: Array<{ counter?: { name: string; packets: number; bytes: number } }> }).nftables;
    for (const { counter } of objects) {
      const m = counter && /^(out|refused)_(.+)$/.exec(counter.name);
      const id = m && idOf(m[2]!);
      if (!m || !id) continue;
      const entry = result.get(id) ?? { bytesOut: 0, refusedPackets: 0 };
      if (m[1] === "out") entry.bytesOut = counter.bytes;
      else entry.refusedPackets = counter.packets;
      result.set(id, entry);
    }
    return result;
  }

  /** Destinations boxes were refused in the last minute (source, destination, protocol, port). */
  async refusals(): Promise<Array<Omit<OutboundRefusal, "id"> & { guest: string }>> {
    const listed = await runCommand("nft", ["-j", "list", "set", "inet", this.table, "refused"]);
    if (listed.code !== 0) return [];
    type Element = { concat: [string, string, string | number, number] } | { elem: { val: { concat: [string, string, string | number, number] } } };
    const set = (JSON.parse(listed.stdout) as { nftables: Array<{ set?: { elem?: Element[] } }> }).nftables.find((o) => o.set)?.set;
    return (set?.elem ?? []).flatMap((element) => {
      const concat = "concat" in element ? element.concat : element.elem?.val?.concat;
      if (!concat) return [];
      const [guest, address, protocol, port] = concat;
      return [{ guest, address, protocol: protocol === 6 || protocol === "tcp" ? "tcp" : protocol === 17 || protocol === "udp" ? "udp" : String(protocol), port }];
    });
  }

  static ident = ident;
}
