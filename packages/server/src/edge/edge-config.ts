import { join } from "node:path";
import { parseIpv4Cidr } from "@sail/protocol";
import type { EdgeRoutes } from "../node-wire/node-api.js";

/** What an edge's HAProxy is told. */
export interface EdgeSettings {
  /** Its config, maps and sockets (`<data-dir>/edge`). */
  dir: string;
  https: { host: string; port: number };
  tcpHost: string;
  tcpPorts: { firstPort: number; lastPort: number };
  threads: number;
  maxConnections: number;
  memoryMiB: number;
  user?: string;
  /** A client silent this long before its TLS ClientHello arrived is cut (also bounds the SNI wait). */
  clientIdleMs: number;
  /** A forwarded connection with nothing moving either way this long is cut (the node's own limits apply inside it). */
  tunnelMs: number;
}

export const edgePaths = (dir: string) => ({
  config: join(dir, "haproxy.cfg"),
  admin: join(dir, "admin.sock"),
  metrics: join(dir, "metrics.sock"),
  pid: join(dir, "haproxy.pid"),
  /** SNI host → node's HTTPS gateway `ip:port`. */
  sni: join(dir, "sni.map"),
  /** Public TCP port → the node's TCP address. */
  tcp: join(dir, "tcp.map"),
  /** Public TCP ports that have a CIDR allowlist. */
  tcpRestricted: join(dir, "tcp-restricted.map"),
  /** The allowlists, as `allowKey` CIDRs (port and range in one IPv6 prefix). */
  tcpAllow: join(dir, "tcp-allow.map"),
  // what HaproxyProcess expects of a gateway's paths (the edge has no certificate, routes file or slow path)
  routes: join(dir, "sni.map"),
  pem: join(dir, "none.pem"),
  slowPath: join(dir, "none.sock"),
});

export type EdgeMapName = "sni" | "tcp" | "tcpRestricted" | "tcpAllow";
export type EdgeMaps = Record<EdgeMapName, Array<[key: string, value: string]>>;

/**
 * The maps from a route snapshot. Hosts of a node that gave no HTTPS address, or ports of one
 * without a TCP address, are left out (and counted in `unroutable`): an edge cannot dial them.
 */
export function edgeMaps(routes: Pick<EdgeRoutes, "nodes" | "http" | "tcp">): EdgeMaps & { unroutable: number } {
  const nodes = new Map(routes.nodes.map((n) => [n.nodeId, n]));
  const maps: EdgeMaps & { unroutable: number } = { sni: [], tcp: [], tcpRestricted: [], tcpAllow: [], unroutable: 0 };
  for (const { host, nodeId } of routes.http) {
    const address = nodes.get(nodeId)?.httpsAddress;
    if (address) maps.sni.push([host.toLowerCase(), address]);
    else maps.unroutable++;
  }
  for (const { publicPort, nodeId, allow } of routes.tcp) {
    const address = nodes.get(nodeId)?.tcpAddress;
    if (!address) {
      maps.unroutable++;
      continue;
    }
    maps.tcp.push([String(publicPort), address]);
    if (!allow.length) continue;
    maps.tcpRestricted.push([String(publicPort), "1"]);
    for (const cidr of allow) {
      const key = allowKey(publicPort, cidr);
      if (key) maps.tcpAllow.push([key, "1"]);
    }
  }
  return maps;
}

/**
 * One allowlist entry as one CIDR a `map_ip` lookup can match: the public port and the IPv4
 * range inside a private IPv6 prefix, `fd5a:0:0:0:<port / 10000>:<port % 10000>:<a.b.c.d>/<96 + prefix>`
 * (the port's decimal digits read as hex groups, so each port has its own /96). HAProxy 2.6
 * has no per-entry ACL it can change at run time, but it can build this address from
 * `dst_port` and `src` (set-var-fmt) and look it up in one map that the runtime API edits.
 */
export function allowKey(publicPort: number, cidr: string): string | undefined {
  const parsed = parseIpv4Cidr(cidr);
  if (!parsed) return undefined;
  return `${portPrefix(publicPort)}:${parsed.cidr.split("/")[0]}/${96 + parsed.prefix}`;
}

const portPrefix = (port: number) => `fd5a:0:0:0:${Math.floor(port / 10000)}:${port % 10000}`;

const ms = (value: number) => `${Math.max(1, Math.round(value))}ms`;

/**
 * The edge's HAProxy: layer 4 only, it never holds a key or reads a request.
 * - HTTPS: the TLS ClientHello's server name picks the node (sni.map); the bytes pass through
 *   to the node's gateway, which terminates TLS, after a PROXY v2 header naming the client. No
 *   server name, or an unknown one: the connection closes.
 * - Raw TCP: the public port picks the node (tcp.map); a source outside the port's allowlist is
 *   refused at accept, before anything crosses to the node; the rest goes to the same port on
 *   the node, PROXY v2 first.
 * One backend whose server takes the destination the rules set (`0.0.0.0:0`, as the node's own
 * HAProxy dials guests): a node joining or moving changes map values, never the config, so
 * HAProxy is never reloaded and no connection is cut.
 */
export function edgeConfig(settings: EdgeSettings): string {
  const paths = edgePaths(settings.dir);
  const bindHost = (host: string) => (host.includes(":") ? `[${host}]` : host);
  const { firstPort, lastPort } = settings.tcpPorts;
  return [
    "# Written by saild (role edge) at every start: edits are lost. Routes change through the runtime API.",
    "global",
    `  nbthread ${settings.threads}`,
    // both frontends together: each connection holds two descriptors (client and node) of the 20000 a process may hold here
    `  maxconn ${settings.maxConnections}`,
    `  stats socket ${paths.admin} mode 600 level admin`,
    "  stats timeout 10s",
    "  tune.bufsize 16384",
    "  log stdout format raw daemon",
    "  hard-stop-after 10s",
    "",
    "defaults",
    "  mode tcp",
    "  log global",
    "  option tcplog",
    "  option dontlog-normal",
    "  option dontlognull",
    "  timeout connect 5s",
    `  timeout client ${ms(settings.tunnelMs)}`,
    `  timeout server ${ms(settings.tunnelMs)}`,
    "  timeout client-fin 5s",
    "  timeout server-fin 5s",
    // a node that refuses (restarting, gone) is tried again before the client sees a close
    "  retries 2",
    "",
    "frontend https",
    `  bind ${bindHost(settings.https.host)}:${settings.https.port}`,
    `  maxconn ${settings.maxConnections}`,
    // wait for the whole ClientHello (it may span several segments), at most this long
    `  tcp-request inspect-delay ${ms(Math.min(settings.clientIdleMs, 10_000))}`,
    "  tcp-request content reject unless { req.ssl_hello_type 1 }",
    `  tcp-request content set-var(txn.node) req.ssl_sni,lower,map(${paths.sni})`,
    "  tcp-request content reject unless { var(txn.node) -m found }",
    "  tcp-request content set-dst var(txn.node),field(1,:)",
    "  tcp-request content set-dst-port var(txn.node),field(2,:)",
    "  default_backend nodes",
    "",
    "frontend tcp",
    `  bind ${bindHost(settings.tcpHost)}:${firstPort}-${lastPort}`,
    `  maxconn ${settings.maxConnections}`,
    `  tcp-request connection set-var(sess.node) dst_port,map_int(${paths.tcp})`,
    "  tcp-request connection reject unless { var(sess.node) -m found }",
    // the allowlist, per port: see allowKey (an IPv6 client of a restricted port matches nothing: allowlists are IPv4)
    '  tcp-request connection set-var-fmt(sess.allow) "' + "fd5a:0:0:0:%[dst_port,div(10000)]:%[dst_port,mod(10000)]:%[src]" + '"',
    `  tcp-request connection reject if { dst_port,map_int(${paths.tcpRestricted}) -m found } !{ var(sess.allow),map_ip(${paths.tcpAllow}) -m found }`,
    "  tcp-request connection set-dst var(sess.node)",
    "  default_backend nodes",
    "",
    "backend nodes",
    // the destination the frontend set: the node's address, and the port (HTTPS: the node's gateway; TCP: the same public port)
    "  server node 0.0.0.0:0 send-proxy-v2",
    "",
    "frontend metrics",
    `  bind unix@${paths.metrics} mode 600`,
    "  mode http",
    "  http-request use-service prometheus-exporter",
    "",
  ].join("\n");
}
