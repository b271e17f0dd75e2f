/**
 * The HTTPS gateway between a hostile guest and hostile clients. Each finding of the review
 * of the hand-written engine Sail had before HAProxy is a test here, which HAProxy passes too:
 * a guest that mis-frames its answers must not reach another exchange, a POST the guest
 * received is never sent twice, and no client can hold a connection past the per-phase limits
 * (this daemon runs with short ones: 3 s) or take the gateway down by opening too many.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { connect as tcpConnect, type Socket } from "node:net";
import { join } from "node:path";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { describe, test } from "node:test";
import { Agent, fetch } from "undici";
import type { Sailbox } from "@sail/sdk";
import { eventually, gatewayAgent, HTTPS_PORT, loopbackLookup, METRICS_PORT, REPO, startPython, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon({
  upArgs: ["--client-idle-timeout", "3", "--head-timeout", "3", "--response-timeout", "3", "--https-max-connections", "50"],
  setup: async (daemon) => {
    ca = await daemon.caCert();
  },
});
let ca = "";

/** A box running test/fixtures/hostile-guest.py on port 3000; its URL. */
async function hostileBox(options: { idleTimeout?: number } = {}): Promise<{ sb: Sailbox; url: string; host: string }> {
  const sb = await pool.create({ ingressPorts: [3000], ...options });
  await startPython(sb, "hostile", readFileSync(join(REPO, "test/fixtures/hostile-guest.py"), "utf8"), "3000");
  const url = (await sb.listener(3000).wait({ timeout: 60 })).endpoint.url;
  return { sb, url, host: new URL(url).hostname };
}

/** Requests over one kept-alive connection, in order: what each exchange brought back. */
async function overOneConnection(url: string, requests: Array<{ path: string; method?: string }>): Promise<Array<{ status: number; body: string; headers: Headers } | { error: string }>> {
  const agent = new Agent({ connections: 1, pipelining: 1, connect: { ca, lookup: loopbackLookup as never } });
  const results = [];
  try {
    for (const { path, method } of requests) {
      try {
        const res = await fetch(`${url}${path}`, { dispatcher: agent, method });
        results.push({ status: res.status, body: await res.text(), headers: res.headers });
      } catch (err) {
        results.push({ error: String((err as Error).cause ?? err) });
      }
    }
  } finally {
    await agent.close();
  }
  return results;
}

function tls(host: string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port: HTTPS_PORT, servername: host, ca }, () => resolve(socket));
    socket.on("error", reject);
  });
}

/**
 * Resolves once the gateway has closed its side of the connection. A paused socket never
 * emits "close" while unread data waits, so the kernel's view is read instead: the
 * connection in CLOSE-WAIT (the peer's FIN arrived) or gone.
 */
async function closedByGateway(socket: Socket): Promise<void> {
  socket.on("error", () => {});
  const port = socket.localPort;
  await eventually(
    `the gateway closes the connection from port ${port}`,
    () => {
      const state = execFileSync("ss", ["-Htn", "state", "all", `( sport = :${port} )`], { encoding: "utf8" }).trim();
      return !state || /^(CLOSE-WAIT|CLOSED|TIME-WAIT|LAST-ACK)/m.test(state);
    },
    { intervalMs: 250 },
  );
}

describe("the gateway between a hostile guest and hostile clients", () => {
  test("a guest naming Content-Length in Connection cannot splice bytes into the client's next answer", async () => {
    const { url } = await hostileBox();
    const [first, second] = await overOneConnection(url, [{ path: "/connection-cl" }, { path: "/normal" }]);
    assert.deepEqual([(first as { body: string }).body, (second as { body: string }).body], ["hello", "normal"]);
  });

  test("a chunked answer hiding a second response in a bad extension or trailer never reaches the client", async () => {
    const { url } = await hostileBox();
    const results = await overOneConnection(url, [{ path: "/bad-chunks" }, { path: "/normal" }]);
    const seen = JSON.stringify(results.map((r) => ("error" in r ? r : { status: r.status, body: r.body, cookie: r.headers.get("set-cookie"), location: r.headers.get("location") })));
    assert.doesNotMatch(seen, /stolen|302/, seen);
    assert.notEqual((results[0] as { status?: number }).status, 200, "the broken answer is not passed on as a success");
    assert.deepEqual([(results[1] as { status: number }).status, (results[1] as { body: string }).body], [200, "normal"]);
  });

  test("a 101 answering a request that did not ask to upgrade is a 502, not a tunnel", async () => {
    const { url } = await hostileBox();
    const [fake, after] = await overOneConnection(url, [{ path: "/fake-101" }, { path: "/normal" }]);
    assert.equal((fake as { status: number }).status, 502);
    assert.equal((fake as { headers: Headers }).headers.get("x-sail-error"), "SAIL_UPSTREAM_FAILED");
    assert.doesNotMatch((fake as { body: string }).body, /evil/);
    assert.equal((after as { body: string }).body, "normal");
  });

  test("a POST the guest received and then dropped is never sent to it again (HTTP/1.1 clients)", async () => {
    const { url } = await hostileBox();
    // first on its client connection: a 502
    const [first] = await overOneConnection(url, [{ path: "/count-then-close", method: "POST" }]);
    assert.equal((first as { status: number }).status, 502);
    // after another exchange, on a kept-alive connection: HAProxy closes the client connection
    // without an answer (RFC 9112 §9.3.1: the client decides), and sends nothing twice itself
    const [, later] = await overOneConnection(url, [{ path: "/normal" }, { path: "/count-then-close", method: "POST" }]);
    assert.ok("error" in later || later.status === 502, JSON.stringify(later));
    const [counted] = await overOneConnection(url, [{ path: "/count" }]);
    assert.equal((counted as { body: string }).body, "2", "the guest executed each POST once");
  });

  test("a guest that never answers gets the client a 504 after the response timeout", async () => {
    const { url } = await hostileBox();
    const res = await fetch(`${url}/never`, { dispatcher: gatewayAgent(ca) });
    assert.equal(res.status, 504);
    assert.equal(res.headers.get("x-sail-error"), "SAIL_UPSTREAM_TIMEOUT");
  });

  test("slow readers and stalled uploads are cut, so a box with such clients still falls idle", async () => {
    const { sb, host } = await hostileBox({ idleTimeout: 2 });
    const readers = await Promise.all(Array.from({ length: 5 }, () => tls(host)));
    const uploads = await Promise.all(Array.from({ length: 5 }, () => tls(host)));
    try {
      for (const socket of readers) {
        socket.pause(); // never reads: the 64 MiB answer backs up in the kernels' buffers
        socket.write(`GET /big HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      }
      for (const socket of uploads) socket.write(`POST /normal HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 10000000\r\n\r\n${"x".repeat(1024)}`);
      // a stalled upload is closed by the gateway (its FIN reaches the client at once)
      await Promise.all(uploads.map(closedByGateway));
      // a slow reader's session ends in HAProxy too (its FIN waits behind the unread bytes in the
      // kernel): nothing holds the box busy any more, and it falls asleep while the clients hang on
      await eventually("the box fell asleep once its stuck connections were cut", async () => (await sb.status()) === "sleeping", { intervalMs: 500 });
    } finally {
      for (const socket of [...readers, ...uploads]) socket.destroy();
    }
  });

  test("past its connection cap the gateway queues new connections instead of failing, and keeps serving", async () => {
    const { url } = await hostileBox();
    const haproxyPid = () => execFileSync("pgrep", ["-P", String(daemon.pid), "haproxy"], { encoding: "utf8" }).trim();
    const before = haproxyPid();
    const flood = Array.from({ length: 150 }, () => tcpConnect({ host: "127.0.0.1", port: HTTPS_PORT }));
    await Promise.all(flood.map((s) => new Promise((resolve) => s.once("connect", resolve).once("error", resolve))));
    const held = async () => Number(/^haproxy_process_current_connections (\d+)/m.exec(await (await fetch(`http://127.0.0.1:${METRICS_PORT}/metrics`)).text())?.[1]);
    // the flood fills HAProxy up to its cap, and no further (the rest wait in the kernel's backlog)
    const current = await eventually("HAProxy holds its cap of 50 connections", async () => ((await held()) >= 50 ? held() : false));
    assert.ok(current <= 50, `at most 50 connections at once (HAProxy holds ${current})`);
    for (const s of flood) s.destroy();
    const res = await fetch(`${url}/normal`, { dispatcher: gatewayAgent(ca) });
    assert.equal(await res.text(), "normal");
    assert.equal(haproxyPid(), before, "the same HAProxy still serves");
  });
});
