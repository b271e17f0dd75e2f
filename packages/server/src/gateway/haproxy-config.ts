import { join } from "node:path";
import { HOST_AMBIGUOUS, MISDIRECTED, renderError, type GatewayError } from "./error-pages.js";

/** What the daemon tells HAProxy; every limit a public edge needs has a name and a unit here. */
export interface HaproxySettings {
  /** Where the config, the route map, the certificate and the sockets live (`<data-dir>/gateway`). */
  dir: string;
  host: string;
  port: number;
  threads: number;
  /** Client connections at once; past it new ones wait in the kernel's backlog. */
  maxConnections: number;
  /** Memory HAProxy may allocate (its -m): a flood is refused new connections instead of taking the host's memory. */
  memoryMiB: number;
  timeouts: GatewayTimeouts;
  /** The user HAProxy runs as (it parses hostile bytes); it is started as that user, not root. */
  user?: string;
  /** TLS session tickets (default); off: every connection makes a full handshake. */
  sessionResumption?: boolean;
  /** Edges' source ranges: their connections start with a PROXY v2 header (the real client), and may carry only the host they were routed by. */
  edgeFrom?: readonly string[];
}

/** Per-phase limits (milliseconds), so a slow or silent peer cannot hold a connection forever. */
export interface GatewayTimeouts {
  /** The whole request head (and the first one after the TLS handshake): slowloris gets 408. */
  headMs: number;
  /** A client that neither sends nor reads (stalled uploads, slow readers, a silent TLS handshake). */
  clientIdleMs: number;
  /** Between two requests on a kept-alive connection. */
  keepAliveMs: number;
  /** The guest connecting. */
  connectMs: number;
  /** The guest silent while it owes an answer (or the rest of one). */
  responseMs: number;
  /** An upgraded connection (WebSocket) with nothing moving either way. */
  tunnelMs: number;
}

export const DEFAULT_TIMEOUTS: GatewayTimeouts = { headMs: 20_000, clientIdleMs: 30_000, keepAliveMs: 60_000, connectMs: 5_000, responseMs: 300_000, tunnelMs: 3_600_000 };

export const gatewayPaths = (dir: string) => ({
  config: join(dir, "haproxy.cfg"),
  routes: join(dir, "routes.map"),
  pem: join(dir, "gateway.pem"),
  admin: join(dir, "admin.sock"),
  slowPath: join(dir, "slow.sock"),
  metrics: join(dir, "metrics.sock"),
  pid: join(dir, "haproxy.pid"),
});

/**
 * The answers HAProxy gives itself when a guest fails, as Sail's pages with their codes (raw
 * errorfiles). A request HAProxy cannot parse (400) or whose head does not arrive in time
 * (408) gets HAProxy's own page: 2.6 answers those from the connection, before any rule or
 * errorfile of the frontend applies.
 */
export const HAPROXY_ERRORS: Array<[status: number, code: string, text: string]> = [
  [502, "SAIL_UPSTREAM_FAILED", "The process in the sailbox sent an invalid response, or closed the connection without one."],
  [504, "SAIL_UPSTREAM_TIMEOUT", "The process in the sailbox did not answer in time."],
];

/** Answers HAProxy gives from its own rules (`http-request return`), as Sail's pages: JSON for clients that ask, HTML otherwise. */
export const HAPROXY_RETURNS: Array<[file: string, error: GatewayError]> = [
  ["host-ambiguous", HOST_AMBIGUOUS],
  ["misdirected", MISDIRECTED],
];

/** The body files of HAPROXY_RETURNS: `<file>.json` and `<file>.html`. */
export function returnBodies(): Array<[file: string, body: string]> {
  return HAPROXY_RETURNS.flatMap(([file, error]) => [
    [`${file}.json`, renderError("application/json", error).body],
    [`${file}.html`, renderError(undefined, error).body],
  ]);
}

/** `http-request return` rules answering `error` when `condition` holds. */
function returnRules(dir: string, file: string, error: GatewayError, condition: string): string[] {
  const answer = (type: string, ext: string) =>
    `  http-request return status ${error.status} content-type "${type}; charset=utf-8" file ${join(dir, `${file}.${ext}`)} hdr x-sail-error ${error.code} hdr cache-control no-store`;
  return [`${answer("application/json", "json")} if ${condition} { req.hdr(accept) -m sub application/json }`, `${answer("text/html", "html")} if ${condition}`];
}

const TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
const TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/** Request fields the gateway drops (case-insensitive names; HAProxy compares them lower-cased). */
export const CLIENT_ADDRESS_FIELDS =
  "^(x-forwarded-(for|proto|host|port)|forwarded|x-real-ip|true-client-ip|x-client-ip|x-cluster-client-ip|client-ip|x-originating-ip|cf-connecting-ip|fastly-client-ip)$|_";

const seconds = (ms: number) => `${Math.max(1, Math.round(ms))}ms`;

const REASONS: Record<number, string> = { 502: "Bad Gateway", 504: "Gateway Timeout" };

/** The raw HTTP response HAProxy sends for `status` (an errorfile). */
export function errorFile(status: number, code: string, text: string): string {
  const body = `<!doctype html><html><head><meta charset="utf-8"><title>${status} ${REASONS[status]}</title></head><body style="font-family:sans-serif;max-width:40em;margin:4em auto"><h1>${status} ${REASONS[status]}</h1><p>${text}</p><p><small>Sail gateway · ${code}</small></p></body></html>\n`;
  return `HTTP/1.1 ${status} ${REASONS[status]}\r\ncontent-type: text/html; charset=utf-8\r\ncache-control: no-store\r\nconnection: close\r\nx-sail-error: ${code}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

/**
 * Connections from an edge (--edge-from): they start with a PROXY v2 header, so `src` (the
 * allowlists, X-Forwarded-For, the logs) is the real client; nobody else may send one. The edge
 * chose this node by the TLS server name, so a request on such a connection for another host
 * (a client coalescing HTTP/2 connections under the wildcard certificate) may belong to another
 * node: 421, and the client reconnects (RFC 9110 §15.5.20). Direct clients keep switching hosts
 * on one connection: this node routes each request by its Host.
 */
function edgeRules(settings: HaproxySettings): string[] {
  if (!settings.edgeFrom?.length) return [];
  return [
    `  tcp-request connection expect-proxy layer4 if { src ${settings.edgeFrom.join(" ")} }`,
    "  http-request set-var(txn.sni) ssl_fc_sni,lower if { fc_rcvd_proxy }",
    ...returnRules(settings.dir, "misdirected", MISDIRECTED, "{ fc_rcvd_proxy } !{ req.hdr(host),field(1,:),lower,strcmp(txn.sni) eq 0 }"),
  ];
}

/**
 * The gateway's HAProxy configuration. Routing: the Host (without its port) is looked up in
 * routes.map, which holds only running boxes' listeners as `guest-ip:port[:h2]`, kept current
 * through the runtime API; a hit sets the destination and goes to the guest, anything else
 * (sleeping, paused, unknown) to Sail's slow path, which holds, wakes, refuses or forwards.
 * A guest that refuses the connection is retried once on the slow path (its 502 page, after
 * retrying the dial). Client-supplied X-Forwarded-* are dropped and set from what HAProxy saw.
 */
export function haproxyConfig(settings: HaproxySettings): string {
  const paths = gatewayPaths(settings.dir);
  const t = settings.timeouts;
  const route = "var(txn.route)";
  const errorPages = HAPROXY_ERRORS.map(([status]) => `  errorfile ${status} ${join(settings.dir, `${status}.http`)}`);
  const guests = (name: string, proto: string) => [
    `backend ${name}`,
    "  balance first",
    "  option redispatch 1",
    "  retries 1",
    "  retry-on conn-failure",
    `  server guest 0.0.0.0:0${proto}`,
    `  server slow unix@${paths.slowPath}`,
    "",
  ];
  return [
    "# Written by saild at every start: edits are lost. Routes change through the runtime API.",
    "global",
    `  nbthread ${settings.threads}`,
    `  maxconn ${settings.maxConnections}`,
    `  stats socket ${paths.admin} mode 600 level admin`,
    "  stats timeout 10s",
    // resumption by session tickets only: they need no server state, and HAProxy's shared session
    // cache cost ~6% of new-connection throughput (an insert per handshake) for the rare TLS 1.2
    // client without tickets (bench/http.ts)
    `  ssl-default-bind-options ssl-min-ver TLSv1.2${settings.sessionResumption === false ? " no-tls-tickets" : ""}`,
    "  tune.ssl.cachesize 0",
    // Mozilla's "intermediate" suites, AEAD with forward secrecy only, AES-128 first as the server's
    // choice: browsers ask for it anyway, and OpenSSL clients (curl, Python, Node, wrk) ask for
    // AES-256, whose SHA-384 key schedule cost ~10% of new-connection throughput (bench/http.ts)
    `  ssl-default-bind-ciphersuites ${TLS13_SUITES}`,
    `  ssl-default-bind-ciphers ${TLS12_CIPHERS}`,
    "  tune.bufsize 16384",
    "  log stdout format raw daemon",
    "  hard-stop-after 10s",
    "",
    "defaults",
    "  mode http",
    "  log global",
    "  option httplog",
    "  option dontlog-normal",
    "  option http-keep-alive",
    // any request may take an idle guest connection, as nginx's upstream keep-alive does: ~20%
    // more one-request-per-connection throughput than "safe" (bench/http.ts). A box leaving
    // running has its idle connections closed (HaproxyGateway.dropConnections), so a guest's
    // keep-alive timer that ran out while frozen cannot close one under the request that woke
    // it; what remains is a guest closing an idle connection in the instant it is reused, which
    // gets a 502 (never a retry: the guest may have run the request)
    "  http-reuse always",
    `  timeout http-request ${seconds(t.headMs)}`,
    `  timeout client ${seconds(t.clientIdleMs)}`,
    "  timeout client-fin 5s",
    `  timeout http-keep-alive ${seconds(t.keepAliveMs)}`,
    `  timeout connect ${seconds(t.connectMs)}`,
    `  timeout server ${seconds(t.responseMs)}`,
    "  timeout server-fin 5s",
    `  timeout tunnel ${seconds(t.tunnelMs)}`,
    ...errorPages,
    "",
    "frontend https",
    `  bind ${settings.host.includes(":") ? `[${settings.host}]` : settings.host}:${settings.port} ssl crt ${paths.pem} alpn h2,http/1.1`,
    `  maxconn ${settings.maxConnections}`,
    ...edgeRules(settings),
    "  option forwardfor",
    // one Host: `Host: a, b` or two Host lines would be routed by one value while the guest sees another (RFC 9112 §3.2)
    ...returnRules(settings.dir, "host-ambiguous", HOST_AMBIGUOUS, "{ req.hdr_cnt(host) gt 1 }"),
    // what a client says of its own address never reaches a guest: the forwarding family, the
    // client-IP headers proxies and CDNs use, and every field with an underscore, which CGI-style
    // servers read as its dashed twin (X_Forwarded_For = X-Forwarded-For), as nginx drops by default
    `  http-request del-header ${CLIENT_ADDRESS_FIELDS} -m reg`,
    "  http-request set-header x-forwarded-proto https",
    "  http-request set-header x-forwarded-host %[req.hdr(host)]",
    `  http-request set-var(txn.route) req.hdr(host),field(1,:),lower,map(${paths.routes})`,
    `  http-request track-sc0 req.hdr(host),field(1,:),lower table activity if { ${route} -m found }`,
    `  http-request set-dst ${route},field(1,:) if { ${route} -m found }`,
    `  http-request set-dst-port ${route},field(2,:) if { ${route} -m found }`,
    `  use_backend guests_h2 if { ${route},field(3,:) -m str h2 }`,
    `  use_backend guests if { ${route} -m found }`,
    "  default_backend slow",
    "",
    // per listener (the Host): open connections now, and counters that move with traffic (idle auto-sleep)
    "backend activity",
    "  stick-table type string len 128 size 1m expire 1h store conn_cur,http_req_cnt,bytes_in_cnt,bytes_out_cnt",
    "",
    ...guests("guests", ""),
    ...guests("guests_h2", " proto h2"),
    "backend slow",
    // defence in depth: a connection to the slow path never serves two requests (issue 26, the hijack)
    "  http-reuse never",
    `  server slow unix@${paths.slowPath}`,
    "",
    "frontend metrics",
    `  bind unix@${paths.metrics} mode 600`,
    "  http-request use-service prometheus-exporter",
    "",
  ].join("\n");
}
