/**
 * Cluster (issue 23): the same control plane, three node agents in network namespaces of their
 * own and an edge in a fourth (test/fixtures/sail-cluster.ts), on this one machine, so the ratios
 * measure the edge's hop and the control plane's overhead, not capacity:
 *  - HTTPS through the edge vs. straight to the box's node (both TLS to the node's gateway: the
 *    edge passes it through by SNI with PROXY v2): keep-alive and one request per connection,
 *    wrk -c64, medians of interleaved rounds; rps and p99;
 *  - raw TCP throughput through the edge vs. straight to the node (iperf3, one stream);
 *  - wake: time to the first byte of a request to a sleeping box through the edge vs. straight;
 *  - creates with three nodes vs. one (two drained): boxes a second, 8 at a time;
 *  - node loss: kill -9 of a node agent to its boxes `failed`, with the fixture's lease and grace.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { request } from "node:https";
import { App, IngressPort, Nodes, Sailbox } from "@sail/sdk";
import { probeTcp } from "../packages/server/src/runtime/ports.js";
import { cluster, control, edge, GRACE_S, LEASE_S, NODE_HTTPS_PORT, NODES, startSailCluster, stopSailCluster, type Node } from "../test/fixtures/sail-cluster.js";
import { median } from "./stats.js";
import { startNginx, waitForPort, wrk, type Started, type WrkResult } from "./tools.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_CLUSTER_ROUNDS ?? 3);
const WAKES = Number(process.env.BENCH_CLUSTER_WAKES ?? 7);
const CREATES = Number(process.env.BENCH_CLUSTER_CREATES ?? 24);
const TARGET = { rps: 0.9, p99: 1.3, tcp: 0.9, wakeExtraMs: 2, creates: 0.9, nodeLossS: 15 };

const met = (ok: boolean) => (ok ? "met" : "NOT MET");

/** The node that runs `box`, by the control plane's word. */
async function nodeOf(box: Sailbox): Promise<Node> {
  await box.status();
  const summary = (await Nodes.list({ client: control.client() })).find((n) => n.nodeId === box.describe().node);
  const node = NODES.find((n) => n.wireUrl === summary?.url);
  if (!node) throw new Error(`box ${box.id} is on no node of the cluster`);
  return node;
}

/** Time to the first byte of one GET to `url` sent to `address` (the URL's host as SNI and Host), ms. */
function firstByteMs(url: string, address: string, ca: string): Promise<number> {
  const { hostname, port } = new URL(url);
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: hostname,
        port,
        path: "/",
        ca,
        servername: hostname,
        agent: false,
        signal: AbortSignal.timeout(30_000),
        lookup: ((_h: string, o: { all?: boolean }, cb: (...a: unknown[]) => void) => (o?.all ? cb(null, [{ address, family: 4 }]) : cb(null, address, 4))) as never,
      },
      (res) => {
        res.once("data", () => resolve(performance.now() - started));
        res.resume();
      },
    );
    req.on("error", reject);
    req.end();
  });
}

function iperf(address: string, port: number): number {
  const report = JSON.parse(execFileSync("iperf3", ["-c", address, "-p", String(port), "-t", String(SECONDS), "-J"], { encoding: "utf8", timeout: (SECONDS + 30) * 1000 })) as {
    end: { sum_received: { bits_per_second: number } };
  };
  return report.end.sum_received.bits_per_second / 8 / 1e9;
}

/** `count` creates, 8 at a time; boxes a second. */
async function createRate(app: App, count: number, made: Sailbox[]): Promise<number> {
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < count) {
        next++;
        made.push(await Sailbox.create({ app }));
      }
    }),
  );
  return count / ((performance.now() - started) / 1000);
}

export async function clusterBench(): Promise<void> {
  const children: ChildProcess[] = [];
  const servers: Started[] = [];
  const made: Sailbox[] = [];
  try {
    const ca = await startSailCluster();
    const client = control.client();
    const app = await App.find({ name: "bench", mintIfMissing: true, client });
    const box = await Sailbox.create({ app, ingressPorts: [3000, new IngressPort(4000, "tcp", { allowPublic: true })] });
    made.push(box);
    const node = await nodeOf(box);
    const guest = (await box.exec("ip -4 -o addr show eth0").output()).stdout.split(/\s+/)[3]!.split("/")[0]!;
    servers.push(startNginx(`server { listen 0.0.0.0:3000 reuseport backlog=4096; keepalive_requests 100000; location / { return 200 "hello\\n"; } }`, { netns: `sail-${box.id}` }));
    children.push(spawn("ip", ["netns", "exec", `sail-${box.id}`, "iperf3", "-s", "-p", "4000"], { stdio: "ignore" }));
    await waitForPort(() => probeTcp(guest, 3000));
    await waitForPort(() => probeTcp(guest, 4000));
    const url = (await box.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const host = new URL(url).hostname;
    const tcpPort = (await box.listener(4000).wait({ timeout: 60 })).endpoint.port;
    const paths = { edge: edge.address, node: node.address };

    // HTTPS: keep-alive and one request per connection, the two paths taking turns
    const runs: Record<"edge" | "node", { keep: WrkResult[]; close: WrkResult[]; tcp: number[] }> = { edge: { keep: [], close: [], tcp: [] }, node: { keep: [], close: [], tcp: [] } };
    for (let round = 0; round < ROUNDS; round++) {
      for (const path of (round % 2 ? ["node", "edge"] : ["edge", "node"]) as Array<"edge" | "node">) {
        const target = `https://${host}:${NODE_HTTPS_PORT}/`;
        runs[path].keep.push(wrk(target, { names: [host], address: paths[path], seconds: SECONDS }));
        runs[path].close.push(wrk(target, { names: [host], address: paths[path], seconds: SECONDS, headers: ["Connection: close"] }));
        runs[path].tcp.push(iperf(paths[path], tcpPort));
      }
    }
    const med = (rs: WrkResult[]) => ({ rps: median(rs.map((r) => r.rps)), p99: median(rs.map((r) => r.p99Ms)), errors: rs.reduce((n, r) => n + r.errors, 0) });
    const keep = { edge: med(runs.edge.keep), node: med(runs.node.keep) };
    const close = { edge: med(runs.edge.close), node: med(runs.node.close) };
    const tcp = { edge: median(runs.edge.tcp), node: median(runs.node.tcp) };

    // wrk and iperf3 ran synchronously: the event loop now learns that the API closed the pooled
    // connection while it was blocked (its keep-alive ends at 65 s), before a request is sent on it
    await new Promise((resolve) => setTimeout(resolve, 200));

    // wake: a sleeping box's first byte, through each path in turn
    const wakes: Record<"edge" | "node", number[]> = { edge: [], node: [] };
    for (let i = 0; i < WAKES; i++) {
      for (const path of (i % 2 ? ["node", "edge"] : ["edge", "node"]) as Array<"edge" | "node">) {
        await box.sleep();
        wakes[path].push(await firstByteMs(url, paths[path], ca));
      }
    }

    // creates: one node (two drained) vs three
    const others = (await Nodes.list({ client })).filter((n) => n.url !== node.wireUrl);
    for (const other of others) await Nodes.drain(other.nodeId, { client });
    const oneNode = await createRate(app, CREATES, made);
    for (const other of others) await Nodes.drain(other.nodeId, { client, draining: false });
    const threeNodes = await createRate(app, CREATES, made);

    // node loss: kill -9 of the node with the most boxes, until they are all failed
    const victim = await nodeOf(made.at(-1)!);
    const onVictim: Sailbox[] = [];
    for (const b of made) if ((await nodeOf(b).catch(() => undefined)) === victim) onVictim.push(b);
    await cluster.kill9(victim.process!);
    const killedAt = performance.now();
    while (!(await Promise.all(onVictim.map((b) => b.status()))).every((s) => s === "failed")) await new Promise((r) => setTimeout(r, 100));
    const lossS = (performance.now() - killedAt) / 1000;
    await victim.start();

    const row = (label: string, e: number, n: number, unit: string, ratio: string) =>
      console.log(`${label.padEnd(34)} ${e.toFixed(2).padStart(10)} ${n.toFixed(2).padStart(10)} ${unit.padEnd(6)} ${ratio}`);
    console.log(`three nodes and an edge in network namespaces on one host; wrk -c64 ${SECONDS} s, iperf3 one stream, medians of ${ROUNDS} interleaved rounds`);
    console.log(`${"".padEnd(34)} ${"edge".padStart(10)} ${"node".padStart(10)}`);
    const keepRatio = keep.edge.rps / keep.node.rps;
    const keepP99 = keep.edge.p99 / keep.node.p99;
    row("HTTPS keep-alive rps", keep.edge.rps, keep.node.rps, "rps", `${keepRatio.toFixed(2)}x (target ≥ ${TARGET.rps}x: ${met(keepRatio >= TARGET.rps)})`);
    row("HTTPS keep-alive p99", keep.edge.p99, keep.node.p99, "ms", `${keepP99.toFixed(2)}x (target ≤ ${TARGET.p99}x: ${met(keepP99 <= TARGET.p99)})`);
    row("HTTPS new connection rps", close.edge.rps, close.node.rps, "rps", `${(close.edge.rps / close.node.rps).toFixed(2)}x`);
    row("HTTPS new connection p99", close.edge.p99, close.node.p99, "ms", `${(close.edge.p99 / close.node.p99).toFixed(2)}x`);
    const tcpRatio = tcp.edge / tcp.node;
    row("raw TCP throughput", tcp.edge, tcp.node, "GB/s", `${tcpRatio.toFixed(2)}x (target ≥ ${TARGET.tcp}x: ${met(tcpRatio >= TARGET.tcp)})`);
    const wakeExtra = median(wakes.edge) - median(wakes.node);
    row("wake: first byte, median", median(wakes.edge), median(wakes.node), "ms", `edge adds ${wakeExtra.toFixed(2)} ms (target ≤ ${TARGET.wakeExtraMs} ms: ${met(wakeExtra <= TARGET.wakeExtraMs)})`);
    const createRatio = threeNodes / oneNode;
    console.log(
      `creates, 8 at a time: three nodes ${threeNodes.toFixed(2)}/s, one node ${oneNode.toFixed(2)}/s: ${createRatio.toFixed(2)}x (target ≥ ${TARGET.creates}x: ${met(createRatio >= TARGET.creates)})`,
    );
    console.log(
      `node loss (kill -9) to its ${onVictim.length} boxes failed: ${lossS.toFixed(1)} s with --node-lease ${LEASE_S} --node-grace ${GRACE_S} (target ≤ ${TARGET.nodeLossS} s: ${met(lossS <= TARGET.nodeLossS)})`,
    );
    console.log(`errors: keep-alive ${keep.edge.errors + keep.node.errors}, new connections ${close.edge.errors + close.node.errors}`);
  } catch (err) {
    console.error(`the cluster bench failed; the control plane said:\n${control.log.slice(-3000)}\nthe control plane process: ${control.process?.exitCode ?? "running"}`);
    throw err;
  } finally {
    for (const child of children) child.kill("SIGKILL");
    for (const server of servers) await server.stop();
    for (const b of made) await b.terminate().catch(() => {});
    const left = await stopSailCluster();
    if (left.length) console.error(`left on the host: ${left.join(", ")}`);
  }
}
