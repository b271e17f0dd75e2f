import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { fetch, type Agent } from "undici";
import WebSocket from "ws";
import { IngressPort, Sailbox, SailboxPausedError, type SailError } from "@sail/sdk";
import { eventually, gatewayAgent, loopbackLookup, runCli, sshOptions, startGuestServer, startTcpEcho, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon({
  setup: async (daemon) => {
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
    ca = await daemon.caCert();
    agent = gatewayAgent(ca);
  },
  teardown: () => agent?.close(),
});
let ca = "";
let agent: Agent;
const keys = mkdtempSync(join(tmpdir(), "sail-sleep-"));
const key = join(keys, "id");

const get = (url: string, init: Parameters<typeof fetch>[1] = {}) => fetch(url, { ...init, dispatcher: agent });
const frozen = (id: string) => execFileSync("crun", ["--root", "/run/sail/crun", "state", id], { encoding: "utf8" }).includes('"paused"');

/** One box with HTTP 3000 (test server), TCP 7070 (echo) and SSH. */
async function fullBox() {
  const sb = await pool.create({ ingressPorts: [3000, new IngressPort(7070, "tcp")], ssh: `${key}.pub` });
  await startGuestServer(sb, 3000);
  await startTcpEcho(sb, 7070);
  const [http, tcp, ssh] = await Promise.all([3000, 7070, 22].map((p) => sb.listener(p).wait({ timeout: 60 })));
  return { sb, url: http!.endpoint.url, tcpPort: tcp!.endpoint.port, sshPort: ssh!.endpoint.port };
}

function tcpRoundTrip(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port, allowHalfOpen: true }, () => s.end(text));
    let got = "";
    s.on("data", (d) => (got += d));
    s.on("error", () => {});
    s.on("close", () => resolve(got));
  });
}

describe("sleep wakes on ingress", () => {
  test("after sleep, the first HTTP request, WebSocket, TCP connection and SSH login each wake the box and are served", async () => {
    const { sb, url, tcpPort, sshPort } = await fullBox();
    const hostKey = execFileSync("ssh-keyscan", ["-p", String(sshPort), "-t", "ed25519", "127.0.0.1"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });

    await sb.sleep();
    assert.equal(await sb.status(), "sleeping");
    assert.ok(frozen(sb.id), "the container is frozen");
    assert.equal((await get(`${url}/headers`)).status, 200);
    assert.equal(await sb.status(), "running");

    await sb.sleep();
    const ws = new WebSocket(`${url.replace("https://", "wss://")}/ws`, { ca, lookup: loopbackLookup as never });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const echoed = new Promise<string>((resolve) => ws.once("message", (d) => resolve(String(d))));
    ws.send("awake?");
    assert.equal(await echoed, "awake?");
    ws.close();
    assert.equal(await sb.status(), "running");

    await sb.sleep();
    assert.equal(await tcpRoundTrip(tcpPort, "knock"), "knockBYE\n");
    assert.equal(await sb.status(), "running");

    await sb.sleep();
    const login = spawnSync("ssh", [...sshOptions(key), "-p", String(sshPort), "root@127.0.0.1", "echo in"], { encoding: "utf8" });
    assert.equal(login.stdout, "in\n");
    assert.equal(execFileSync("ssh-keyscan", ["-p", String(sshPort), "-t", "ed25519", "127.0.0.1"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }), hostKey);
  });

  test("50 concurrent first requests to a sleeping box all succeed and cause one resume", async () => {
    const { sb, url } = await fullBox();
    await sb.status();
    const wakesBefore = sb.describe().wakes;
    await sb.sleep();
    const answers = await Promise.all(Array.from({ length: 50 }, () => get(`${url}/headers`).then((r) => r.status)));
    assert.deepEqual(new Set(answers), new Set([200]));
    assert.equal(await sb.status(), "running");
    assert.equal(sb.describe().wakes, wakesBefore + 1);
  });

  test("an open WebSocket and a TCP session are dropped when the box sleeps", async () => {
    const { sb, url, tcpPort } = await fullBox();
    const ws = new WebSocket(`${url.replace("https://", "wss://")}/ws`, { ca, lookup: loopbackLookup as never });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const wsClosed = new Promise<number>((resolve) => ws.once("close", (code: number) => resolve(code)));
    const tcp = connect({ host: "127.0.0.1", port: tcpPort });
    await new Promise((resolve) => tcp.once("connect", resolve));
    tcp.write("hold");
    await new Promise((resolve) => tcp.once("data", resolve));
    const tcpClosed = new Promise<void>((resolve) => tcp.once("close", () => resolve()));
    tcp.on("error", () => {});
    await sb.sleep();
    // HAProxy ends the session: the client sees the connection close (1006), no close frame
    assert.equal(await wsClosed, 1006);
    await tcpClosed;
  });

  test("a box that sleeps keeps no idle gateway connection, so the request that wakes it cannot meet one its guest closed while frozen", async () => {
    // HAProxy keeps as many idle guest connections as it estimates it needs across all boxes:
    // the earlier tests' boxes go first, so that their idle connections leave room for this one's
    await pool.terminateAll();
    const sb = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(sb, 3000);
    const url = (await sb.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const guest = (await sb.exec("ip -4 -o addr show eth0").output()).stdout.split(/\s+/)[3]!.split("/")[0]!;
    const toGuest = () => execFileSync("ss", ["-H", "-t", "-n", "state", "established", "dst", guest], { encoding: "utf8" }).trim();
    for (let i = 0; i < 5; i++) assert.equal((await get(`${url}/headers`)).status, 200);
    assert.notEqual(toGuest(), "", "HAProxy keeps an idle connection to the guest for any later request (http-reuse always)");
    await sb.sleep();
    assert.equal(toGuest(), "", "sleep closed it");
    assert.equal((await get(`${url}/headers`, { method: "POST", body: "once" })).status, 200);
    assert.equal((await get(`${url}/headers`, { method: "POST", body: "twice" })).status, 200);
  });

  test("exec wakes a sleeping box", async () => {
    const { sb } = await fullBox();
    await sb.sleep();
    assert.equal((await sb.exec("echo up").output()).stdout, "up\n");
    assert.equal(await sb.status(), "running");
  });
});

describe("pause", () => {
  test("a paused box answers 503 and stays paused, its TCP port closes connections, exec is refused, and resume brings it back", async () => {
    const { sb, url, tcpPort } = await fullBox();
    await sb.pause();
    const res = await get(`${url}/headers`, { headers: { accept: "application/json" } });
    assert.equal(res.status, 503);
    const body = (await res.json()) as { error: { code: string; message: string; sailboxId: string } };
    assert.equal(body.error.code, "SAIL_SAILBOX_PAUSED");
    assert.equal(body.error.sailboxId, sb.id);
    assert.match(body.error.message, /resume/);
    assert.equal(await tcpRoundTrip(tcpPort, "x"), "");
    await assert.rejects(sb.exec("true").wait(), (e: SailError) => e instanceof SailboxPausedError && e.code === "SAIL_SAILBOX_PAUSED");
    assert.equal(await sb.status(), "paused");
    assert.ok(frozen(sb.id));

    await sb.resume();
    assert.equal(await sb.status(), "running");
    assert.equal((await get(`${url}/headers`)).status, 200);
    assert.equal(await tcpRoundTrip(tcpPort, "y"), "yBYE\n");
  });

  test("sleep and pause survive a daemon restart; terminate works from either", async () => {
    const [a, b] = await Promise.all([fullBox(), fullBox()]);
    await a.sb.sleep();
    await b.sb.pause();
    await daemon.restart();
    const client = daemon.client();
    const [a2, b2] = await Promise.all([Sailbox.fromId(a.sb.id, { client }), Sailbox.fromId(b.sb.id, { client })]);
    assert.equal(await a2.status(), "sleeping");
    assert.equal(await b2.status(), "paused");
    assert.equal((await get(`${b.url}/headers`)).status, 503);
    assert.equal((await get(`${a.url}/headers`)).status, 200);
    assert.equal(await a2.status(), "running");
    await b2.terminate();
    assert.equal(await b2.status(), "terminated");
  });

  test("the CLI sleeps, pauses and resumes", async () => {
    const { sb } = await fullBox();
    for (const [action, status] of [
      ["sleep", "sleeping"],
      ["resume", "running"],
      ["pause", "paused"],
      ["resume", "running"],
    ] as const) {
      const run = await runCli(daemon, ["box", action, sb.id]);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout.trim(), `${sb.id}: ${status}`);
    }
  });
});

describe("idle auto-sleep", () => {
  /** Poll the status until it is `wanted` (what appears, not how fast). */
  const statusBecomes = (sb: Sailbox, wanted: string) => eventually(`${sb.id} is ${wanted}`, async () => (await sb.status()) === wanted);

  test("an idle box sleeps by itself after idleTimeout, and a request wakes it", async () => {
    const sb = await pool.create({ ingressPorts: [3000], idleTimeout: 1 });
    assert.equal(sb.describe().idleTimeout, 1);
    await startGuestServer(sb, 3000);
    const url = (await sb.listener(3000).wait({ timeout: 60 })).endpoint.url;
    await statusBecomes(sb, "sleeping");
    assert.ok(frozen(sb.id));
    assert.equal((await get(`${url}/headers`)).status, 200);
    assert.equal(await sb.status(), "running");
  });

  test("an open WebSocket exchanging messages keeps the box awake past its idleTimeout", async () => {
    const sb = await pool.create({ ingressPorts: [3000], idleTimeout: 2 });
    await startGuestServer(sb, 3000);
    const url = (await sb.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const ws = new WebSocket(`${url.replace("https://", "wss://")}/ws`, { ca, lookup: loopbackLookup as never });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const closed = new Promise<number>((resolve) => ws.once("close", (code: number) => resolve(code)));
    for (let i = 0; i < 10; i++) {
      const echoed = new Promise((resolve) => ws.once("message", resolve));
      ws.send(`tick ${i}`);
      await echoed;
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(await sb.status(), "running"); // 5 s with an active connection, idleTimeout 2 s
    ws.close();
    await closed;
    await statusBecomes(sb, "sleeping");
  });

  test("idleTimeout must be whole seconds", async () => {
    const app = await pool.app("idle-rules");
    await assert.rejects(Sailbox.create({ app, idleTimeout: 0.5 }), (e: SailError) => e.code === "SAIL_INVALID_ARGUMENT" && /idleTimeout/.test(e.message));
  });
});
