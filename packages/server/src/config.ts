import { isIP } from "node:net";
import { homedir } from "node:os";
import { isAbsolute, join } from "node:path";
import { parseImageName, parseIpv4Cidr, RESOURCE_LIMITS } from "@sail/protocol";

/** Everything the daemon can be told: one schema (DAEMON_OPTIONS) gives its defaults, checks and `sail up --help`. */
export interface DaemonConfig {
  /** all: control plane and node agent in one process (the default); control or node: one part each (docs/architecture.md, "The node boundary"); edge: the router in front of the nodes ("The edge"). */
  role: "all" | "control" | "node" | "edge";
  /** The control plane's store: "sqlite" (sail.db in the data dir) or a postgres:// URL. */
  store: string;
  /** Node agent: where the control plane reaches its wire (role node), e.g. 0.0.0.0:7080. */
  nodeListen: string;
  /** Node agent: the URL the control plane dials (default: http:// + nodeListen). */
  nodeUrl?: string;
  /** Node agent: the control plane's API URL (role node). */
  control?: string;
  /** The credential both ends of the node wire present (role control makes one in the data dir when not given). */
  nodeToken?: string;
  /** Role control: a node's lease lasts this long past its last heartbeat; a node that cannot renew it fences itself. */
  nodeLeaseSeconds: number;
  /** Role control: after a node's lease lapsed, this long more before its boxes are failed. */
  nodeGraceSeconds: number;
  /** Node agent: the address an edge reaches its gateways at, when --https-listen / --tcp-listen bind a wildcard. */
  edgeAddress?: string;
  /** Node agent: sources (edges) whose connections start with a PROXY v2 header naming the real client. */
  edgeFrom: string[];
  dataDir: string;
  apiListen: string;
  metricsListen: string;
  httpsListen: string;
  domain: string;
  publicHttpsPort?: number;
  gatewayThreads?: number;
  httpsMaxConnections: number;
  gatewayMemoryMiB: number;
  headTimeoutSeconds: number;
  clientIdleTimeoutSeconds: number;
  responseTimeoutSeconds: number;
  tunnelTimeoutSeconds: number;
  wakeTimeoutSeconds: number;
  tcpWorkers?: number;
  tlsSessionResumption: boolean;
  tlsCert?: string;
  tlsKey?: string;
  tcpListen: string;
  tcpPorts: string;
  publicHost: string;
  tcpLimitPerOrg: number;
  boxSubnet: string;
  outbound: boolean;
  outboundPrivate: string[];
  outboundOnly?: string[];
  dnsUpstream?: string[];
  debianMirror: string;
  prebuildImages: string[];
  clientConfigPath: string;
  crunRoot: string;
  /** The cgroup every box's cgroup is made under (`/<parent>/<box id>`), so nodes sharing a kernel (tests) keep apart. */
  cgroupParent: string;
  boxCpu: number;
  boxMemoryMiB: number;
  boxDiskMiB: number;
  boxDiskBytesPerInode: number;
  boxPidsLimit: number;
  logLevel: "debug" | "info" | "warn" | "error" | "silent";
  console: boolean;
}

type Key = keyof DaemonConfig;

/** One option: its `sail up` flag (none for options only the environment or tests set), help, default and check. */
export interface DaemonOption<K extends Key = Key> {
  key: K;
  /** `--<flag> <arg>`; undefined: not a flag. */
  flag?: string;
  arg?: string;
  help: string;
  default: DaemonConfig[K];
  /** From the flag's text; numbers are parsed here so the check sees a number. */
  parse: (text: string) => DaemonConfig[K];
  /** Why the value is wrong, or undefined. */
  check: (value: NonNullable<DaemonConfig[K]>) => string | undefined;
  /** The flag may be given more than once; `parse` returns a list, and the lists add up. */
  repeatable?: true;
}

/** An option of any key (a union, so each entry's check takes its own value's type). */
export type AnyDaemonOption = { [K in Key]: DaemonOption<K> }[Key];

const text = (value: string) => value;
const integer = (value: string) => (/^-?\d+$/.test(value.trim()) ? Number(value) : Number.NaN);
const number = (value: string) => (value.trim() === "" ? Number.NaN : Number(value));
const inRange =
  (min: number, max: number, what: string, whole = true) =>
  (value: number) =>
    (whole ? Number.isInteger(value) : Number.isFinite(value)) && value >= min && value <= max
      ? undefined
      : `must be ${whole ? "a whole number" : "a number"} from ${min} to ${max}${what ? ` (${what})` : ""}`;
const listen = (value: string) => {
  try {
    parseListen(value);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
};
/** on|off; anything else passes through for onOffCheck to name. */
const onOff = (value: string) => (value === "on" ? true : value === "off" ? false : (value as unknown as boolean));
const onOffCheck = (value: boolean) => (typeof value === "boolean" ? undefined : "must be on or off");
const list = (value: string) =>
  value
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean);
const cidrs = (value: string[]) => {
  const bad = value.find((c) => parseIpv4Cidr(c) === undefined);
  return bad === undefined ? undefined : `has ${JSON.stringify(bad)}, which is not an IPv4 address or CIDR (e.g. 10.1.2.3/32)`;
};
const DNS_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;

const option = <K extends Key>(spec: DaemonOption<K>): DaemonOption<K> => spec;

/** The schema: the order is `sail up --help`'s. */
export const DAEMON_OPTIONS = [
  option({
    key: "role",
    flag: "role",
    arg: "all|control|node|edge",
    help: "all: everything in this process (one machine); control: the API and the store, nodes join it; node: a node agent that joins --control; edge: the router in front of the nodes (HTTPS by SNI on --https-listen, raw TCP on --tcp-listen:--tcp-ports), fed by --control",
    default: "all",
    parse: (v) => v as DaemonConfig["role"],
    check: (v) => (["all", "control", "node", "edge"].includes(v) ? undefined : "must be all, control, node or edge"),
  }),
  option({
    key: "store",
    flag: "store",
    arg: "sqlite|postgres://…",
    help: "the control plane's store: sqlite (sail.db in the data dir) or a PostgreSQL URL, e.g. postgres://sail:secret@db:5432/sail",
    default: "sqlite",
    parse: text,
    check: (v) => (v === "sqlite" || /^postgres(ql)?:\/\//.test(v) ? undefined : "must be sqlite or a postgres:// URL"),
  }),
  option({
    key: "control",
    flag: "control",
    arg: "url",
    help: "roles node and edge: the control plane's API URL, e.g. http://10.0.0.1:7070",
    default: undefined,
    parse: text,
    check: (v) => (/^https?:\/\/[^/]+\/?$/.test(v) ? undefined : "must be an http(s) URL of the control plane's API, e.g. http://10.0.0.1:7070"),
  }),
  option({ key: "nodeListen", flag: "node-listen", arg: "host:port", help: "role node: where the control plane reaches this node agent", default: "127.0.0.1:7080", parse: text, check: listen }),
  option({
    key: "nodeUrl",
    flag: "node-url",
    arg: "url",
    help: "role node: the URL the control plane dials (default: http://<--node-listen>)",
    default: undefined,
    parse: text,
    check: (v) => (/^https?:\/\/[^/]+\/?$/.test(v) ? undefined : "must be an http(s) URL, e.g. http://10.0.0.2:7080"),
  }),
  option({
    key: "nodeToken",
    flag: "node-token",
    arg: "secret",
    help: "the node wire's credential (roles control, node and edge; role control writes one to <data-dir>/node-token when not given)",
    default: undefined,
    parse: text,
    check: (v) => (v.length >= 16 ? undefined : "must be at least 16 characters"),
  }),
  option({
    key: "nodeLeaseSeconds",
    flag: "node-lease",
    arg: "seconds",
    help: "role control: a node's lease lasts this long past its last heartbeat (every 5 s); a node that cannot renew it stops serving its boxes",
    default: 10,
    parse: integer,
    check: inRange(6, 3600, "seconds: more than one heartbeat"),
  }),
  option({
    key: "nodeGraceSeconds",
    flag: "node-grace",
    arg: "seconds",
    help: "role control: after a node's lease lapsed, this long more before its sailboxes are failed and their ports freed",
    default: 3,
    parse: integer,
    check: inRange(0, 3600, "seconds"),
  }),
  option({
    key: "edgeAddress",
    flag: "edge-address",
    arg: "address",
    help: "role node: the address edges reach this node's HTTPS and TCP gateways at (default: the host of --https-listen and --tcp-listen, unless they bind a wildcard)",
    default: undefined,
    parse: text,
    check: (v) => (isIP(v) === 4 ? undefined : "must be an IPv4 address such as 10.0.0.2"),
  }),
  option({
    key: "edgeFrom",
    flag: "edge-from",
    arg: "cidr",
    help: "role node: an edge's source range (repeatable): its connections start with a PROXY v2 header naming the real client, which then counts for CIDR allowlists, X-Forwarded-For and logs",
    default: [],
    parse: (v) => [v],
    repeatable: true,
    check: cidrs,
  }),
  option({
    key: "dataDir",
    flag: "data-dir",
    arg: "dir",
    help: "where Sail keeps its database, images and boxes",
    default: "/var/lib/sail",
    parse: text,
    check: (v) => (isAbsolute(v) ? undefined : "must be an absolute path"),
  }),
  option({ key: "apiListen", flag: "api-listen", arg: "host:port", help: "address of the control-plane API", default: "127.0.0.1:7070", parse: text, check: listen }),
  option({
    key: "metricsListen",
    flag: "metrics-listen",
    arg: "host:port|off",
    help: "address of the Prometheus endpoint (GET /metrics, no auth), or off",
    default: "127.0.0.1:7071",
    parse: text,
    check: (v) => (v === "off" ? undefined : listen(v)),
  }),
  option({ key: "httpsListen", flag: "https-listen", arg: "host:port", help: "address of the HTTPS gateway for published ports", default: "0.0.0.0:8443", parse: text, check: listen }),
  option({
    key: "domain",
    flag: "domain",
    arg: "domain",
    help: "HTTP listeners get https://<port>-<id>.<domain>",
    default: "sail.localhost",
    parse: (v) => v.toLowerCase(),
    check: (v) => (DNS_NAME.test(v) && v.includes(".") ? undefined : "must be a DNS name such as sail.localhost or sail.example.com"),
  }),
  option({
    key: "publicHttpsPort",
    flag: "public-https-port",
    arg: "port",
    help: "the port public URLs name, if a proxy in front changes it (443 is left out; default: the port of --https-listen)",
    default: undefined,
    parse: integer,
    check: inRange(1, 65535, ""),
  }),
  option({
    key: "tlsCert",
    flag: "tls-cert",
    arg: "file",
    help: "serve this certificate (e.g. a wildcard for *.<domain>) instead of the local CA's",
    default: undefined,
    parse: text,
    check: (v) => (isAbsolute(v) ? undefined : "must be an absolute path"),
  }),
  option({ key: "tlsKey", flag: "tls-key", arg: "file", help: "the key of --tls-cert", default: undefined, parse: text, check: (v) => (isAbsolute(v) ? undefined : "must be an absolute path") }),
  option({ key: "gatewayThreads", flag: "gateway-threads", arg: "n", help: "HAProxy threads serving HTTPS (default: one per core)", default: undefined, parse: integer, check: inRange(1, 64, "") }),
  option({
    key: "httpsMaxConnections",
    flag: "https-max-connections",
    arg: "n",
    help: "HTTPS connections at once; more wait in the kernel's backlog",
    default: 8000,
    parse: integer,
    check: inRange(10, 9000, "each takes two descriptors of the 20000 a process may hold here"),
  }),
  option({
    key: "gatewayMemoryMiB",
    flag: "gateway-memory",
    arg: "MiB",
    help: "memory HAProxy may allocate; past it, new connections are refused, not the host's memory",
    default: 1024,
    parse: integer,
    check: inRange(64, 65536, "MiB"),
  }),
  option({
    key: "headTimeoutSeconds",
    flag: "head-timeout",
    arg: "seconds",
    help: "a request head must arrive in this time (slowloris gets 408)",
    default: 20,
    parse: integer,
    check: inRange(1, 3600, "seconds"),
  }),
  option({
    key: "clientIdleTimeoutSeconds",
    flag: "client-idle-timeout",
    arg: "seconds",
    help: "a client that neither sends nor reads this long is cut (stalled uploads, slow readers, silent TLS handshakes)",
    default: 30,
    parse: integer,
    check: inRange(1, 86400, "seconds"),
  }),
  option({
    key: "responseTimeoutSeconds",
    flag: "response-timeout",
    arg: "seconds",
    help: "a guest silent this long while it owes an answer gets 504",
    default: 300,
    parse: integer,
    check: inRange(1, 86400, "seconds"),
  }),
  option({
    key: "tunnelTimeoutSeconds",
    flag: "tunnel-timeout",
    arg: "seconds",
    help: "a WebSocket with nothing moving this long is closed",
    default: 3600,
    parse: integer,
    check: inRange(1, 604800, "seconds"),
  }),
  option({
    key: "wakeTimeoutSeconds",
    flag: "wake-timeout",
    arg: "seconds",
    help: "how long a connection to a sleeping box is held while it wakes (then 503 with Retry-After)",
    default: 30,
    parse: integer,
    check: inRange(1, 600, "seconds"),
  }),
  option({
    key: "tlsSessionResumption",
    flag: "tls-session-resumption",
    arg: "on|off",
    help: "let clients resume TLS sessions (session tickets): a resumed handshake costs a fraction of a full one",
    default: true,
    parse: onOff,
    check: onOffCheck,
  }),
  option({ key: "tcpWorkers", flag: "tcp-workers", arg: "n", help: "processes serving raw TCP (default: one per core)", default: undefined, parse: integer, check: inRange(1, 64, "") }),
  option({
    key: "tcpListen",
    flag: "tcp-listen",
    arg: "address",
    help: "address raw-TCP listeners bind on (:: for IPv4 and IPv6)",
    default: "0.0.0.0",
    parse: text,
    check: (v) => (isIP(v) ? undefined : "must be an IP address such as 0.0.0.0 or ::"),
  }),
  option({
    key: "tcpPorts",
    flag: "tcp-ports",
    arg: "first-last",
    help: "range public TCP ports are taken from",
    default: "20000-29999",
    parse: text,
    check: (v) => {
      try {
        parsePortRange(v);
        return undefined;
      } catch (err) {
        return (err as Error).message;
      }
    },
  }),
  option({
    key: "publicHost",
    flag: "public-host",
    arg: "host",
    help: "host name or address TCP endpoints advertise",
    default: "localhost",
    parse: text,
    check: (v) => (isIP(v) || DNS_NAME.test(v) ? undefined : "must be a host name or an IP address"),
  }),
  option({
    key: "tcpLimitPerOrg",
    flag: "tcp-limit",
    arg: "n",
    help: "raw-TCP endpoints an org may hold at once (the store may hold an org's own)",
    default: 32,
    parse: integer,
    check: inRange(0, 100_000, ""),
  }),
  option({
    key: "boxSubnet",
    flag: "box-subnet",
    arg: "cidr",
    help: "IPv4 range carved into one /30 per box",
    default: "10.200.0.0/16",
    parse: text,
    check: (v) => {
      const prefix = v.includes("/") ? parseIpv4Cidr(v)?.prefix : undefined;
      return prefix !== undefined && prefix >= 8 && prefix <= 30 ? undefined : "must be an IPv4 CIDR from /8 to /30, e.g. 10.200.0.0/16";
    },
  }),
  option({
    key: "outbound",
    flag: "outbound",
    arg: "on|off",
    help: "let boxes open connections beyond the host (each box's policy applies inside; off: none does)",
    default: true,
    parse: onOff,
    check: onOffCheck,
  }),
  option({
    key: "outboundPrivate",
    flag: "outbound-private",
    arg: "cidr,...",
    help: "ranges boxes may reach anyway, e.g. a package mirror (never reached otherwise: RFC 1918, 100.64/10, loopback, link-local, multicast, cloud host endpoints, the host's directly connected networks)",
    default: [],
    parse: list,
    check: cidrs,
  }),
  option({
    key: "outboundOnly",
    flag: "outbound-only",
    arg: "cidr,...",
    help: "the only ranges boxes may reach (default: everywhere but the never-reached ranges)",
    default: undefined,
    parse: list,
    check: cidrs,
  }),
  option({
    key: "dnsUpstream",
    flag: "dns-upstream",
    arg: "addr[:port],...",
    help: "resolvers Sail's box resolver forwards to (default: the nameservers of the host's /etc/resolv.conf)",
    default: undefined,
    parse: list,
    check: (v) =>
      v.length && v.every((u) => /^(\[[0-9a-fA-F:.]+\]|[0-9.]+)(:\d{1,5})?$/.test(u) || isIP(u) === 6) ? undefined : "must be addresses with optional ports, e.g. 192.0.2.53 or 192.0.2.53:5353",
  }),
  option({
    key: "debianMirror",
    flag: "debian-mirror",
    arg: "url",
    help: "Debian mirror for the base images and apt packages",
    default: "http://deb.debian.org/debian",
    parse: text,
    check: (v) => (/^https?:\/\/[^\s/]+/.test(v) ? undefined : "must be an http:// or https:// URL"),
  }),
  option({
    key: "prebuildImages",
    flag: "prebuild-image",
    arg: "image",
    help: "build this image in the background once the daemon is up (repeatable), so no create waits for it: debian_arm64, debian_amd64, debian+postgresql,redis-server; progress goes to the log",
    default: [],
    parse: (v) => [v],
    repeatable: true,
    check: (v) => {
      for (const spec of v) {
        try {
          parseImageName(spec);
        } catch (err) {
          return `has ${JSON.stringify(spec)}: ${(err as Error).message}`;
        }
      }
      return undefined;
    },
  }),
  option({
    key: "logLevel",
    flag: "log-level",
    arg: "level",
    help: "debug, info, warn, error or silent",
    default: "info",
    parse: (v) => v as DaemonConfig["logLevel"],
    check: (v) => (["debug", "info", "warn", "error", "silent"].includes(v) ? undefined : "must be debug, info, warn, error or silent"),
  }),
  option({
    key: "console",
    flag: "console",
    arg: "on|off",
    help: "serve the web console at /console/ on --api-listen (`sail console` prints a login link)",
    default: true,
    parse: onOff,
    check: onOffCheck,
  }),
  option({
    key: "boxDiskMiB",
    flag: "box-disk",
    arg: "MiB",
    help: "disk of a box whose create does not say: its own filesystem, so the guest gets ENOSPC past it and `df` in the box shows it",
    default: 10240,
    parse: integer,
    check: inRange(RESOURCE_LIMITS.diskMiBMin, RESOURCE_LIMITS.diskMiBMax, "MiB"),
  }),
  option({
    key: "boxDiskBytesPerInode",
    flag: "box-disk-bytes-per-inode",
    arg: "bytes",
    help: "one inode (file or directory) per this many bytes of a box's disk (mkfs.ext4 -i): 16384 gives a 10 GiB disk 655360",
    default: 16384,
    parse: integer,
    check: inRange(4096, 64 * 1024 * 1024, "bytes: from one inode per 4 KiB block to mkfs.ext4's 64 MiB"),
  }),
  option({
    key: "clientConfigPath",
    help: "where the client config (API URL + token) goes: $SAIL_CONFIG, else ~/.sail/config.json",
    default: process.env.SAIL_CONFIG || join(homedir(), ".sail", "config.json"),
    parse: text,
    check: (v) => (isAbsolute(v) ? undefined : "must be an absolute path"),
  }),
  option({
    key: "crunRoot",
    flag: "crun-root",
    arg: "dir",
    help: "crun's state directory (tmpfs: container state must not outlive a reboot); node agents sharing a host each need their own",
    default: "/run/sail/crun",
    parse: text,
    check: (v) => (isAbsolute(v) ? undefined : "must be an absolute path"),
  }),
  option({
    key: "cgroupParent",
    flag: "cgroup-parent",
    arg: "name",
    help: "the cgroup boxes are made under (/<name>/<box id> in each hierarchy); node agents sharing a host each need their own",
    default: "sail",
    parse: text,
    check: (v) => (/^[a-z0-9][a-z0-9_-]{0,62}$/.test(v) ? undefined : "must be one cgroup name of [a-z0-9_-], e.g. sail-n1"),
  }),
  option({ key: "boxCpu", help: "CPU cores of a box that does not say", default: 1, parse: number, check: inRange(0.1, 1024, "cores", false) }),
  option({ key: "boxMemoryMiB", help: "memory (MiB) of a box that does not say", default: 1024, parse: integer, check: inRange(64, 65536, "MiB") }),
  option({ key: "boxPidsLimit", help: "processes a box may run", default: 1024, parse: integer, check: inRange(16, 1_000_000, "") }),
] as const satisfies readonly AnyDaemonOption[];

export const DEFAULT_CONFIG = Object.fromEntries(DAEMON_OPTIONS.map((o) => [o.key, o.default])) as unknown as DaemonConfig;

/** Merge given options over the defaults; refuse unknown keys (a typo must not pass silently) and bad values, naming the flag. */
export function resolveConfig(options: Partial<DaemonConfig>): DaemonConfig {
  const known = new Map<string, AnyDaemonOption>(DAEMON_OPTIONS.map((o) => [o.key, o]));
  for (const key of Object.keys(options)) {
    if (!known.has(key)) throw new Error(`unknown daemon option "${key}"; known: ${[...known.keys()].join(", ")}`);
  }
  const defined = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  const config = { ...DEFAULT_CONFIG, ...defined } as DaemonConfig;
  for (const spec of known.values()) {
    const value = config[spec.key];
    if (value === undefined) continue;
    const wrong = (spec.check as (v: unknown) => string | undefined)(value);
    if (wrong) throw new Error(`${spec.flag ? `--${spec.flag}` : spec.key} ${JSON.stringify(value)} ${wrong}`);
  }
  if (!!config.tlsCert !== !!config.tlsKey) throw new Error("give both --tls-cert and --tls-key, or neither (Sail then uses its local CA)");
  if ((config.role === "node" || config.role === "edge") && (!config.control || !config.nodeToken)) {
    throw new Error(`--role ${config.role} needs --control URL and --node-token (the control plane prints both when it starts)`);
  }
  return config;
}

export function parseListen(listen: string): { host: string; port: number } {
  const match = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(listen);
  const port = Number(match?.[2]);
  if (!match || port > 65535) throw new Error(`listen address "${listen}" must be host:port, e.g. 127.0.0.1:7070`);
  return { host: match[1]!.replace(/^\[|\]$/g, ""), port };
}

export function parsePortRange(range: string): { firstPort: number; lastPort: number } {
  const match = /^(\d{1,5})-(\d{1,5})$/.exec(range);
  const firstPort = Number(match?.[1]);
  const lastPort = Number(match?.[2]);
  if (!match || firstPort < 1 || lastPort > 65535 || firstPort > lastPort) throw new Error(`TCP port range "${range}" must be "first-last" within 1-65535, e.g. 20000-29999`);
  return { firstPort, lastPort };
}
