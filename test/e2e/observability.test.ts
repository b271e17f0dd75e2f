import assert from "node:assert/strict";
import { connect } from "node:net";
import { describe, test } from "node:test";
import { fetch, type Agent } from "undici";
import { IngressPort } from "@sail/sdk";
import { eventually, gatewayAgent, HTTPS_PORT, METRICS_PORT, startGuestServer, startTcpEcho, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon({
  setup: async (daemon) => {
    agent = gatewayAgent(await daemon.caCert());
  },
  teardown: () => agent?.close(),
});
let agent: Agent;

async function scrape(): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${METRICS_PORT}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
  return res.text();
}

/** The value of one series, e.g. value(text, 'sail_gateway_refusals_total{protocol="tcp",reason="cidr"}'); 0 when absent. */
function value(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

/** Workers report once a second: scrape until `ready` holds. */
async function scrapeUntil(ready: (text: string) => boolean): Promise<string> {
  return eventually(
    "the metrics show the traffic",
    async () => {
      const text = await scrape();
      return ready(text) && text;
    },
    { intervalMs: 250 },
  );
}

function tcpExchange(port: number, localAddress: string): Promise<string> {
  return new Promise((resolve) => {
    let got = "";
    const s = connect({ host: "127.0.0.1", port, localAddress }, () => s.end("ping\n"));
    s.on("data", (d) => (got += d));
    s.on("error", () => {});
    s.on("close", () => resolve(got));
  });
}

describe("observability", () => {
  test("GET /metrics counts connections, requests, bytes, refusals by reason and wakes with their latency; refusals are logged with box, port and peer", async () => {
    const sb = await pool.create({ ingressPorts: [3000, new IngressPort(7070, "tcp", { cidrAllowlist: ["127.0.0.2/32"] })] });
    await startGuestServer(sb, 3000);
    await startTcpEcho(sb, 7070);
    const url = (await sb.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const tcp = (await sb.listener(7070).wait({ timeout: 60 })).endpoint;
    const before = await scrape();

    assert.equal((await fetch(`${url}/headers`, { dispatcher: agent })).status, 200);
    const unknown = await fetch(`https://3000-sb-nosuchbox.sail.localhost:${HTTPS_PORT}/`, { dispatcher: agent });
    assert.equal(unknown.status, 404);
    assert.equal(await tcpExchange(tcp.port, "127.0.0.1"), "", "refused by the allowlist");
    assert.match(await tcpExchange(tcp.port, "127.0.0.2"), /ping/);
    await sb.sleep();
    assert.equal((await fetch(`${url}/headers`, { dispatcher: agent })).status, 200, "woken by the request");

    const grew = (text: string, series: string) => value(text, series) > value(before, series);
    const series = [
      'sail_gateway_connections_total{protocol="http"}',
      "sail_gateway_requests_total",
      'sail_gateway_bytes_total{protocol="http",direction="in"}',
      'sail_gateway_bytes_total{protocol="http",direction="out"}',
      'sail_gateway_refusals_total{protocol="http",reason="SAIL_ROUTE_UNKNOWN"}',
      'sail_gateway_connections_total{protocol="tcp"}',
      'sail_gateway_refusals_total{protocol="tcp",reason="cidr"}',
      'sail_gateway_bytes_total{protocol="tcp",direction="in"}',
      'sail_gateway_bytes_total{protocol="tcp",direction="out"}',
      "sail_wakes_total",
      "sail_wake_seconds_count",
    ];
    const after = await scrapeUntil((text) => series.every((s) => grew(text, s)));
    for (const s of series) assert.ok(grew(after, s), `${s} grew (${value(before, s)} -> ${value(after, s)})`);
    assert.ok(value(after, 'sail_sailboxes{status="running"}') >= 1);
    assert.match(after, /^sail_gateway_worker_rss_bytes\{worker="haproxy"\} \d+/m);
    assert.match(after, /^sail_gateway_worker_rss_bytes\{worker="tcp-\d+"\} \d+/m);
    assert.match(after, /^haproxy_process_current_connections \d+/m, "HAProxy's own exporter follows Sail's series");
    assert.match(after, /^sail_daemon_process_resident_memory_bytes \d+/m);

    // the allowlist refusal is in the daemon's structured log with the box, the port and the peer
    const refusal = daemon.log
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((e) => e.reason === "cidr" && e.sailboxId === sb.id);
    assert.ok(refusal, "a log line for the refused connection");
    assert.equal(refusal.port, 7070);
    assert.match(String(refusal.peer), /127\.0\.0\.1$/);
  });
});
