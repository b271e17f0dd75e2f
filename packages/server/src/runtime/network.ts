import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { cidrRanges, forbiddenIpv4Ranges, intToIpv4, ipv4ToInt, parseIpv4Cidr } from "@sail/protocol";
import { mustRun, runCommand } from "./commands.js";
import { EgressFirewall, rangeTexts, type OutboundBounds } from "./egress.js";
import { HostNetworkWatch } from "./host-networks.js";
import { mountSysfs } from "./mounts.js";
import type { BoxNetwork, RuntimeLogger } from "./runtime.js";

const IP_FORWARD = "/proc/sys/net/ipv4/ip_forward";

const SILENT: RuntimeLogger = { info() {}, warn() {}, error() {} };

/**
 * One network namespace per box with a routed veth pair: a /30 per box carved
 * from the box subnet (host side .1, guest side .2). No bridge: the gateway
 * dials the guest address directly, and boxes cannot reach each other.
 */
export class BoxNetworks {
  private readonly base: number;
  readonly slots: number;

  private readonly subnet: string;
  readonly egress: EgressFirewall;
  /** Whether this daemon turned the host's IPv4 forwarding on (then it forwards for boxes only). */
  private forwardingOurs = false;
  private readonly outboundEnabled: boolean;
  /** Follows the host's directly connected networks into the firewall, while boxes may go out. */
  private readonly hostNetworks: HostNetworkWatch;

  /**
   * `forwardingMark` is a host-wide file (under /run, so a reboot forgets it with the setting)
   * that says "Sail turned ip_forward on": whichever Sail daemon is the last to need forwarding
   * turns it off again, even if the one that turned it on is gone (a failed start, a crash).
   */
  constructor(
    subnet: string,
    bounds: OutboundBounds = { enabled: false, privateAllowed: [], only: null },
    private readonly forwardingMark?: string,
    private readonly log: RuntimeLogger = SILENT,
  ) {
    this.outboundEnabled = bounds.enabled;
    const parsed = subnet.includes("/") ? parseIpv4Cidr(subnet) : undefined;
    if (!parsed) throw new Error(`box subnet ${subnet} is not an IPv4 CIDR`);
    if (parsed.prefix > 30) throw new Error(`box subnet ${subnet} is too small: it needs at least a /30`);
    this.base = parsed.range[0];
    this.slots = 2 ** (32 - parsed.prefix) / 4;
    this.subnet = parsed.cidr;
    this.egress = new EgressFirewall(this.firewallTable, this.subnet, bounds);
    // changes inside what boxes are refused anyway (the box subnet: every box start) or what the operator opened change nothing
    const ignored = [...forbiddenIpv4Ranges(bounds.privateAllowed, this.subnet), ...cidrRanges(bounds.privateAllowed)];
    this.hostNetworks = new HostNetworkWatch(ignored, (prefixes) => this.followHostNetworks(prefixes), log);
  }

  addresses(slot: number): BoxNetwork {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slots) throw new RangeError(`network slot ${slot} is outside the box subnet`);
    const net = this.base + slot * 4;
    return { hostAddress: intToIpv4(net + 1), guestAddress: intToIpv4(net + 2) };
  }

  /** The slot whose /30 holds `guestAddress` as its guest side (`addresses`' inverse); undefined when none does. */
  slotOf(guestAddress: string): number | undefined {
    const address = ipv4ToInt(guestAddress);
    if (address === undefined) return undefined;
    const offset = address - this.base - 2;
    if (offset < 0 || offset % 4 !== 0 || offset / 4 >= this.slots) return undefined;
    return offset / 4;
  }

  /**
   * Make the whole box subnet unreachable from the host except for live boxes' /30s
   * (more specific routes win): a dial to a gone box fails at once with EHOSTUNREACH
   * and nothing addressed to the subnet ever leaves through the default route.
   */
  async fenceSubnet(): Promise<void> {
    await mustRun("ip", ["route", "replace", "unreachable", this.subnet]);
    this.forwardingOurs = this.outboundEnabled && this.enableForwarding();
    await this.firewall();
    if (!this.outboundEnabled) return; // every box's chain refuses everything: nothing to follow
    try {
      await this.hostNetworks.start();
    } catch (err) {
      await this.hostNetworks.stop();
      throw err;
    }
  }

  /** The host's directly connected networks changed (or were read at start): into the firewall's `connected` set. */
  private async followHostNetworks(prefixes: string[]): Promise<void> {
    const changed = await this.egress.setConnected(prefixes);
    if (!changed) return;
    this.log.info(
      { refused: rangeTexts(this.egress.connectedRanges), joined: rangeTexts(changed.joined), left: rangeTexts(changed.left) },
      "boxes are refused the networks the host is directly connected to",
    );
  }

  /**
   * When boxes still run (they outlive the daemon), they keep the firewall but lose their way
   * out and their resolver until the daemon is back. With none left, the host is as before:
   * no route, no table, and forwarding off again if Sail turned it on and no other Sail
   * daemon with outbound on remains (their tables say so).
   */
  async unfenceSubnet(boxesRemain: boolean): Promise<void> {
    await this.hostNetworks.stop();
    if (boxesRemain) {
      await this.egress.closeAll();
      return;
    }
    await runCommand("ip", ["route", "del", "unreachable", this.subnet]);
    await runCommand("nft", ["delete", "table", "inet", this.firewallTable]);
    if (this.forwardingMark && existsSync(this.forwardingMark) && !(await BoxNetworks.outboundDaemonsRemain())) {
      writeFileSync(IP_FORWARD, "0\n");
      rmSync(this.forwardingMark, { force: true });
    }
  }

  /** Whether a Sail table of a daemon with outbound on (it holds the `outbound_on` set) is on this host. */
  private static async outboundDaemonsRemain(): Promise<boolean> {
    const tables = (await runCommand("nft", ["list", "tables"])).stdout.match(/table inet sail_\S+/g) ?? [];
    for (const table of tables) {
      if ((await runCommand("nft", ["list", "set", "inet", table.split(" ")[2]!, "outbound_on"])).code === 0) return true;
    }
    return false;
  }

  /** Boxes reach the outside by forwarding: turn it on if it is off. Returns whether Sail did (now or before a restart). */
  private enableForwarding(): boolean {
    const was = readFileSync(IP_FORWARD, "utf8").trim();
    const ours = was === "0" || (this.forwardingMark !== undefined && existsSync(this.forwardingMark));
    if (was === "0") {
      if (this.forwardingMark) mkdirSync(dirname(this.forwardingMark), { recursive: true });
      if (this.forwardingMark) writeFileSync(this.forwardingMark, "Sail turned net.ipv4.ip_forward on; it turns it off when it stops with no box left\n");
      writeFileSync(IP_FORWARD, "1\n");
    }
    return ours;
  }

  /** One nftables table per box subnet, so two daemons on a host do not remove each other's. */
  get firewallTable(): string {
    return `sail_${this.subnet.replace(/[./]/g, "_")}`;
  }

  /**
   * Boxes may answer the host (the gateway dials them) and ask their resolver, but never open
   * another connection to it, nor to another box: whatever the host listens on (0.0.0.0, [::],
   * the veth's IPv6 link-local address). What they may reach beyond the host is each box's
   * outbound chain (EgressFirewall). A box may only send from its own address (a reverse-path
   * check on its veth), so its source address names it; the IPv4 rules match this daemon's
   * subnet only, so two daemons on a host never decide for each other's boxes. When the host
   * did not forward before Sail, it forwards for boxes only. Refused packets are counted.
   */
  private async firewall(): Promise<void> {
    const veths = `"${HOST_INTERFACE_PREFIX}*"`;
    const table = this.firewallTable;
    const boxes = `ip saddr ${this.subnet}`;
    await runCommand("nft", ["delete", "table", "inet", table]);
    await mustRun("nft", ["-f", "-"], {
      input: `table inet ${table} {
${this.egress.baseDefinition()}
${this.outboundEnabled ? '  set outbound_on { type ipv4_addr; comment "this daemon\'s boxes may go out: the host must forward"; }' : ""}
  chain prerouting {
    type filter hook prerouting priority raw; policy accept;
    iifname ${veths} fib saddr . iif oif missing counter drop comment "a sailbox may only send from its own address"
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname ${veths} ${boxes} ct state established,related accept
${this.egress.inputRules(veths)}
    iifname ${veths} ${boxes} meta l4proto tcp counter reject with tcp reset comment "a sailbox may not open connections to the host (a reset: ICMP errors are rate-limited)"
    iifname ${veths} ${boxes} counter reject comment "a sailbox may not open connections to the host"
    iifname ${veths} meta nfproto ipv6 ct state established,related accept
    iifname ${veths} meta nfproto ipv6 counter reject comment "nor over IPv6"
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
${this.egress.forwardRules(veths)}
    iifname ${veths} meta nfproto ipv6 counter drop comment "boxes reach the outside over IPv4 only"
    oifname ${veths} ip daddr ${this.subnet} ct state established,related accept
    oifname ${veths} ip daddr ${this.subnet} counter drop comment "nothing routed into a sailbox but replies: the gateway is the way in"
    oifname ${veths} meta nfproto ipv6 counter drop
${this.forwardingOurs ? `    iifname != ${veths} oifname != ${veths} counter drop comment "the host did not forward before Sail: it forwards for boxes only"` : ""}
  }
}
`,
    });
  }

  static namespace(id: string): string {
    return `sail-${id}`;
  }

  /** Host-side interface name: at most 15 characters (IFNAMSIZ). */
  static hostInterface(id: string): string {
    return `${HOST_INTERFACE_PREFIX}${id.replace(/^sb-/, "")}`.slice(0, 15);
  }

  /** Three `ip` calls in batch mode (≈ 82 ms as ten separate calls, measured here). */
  async create(id: string, slot: number, signal?: AbortSignal): Promise<BoxNetwork> {
    const { hostAddress, guestAddress } = this.addresses(slot);
    const ns = BoxNetworks.namespace(id);
    const veth = BoxNetworks.hostInterface(id);
    // the host's side in one process; the box's side is `configureInside`, which may run while the container starts
    await mustRun("ip", ["-batch", "-"], {
      input: [`netns add ${ns}`, `link add ${veth} type veth peer name eth0 netns ${ns}`, `addr add ${hostAddress}/30 dev ${veth}`, `link set ${veth} up`].join("\n") + "\n",
      signal,
    });
    return { hostAddress, guestAddress };
  }

  /**
   * Inside the box's namespace, in one process: its address, loopback and default route; and
   * connections from the host (the gateway, the readiness probe) to any TCP port of the box go
   * to its loopback, so a server bound to 127.0.0.1 is reached as well as one bound to 0.0.0.0
   * (dev servers bind localhost by default). route_localnet lets eth0 carry 127.0.0.1. The box
   * cannot change any of it (no CAP_NET_ADMIN, and its user namespace does not own the network
   * namespace). For that reason its root's CAP_NET_BIND_SERVICE does not count here either, so
   * any port may be bound (ip_unprivileged_port_start=0, as Docker sets for its containers).
   */
  async configureInside(id: string, network: BoxNetwork, signal?: AbortSignal): Promise<void> {
    const rules = `table ip sail {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "eth0" ip saddr ${network.hostAddress} ip daddr ${network.guestAddress} meta l4proto tcp dnat ip to 127.0.0.1
  }
}
`;
    const addresses = [`addr add ${network.guestAddress}/30 dev eth0`, "link set eth0 up", "link set lo up", `route add default via ${network.hostAddress}`].join("\n");
    const script = `set -e\nip -batch - <<'EOF'\n${addresses}\nEOF\necho 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet\necho 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start\nexec nft -f -\n`;
    await mustRun("ip", ["netns", "exec", BoxNetworks.namespace(id), "sh", "-c", script], { input: rules, signal });
  }

  /**
   * A sysfs of the box's network namespace at `target`, read-only, for the box's /sys: its
   * /sys/class/net holds its own interfaces only. The box cannot mount one (the kernel lets only
   * the owner of a network namespace's user namespace mount its sysfs, and a box's user
   * namespace does not own its network namespace), and the host's /sys would show it every
   * box's veth and its byte counters.
   */
  mountSysfs(id: string, target: string): void {
    mkdirSync(target, { recursive: true });
    mountSysfs(`/run/netns/${BoxNetworks.namespace(id)}`, target);
  }

  /** Deleting the namespace deletes its end of the pair, and so the pair. Idempotent. */
  async destroy(id: string, signal?: AbortSignal): Promise<void> {
    await runCommand("ip", ["netns", "del", BoxNetworks.namespace(id)], { signal });
    await runCommand("ip", ["link", "del", BoxNetworks.hostInterface(id)], { signal });
  }
}

const HOST_INTERFACE_PREFIX = "sv";
