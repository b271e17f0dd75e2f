/**
 * The edge router (issue 23), for real: the split form (a control plane on PostgreSQL and a
 * node agent) with an edge in front (`sail up --role edge`), every client going through the
 * edge on loopback (its raw-TCP ports on 127.0.0.5). The node's raw-TCP ports are on 127.0.0.2 and it takes PROXY v2 from the
 * edge's source (127.0.0.1) only; clients come from 127.0.0.3 or 127.0.0.4, so the address the
 * guest sees says whether the real client crossed. Always the split form.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { connect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { describe, test } from "node:test";
import { Agent, fetch } from "undici";
import WebSocket from "ws";
import { IngressPort, type Sailbox } from "@sail/sdk";
import { API_PORT, CLI, DATA_DIR, HTTPS_PORT, eventually, loopbackLookup, startGuestServer, startTcpEcho, useTestDaemon } from "./harness.js";

/** The edge's own ports: HTTPS a thousand above the node's gateway, raw TCP the node's range (on another address). */
const EDGE_HTTPS_PORT = HTTPS_PORT + 1000;
const NODE_TCP_ADDRESS = "127.0.0.2";
/** The edge's raw-TCP ports: not on 127.0.0.1, whose outgoing connections take ports of this range (the host's ephemeral range covers it). */
const EDGE_TCP_ADDRESS = "127.0.0.5";
/** The two clients: one inside the allowlists below, one outside. */
const INSIDE = "127.0.0.3";
const OUTSIDE = "127.0.0.4";

let edge: ChildProcess | undefined;
let edgeLog = "";
let ca = "";

const { daemon, pool } = useTestDaemon({
  split: true,
  upArgs: ["--tcp-listen", NODE_TCP_ADDRESS, "--edge-from", "127.0.0.1/32"],
  setup: async (daemon) => {
    ca = await daemon.caCert();
    edge = spawn(
      process.execPath,
      [
        CLI,
        "up",
        "--role",
        "edge",
        "--control",
        `http://127.0.0.1:${API_PORT}`,
        "--node-token",
        daemon.nodeToken,
        "--data-dir",
        join(DATA_DIR, "edge"),
        "--https-listen",
        `127.0.0.1:${EDGE_HTTPS_PORT}`,
        "--tcp-listen",
        EDGE_TCP_ADDRESS,
        "--tcp-ports",
        process.env.SAIL_TEST_TCP_PORTS ?? "21000-21999",
        "--metrics-listen",
        "off",
        "--log-level",
        "info",
      ],
      { env: daemon.env, stdio: ["ignore", "pipe", "pipe"] },
    );
    await new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        edgeLog += chunk.toString();
        if (edgeLog.includes("Sail edge is up")) resolve();
      };
      edge!.stdout!.on("data", onData);
      edge!.stderr!.on("data", onData);
      edge!.once("exit", (code) => reject(new Error(`the edge exited ${code} before it was up:\n${edgeLog}`)));
    });
  },
  teardown: async () => {
    if (!edge || edge.exitCode !== null) return;
    const exited = new Promise((resolve) => edge!.once("exit", resolve));
    edge.kill("SIGTERM");
    await exited;
  },
});

/** An HTTPS client of the edge, connecting from `from`. */
function edgeAgent(from: string): Agent {
  return new Agent({ connect: { ca, lookup: loopbackLookup as never }, localAddress: from });
}

/** A box URL as the edge serves it. */
const viaEdge = (url: string) => url.replace(`:${HTTPS_PORT}`, `:${EDGE_HTTPS_PORT}`);

/** What a GET through the edge answers: its status and body, or 0 when the connection closed without an answer. */
async function get(url: string, from = INSIDE): Promise<{ status: number; body: string }> {
  const agent = edgeAgent(from);
  try {
    const res = await fetch(viaEdge(url), { dispatcher: agent, signal: AbortSignal.timeout(60_000) });
    return { status: res.status, body: await res.text() };
  } catch {
    return { status: 0, body: "" };
  } finally {
    await agent.close();
  }
}

/** Send "ping" to the edge's public TCP `port` from `from`; what came back ("" when the connection closed with nothing). */
function tcpExchange(port: number, from: string): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s: Socket = connect({ host: EDGE_TCP_ADDRESS, port, localAddress: from }, () => s.end("ping\n"));
    // a deadline, so a connection the edge neither forwards nor closes fails the probe instead of hanging it
    s.setTimeout(10_000, () => s.destroy());
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("error", () => {});
    s.on("close", () => resolve(Buffer.concat(chunks)));
  });
}

/** The client's IPv4 address in a PROXY v2 header (TCP over IPv4: source at bytes 16–19). */
function proxySource(bytes: Buffer): string | undefined {
  if (bytes.length < 28 || bytes[13] !== 0x11) return undefined;
  return [...bytes.subarray(16, 20)].join(".");
}

async function ready(sb: Sailbox, port: number): Promise<string> {
  return (await sb.listener(port).wait({ timeout: 60 })).endpoint.url;
}

describe("the edge router: HTTPS by SNI and raw TCP to the box's node, fed by the route feed", () => {
  test("HTTPS through the edge reaches the box with real TLS, and the guest sees the real client in X-Forwarded-For", async () => {
    const sb = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(sb, 3000);
    const url = await ready(sb, 3000);
    const answer = await eventually("the box answers through the edge", async () => {
      const seen = await get(`${url}/headers`);
      return seen.status === 200 ? seen : false;
    });
    const headers = JSON.parse(answer.body) as Record<string, string>;
    assert.equal(headers["x-forwarded-for"], INSIDE);
  });

  test("a WebSocket through the edge echoes", async () => {
    const sb = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(sb, 3000);
    const url = await ready(sb, 3000);
    await eventually("the box answers through the edge", async () => (await get(`${url}/headers`)).status === 200);
    const ws = new WebSocket(`${viaEdge(url).replace("https://", "wss://")}/ws`, { ca, lookup: loopbackLookup as never, localAddress: INSIDE });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const echoed = new Promise<string>((resolve) => ws.once("message", (data) => resolve(String(data))));
    ws.send("through the edge");
    assert.equal(await echoed, "through the edge");
    ws.close();
  });

  test("TCP through the edge: the allowlist refuses an outside source at the edge, and the guest sees the real client (PROXY v2 from the node)", async () => {
    const sb = await pool.create({ ingressPorts: [new IngressPort(7070, "tcp", { cidrAllowlist: [`${INSIDE}/32`], proxyProtocol: true })] });
    await startTcpEcho(sb, 7070);
    const { port } = (await sb.listener(7070).wait({ timeout: 60 })).endpoint;
    const echoed = await eventually(
      "the echo answers through the edge",
      async () => {
        const got = await tcpExchange(port, INSIDE);
        return got.includes("ping\n") ? got : false;
        // each probe is a connection: bound the count, not only the interval (a refusal answers at once, 1800 of them take 15 minutes)
      },
      { intervalMs: 200, attempts: 300 },
    );
    // the echo sends back the PROXY v2 header the node put first: its source is the client the edge saw
    assert.equal(proxySource(echoed), INSIDE);
    assert.equal((await tcpExchange(port, OUTSIDE)).length, 0, "a source outside the allowlist gets nothing");
    const refusedAtNode = /refused by cidrAllowlist/.test(daemon.log);
    assert.equal(refusedAtNode, false, "the node never saw the refused connection: the edge dropped it");
  });

  test("a sleeping box wakes on HTTPS through the edge", async () => {
    const sb = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(sb, 3000);
    const url = await ready(sb, 3000);
    await eventually("the box answers through the edge", async () => (await get(`${url}/headers`)).status === 200);
    await sb.sleep();
    assert.equal(await sb.status(), "sleeping");
    assert.equal((await get(`${url}/headers`)).status, 200);
    await eventually("the store says the woken box runs", async () => (await sb.status()) === "running");
  });

  test("a terminated box's host and port leave the edge", async () => {
    const sb = await pool.create({ ingressPorts: [3000, new IngressPort(7070, "tcp", { allowPublic: true })] });
    await startGuestServer(sb, 3000);
    await startTcpEcho(sb, 7070);
    const url = await ready(sb, 3000);
    const { port } = (await sb.listener(7070).wait({ timeout: 60 })).endpoint;
    await eventually("the box answers through the edge", async () => (await get(`${url}/headers`)).status === 200);
    await eventually("the echo answers through the edge", async () => (await tcpExchange(port, OUTSIDE)).includes("ping\n"));
    await sb.terminate();
    // the node would answer a gone host with a 404 page: a close with no answer at all is the edge's
    await eventually("the host leaves the edge", async () => (await get(`${url}/headers`)).status === 0);
    await eventually("the port leaves the edge", async () => (await tcpExchange(port, OUTSIDE)).length === 0);
  });

  test("a request on an edge connection for another box's host is 421 (HTTP/2 coalescing); straight to the node it is routed by Host", async () => {
    const [a, b] = [await pool.create({ ingressPorts: [3000] }), await pool.create({ ingressPorts: [3000] })];
    for (const sb of [a, b]) await startGuestServer(sb, 3000);
    const [urlA, urlB] = [await ready(a, 3000), await ready(b, 3000)];
    for (const url of [urlA, urlB]) await eventually("the box answers through the edge", async () => (await get(`${url}/headers`)).status === 200);
    const [hostA, hostB] = [new URL(urlA).hostname, new URL(urlB).hostname];
    const statusLine = (port: number, from: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = tlsConnect({ socket: connect({ host: "127.0.0.1", port, localAddress: from }), servername: hostA, ca, ALPNProtocols: ["http/1.1"] }, () =>
          socket.write(`GET /headers HTTP/1.1\r\nHost: ${hostB}\r\nConnection: close\r\n\r\n`),
        );
        let got = "";
        socket.setTimeout(30_000, () => socket.destroy());
        socket.on("data", (d) => (got += d));
        socket.on("error", reject);
        socket.on("close", () => resolve(got.split("\r\n")[0] ?? ""));
      });
    assert.match(await statusLine(EDGE_HTTPS_PORT, INSIDE), /^HTTP\/1\.1 421/);
    assert.match(await statusLine(HTTPS_PORT, INSIDE), /^HTTP\/1\.1 200/);
  });
});
