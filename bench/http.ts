/**
 * HTTP: the Sail gateway (HAProxy + the slow path) next to nginx as its users run it
 * (`worker_processes auto`, TLS session tickets and cache, upstream keep-alive, http2), both
 * proxying to the same guest, in one run, medians of interleaved rounds:
 *  - keep-alive requests (wrk -c64);
 *  - one request per connection, with clients that resume TLS sessions (wrk, Connection: close);
 *  - the same with resumption off on both (every connection a full handshake);
 *  - HTTP/2 (h2load -c64 -m10);
 *  - WebSocket echo round trips, through the gateway vs. direct (and vs. nginx, both TLS).
 * The guest is an nginx started in the box's network namespace (the box's own python would be
 * the bottleneck); the gateway dials the box's address as always.
 */
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { spawn } from "node:child_process";
import WebSocket from "ws";
import type { Sailbox } from "@sail/sdk";
import { BoxPool, DATA_DIR, HTTPS_PORT, loopbackLookup, TestDaemon } from "../test/e2e/harness.js";
import { probeTcp } from "../packages/server/src/runtime/ports.js";
import { h2load, startNginx, waitForPort, wrk, type H2loadResult, type WrkResult } from "./tools.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
/** nginx and the gateway take turns this many times; each path's medians count. */
const ROUNDS = Number(process.env.BENCH_HTTP_ROUNDS ?? 3);
const NGINX_PROXY_PORT = 18444;
/** nginx proxying WebSocket upgrades to the guest's echo server. */
const NGINX_WS_PORT = 18446;

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/** The median run's rps, p50 and p99 (each taken separately), errors summed. */
const medianOf = (runs: WrkResult[]): WrkResult => ({
  rps: median(runs.map((r) => r.rps)),
  p50Ms: median(runs.map((r) => r.p50Ms)),
  p99Ms: median(runs.map((r) => r.p99Ms)),
  errors: runs.reduce((n, r) => n + r.errors, 0),
});

const row = (label: string, r: WrkResult) =>
  `${label.padEnd(34)} ${r.rps.toFixed(0).padStart(8)} rps   p50 ${r.p50Ms.toFixed(2).padStart(6)} ms   p99 ${r.p99Ms.toFixed(2).padStart(7)} ms   errors ${r.errors}`;

/**
 * nginx in front of the guest, as an operator would configure it: TLS 1.2 and 1.3 (Debian's
 * nginx.conf; the 1.22 built-in default stops at 1.2, whose resumption is cheaper and would
 * compare different protocols), upstream keep-alive, resumption on or off.
 */
function nginxProxy(guest: string, resumption: boolean): { stop(): void } {
  const tls = join(DATA_DIR, "tls");
  const sessions = resumption ? "ssl_session_cache shared:SSL:10m; ssl_session_tickets on;" : "ssl_session_cache off; ssl_session_tickets off;";
  return startNginx(`upstream guest { server ${guest}:3000; keepalive 1024; }
 server { listen 127.0.0.1:${NGINX_PROXY_PORT} ssl http2 backlog=4096; ssl_certificate ${tls}/sail.localhost.crt; ssl_certificate_key ${tls}/sail.localhost.key; ssl_protocols TLSv1.2 TLSv1.3; ${sessions} keepalive_requests 100000;
   location / { proxy_pass http://guest; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header X-Forwarded-Proto https; } }
 server { listen 127.0.0.1:${NGINX_WS_PORT} ssl; ssl_certificate ${tls}/sail.localhost.crt; ssl_certificate_key ${tls}/sail.localhost.key; ssl_protocols TLSv1.2 TLSv1.3;
   location / { proxy_pass http://${guest}:3001; proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade"; proxy_set_header Host $host; } }`);
}

/** wrk against nginx and the gateway, taking turns; the medians of each. */
function compare(host: string, label: string, options: { close?: boolean } = {}): { nginx: WrkResult; gateway: WrkResult } {
  const headers = options.close ? ["Connection: close"] : [];
  const run = (port: number) => wrk(`https://127.0.0.1:${port}/`, { host, seconds: SECONDS, headers });
  const nginxRuns: WrkResult[] = [];
  const gatewayRuns: WrkResult[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    nginxRuns.push(run(NGINX_PROXY_PORT));
    gatewayRuns.push(run(HTTPS_PORT));
    console.log(
      `${label} round ${round + 1}: nginx ${nginxRuns[round]!.rps.toFixed(0)} rps p99 ${nginxRuns[round]!.p99Ms.toFixed(2)} ms, gateway ${gatewayRuns[round]!.rps.toFixed(0)} rps p99 ${gatewayRuns[round]!.p99Ms.toFixed(2)} ms`,
    );
  }
  return { nginx: medianOf(nginxRuns), gateway: medianOf(gatewayRuns) };
}

async function guestBox(pool: BoxPool): Promise<{ sb: Sailbox; host: string; guest: string; stop: () => void }> {
  const sb = await pool.create({ ingressPorts: [3000, 3001] });
  const host = new URL(sb.listener(3000).endpoint.url).hostname;
  const guest = (await sb.exec("ip -4 -o addr show eth0").output()).stdout.split(/\s+/)[3]!.split("/")[0]!;
  const server = startNginx(`server { listen 0.0.0.0:3000 reuseport backlog=4096; keepalive_requests 100000; location / { return 200 "hello\\n"; } }`, { netns: `sail-${sb.id}` });
  await waitForPort(() => probeTcp(guest, 3000));
  await sb.listener(3000).wait({ timeout: 30 });
  return { sb, host, guest, stop: server.stop };
}

export async function http(): Promise<void> {
  const threads = process.env.BENCH_GATEWAY_THREADS;
  const results: Array<[string, WrkResult, WrkResult]> = [];
  let h2: { nginx: H2loadResult; gateway: H2loadResult } | undefined;
  let ws: { direct: number; nginx: number; gateway: number } | undefined;

  for (const resumption of [true, false]) {
    const daemon = new TestDaemon([...(threads ? ["--gateway-threads", threads] : []), "--tls-session-resumption", resumption ? "on" : "off"]);
    const pool = new BoxPool(daemon);
    await daemon.start();
    const stops: Array<() => void> = [];
    try {
      const { sb, host, guest, stop } = await guestBox(pool);
      stops.push(stop);
      stops.push(nginxProxy(guest, resumption).stop);
      await waitForPort(() => probeTcp("127.0.0.1", NGINX_PROXY_PORT));
      wrk(`https://127.0.0.1:${HTTPS_PORT}/`, { host, seconds: 2 }); // warm up upstream pools
      if (resumption) {
        const keepAlive = compare(host, "keep-alive");
        results.push(["keep-alive", keepAlive.nginx, keepAlive.gateway]);
        const resumed = compare(host, "new connection, resumed TLS", { close: true });
        results.push(["one request per connection, resumed TLS", resumed.nginx, resumed.gateway]);
        const nginxH2: H2loadResult[] = [];
        const gatewayH2: H2loadResult[] = [];
        for (let round = 0; round < ROUNDS; round++) {
          nginxH2.push(h2load(`https://127.0.0.1:${NGINX_PROXY_PORT}/`, { host }));
          gatewayH2.push(h2load(`https://127.0.0.1:${HTTPS_PORT}/`, { host }));
          console.log(`h2 round ${round + 1}: nginx ${nginxH2[round]!.rps.toFixed(0)} req/s, gateway ${gatewayH2[round]!.rps.toFixed(0)} req/s`);
        }
        const pick = (runs: H2loadResult[]) => ({ rps: median(runs.map((r) => r.rps)), meanMs: median(runs.map((r) => r.meanMs)), failed: runs.reduce((n, r) => n + r.failed, 0) });
        h2 = { nginx: pick(nginxH2), gateway: pick(gatewayH2) };
        ws = await websocketEcho(daemon, sb, guest, stops);
      } else {
        const full = compare(host, "new connection, full handshake", { close: true });
        results.push(["one request per connection, full handshake", full.nginx, full.gateway]);
      }
    } finally {
      for (const stop of stops) stop();
      await pool.terminateAll();
      await daemon.dispose();
    }
  }

  console.log(`\nwrk -t2 -c64 -d${SECONDS}s, tiny responses; medians of ${ROUNDS} interleaved rounds; nginx worker_processes auto, the gateway ${threads ?? "one thread per core"}`);
  for (const [label, nginx, gateway] of results) {
    console.log(`\n${label}`);
    console.log(row("  nginx (https)", nginx));
    console.log(row("  Sail gateway (https)", gateway));
    console.log(`  gateway ÷ nginx: rps ${(gateway.rps / nginx.rps).toFixed(2)}x (target ≥ 1), p99 ${(gateway.p99Ms / nginx.p99Ms).toFixed(2)}x${label === "keep-alive" ? " (target ≤ 1)" : ""}`);
  }
  if (h2) {
    console.log(
      `\nHTTP/2, h2load -c64 -m10: nginx ${h2.nginx.rps.toFixed(0)} req/s (mean ${h2.nginx.meanMs.toFixed(2)} ms), gateway ${h2.gateway.rps.toFixed(0)} req/s (mean ${h2.gateway.meanMs.toFixed(2)} ms, ${h2.gateway.failed} failed): ${(h2.gateway.rps / h2.nginx.rps).toFixed(2)}x (target ≥ 1)`,
    );
  }
  if (ws) {
    console.log(
      `WebSocket echo, one connection: direct (ws://) ${ws.direct.toFixed(0)} msg/s, nginx (wss://) ${ws.nginx.toFixed(0)} msg/s, gateway (wss://) ${ws.gateway.toFixed(0)} msg/s: ` +
        `${(ws.gateway / ws.direct).toFixed(2)}x direct (target ≥ 0.8), ${(ws.gateway / ws.nginx).toFixed(2)}x nginx`,
    );
  }
}

/** Sequential echo round trips over one WebSocket, through the gateway vs. direct. */
async function websocketEcho(daemon: TestDaemon, sb: Sailbox, guest: string, stops: Array<() => void>): Promise<{ direct: number; nginx: number; gateway: number }> {
  const echoScript = join(daemon.configDir, "ws-echo.mjs");
  const wsModule = new URL("../node_modules/ws/wrapper.mjs", import.meta.url).pathname;
  writeFileSync(
    echoScript,
    `import { WebSocketServer } from "${wsModule}";\nnew WebSocketServer({ port: 3001, host: "0.0.0.0" }).on("connection", (ws) => ws.on("message", (m, b) => ws.send(m, { binary: b })));\n`,
  );
  const echo = spawn("ip", ["netns", "exec", `sail-${sb.id}`, process.execPath, echoScript], { stdio: "inherit" });
  stops.push(() => echo.kill());
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
