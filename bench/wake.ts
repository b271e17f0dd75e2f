/**
 * Wake: time to first byte of a request to a sleeping box minus the same to a running
 * box, p50/p95 over many sleep → request cycles, for HTTP (through the HTTPS gateway)
 * and TCP. The sleep call itself is not timed.
 */
import { connect } from "node:net";
import { Agent, request } from "undici";
import { IngressPort } from "@sail/sdk";
import { BoxPool, loopbackLookup, startGuestServer, startTcpEcho, TestDaemon } from "../test/e2e/harness.js";
import { percentile, timeMs } from "./stats.js";

const CYCLES = Number(process.env.BENCH_WAKE_CYCLES ?? 40);

function tcpFirstByte(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port }, () => s.write("x"));
    s.once("data", () => (s.destroy(), resolve()));
    s.on("error", reject);
  });
}

export async function wake(): Promise<void> {
  const daemon = new TestDaemon();
  const pool = new BoxPool(daemon);
  await daemon.start();
  const agent = new Agent({ connect: { ca: await daemon.caCert(), lookup: loopbackLookup as never } });
  try {
    const sb = await pool.create({ ingressPorts: [3000, new IngressPort(7070, "tcp")] });
    await startGuestServer(sb, 3000);
    await startTcpEcho(sb, 7070);
    const url = (await sb.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const tcpPort = (await sb.listener(7070).wait({ timeout: 60 })).endpoint.port;
    // a fresh connection each time: a sleeping box has none left
    const httpFirstByte = async () => {
      const res = await request(`${url}/headers`, { dispatcher: agent, reset: true });
      for await (const _ of res.body) break;
    };

    const results: Array<[string, number[], number[]]> = [];
    for (const [label, firstByte] of [
      ["HTTP", httpFirstByte],
      ["TCP", () => tcpFirstByte(tcpPort)],
    ] as const) {
      const running: number[] = [];
      const sleeping: number[] = [];
      for (let i = 0; i < CYCLES; i++) {
        running.push(await timeMs(firstByte));
        await sb.sleep();
        sleeping.push(await timeMs(firstByte));
      }
      results.push([label, running, sleeping]);
    }
    console.log(`${CYCLES} sleep → first request cycles each`);
    for (const [label, running, sleeping] of results) {
      const extra = (p: number) => percentile(sleeping, p) - percentile(running, p);
      console.log(
        `${label.padEnd(5)} running p50 ${percentile(running, 50).toFixed(2)} ms · sleeping p50 ${percentile(sleeping, 50).toFixed(2)} ms p95 ${percentile(sleeping, 95).toFixed(2)} ms · wake cost p50 ${extra(50).toFixed(2)} ms p95 ${extra(95).toFixed(2)} ms (target ≤ 15 ms p50)`,
      );
    }
  } finally {
    await agent.close();
    await pool.terminateAll();
    await daemon.dispose();
  }
}
