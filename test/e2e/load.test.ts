/**
 * Load: 1,000 concurrent connections held through the gateway — keep-alive HTTP, WebSockets
 * and raw TCP — while other boxes are created, slept, woken and terminated around them.
 * Every exchange on the boxes that stay live must succeed, and the gateway's memory stays
 * bounded. SAIL_LOAD_HTTP / SAIL_LOAD_WS / SAIL_LOAD_TCP size the mix.
 */
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { describe, test } from "node:test";
import { Agent, fetch } from "undici";
import WebSocket from "ws";
import { IngressPort } from "@sail/sdk";
import { eventually, loopbackLookup, METRICS_PORT, startGuestServer, startTcpEcho, useTestDaemon } from "./harness.js";

const { pool } = useTestDaemon({
  setup: async (daemon) => {
    ca = await daemon.caCert();
  },
});
let ca = "";

const HTTP = Number(process.env.SAIL_LOAD_HTTP ?? 400);
const WS = Number(process.env.SAIL_LOAD_WS ?? 300);
const TCP = Number(process.env.SAIL_LOAD_TCP ?? 300);
/** Rounds of traffic over every held connection while the churn runs. */
const ROUNDS = 5;

/**
 * Resident memory of each data-path process (HAProxy, every TCP worker) and of the daemon, by
 * name, from /metrics. The TCP workers report once a second: wait until HAProxy and every
 * worker have reported, so a missing label fails here instead of checking less.
 */
async function processRss(): Promise<Map<string, number>> {
  return eventually(
    "HAProxy and the TCP workers report their memory",
    async () => {
      const text = await (await fetch(`http://127.0.0.1:${METRICS_PORT}/metrics`)).text();
      const rss = new Map([...text.matchAll(/^sail_gateway_worker_rss_bytes\{worker="([^"]+)"\} (\d+)/gm)].map((m) => [m[1]!, Number(m[2])]));
      rss.set("daemon", Number(/^sail_daemon_process_resident_memory_bytes (\d+)/m.exec(text)?.[1] ?? 0));
      return rss.has("haproxy") && [...rss.keys()].some((name) => name.startsWith("tcp-")) && rss;
    },
    { intervalMs: 250 },
  );
}

/** A TCP connection to the echo server that answers each line: send one, wait for it back. */
function tcpClient(port: number): Promise<{ roundTrip: (text: string) => Promise<string>; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port }, () => resolve({ socket, roundTrip }));
    socket.on("error", reject);
    let pending: ((s: string) => void) | undefined;
    let buffer = "";
    socket.on("data", (d) => {
      buffer += d;
      if (pending && buffer.includes("\n")) {
        const line = buffer.slice(0, buffer.indexOf("\n"));
        buffer = buffer.slice(buffer.indexOf("\n") + 1);
        const p = pending;
        pending = undefined;
        p(line);
      }
    });
    const roundTrip = (text: string) =>
      new Promise<string>((res) => {
        pending = res;
        socket.write(text + "\n");
      });
  });
}

describe("load", () => {
  test(`${HTTP + WS + TCP} concurrent connections (HTTP keep-alive, WebSocket, TCP) through box churn: no failed exchange, bounded gateway memory`, async () => {
    // the pids limit (1024) caps threads per box: one box per kind of traffic
    const [httpBox, wsBox, tcpBox] = await Promise.all([
      pool.create({ ingressPorts: [3000] }),
      pool.create({ ingressPorts: [3000] }),
      pool.create({ ingressPorts: [new IngressPort(7070, "tcp", { allowPublic: true })] }),
    ]);
    await Promise.all([startGuestServer(httpBox, 3000), startGuestServer(wsBox, 3000), startTcpEcho(tcpBox, 7070)]);
    const httpUrl = (await httpBox.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const wsUrl = (await wsBox.listener(3000).wait({ timeout: 60 })).endpoint.url.replace(/^https/, "wss");
    const tcpPort = (await tcpBox.listener(7070).wait({ timeout: 60 })).endpoint.port;
    const rssBefore = await processRss();

    const agent = new Agent({ connections: HTTP, pipelining: 1, keepAliveTimeout: 60_000, connect: { ca, lookup: loopbackLookup as never } });
    const failures: string[] = [];
    let exchanges = 0;
    try {
      // open everything first and hold it
      const sockets = await Promise.all(
        Array.from(
          { length: WS },
          () =>
            new Promise<WebSocket>((resolve, reject) => {
              const ws = new WebSocket(`${wsUrl}/ws`, { ca, lookup: loopbackLookup as never });
              ws.once("open", () => resolve(ws));
              ws.once("error", reject);
            }),
        ),
      );
      const tcps = await Promise.all(Array.from({ length: TCP }, () => tcpClient(tcpPort)));
      const httpOnce = async (i: number) => {
        const res = await fetch(`${httpUrl}/headers?c=${i}`, { dispatcher: agent });
        await res.arrayBuffer();
        if (res.status !== 200) throw new Error(`HTTP ${res.status} ${res.headers.get("x-sail-error") ?? ""}`.trim());
      };
      await Promise.all(Array.from({ length: HTTP }, (_, i) => httpOnce(i))); // opens the HTTP connections
      const rssHeld = await processRss();

      // churn around them: create, sleep, wake (exec), terminate other boxes
      let churning = true;
      let cyclesDone = 0;
      const churn = (async () => {
        let cycles = 0;
        while (churning || cycles < 2) {
          const other = await pool.create({ ingressPorts: [8080] });
          await other.sleep();
          await other.exec("true").output(); // wakes it
          await other.terminate();
          cyclesDone = ++cycles;
        }
        return cycles;
      })();

      // at least ROUNDS, and on until two churn cycles happened during the traffic
      let rounds = 0;
      for (let round = 0; round < ROUNDS || cyclesDone < 2; round++, rounds++) {
        const work: Array<Promise<void>> = [];
        for (let i = 0; i < HTTP; i++) work.push(httpOnce(i));
        sockets.forEach((ws, i) =>
          work.push(
            new Promise<void>((resolve, reject) => {
              const text = `ws ${round} ${i}`;
              ws.once("message", (data) => (String(data) === text ? resolve() : reject(new Error(`ws echoed ${String(data)}`))));
              ws.send(text);
            }),
          ),
        );
        tcps.forEach((c, i) => work.push(c.roundTrip(`tcp ${round} ${i}`).then((back) => assert.equal(back, `tcp ${round} ${i}`))));
        for (const result of await Promise.allSettled(work)) {
          if (result.status === "fulfilled") exchanges++;
          else failures.push(String(result.reason));
        }
      }
      churning = false;
      const cycles = await churn;
      const rssAfter = await processRss();
      sockets.forEach((ws) => ws.close(1000));
      tcps.forEach((c) => c.socket.destroy());

      assert.deepEqual(failures.slice(0, 5), [], `${failures.length} failed exchanges`);
      assert.equal(exchanges, rounds * (HTTP + WS + TCP));
      assert.ok(cycles >= 2, "boxes were created, slept, woken and terminated meanwhile");
      const mb = (rss: Map<string, number>) => [...rss].map(([name, bytes]) => `${name} ${(bytes / 2 ** 20).toFixed(0)} MB`).join(", ");
      console.error(`RSS: before ${mb(rssBefore)}; holding ${HTTP + WS + TCP} connections ${mb(rssHeld)}; after ${rounds} rounds ${mb(rssAfter)}; ${cycles} churn cycles`);
      // bounded: holding and using 1,000 connections costs HAProxy, each TCP worker and the daemon well under 256 MB more
      assert.deepEqual([...rssAfter.keys()].sort(), [...rssBefore.keys()].sort(), "the same processes report before and after");
      for (const [name, rss] of rssAfter) assert.ok(rss - rssBefore.get(name)! < 256 * 2 ** 20, `${name}: ${mb(new Map([[name, rssBefore.get(name)!]]))} -> ${(rss / 2 ** 20).toFixed(0)} MB`);
    } finally {
      await agent.close();
    }
  });
});
