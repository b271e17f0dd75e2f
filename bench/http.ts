/**
 * HTTP: wrk through the Sail gateway (HTTPS) vs. direct to the guest vs. an nginx
 * reverse proxy (HTTPS, one worker, upstream keep-alive) to the same guest, one run.
 * The guest server is an nginx started in the box's network namespace (the box's
 * own python would be the bottleneck); the gateway dials the box's address as always.
 */
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { spawn } from "node:child_process";
import WebSocket from "ws";
import { BoxPool, HTTPS_PORT, loopbackLookup, TestDaemon } from "../test/e2e/harness.js";
import { probeTcp } from "../packages/server/src/runtime/ports.js";
import { startNginx, waitForPort, wrk, type WrkResult } from "./tools.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
/** nginx and the gateway take turns this many times; each path's median rps and p99 count. */
const ROUNDS = Number(process.env.BENCH_HTTP_ROUNDS ?? 5);
const NGINX_PROXY_PORT = 18444;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The median run's rps, p50 and p99 (each taken separately), errors summed. */
function medianOf(runs: WrkResult[]): WrkResult {
  return { rps: median(runs.map((r) => r.rps)), p50Ms: median(runs.map((r) => r.p50Ms)), p99Ms: median(runs.map((r) => r.p99Ms)), errors: runs.reduce((n, r) => n + r.errors, 0) };
}

function row(label: string, r: WrkResult): string {
  return `${label.padEnd(28)} ${r.rps.toFixed(0).padStart(8)} rps   p50 ${r.p50Ms.toFixed(2).padStart(6)} ms   p99 ${r.p99Ms.toFixed(2).padStart(7)} ms   errors ${r.errors}`;
}

export async function http(): Promise<void> {
  const workers = process.env.BENCH_GATEWAY_WORKERS;
  const daemon = new TestDaemon(workers ? ["--gateway-threads", workers] : []);
  const pool = new BoxPool(daemon);
  await daemon.start();
  const stops: Array<() => void> = [];
  try {
    const sb = await pool.create({ ingressPorts: [3000, 3001] });
    const listener = (await sb.listeners())[0]!;
    const host = new URL(listener.endpoint.url).hostname;
    const guest = (await sb.exec("ip -4 -o addr show eth0").output()).stdout.split(/\s+/)[3]!.split("/")[0]!;

    stops.push(startNginx(`server { listen 0.0.0.0:3000 reuseport backlog=4096; keepalive_requests 100000; location / { return 200 "hello\\n"; } }`, { netns: `sail-${sb.id}` }).stop);
    await waitForPort(() => probeTcp(guest, 3000));

    const tlsDir = join(process.env.SAIL_TEST_DATA_DIR ?? "/var/lib/sail-test", "tls");
    stops.push(
      startNginx(`upstream guest { server ${guest}:3000; keepalive 128; }
 server { listen 127.0.0.1:${NGINX_PROXY_PORT} ssl; ssl_certificate ${tlsDir}/sail.localhost.crt; ssl_certificate_key ${tlsDir}/sail.localhost.key; keepalive_requests 100000;
   location / { proxy_pass http://guest; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header X-Forwarded-Proto https; } }`).stop,
    );
    await waitForPort(() => probeTcp("127.0.0.1", NGINX_PROXY_PORT));

    wrk(`https://127.0.0.1:${HTTPS_PORT}/`, { host, seconds: 2 }); // warm up TLS sessions and upstream pools
    const direct = wrk(`http://${guest}:3000/`, { seconds: SECONDS });
    const nginxRuns: WrkResult[] = [];
    const gatewayRuns: WrkResult[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      nginxRuns.push(wrk(`https://127.0.0.1:${NGINX_PROXY_PORT}/`, { host, seconds: SECONDS }));
      gatewayRuns.push(wrk(`https://127.0.0.1:${HTTPS_PORT}/`, { host, seconds: SECONDS }));
      console.log(`round ${round + 1}: nginx ${nginxRuns[round]!.rps.toFixed(0)} rps p99 ${nginxRuns[round]!.p99Ms.toFixed(2)} ms, gateway ${gatewayRuns[round]!.rps.toFixed(0)} rps p99 ${gatewayRuns[round]!.p99Ms.toFixed(2)} ms`);
    }
    const nginx = medianOf(nginxRuns);
    const gateway = medianOf(gatewayRuns);
    console.log(`\nwrk -t2 -c64 -d${SECONDS}s, tiny responses; nginx and the gateway medians of ${ROUNDS} interleaved rounds (gateway workers: ${workers ?? "one per core"})`);
    console.log(row("direct to guest (http)", direct));
    console.log(row("nginx 1 worker (https)", nginx));
    console.log(row("Sail gateway (https)", gateway));
    console.log(`\ngateway ÷ nginx: rps ${(gateway.rps / nginx.rps).toFixed(2)}x (target ≥ 1), p99 ${(gateway.p99Ms / nginx.p99Ms).toFixed(2)}x (target ≤ 1)`);

    // WebSocket echo: sequential round trips over one connection, through the gateway vs. direct
    const echoScript = join(daemon.configDir, "ws-echo.mjs");
    const wsModule = new URL("../node_modules/ws/wrapper.mjs", import.meta.url).pathname;
    writeFileSync(echoScript, `import { WebSocketServer } from "${wsModule}";\nnew WebSocketServer({ port: 3001, host: "0.0.0.0" }).on("connection", (ws) => ws.on("message", (m, b) => ws.send(m, { binary: b })));\n`);
    const echo = spawn("ip", ["netns", "exec", `sail-${sb.id}`, process.execPath, echoScript], { stdio: "inherit" });
    stops.push(() => echo.kill());
    await waitForPort(() => probeTcp(guest, 3001));
    const wsUrl = (await sb.listener(3001).wait({ timeout: 30 })).endpoint.url.replace("https://", "wss://");
    const ca = await daemon.caCert();
    const directRate = await echoRate(`ws://${guest}:3001/`, {});
    const gatewayRate = await echoRate(wsUrl, { ca, lookup: loopbackLookup as never } as WebSocket.ClientOptions);
    console.log(`\nWebSocket echo, one connection, sequential round trips:`);
    console.log(`direct to guest (ws)   ${directRate.toFixed(0).padStart(8)} msg/s`);
    console.log(`Sail gateway (wss)     ${gatewayRate.toFixed(0).padStart(8)} msg/s   (${(gatewayRate / directRate).toFixed(2)}x direct)`);
  } finally {
    for (const stop of stops) stop();
    await pool.terminateAll();
    await daemon.dispose();
  }
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
