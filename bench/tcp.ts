/**
 * TCP: throughput (iperf3) through the Sail TCP gateway vs. direct to the guest vs. HAProxy
 * (mode tcp) to the same guest, in one run, medians of interleaved rounds; then connection
 * setup (connect + one echoed byte) through each. The guest servers run in the box's network
 * namespace.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IngressPort } from "@sail/sdk";
import { BoxPool, TestDaemon } from "../test/e2e/harness.js";
import { percentile } from "./stats.js";
import { probeTcp } from "../packages/server/src/runtime/ports.js";
import { waitForPort } from "./tools.js";

const SECONDS = Number(process.env.BENCH_TCP_SECONDS ?? 4);
const CONNECTS = Number(process.env.BENCH_TCP_CONNECTS ?? 500);
/** Throughput rounds: the three paths take turns, and each path's median counts. */
const ROUNDS = Number(process.env.BENCH_TCP_ROUNDS ?? 5);
const HAPROXY_PORT = 18445;

/** Echo on 4001 (iperf3's server listens on 4000). */
const GUEST_SERVERS = `
import net from "node:net";
net.createServer((s) => { s.on("error", () => {}); s.pipe(s); }).listen(4001, "0.0.0.0");
`;

/** iperf3 to the guest's iperf3 server through `host:port`: what the server received, GB/s. */
function throughput(host: string, port: number): number {
  const report = JSON.parse(execFileSync("iperf3", ["-c", host, "-p", String(port), "-t", String(SECONDS), "-J"], { encoding: "utf8" })) as { end: { sum_received: { bits_per_second: number } } };
  return report.end.sum_received.bits_per_second / 8 / 1e9;
}

/** Connect, send one byte, read it back: ms per connection, p50. */
async function setup(host: string, port: number): Promise<{ p50: number; p95: number }> {
  const samples: number[] = [];
  for (let i = 0; i < CONNECTS; i++) {
    const start = process.hrtime.bigint();
    await new Promise<void>((resolve, reject) => {
      const s = connect({ host, port }, () => s.write("x"));
      s.once("data", () => {
        samples.push(Number(process.hrtime.bigint() - start) / 1e6);
        s.destroy();
        resolve();
      });
      s.on("error", reject);
    });
  }
  return { p50: percentile(samples, 50), p95: percentile(samples, 95) };
}

export async function tcp(): Promise<void> {
  const daemon = new TestDaemon();
  const pool = new BoxPool(daemon);
  await daemon.start();
  const children: ChildProcess[] = [];
  try {
    const sb = await pool.create({ ingressPorts: [new IngressPort(4000, "tcp"), new IngressPort(4001, "tcp")] });
    const guest = (await sb.exec("ip -4 -o addr show eth0").output()).stdout.split(/\s+/)[3]!.split("/")[0]!;
    const dir = mkdtempSync(join(tmpdir(), "sail-bench-tcp-"));
    writeFileSync(join(dir, "servers.mjs"), GUEST_SERVERS);
    children.push(spawn("ip", ["netns", "exec", `sail-${sb.id}`, process.execPath, join(dir, "servers.mjs")], { stdio: "inherit" }));
    children.push(spawn("ip", ["netns", "exec", `sail-${sb.id}`, "iperf3", "-s", "-p", "4000"], { stdio: "ignore" }));
    await waitForPort(() => probeTcp(guest, 4001));
    await waitForPort(() => probeTcp(guest, 4000));
    const [sink, echo] = await Promise.all([sb.listener(4000).wait({ timeout: 30 }), sb.listener(4001).wait({ timeout: 30 })]);

    writeFileSync(
      join(dir, "haproxy.cfg"),
      `global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n` +
        `listen sink\n  bind 127.0.0.1:${HAPROXY_PORT}\n  server g ${guest}:4000\nlisten echo\n  bind 127.0.0.1:${HAPROXY_PORT + 1}\n  server g ${guest}:4001\n`,
    );
    children.push(spawn("haproxy", ["-f", join(dir, "haproxy.cfg"), "-db"], { stdio: "inherit" }));
    await waitForPort(() => probeTcp("127.0.0.1", HAPROXY_PORT + 1));

    const gatewayHost = "127.0.0.1";
    const paths = [
      ["direct to guest", guest, 4000, 4001],
      ["haproxy (tcp mode)", "127.0.0.1", HAPROXY_PORT, HAPROXY_PORT + 1],
      ["Sail TCP gateway", gatewayHost, sink.endpoint.port, echo.endpoint.port],
    ] as const;
    // take turns, so a slow moment of the shared machine hits every path alike
    const speeds: number[][] = paths.map(() => []);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [i, [, host, sinkPort]] of paths.entries()) speeds[i]!.push(throughput(host, sinkPort));
    }
    const rows: Array<[string, number, { p50: number; p95: number }]> = [];
    for (const [i, [label, host, , echoPort]] of paths.entries()) rows.push([label, percentile(speeds[i]!, 50), await setup(host, echoPort)]);
    console.log(`iperf3 -t ${SECONDS}, one stream, median of ${ROUNDS} interleaved rounds; ${CONNECTS} connect + 1-byte echo`);
    for (const [label, gbps, s] of rows) {
      console.log(`${label.padEnd(20)} ${gbps.toFixed(2).padStart(6)} GB/s   connect+echo p50 ${s.p50.toFixed(3)} ms  p95 ${s.p95.toFixed(3)} ms`);
    }
    const [direct, haproxy, gateway] = rows as [(typeof rows)[0], (typeof rows)[0], (typeof rows)[0]];
    const overHaproxy = gateway[1] / haproxy[1];
    const overheadMs = gateway[2].p50 - direct[2].p50;
    const met = (ok: boolean) => (ok ? "met" : "NOT MET");
    console.log(`\ngateway ÷ haproxy (mode tcp) throughput: ${overHaproxy.toFixed(2)}x (target ≥ 1.2x: ${met(overHaproxy >= 1.2)})`);
    console.log(`gateway ÷ direct throughput: ${(gateway[1] / direct[1]).toFixed(2)}x (no target; haproxy ÷ direct: ${(haproxy[1] / direct[1]).toFixed(2)}x)`);
    console.log(`connection overhead over direct, p50: ${overheadMs.toFixed(3)} ms (target < 1 ms: ${met(overheadMs < 1)}); haproxy's: ${(haproxy[2].p50 - direct[2].p50).toFixed(3)} ms`);
  } finally {
    for (const child of children) child.kill();
    await pool.terminateAll();
    await daemon.dispose();
  }
}
