/**
 * HTTP: the Sail gateway (HAProxy + the slow path) next to the proxies that do its job, routing
 * by Host at run time (nginx with a Lua balancer over a shared-dict route table, Caddy with a Host
 * map), and next to nginx with a static upstream, all as their users run them (bench/proxies.ts),
 * all proxying to the same guest with the same certificate, in one run, medians of interleaved rounds:
 *  - keep-alive requests (wrk -c64);
 *  - one request per connection, with clients that resume TLS sessions (wrk, Connection: close);
 *  - the same with resumption off on all (every connection a full handshake);
 *  - HTTP/2 (h2load -c64 -m10, a fixed number of requests);
 *  - WebSocket echo round trips, through the gateway vs. direct (and vs. nginx, both TLS).
 * The guest is an nginx started in the box's network namespace (the box's own python would be
 * the bottleneck); the gateway dials the box's address as always. The clients name the box in the
 * URL (TLS SNI and Host as a browser sends them), resolved to loopback (tools.withLoopbackNames).
 */
import { request } from "node:https";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { connect, type PeerCertificate, type TLSSocket } from "node:tls";
import WebSocket from "ws";
import type { Sailbox } from "@sail/sdk";
import { BoxPool, HTTPS_PORT, loopbackLookup, TestDaemon } from "../test/e2e/harness.js";
import { probeTcp } from "../packages/server/src/runtime/ports.js";
import { addNginxLuaRoute, caddy, CADDY_PORT, nginxLua, nginxStatic, NGINX_LUA_PORT, NGINX_PORT, NGINX_WS_PORT } from "./proxies.js";
import { cpuSecondsListening, h2load, startNginx, waitForPort, wrk, type H2loadResult, type Started, type WrkResult } from "./tools.js";
import { median } from "./stats.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
/** The proxies take turns this many times; each path's medians count. */
const ROUNDS = Number(process.env.BENCH_HTTP_ROUNDS ?? 3);

type Proxy = "nginx" | "nginxLua" | "caddy" | "sail";
const PROXIES: Proxy[] = ["nginx", "nginxLua", "caddy", "sail"];
const LABEL: Record<Proxy, string> = {
  nginx: "nginx, static upstream",
  nginxLua: "nginx + Lua balancer",
  caddy: "Caddy, Host map",
  sail: "Sail gateway",
};
const PORT: Record<Proxy, number> = { nginx: NGINX_PORT, nginxLua: NGINX_LUA_PORT, caddy: CADDY_PORT, sail: HTTPS_PORT };
/** The peers that do Sail's job: route each request by its Host, with routes that change at run time. */
const ROUTING_PEERS: Proxy[] = ["nginxLua", "caddy"];

/** Issue 21's targets, against the best routing peer, and against the static nginx. */
const TARGET = { rpsOverBestPeer: 1.1, p99OverPeers: 1.0, rpsOverStaticNginx: 0.95 };

/** A wrk run, and the CPU the proxy's processes used per request during it. */
type Measured = WrkResult & { cpuUsPerRequest: number };
type Results = Record<Proxy, Measured>;

/** The median run's rps, p50, p99 and CPU per request (each taken separately), errors summed. */
const medianOf = (runs: Measured[]): Measured => ({
  rps: median(runs.map((r) => r.rps)),
  p50Ms: median(runs.map((r) => r.p50Ms)),
  p99Ms: median(runs.map((r) => r.p99Ms)),
  cpuUsPerRequest: median(runs.map((r) => r.cpuUsPerRequest)),
  errors: runs.reduce((n, r) => n + r.errors, 0),
});

const forEachProxy = <T>(make: (proxy: Proxy) => T) => Object.fromEntries(PROXIES.map((p) => [p, make(p)])) as Record<Proxy, T>;

/** Round `round`'s order: it rotates, so no proxy always runs right after the same one. */
const turns = (round: number) => PROXIES.map((_, i) => PROXIES[(i + round) % PROXIES.length]!);

const url = (host: string, proxy: Proxy) => `https://${host}:${PORT[proxy]}/`;

/** One wrk run through `proxy`, with the CPU its processes used per request meanwhile. */
function measure(host: string, proxy: Proxy, headers: string[]): Measured {
  const cpuBefore = cpuSecondsListening(PORT[proxy]);
  const result = wrk(url(host, proxy), { names: [host], seconds: SECONDS, headers });
  const cpuSeconds = cpuSecondsListening(PORT[proxy]) - cpuBefore;
  return { ...result, cpuUsPerRequest: (cpuSeconds * 1e6) / (result.rps * SECONDS) };
}

/** wrk against every proxy, taking turns; the medians of each. */
function compare(host: string, label: string, options: { close?: boolean } = {}): Results {
  const headers = options.close ? ["Connection: close"] : [];
  const runs = forEachProxy((): Measured[] => []);
  for (let round = 0; round < ROUNDS; round++) {
    for (const proxy of turns(round)) runs[proxy].push(measure(host, proxy, headers));
    console.log(`${label} round ${round + 1}: ${PROXIES.map((p) => `${p} ${runs[p][round]!.rps.toFixed(0)} rps p99 ${runs[p][round]!.p99Ms.toFixed(2)} ms`).join(", ")}`);
  }
  return forEachProxy((p) => medianOf(runs[p]));
}

/** HTTP/2 requests per h2load run: 200,000 at the default 5 s, about what the static nginx answers in 3 s on a quiet machine. */
const H2_REQUESTS = 40_000 * SECONDS;

/** h2load against every proxy, taking turns; the medians of each. */
function compareH2(host: string): Record<Proxy, H2loadResult> {
  const runs = forEachProxy((): H2loadResult[] => []);
  for (let round = 0; round < ROUNDS; round++) {
    for (const proxy of turns(round)) runs[proxy].push(h2load(url(host, proxy), { names: [host], requests: H2_REQUESTS }));
    console.log(`h2 round ${round + 1}: ${PROXIES.map((p) => `${p} ${runs[p][round]!.rps.toFixed(0)} req/s`).join(", ")}`);
  }
  return forEachProxy((p) => ({
    rps: median(runs[p].map((r) => r.rps)),
    meanMs: median(runs[p].map((r) => r.meanMs)),
    failed: runs[p].reduce((n, r) => n + r.failed, 0),
  }));
}

async function guestBox(pool: BoxPool): Promise<{ sb: Sailbox; host: string; guest: string; server: Started }> {
  const sb = await pool.create({ ingressPorts: [3000, 3001] });
  const host = new URL(sb.listener(3000).endpoint.url).hostname;
  const guest = (await sb.exec("ip -4 -o addr show eth0").output()).stdout.split(/\s+/)[3]!.split("/")[0]!;
  // /forwarded shows what a proxy forwarded: checked once per proxy before measuring (expectSameWork)
  const server = startNginx(
    `server { listen 0.0.0.0:3000 reuseport backlog=4096; keepalive_requests 100000; location / { return 200 "hello\\n"; }
      location = /forwarded { return 200 "$http_host|$http_x_forwarded_for|$http_x_forwarded_proto|$http_x_forwarded_host|$http_x_forwarded_port|$http_forwarded\\n"; } }`,
    { netns: `sail-${sb.id}` },
  );
  await waitForPort(() => probeTcp(guest, 3000));
  await sb.listener(3000).wait({ timeout: 30 });
  return { sb, host, guest, server };
}

/** One GET through a proxy, with the box's name as SNI and Host: status, body, TLS version and certificate. */
function get(host: string, port: number, path: string, ca: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; tls: string; certificate: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, ca, headers, lookup: loopbackLookup as never, servername: host, agent: false, signal: AbortSignal.timeout(5000) }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (chunk) => (body += chunk));
      const socket = res.socket as TLSSocket;
      const certificate = (socket.getPeerCertificate() as PeerCertificate).fingerprint256;
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, tls: socket.getProtocol() ?? "none", certificate }));
    });
    req.on("error", reject).end();
  });
}

/**
 * Whether a second connection resumes the first one's TLS session. TLS 1.3 sends its tickets after
 * the handshake: a server that sends none within a second does not resume.
 */
async function resumesTls(host: string, port: number, ca: string): Promise<boolean> {
  const open = (session?: Buffer) => connect({ host: "127.0.0.1", port, servername: host, ca, session, ALPNProtocols: ["http/1.1"] });
  const first = open();
  const session = await new Promise<Buffer | undefined>((resolve, reject) => {
    const timer = setTimeout(() => resolve(undefined), 1000);
    first.once("session", (ticket: Buffer) => {
      clearTimeout(timer);
      resolve(ticket);
    });
    first.once("error", reject);
  }).finally(() => first.destroy());
  if (!session) return false;
  const second = open(session);
  try {
    await new Promise((resolve, reject) => {
      second.once("secureConnect", resolve).once("error", reject);
      setTimeout(() => reject(new Error(`no TLS handshake from 127.0.0.1:${port} in 5 s`)), 5000).unref();
    });
    return second.isSessionReused();
  } finally {
    second.destroy();
  }
}

/**
 * Before measuring: every proxy answers with the guest's page over TLS 1.3 with the same
 * certificate, resumes TLS sessions or not as this run wants, and forwards the same head (Host as
 * sent, client-supplied X-Forwarded-* and Forwarded replaced or dropped), so the rows compare the same work.
 */
async function expectSameWork(host: string, ca: string, resumption: boolean): Promise<void> {
  const spoofed = { "X-Forwarded-For": "spoofed", "X-Forwarded-Proto": "spoofed", "X-Forwarded-Host": "spoofed", "X-Forwarded-Port": "1", Forwarded: "for=spoofed" };
  const fingerprints = new Set<string>();
  for (const proxy of PROXIES) {
    const hello = await get(host, PORT[proxy], "/", ca);
    if (hello.status !== 200 || hello.body !== "hello\n" || hello.tls !== "TLSv1.3") {
      throw new Error(`${LABEL[proxy]} answered ${hello.status} over ${hello.tls}: ${JSON.stringify(hello.body.slice(0, 200))}`);
    }
    fingerprints.add(hello.certificate);
    const seen = (await get(host, PORT[proxy], "/forwarded", ca, spoofed)).body.trim();
    const expected = `${host}:${PORT[proxy]}|127.0.0.1|https|${host}:${PORT[proxy]}||`;
    if (seen !== expected) throw new Error(`${LABEL[proxy]} forwarded ${JSON.stringify(seen)}, the gateway's work is ${JSON.stringify(expected)}`);
    if ((await resumesTls(host, PORT[proxy], ca)) !== resumption) throw new Error(`${LABEL[proxy]} ${resumption ? "does not resume" : "resumes"} TLS sessions`);
  }
  if (fingerprints.size !== 1) throw new Error(`the proxies serve ${fingerprints.size} different certificates`);
}

/** The peers and the static nginx in front of `guest`; added to `started` at once, so a failed check still stops them. */
async function startProxies(started: Started[], host: string, guest: string, resumption: boolean, ca: string): Promise<void> {
  started.push(nginxStatic(guest, resumption), nginxLua(resumption), caddy({ [host]: `${guest}:3000` }, resumption));
  for (const proxy of PROXIES) await waitForPort(() => probeTcp("127.0.0.1", PORT[proxy]), `${LABEL[proxy]} on 127.0.0.1:${PORT[proxy]}`);
  await addNginxLuaRoute(host, `${guest}:3000`);
  await expectSameWork(host, ca, resumption);
  // warm up: upstream pools, LuaJIT traces, Go's scheduler
  for (const proxy of PROXIES) wrk(url(host, proxy), { names: [host], seconds: 1 });
}

export async function http(): Promise<void> {
  const threads = process.env.BENCH_GATEWAY_THREADS;
  const results: Array<[string, Results]> = [];
  let h2: Record<Proxy, H2loadResult> | undefined;
  let ws: { direct: number; nginx: number; gateway: number } | undefined;

  for (const resumption of [true, false]) {
    const daemon = new TestDaemon([...(threads ? ["--gateway-threads", threads] : []), "--tls-session-resumption", resumption ? "on" : "off"]);
    const pool = new BoxPool(daemon);
    await daemon.start();
    const started: Started[] = [];
    try {
      const { sb, host, guest, server } = await guestBox(pool);
      started.push(server);
      await startProxies(started, host, guest, resumption, await daemon.caCert());
      if (resumption) {
        results.push(["keep-alive", compare(host, "keep-alive")]);
        results.push(["one request per connection, resumed TLS", compare(host, "new connection, resumed TLS", { close: true })]);
        h2 = compareH2(host);
        ws = await websocketEcho(daemon, sb, guest, started);
      } else {
        results.push(["one request per connection, full handshake", compare(host, "new connection, full handshake", { close: true })]);
      }
    } finally {
      for (const child of started) await child.stop();
      await pool.terminateAll();
      await daemon.dispose();
    }
  }

  console.log(
    `\nwrk -t2 -c64 -d${SECONDS}s, tiny responses; medians of ${ROUNDS} interleaved rounds; nginx worker_processes auto, Caddy GOMAXPROCS = cores, the gateway ${threads ?? "one thread per core"}`,
  );
  const verdicts: Verdict[] = [];
  for (const [label, r] of results) verdicts.push(...report(label, r));
  if (h2) verdicts.push(...reportH2(h2));
  if (ws) {
    console.log(
      `\nWebSocket echo, one connection: direct (ws://) ${ws.direct.toFixed(0)} msg/s, nginx (wss://) ${ws.nginx.toFixed(0)} msg/s, gateway (wss://) ${ws.gateway.toFixed(0)} msg/s: ` +
        `${(ws.gateway / ws.direct).toFixed(2)}x direct, ${(ws.gateway / ws.nginx).toFixed(2)}x nginx`,
    );
    verdicts.push(verdict("WebSocket echo: msg/s ≥ 0.8× direct", ws.gateway / ws.direct, 0.8, "≥"));
  }
  console.log(`\ntargets: ${verdicts.filter((v) => v.met).length} of ${verdicts.length} met`);
  for (const v of verdicts) console.log(`  ${v.met ? "met    " : "NOT MET"}  ${v.text}`);
  const errors = results.flatMap(([label, r]) => PROXIES.filter((p) => r[p].errors > 0).map((p) => `${label}: ${LABEL[p]} ${r[p].errors}`));
  if (h2) errors.push(...PROXIES.filter((p) => h2![p].failed > 0).map((p) => `HTTP/2: ${LABEL[p]} ${h2![p].failed}`));
  if (errors.length) console.log(`\nERRORS (non-2xx/3xx answers, socket errors, failed h2 requests): their rows do not compare\n  ${errors.join("\n  ")}`);
}

interface Verdict {
  met: boolean;
  text: string;
}

function verdict(what: string, ratio: number, target: number, sense: "≥" | "≤", against = ""): Verdict {
  const met = sense === "≥" ? ratio >= target : ratio <= target;
  return { met, text: `${what}: ${ratio.toFixed(2)}x (target ${sense} ${target}x${against})` };
}

const cell = (value: string, width: number) => value.padStart(width);
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;

/** One path's table (each proxy with Sail's ratios to it), and its targets. */
function report(label: string, r: Results): Verdict[] {
  console.log(`\n${label}`);
  console.log(`  ${"".padEnd(24)}${cell("rps", 8)}${cell("p50 ms", 9)}${cell("p99 ms", 9)}${cell("cpu µs/req", 12)}${cell("errors", 8)}   Sail ÷ it: rps    p99    cpu`);
  for (const proxy of PROXIES) {
    const it = r[proxy];
    const ratios = proxy === "sail" ? "" : `${cell(ratio(r.sail.rps, it.rps), 18)}${cell(ratio(r.sail.p99Ms, it.p99Ms), 7)}${cell(ratio(r.sail.cpuUsPerRequest, it.cpuUsPerRequest), 7)}`;
    console.log(
      `  ${LABEL[proxy].padEnd(24)}${cell(it.rps.toFixed(0), 8)}${cell(it.p50Ms.toFixed(2), 9)}${cell(it.p99Ms.toFixed(2), 9)}${cell(it.cpuUsPerRequest.toFixed(0), 12)}${cell(String(it.errors), 8)}${ratios}`,
    );
  }
  const best = ROUTING_PEERS.reduce((a, b) => (r[a].rps >= r[b].rps ? a : b));
  const lowestP99 = ROUTING_PEERS.reduce((a, b) => (r[a].p99Ms <= r[b].p99Ms ? a : b));
  return [
    verdict(`${label}: rps vs the best routing peer`, r.sail.rps / r[best].rps, TARGET.rpsOverBestPeer, "≥", `, ${LABEL[best]}`),
    verdict(`${label}: p99 vs the routing peers' lowest`, r.sail.p99Ms / r[lowestP99].p99Ms, TARGET.p99OverPeers, "≤", `, ${LABEL[lowestP99]}`),
    verdict(`${label}: rps vs the static nginx`, r.sail.rps / r.nginx.rps, TARGET.rpsOverStaticNginx, "≥"),
  ];
}

function reportH2(h2: Record<Proxy, H2loadResult>): Verdict[] {
  console.log(`\nHTTP/2, h2load -n${H2_REQUESTS} -c64 -m10`);
  console.log(`  ${"".padEnd(24)}${cell("req/s", 8)}${cell("mean ms", 9)}${cell("failed", 8)}   Sail ÷ it`);
  for (const proxy of PROXIES) {
    const it = h2[proxy];
    const ratios = proxy === "sail" ? "" : cell(ratio(h2.sail.rps, it.rps), 12);
    console.log(`  ${LABEL[proxy].padEnd(24)}${cell(it.rps.toFixed(0), 8)}${cell(it.meanMs.toFixed(2), 9)}${cell(String(it.failed), 8)}${ratios}`);
  }
  return [verdict("HTTP/2: req/s vs the static nginx", h2.sail.rps / h2.nginx.rps, 1, "≥")];
}

/** Sequential echo round trips over one WebSocket, through the gateway vs. direct. */
async function websocketEcho(daemon: TestDaemon, sb: Sailbox, guest: string, started: Started[]): Promise<{ direct: number; nginx: number; gateway: number }> {
  const echoScript = join(daemon.configDir, "ws-echo.mjs");
  const wsModule = new URL("../node_modules/ws/wrapper.mjs", import.meta.url).pathname;
  writeFileSync(
    echoScript,
    `import { WebSocketServer } from "${wsModule}";\nnew WebSocketServer({ port: 3001, host: "0.0.0.0" }).on("connection", (ws) => ws.on("message", (m, b) => ws.send(m, { binary: b })));\n`,
  );
  const echo = spawn("ip", ["netns", "exec", `sail-${sb.id}`, process.execPath, echoScript], { stdio: "inherit" });
  started.push({ stop: async () => void echo.kill() });
  await waitForPort(() => probeTcp(guest, 3001));
  const wsUrl = (await sb.listener(3001).wait({ timeout: 30 })).endpoint.url.replace("https://", "wss://");
  const ca = await daemon.caCert();
  const host = new URL(wsUrl).hostname;
  const tls = { ca, lookup: loopbackLookup as never } as WebSocket.ClientOptions;
  const runs = { direct: [] as number[], nginx: [] as number[], gateway: [] as number[] };
  for (let round = 0; round < ROUNDS; round++) {
    runs.direct.push(await echoRate(`ws://${guest}:3001/`, {}));
    runs.nginx.push(await echoRate(`wss://${host}:${NGINX_WS_PORT}/`, tls));
    runs.gateway.push(await echoRate(wsUrl, tls));
  }
  return { direct: median(runs.direct), nginx: median(runs.nginx), gateway: median(runs.gateway) };
}

async function echoRate(url: string, options: WebSocket.ClientOptions, messages = 5000): Promise<number> {
  const ws = new WebSocket(url, options);
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  const start = process.hrtime.bigint();
  for (let i = 0; i < messages; i++) {
    await new Promise<void>((resolve) => {
      ws.once("message", () => resolve());
      ws.send("ping");
    });
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  ws.close();
  return messages / seconds;
}
