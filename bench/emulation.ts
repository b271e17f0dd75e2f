/**
 * Emulation: a box of the other architecture (arm64 on an amd64 host, run by qemu user mode)
 * next to a native one in the same run, interleaved: create → ready (create, start
 * `python3 -m http.server`, `listener.wait()` resolves), an exec round trip, and an HTTPS
 * request round trip through the gateway to the guest's server.
 */
import { Agent, request } from "undici";
import { Image, type Sailbox } from "@sail/sdk";
import { BoxPool, loopbackLookup, TestDaemon } from "../test/e2e/harness.js";
import { percentile, printRows, summary, timeMs } from "./stats.js";

const CREATES = Number(process.env.BENCH_EMULATION_CREATES ?? 5);
const REQUESTS = Number(process.env.BENCH_EMULATION_REQUESTS ?? 200);

const FOREIGN = process.arch === "arm64" ? Image.debian_amd64 : Image.debian_arm64;

export async function emulation(): Promise<void> {
  const daemon = new TestDaemon();
  const pool = new BoxPool(daemon);
  await daemon.start();
  const agent = new Agent({ connect: { ca: await daemon.caCert(), lookup: loopbackLookup as never } });
  try {
    const app = await pool.app("bench");
    console.log(`building or finding the ${FOREIGN} image (the first build takes minutes)...`);
    await (await pool.create({ app, image: FOREIGN })).terminate();

    const ready = { native: [] as number[], emulated: [] as number[] };
    const execs = { native: [] as number[], emulated: [] as number[] };
    const requests = { native: [] as number[], emulated: [] as number[] };
    for (let i = 0; i < CREATES; i++) {
      for (const [kind, image] of [
        ["native", Image.debian],
        ["emulated", FOREIGN],
      ] as const) {
        let sb: Sailbox | undefined;
        let url = "";
        ready[kind].push(
          await timeMs(async () => {
            sb = await pool.create({ app, image, ingressPorts: [3000] });
            await sb.exec("python3 -m http.server 3000", { background: true, cwd: "/tmp" }).wait();
            url = `${(await sb.listener(3000).wait({ timeout: 120 })).endpoint.url}/`;
          }),
        );
        for (let j = 0; j < 10; j++) execs[kind].push(await timeMs(() => sb!.exec("true").wait()));
        for (let j = 0; j < REQUESTS / CREATES; j++) {
          requests[kind].push(
            await timeMs(async () => {
              const res = await request(url, { dispatcher: agent });
              await res.body.arrayBuffer();
            }),
          );
        }
        await sb!.terminate();
      }
    }
    printRows([
      summary("create → ready, native", ready.native),
      summary(`create → ready, ${FOREIGN} emulated`, ready.emulated),
      summary("exec `true`, native", execs.native),
      summary("exec `true`, emulated", execs.emulated),
      summary("HTTPS GET / round trip, native", requests.native),
      summary("HTTPS GET / round trip, emulated", requests.emulated),
    ]);
    const ratio = (m: { native: number[]; emulated: number[] }) => (percentile(m.emulated, 50) / percentile(m.native, 50)).toFixed(2);
    console.log(`\nemulated ÷ native, p50: create → ready ${ratio(ready)}x · exec ${ratio(execs)}x · request round trip ${ratio(requests)}x`);
  } finally {
    await agent.close();
    await pool.terminateAll();
    await daemon.dispose();
  }
}
