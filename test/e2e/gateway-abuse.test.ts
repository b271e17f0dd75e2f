/**
 * The HTTPS gateway under hostile clients: garbage instead of TLS, garbage inside TLS,
 * connections that never speak, slowloris heads, oversized heads. Each gets a clear answer
 * or is closed, and a well-behaved client on the same gateway sees no failure meanwhile.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect as tcpConnect, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { describe, test } from "node:test";
import { fetch, type Agent } from "undici";
import { gatewayAgent, HTTPS_PORT, startGuestServer, useTestDaemon } from "./harness.js";

const { pool } = useTestDaemon({
  setup: async (daemon) => {
    ca = await daemon.caCert();
    agent = gatewayAgent(ca);
  },
  teardown: () => agent?.close(),
});
let ca = "";
let agent: Agent;

/** Everything the server sent until it closed the connection (or `limitMs` passed: then null). */
function untilClosed(socket: Socket | TLSSocket, limitMs = 60_000): Promise<string | null> {
  return new Promise((resolve) => {
    let received = "";
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(null);
    }, limitMs);
    socket.on("data", (d: Buffer) => (received += d.toString("latin1")));
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(received);
    });
  });
}

function tls(host: string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port: HTTPS_PORT, servername: host, ca }, () => resolve(socket));
    socket.on("error", reject);
  });
}

describe("gateway under hostile clients", () => {
  test("garbage, silence, slowloris and oversized heads are answered or closed; a good client sees no failure meanwhile", async () => {
    const sb = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(sb, 3000);
    const url = (await sb.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const host = new URL(url).hostname;

    // the well-behaved client: sequential requests over keep-alive for as long as the abuse lasts
    let abuseOver = false;
    let ok = 0;
    const failures: string[] = [];
    const good = (async () => {
      while (!abuseOver) {
        try {
          const res = await fetch(`${url}/headers`, { dispatcher: agent });
          await res.arrayBuffer();
          if (res.status === 200) ok++;
          else failures.push(`status ${res.status}`);
        } catch (err) {
          failures.push(String(err));
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    // not TLS at all: the handshake fails and the connection is closed
    const notTls = Array.from({ length: 20 }, () => {
      const s = tcpConnect({ host: "127.0.0.1", port: HTTPS_PORT }, () => s.write(randomBytes(512)));
      return untilClosed(s);
    });
    // TLS, then bytes that are not HTTP: 400 and closed
    const garbage = await Promise.all(Array.from({ length: 20 }, () => tls(host)));
    const garbageAnswers = garbage.map((s) => {
      const done = untilClosed(s);
      s.write(Buffer.concat([Buffer.from("\x00\x01GARBAGE "), randomBytes(256), Buffer.from("\r\n\r\n")]));
      return done;
    });
    // a head of 20 KiB: over HAProxy's 16 KiB buffer, 400
    const big = await tls(host);
    const bigAnswer = untilClosed(big);
    big.write(`GET /headers HTTP/1.1\r\nHost: ${host}\r\nX-Big: ${"a".repeat(20 * 1024)}\r\n\r\n`);
    // connections that never send anything, TCP only and after the TLS handshake: closed by the gateway
    const silentTcp = Array.from({ length: 20 }, () => untilClosed(tcpConnect({ host: "127.0.0.1", port: HTTPS_PORT })));
    const silentTls = (await Promise.all(Array.from({ length: 5 }, () => tls(host)))).map((s) => untilClosed(s));
    // slowloris: a head that trickles in a byte a second and never ends: 408 and closed
    const slow = await Promise.all(Array.from({ length: 5 }, () => tls(host)));
    const slowAnswers = slow.map((s) => {
      const done = untilClosed(s);
      s.write(`GET /headers HTTP/1.1\r\nHost: ${host}\r\nX-Slow: `);
      const drip = setInterval(() => (s.destroyed ? clearInterval(drip) : s.write("a")), 1000);
      s.on("close", () => clearInterval(drip));
      return done;
    });

    try {
      for (const answer of await Promise.all(notTls)) assert.notEqual(answer, null, "a non-TLS connection is closed");
      // HAProxy's own pages: it answers these from the connection, before Sail's pages could apply
      for (const answer of await Promise.all(garbageAnswers)) assert.match(answer!, /^HTTP\/1\.1 400 /);
      assert.match((await bigAnswer)!, /^HTTP\/1\.1 400 /);
      for (const answer of await Promise.all(slowAnswers)) assert.match(answer!, /^HTTP\/1\.1 408 /);
      for (const answer of await Promise.all([...silentTcp, ...silentTls])) assert.notEqual(answer, null, "a silent connection is closed");
    } finally {
      abuseOver = true; // the good client stops whatever happened, so the file's process can end
      await good;
    }
    assert.deepEqual(failures, []);
    assert.ok(ok > 20, `the good client kept being served (${ok} requests)`);
  });
});
