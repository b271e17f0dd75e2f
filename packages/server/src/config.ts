import { homedir } from "node:os";
import { join } from "node:path";

/** Everything the daemon can be told, in one place, with one defaults object. */
export interface DaemonConfig {
  /** Where the daemon keeps sail.db, images/ and boxes/. */
  dataDir: string;
  /** host:port of the control-plane API. */
  apiListen: string;
  /** host:port of the Prometheus endpoint (GET /metrics, no auth), or "off". */
  metricsListen: string;
  /** host:port of the HTTPS gateway that serves published HTTP ports. */
  httpsListen: string;
  /** HTTP listeners are served at `https://<port>-<id>.<domain>`. */
  domain: string;
  /** The port public URLs name (default: the port of httpsListen; 443 is left out of URLs). */
  publicHttpsPort?: number;
  /** Address raw-TCP listeners bind on. */
  tcpListen: string;
  /** The range public TCP ports are allocated from, "first-last". */
  tcpPorts: string;
  /** The host name or address TCP endpoints advertise. */
  publicHost: string;
  /** Raw-TCP endpoints an org may hold at once (per-org overrides live in the store). */
  tcpLimitPerOrg: number;
  /** Gateway worker processes (default: one per core). */
  gatewayWorkers?: number;
  /** A certificate (e.g. a real wildcard for *.domain) to serve instead of the local CA's. */
  tlsCert?: string;
  tlsKey?: string;
  /** IPv4 range carved into one /30 per box (host .1, guest .2). */
  boxSubnet: string;
  /** Debian mirror debootstrap builds the base image from. */
  debianMirror: string;
  /** Where the client config (API URL + token) is written for the SDK and CLI. */
  clientConfigPath: string;
  /** crun's state directory (tmpfs: container state must not outlive a reboot). */
  crunRoot: string;
  /** Defaults for a box that does not say. */
  boxCpu: number;
  boxMemoryMiB: number;
  boxPidsLimit: number;
  logLevel: "debug" | "info" | "warn" | "error" | "silent";
}

export const DEFAULT_CONFIG: DaemonConfig = {
  dataDir: "/var/lib/sail",
  apiListen: "127.0.0.1:7070",
  metricsListen: "127.0.0.1:7071",
  httpsListen: "0.0.0.0:8443",
  domain: "sail.localhost",
  publicHttpsPort: undefined,
  gatewayWorkers: undefined,
  tcpListen: "0.0.0.0",
  tcpPorts: "20000-29999",
  publicHost: "localhost",
  tcpLimitPerOrg: 32,
  tlsCert: undefined,
  tlsKey: undefined,
  boxSubnet: "10.200.0.0/16",
  debianMirror: "http://deb.debian.org/debian",
  clientConfigPath: process.env.SAIL_CONFIG || join(homedir(), ".sail", "config.json"),
  crunRoot: "/run/sail/crun",
  boxCpu: 1,
  boxMemoryMiB: 1024,
  boxPidsLimit: 1024,
  logLevel: "info",
};

/** Merge given options over the defaults, refusing unknown keys (a typo must not pass silently). */
export function resolveConfig(options: Partial<DaemonConfig>): DaemonConfig {
  for (const key of Object.keys(options)) {
    if (!(key in DEFAULT_CONFIG)) throw new Error(`unknown daemon option "${key}"; known: ${Object.keys(DEFAULT_CONFIG).join(", ")}`);
  }
  const defined = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  const config = { ...DEFAULT_CONFIG, ...defined } as DaemonConfig;
  parseListen(config.apiListen);
  if (config.metricsListen !== "off") parseListen(config.metricsListen);
  parseListen(config.httpsListen);
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/.test(config.domain)) {
    throw new Error(`domain "${config.domain}" must be a DNS name such as sail.localhost or sail.example.com`);
  }
  parsePortRange(config.tcpPorts);
  if (config.gatewayWorkers !== undefined && !(Number.isInteger(config.gatewayWorkers) && config.gatewayWorkers >= 1 && config.gatewayWorkers <= 64)) {
    throw new Error(`gateway workers "${config.gatewayWorkers}" must be a whole number from 1 to 64`);
  }
  if (!!config.tlsCert !== !!config.tlsKey) throw new Error("give both tlsCert and tlsKey, or neither (Sail then uses its local CA)");
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
