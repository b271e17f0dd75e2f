/**
 * The node boundary (issue 22): the control plane (on PostgreSQL) and the node agent are two
 * processes, and each may die (SIGKILL) or lose its database while the other runs. The node's
 * boxes keep serving while the control plane is away (a sleeping one wakes on a request: power
 * is the node's); while the node is away the API answers, and box work is a typed
 * SAIL_NODE_UNAVAILABLE that changes nothing; a create cut short by either death leaves no box
 * and nothing on the host; a database that stops answering is SAIL_STORE_UNAVAILABLE, and
 * published ports do not notice it. Then a seeded run kills one part at a random point of a
 * create, exec, sleep, wake or terminate (SAIL_BOUNDARY_SEED, SAIL_BOUNDARY_ITERATIONS): after
 * each restart no box is stuck in a transition, the store says of every live box what its
 * container is (running, or frozen when sleeping or paused), and nothing is orphaned. Always
 * the split form, whatever SAIL_TEST_SPLIT says.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, test } from "node:test";
import { fetch, type Agent } from "undici";
import { App, IngressPort, Sailbox, SailError } from "@sail/sdk";
import { eventually, echoPing, gatewayAgent, hostBoxIds, leftoversOnceRemoved, prng, startGuestServer, startTcpEcho, useTestDaemon, statusThrough } from "./harness.js";

const { daemon, pool } = useTestDaemon({
  split: true,
  setup: async (daemon) => {
    agent = gatewayAgent(await daemon.caCert());
  },
  teardown: async () => {
    daemon.store?.thaw();
    await agent?.close();
  },
});
let agent: Agent;

const SEED = Number(process.env.SAIL_BOUNDARY_SEED ?? 11);
const ITERATIONS = Number(process.env.SAIL_BOUNDARY_ITERATIONS ?? 10);

/** What the host runs of a box: crun's status of its container (a frozen box is "paused"), or "gone". */
function containerStatus(id: string): string {
  try {
    return (JSON.parse(execFileSync("crun", ["--root", "/run/sail/crun", "state", id], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })) as { status: string }).status;
  } catch {
    return "gone";
  }
}

/** The container status a box's store status stands for: power is the node's, the store must follow it. */
const CONTAINER_OF: Record<string, string> = { running: "running", sleeping: "paused", paused: "paused" };

/** The status code of a GET through the gateway (0: no answer at all). */
const statusOf = (url: string) => statusThrough(agent, url);

/** The error a call rejects with (it must reject). */
async function refusal(call: Promise<unknown>): Promise<SailError> {
  try {
    await call;
  } catch (err) {
    assert.ok(err instanceof SailError, `a typed error, not ${String(err)}`);
    return err;
  }
  assert.fail("the call succeeded");
}

/** Start a create and wait until the store holds the box in `creating` (so a death cuts it short); its id and the call. */
async function createUntilCreating(app: App): Promise<{ id: string; call: Promise<Sailbox> }> {
  const call = Sailbox.create({ app, ingressPorts: [8080] });
  call.catch(() => {}); // it fails under the death; the test asks why where it matters
  const id = await eventually("the create's box appears in creating", async () => (await Sailbox.list({ app })).find((b) => b.describe().status === "creating")?.id, { intervalMs: 20 });
  return { id, call };
}

describe("the node boundary: either part dies, the database stops answering", () => {
  test("the control plane killed: the node's boxes keep serving HTTPS and TCP, a sleeping one wakes on a request, and the restarted control plane takes the node's word", async () => {
    const steady = await pool.create({ ingressPorts: [3000, new IngressPort(7070, "tcp", { allowPublic: true })] });
    await startGuestServer(steady, 3000);
    await startTcpEcho(steady, 7070);
    const url = (await steady.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const tcpPort = (await steady.listener(7070).wait({ timeout: 60 })).endpoint.port;
    const sleeper = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(sleeper, 3000);
    const sleeperUrl = (await sleeper.listener(3000).wait({ timeout: 60 })).endpoint.url;
    await sleeper.sleep();
    assert.equal(await sleeper.status(), "sleeping");

    await daemon.stopPart("main", "SIGKILL");
    assert.equal(await statusOf(`${url}/headers`), 200, "a running box answers while the control plane is down");
    assert.match(await echoPing(tcpPort), /ping/, "its raw TCP port too");
    assert.equal(await statusOf(`${sleeperUrl}/headers`), 200, "a sleeping box wakes on a request without the control plane");

    await daemon.startControl();
    // the node re-registers (heartbeat) and the control plane reconciles: the woken box is running in the store
    await eventually("the store says the woken box runs", async () => (await sleeper.status()) === "running");
    assert.equal(await steady.status(), "running");
    assert.equal((await steady.exec("echo alive").output()).stdout.trim(), "alive", "box work goes through the new control plane");
  });

  test("the control plane killed during a create: the box is failed with the reason, the node removes what it made, and the next create works", async () => {
    const app = await pool.app("cut-control");
    const { id } = await createUntilCreating(app);
    await daemon.stopPart("main", "SIGKILL");
    await daemon.startControl();
    // the create was cut short: after the reconcile the box is failed with the reason, and nothing of it is on the host
    const ended = await eventually("the cut create is failed", async () => {
      const box = (await Sailbox.list({ app })).find((b) => b.id === id);
      return box && box.describe().status === "failed" ? box.describe() : undefined;
    });
    assert.match(ended.failureReason ?? "", /stopped while it was being created/);
    assert.deepEqual(await leftoversOnceRemoved(id), [], `nothing of ${id} is left on the host`);
    const next = await pool.create({ app, ingressPorts: [8080] });
    assert.equal(next.describe().status, "running");
  });

  test("the node agent killed: the API answers, box work is SAIL_NODE_UNAVAILABLE and creates nothing; once the node is back its boxes run, route and exec", async () => {
    const box = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(box, 3000);
    const url = (await box.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const app = await pool.app("node-away");

    await daemon.stopPart("node", "SIGKILL");
    // what the store knows still answers
    assert.equal(await box.status(), "running");
    const exec = await refusal(box.exec("echo hi").output());
    assert.equal(exec.code, "SAIL_NODE_UNAVAILABLE", exec.message);
    const create = await refusal(Sailbox.create({ app, ingressPorts: [8080] }));
    assert.equal(create.code, "SAIL_NODE_UNAVAILABLE", create.message);
    assert.deepEqual(
      (await Sailbox.list({ app })).map((b) => `${b.id} ${b.describe().status}`),
      [],
      "a refused create leaves no box",
    );

    await daemon.startNode();
    await eventually("the box answers through the node's gateway again", async () => (await statusOf(`${url}/headers`)) === 200);
    assert.equal((await box.exec("echo back").output()).stdout.trim(), "back");
    assert.equal(await box.status(), "running");
  });

  test("the node agent killed during a create: the create fails as SAIL_NODE_UNAVAILABLE, the box never existed, and the restarted node removes what it made", async () => {
    const app = await pool.app("cut-node");
    const { id, call } = await createUntilCreating(app);
    await daemon.stopPart("node", "SIGKILL");
    const err = await refusal(call);
    assert.equal(err.code, "SAIL_NODE_UNAVAILABLE", err.message);
    assert.deepEqual(
      (await Sailbox.list({ app })).map((b) => b.id),
      [],
      "the box the create began is not listed",
    );
    await daemon.startNode();
    assert.deepEqual(await leftoversOnceRemoved(id), [], `nothing of ${id} is left on the host`);
    const next = await pool.create({ app, ingressPorts: [8080] });
    assert.equal(next.describe().status, "running");
  });

  test("PostgreSQL stops answering: the API says SAIL_STORE_UNAVAILABLE and creates nothing, published ports keep serving, and it all works once the database is back", async () => {
    const box = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(box, 3000);
    const url = (await box.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const app = await pool.app("store-away");
    const store = daemon.store!;

    store.freeze();
    try {
      const create = await refusal(Sailbox.create({ app, ingressPorts: [8080] }));
      assert.equal(create.code, "SAIL_STORE_UNAVAILABLE", create.message);
      assert.equal(create.status, 503);
      assert.equal(await statusOf(`${url}/headers`), 200, "traffic to a box never asks the database");
    } finally {
      store.thaw();
    }
    await eventually("the API answers from the database again", async () => (await box.status().catch(() => undefined)) === "running");
    assert.deepEqual(
      (await Sailbox.list({ app })).map((b) => b.id),
      [],
      "the refused create left no box",
    );
    const next = await pool.create({ app, ingressPorts: [8080] });
    assert.equal(next.describe().status, "running");
  });

  test(`either part SIGKILLed at a random point of create, exec, sleep, wake and terminate (${ITERATIONS} iterations, seed ${SEED}): nothing stuck, the store follows the host, nothing orphaned`, async () => {
    const random = prng(SEED);
    const steady = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(steady, 3000);
    const url = (await steady.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const app = await pool.app("boundary-crash");
    const created: string[] = [];
    const log: string[] = [];

    for (let i = 0; i < ITERATIONS; i++) {
      const op = (["create", "exec", "sleep", "wake", "terminate"] as const)[Math.floor(random() * 5)]!;
      const part = random() < 0.5 ? "node" : "main";
      const delayMs = Math.floor(random() * 150);
      log.push(`${op}/${part === "main" ? "control" : "node"}@${delayMs}ms`);
      const client = daemon.client();
      const running = (async () => {
        const box = await Sailbox.fromId(steady.id, { client });
        if (op === "create") {
          created.push((await Sailbox.create({ app, ingressPorts: [8080] })).id);
        } else if (op === "exec") await box.exec("sleep 0.05; echo x").output();
        else if (op === "sleep") await box.sleep();
        else if (op === "wake") await fetch(`${url}/headers`, { dispatcher: agent });
        else {
          const victim = created.pop();
          if (victim) await (await Sailbox.fromId(victim, { client })).terminate();
        }
      })();
      running.catch(() => {}); // a part dies under it
      await new Promise((r) => setTimeout(r, delayMs));
      await daemon.stopPart(part, "SIGKILL");
      await running.catch(() => {});
      if (part === "main") await daemon.startControl();
      else await daemon.startNode();

      // every box the store holds live runs, and the store says of it what the host does (once the node's word arrived)
      const boxes = await eventually(`${log.join(" ")}: the store follows the host`, async () => {
        const listed = await Sailbox.list({ client: daemon.client() });
        const live = listed.filter((b) => !["terminated", "failed"].includes(b.describe().status));
        const disagree = live.filter((b) => CONTAINER_OF[b.describe().status] !== containerStatus(b.id));
        return disagree.length === 0 ? listed : undefined;
      });
      const live = boxes.filter((b) => !["terminated", "failed"].includes(b.describe().status));
      // boxes of this run that ended leave nothing; nothing on the host belongs to no live box of ours
      for (const b of boxes.filter((b) => !live.includes(b))) assert.deepEqual(await leftoversOnceRemoved(b.id), [], `${log.join(" ")}: ${b.id} (${b.describe().status})`);
      const liveIds = new Set(live.map((b) => b.id));
      const ours = new Set(boxes.map((b) => b.id));
      for (const [id, what] of hostBoxIds()) {
        // a netns and cgroups alone, of a box this control plane never had: another daemon on the host is creating it
        if (!ours.has(id) && what.every((w) => w === "netns" || w.startsWith("cgroup "))) continue;
        assert.ok(liveIds.has(id), `${log.join(" ")}: orphaned ${what.join(", ")} of ${id}`);
      }
      // the steady box answers (a request wakes it if it slept), and box work goes through
      assert.ok(liveIds.has(steady.id), log.join(" "));
      assert.equal(await statusOf(`${url}/headers`), 200, log.join(" "));
      assert.equal((await steady.exec("echo ok").output()).stdout.trim(), "ok", log.join(" "));
    }
  });
});
