import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { createInterface } from "node:readline";
import { parseIpv4Cidr, rangeCovered, type Ipv4Range } from "@sail/protocol";
import { mustRun } from "./commands.js";
import type { RuntimeLogger } from "./runtime.js";

/** Each `ip` dump of the host's addresses or routes gets this long (a host with 2,000 boxes lists 2,000 of each). */
const DUMP_TIMEOUT_MS = 10_000;
/** How long `ip monitor` may take to subscribe to the kernel's address and route groups. */
const SUBSCRIBE_TIMEOUT_MS = 5_000;
/** Restart (or re-read) backoff after the monitor died or a reading failed: doubles from here up to 30 s. */
const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 30_000;
/** RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE (linux/rtnetlink.h): what `ip -4 monitor address route` joins. */
const MONITOR_GROUPS = 0x10 | 0x40;

type AddressDump = Array<{ addr_info?: Array<{ family?: string; local?: string; address?: string; prefixlen?: number }> }>;
type RouteDump = Array<{ type?: string; dst?: string; gateway?: string; nexthops?: Array<{ gateway?: string }> }>;

/**
 * The networks the host is directly connected to, from `ip -j -4 addr` and `ip -j -4 route show
 * table all`: each address's network (the peer's, for a point-to-point address), and each
 * unicast route without a gateway in any table (the kernel's prefix routes, an operator's
 * `ip route add CIDR dev IF`, a multipath route with a path that has none). A default route
 * is not a network (a point-to-point uplink has one without a gateway), nor is a route via a
 * gateway: beyond it is a router. Canonical CIDRs, de-duplicated.
 */
export function connectedPrefixes(addresses: AddressDump, routes: RouteDump): string[] {
  const found = new Set<string>();
  const add = (cidr: string) => {
    const parsed = parseIpv4Cidr(cidr);
    if (parsed) found.add(parsed.cidr);
  };
  for (const link of addresses) {
    for (const info of link.addr_info ?? []) {
      if (info.family !== "inet" || info.prefixlen === undefined) continue;
      const address = info.address ?? info.local;
      if (address) add(`${address}/${info.prefixlen}`);
    }
  }
  for (const route of routes) {
    if ((route.type ?? "unicast") !== "unicast" || !route.dst || route.dst === "default") continue;
    const direct = route.nexthops ? route.nexthops.some((hop) => !hop.gateway) : !route.gateway;
    if (direct) add(route.dst);
  }
  return [...found].sort();
}

/** The host's directly connected networks, as they are now (two `ip` dumps). */
export async function readConnectedPrefixes(): Promise<string[]> {
  const [addresses, routes] = await Promise.all([
    mustRun("ip", ["-j", "-4", "addr", "show"], { timeoutMs: DUMP_TIMEOUT_MS }),
    // unicast only: a box's local and broadcast routes (two more per box) are not networks
    mustRun("ip", ["-j", "-4", "route", "show", "table", "all", "type", "unicast"], { timeoutMs: DUMP_TIMEOUT_MS }),
  ]);
  return connectedPrefixes(JSON.parse(addresses || "[]") as AddressDump, JSON.parse(routes || "[]") as RouteDump);
}

const IPV4_TOKEN = /\b(\d{1,3}(?:\.\d{1,3}){3})(?:\/(\d{1,2}))?\b/g;

/**
 * Whether a line of `ip -o -4 monitor address route` may change the networks that matter: one
 * naming only addresses inside `ignored` cannot (a box's own veth address and /30 route, in the
 * box subnet, which the firewall refuses anyway), so a box's start costs no re-reading. A line
 * naming no address at all (a default route) counts, to be safe.
 */
export function lineMatters(line: string, ignored: readonly Ipv4Range[]): boolean {
  const ranges = [...line.matchAll(IPV4_TOKEN)].flatMap((m) => {
    const parsed = parseIpv4Cidr(m[2] === undefined ? m[1]! : `${m[1]}/${m[2]}`);
    return parsed ? [parsed.range] : [];
  });
  return ranges.length === 0 || ranges.some((range) => !rangeCovered(range, ignored));
}

/**
 * Follows the host's directly connected networks: one reading at start, then another after any
 * change the kernel announces. `ip -o -4 monitor address route` is a supervised child (it dies
 * with the daemon: PR_SET_PDEATHSIG; restarted with a backoff if it exits, and everything read
 * again, as changes may have gone unseen meanwhile). A reading is two `ip` dumps, whose cost
 * grows with the boxes (each has an address and a route), so lines about addresses in `ignored`
 * (the box subnet) start none, and changes that arrive during a reading make one more, not one
 * each. Readings reach `onChange` one at a time, in order.
 *
 * Not announced by the kernel: IPv4 routes it flushes when a link goes down (only the address
 * changes are). Until the next announced change the set keeps them: boxes are refused a
 * little more, never less.
 */
export class HostNetworkWatch {
  private child: ChildProcess | undefined;
  private stopped = false;
  private pending = false;
  private reading: Promise<void> | undefined;
  private retryMs = RETRY_FIRST_MS;

  constructor(
    private readonly ignored: readonly Ipv4Range[],
    private readonly onChange: (prefixes: string[]) => Promise<void>,
    private readonly log: RuntimeLogger,
  ) {}

  /**
   * Subscribe, then read once (so no change falls between the two) and hand it over; throws if
   * either fails. Changes announced meanwhile make one more reading after this one.
   */
  async start(): Promise<void> {
    await this.spawnMonitor();
    const first = readConnectedPrefixes().then((prefixes) => this.onChange(prefixes));
    this.reading = first.then(
      () => this.drain(),
      () => {},
    );
    void this.reading.finally(() => (this.reading = undefined));
    await first;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    }
    await this.reading;
  }

  /** Read again soon: now if no reading runs, else once more after the one running. */
  private readAgain(): void {
    this.pending = true;
    this.reading ??= this.drain().finally(() => (this.reading = undefined));
  }

  private async drain(): Promise<void> {
    while (this.pending && !this.stopped) {
      this.pending = false;
      try {
        await this.onChange(await readConnectedPrefixes());
        this.retryMs = RETRY_FIRST_MS;
      } catch (err) {
        this.log.error({ err: String(err), retryMs: this.retryMs }, "could not follow the host's directly connected networks; trying again");
        this.retryLater(() => this.readAgain());
      }
    }
  }

  private retryLater(then: () => void): void {
    setTimeout(() => !this.stopped && then(), this.retryMs).unref();
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
  }

  /** Start `ip monitor`; resolves once it is subscribed (its netlink socket is in the groups). */
  private async spawnMonitor(): Promise<void> {
    const child = spawn("setpriv", ["--pdeathsig", "SIGKILL", "ip", "-o", "-4", "monitor", "address", "route"], { stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    createInterface({ input: child.stdout! }).on("line", (line) => lineMatters(line, this.ignored) && this.readAgain());
    // "netlink receive error ... No buffer space available": the kernel dropped announcements, so read everything
    createInterface({ input: child.stderr! }).on("line", (line) => {
      this.log.warn({ line }, "ip monitor");
      this.readAgain();
    });
    child.once("exit", (code, signal) => {
      if (this.child === child) this.child = undefined;
      if (this.stopped) return;
      this.log.error({ code, signal, retryMs: this.retryMs }, "ip monitor exited; restarting it");
      this.retryLater(() =>
        this.spawnMonitor().then(
          () => this.readAgain(),
          (err) => this.log.error({ err: String(err) }, "ip monitor restart failed"),
        ),
      );
    });
    await waitSubscribed(child);
  }
}

/**
 * Resolves once `child` holds a NETLINK_ROUTE socket in the address and route groups: from then
 * on no change goes unannounced. Read from /proc: the child's socket inodes, and the groups of
 * each netlink socket (/proc/net/netlink). Polled every 5 ms, at most SUBSCRIBE_TIMEOUT_MS.
 */
async function waitSubscribed(child: ChildProcess): Promise<void> {
  const spawned = new Promise<void>((resolve, reject) => {
    child.once("spawn", resolve);
    child.once("error", reject);
  });
  await spawned;
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  for (let waitedMs = 0; waitedMs < SUBSCRIBE_TIMEOUT_MS && !exited(); waitedMs += 5) {
    if (subscribed(child.pid!)) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  child.kill("SIGKILL");
  throw new Error(exited() ? "ip monitor exited before it subscribed" : `ip monitor did not subscribe to address and route changes within ${SUBSCRIBE_TIMEOUT_MS} ms`);
}

function subscribed(pid: number): boolean {
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      const target = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (target) inodes.add(target[1]!);
    }
  } catch {
    return false; // gone, or still exec-ing
  }
  // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
  return readFileSync("/proc/net/netlink", "utf8")
    .split("\n")
    .slice(1)
    .some((row) => {
      const cols = row.trim().split(/\s+/);
      return cols[1] === "0" && inodes.has(cols[9] ?? "") && (parseInt(cols[3] ?? "0", 16) & MONITOR_GROUPS) === MONITOR_GROUPS;
    });
}
