/**
 * The daemon killed (SIGKILL) at random points of create, exec, sleep, wake and terminate,
 * then restarted: every box the store says is live runs and answers on its listeners with
 * the same TCP port, and nothing of any box is orphaned on the host. Seeded, so a failing
 * sequence replays: SAIL_CRASH_SEED, SAIL_CRASH_ITERATIONS.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, test } from "node:test";
import { fetch, type Agent } from "undici";
import { IngressPort, Sailbox } from "@sail/sdk";
import { echoPing, gatewayAgent, hostBoxIds, leftoversOnceRemoved, prng, startGuestServer, startTcpEcho, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon({
  setup: async (daemon) => {
    agent = gatewayAgent(await daemon.caCert());
  },
  teardown: () => agent?.close(),
});
let agent: Agent;

const SEED = Number(process.env.SAIL_CRASH_SEED ?? 7);
const ITERATIONS = Number(process.env.SAIL_CRASH_ITERATIONS ?? 15);

describe("crashes", () => {
  test(`SIGKILL during create, exec, sleep, wake and terminate (${ITERATIONS} iterations, seed ${SEED}): live boxes answer, TCP ports stay, nothing is orphaned`, async () => {
    const random = prng(SEED);
    const client = () => daemon.client();
    const steady = await pool.create({ ingressPorts: [3000, new IngressPort(7070, "tcp", { allowPublic: true })] });
    await startGuestServer(steady, 3000);
    await startTcpEcho(steady, 7070);
    const url = (await steady.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const tcpPort = (await steady.listener(7070).wait({ timeout: 60 })).endpoint.port;
    const created: string[] = [];
    const app = await pool.app("crash");
    const log: string[] = [];
    const touched = new Set<string>();

    for (let i = 0; i < ITERATIONS; i++) {
      const ops = ["create", "exec", "sleep", "wake", "terminate"] as const;
      const op = ops[Math.floor(random() * ops.length)]!;
      const delayMs = Math.floor(random() * 120);
      log.push(`${op}@${delayMs}ms`);
      const c = client();
      const running: Promise<unknown> = (async () => {
        const box = await Sailbox.fromId(steady.id, { client: c });
        if (op === "create") {
          created.push((await pool.create({ app, ingressPorts: [8080] })).id);
        } else if (op === "exec") await box.exec("sleep 0.05; echo x").output();
        else if (op === "sleep") await box.sleep();
        else if (op === "wake") await fetch(`${url}/headers`, { dispatcher: agent });
        else {
          const victim = created.pop() ?? (await Sailbox.list({ app, client: c })).find((b) => b.describe().status !== "terminated" && b.describe().status !== "failed")?.id;
          if (victim) await (await Sailbox.fromId(victim, { client: c })).terminate();
        }
      })();
      running.catch(() => {}); // the daemon dies under it
      await new Promise((r) => setTimeout(r, delayMs));
      const t0 = Date.now();
      await daemon.restart("SIGKILL");
      const t1 = Date.now();
      await running.catch(() => {});
      if (process.env.SAIL_CRASH_TRACE) console.error(`${op}: restart ${t1 - t0} ms, op settled ${Date.now() - t1} ms`);

      // invariants, after every restart
      const boxes = await Sailbox.list({ client: client() });
      const live = boxes.filter((b) => !["terminated", "failed"].includes(b.describe().status));
      for (const b of live) touched.add(b.id);
      for (const b of live) {
        assert.notEqual(b.describe().status, "creating", `${log.join(" ")}: ${b.id} is stuck in creating`);
        const state = execFileSync("crun", ["--root", "/run/sail/crun", "state", b.id], { encoding: "utf8" });
        assert.match(state, /"status": "(running|paused)"/, `${log.join(" ")}: live box ${b.id} has a container`);
      }
      // boxes of this run that ended (the data dir holds earlier runs' too: the host-wide sweep below covers those)
      for (const b of boxes.filter((b) => !live.includes(b) && touched.has(b.id))) assert.deepEqual(await leftoversOnceRemoved(b.id), [], `${log.join(" ")}: ${b.id} (${b.describe().status})`);
      const liveIds = new Set(live.map((b) => b.id));
      const ours = new Set(boxes.map((b) => b.id));
      for (const [id, what] of hostBoxIds()) {
        // a netns and cgroups alone, of a box this daemon never had: another daemon on the host is creating it (no container yet)
        if (!ours.has(id) && what.every((w) => w === "netns" || w.startsWith("cgroup "))) continue;
        assert.ok(liveIds.has(id), `${log.join(" ")}: orphaned ${what.join(", ")} of ${id}`);
      }
      // every other live box is routed: its listener has nothing behind it, so the gateway says 502 (a lost route would be 404)
      for (const b of live.filter((b) => b.id !== steady.id)) {
        const other = (await b.listeners())[0]!;
        assert.equal((await fetch(other.endpoint.url, { dispatcher: agent })).status, 502, `${log.join(" ")}: ${b.id}`);
      }
      // the steady box answers on both listeners (a request wakes it if it slept), on the same TCP port
      assert.ok(liveIds.has(steady.id));
      assert.equal((await fetch(`${url}/headers`, { dispatcher: agent })).status, 200, log.join(" "));
      assert.equal((await steady.listener(7070).wait({ timeout: 30 })).endpoint.port, tcpPort);
      assert.match(await echoPing(tcpPort), /ping/, log.join(" "));
      if (process.env.SAIL_CRASH_TRACE) console.error(`checks done ${Date.now() - t1} ms`);
    }
  });
});
