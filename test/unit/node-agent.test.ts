/**
 * The node agent in process, in milliseconds: its own store (node.db in a temp dir) and a fake
 * runtime that records what it was asked. The end-to-end suite runs the same rules on real
 * boxes; these tests pin the node's side down one by one: the lifecycle table, power, wake,
 * idle sleep, routes, outbound enforcement, listener waits, execs, events to the control plane,
 * reconcile and adopt.
 */
import assert from "node:assert/strict";
import { appendFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import { canTransition, parseIpv4Cidr, SAILBOX_TRANSITIONS, SailError, type NetworkInfo, type SailboxStatus } from "@sail/protocol";
import type { NodeBoxSpec, NodeEvent, NodeEventSink, NodeExecEvent } from "../../packages/server/src/node-wire/node-api.js";
import type { Logger } from "../../packages/server/src/node/logger.js";
import { NodeAgent, type NodeAgentSettings } from "../../packages/server/src/node/node-agent.js";
import { NodeStore, type NodeBoxStatus } from "../../packages/server/src/node/node-store.js";
import { decideName } from "../../packages/server/src/node/outbound.js";
import type { RouteChange, RouteSubscriber } from "../../packages/server/src/node/routes.js";
import { FakeRuntime, INODES_PER_MIB } from "./fake-runtime.js";

const STATUSES = Object.keys(SAILBOX_TRANSITIONS) as SailboxStatus[];

/** A data path that keeps the route tables from the changes it gets. */
class RecordingSubscriber implements RouteSubscriber {
  readonly changes: RouteChange[] = [];
  readonly drops: string[] = [];
  readonly http = new Map<string, string>();
  readonly tcp = new Map<number, string>();
  apply(change: RouteChange) {
    this.changes.push(change);
    if (change.reset) {
      this.http.clear();
      this.tcp.clear();
    }
    for (const label of change.http.remove) this.http.delete(label);
    for (const port of change.tcp.remove) this.tcp.delete(port);
    for (const [label, route] of change.http.set) this.http.set(label, route.status);
    for (const route of change.tcp.set) this.tcp.set(route.publicPort, route.status);
  }
  dropConnections(id: string) {
    this.drops.push(id);
  }
  async synced() {}
}

/** The control plane's side of the events: what it heard, in order; `failing` makes deliveries fail (it is away). */
class RecordingSink implements NodeEventSink {
  readonly heard: NodeEvent[] = [];
  readonly batches: NodeEvent[][] = [];
  failing = false;
  attempts = 0;
  async deliver(events: NodeEvent[]) {
    this.attempts++;
    if (this.failing) throw new Error("connect ECONNREFUSED 127.0.0.1:7311");
    this.batches.push(events);
    this.heard.push(...events);
  }
  /** The box states heard for one box, as "status seq". */
  statesOf(id: string): string[] {
    return this.heard.flatMap((e) => (e.type === "box" && e.state.sailboxId === id ? [`${e.state.status} ${e.state.seq}`] : []));
  }
}

const silent: Logger = { info() {}, warn() {}, error() {} };

const SETTINGS: NodeAgentSettings = {
  pidsLimit: 64,
  diskMiB: 2048,
  hostCpus: 2,
  domain: "sail.localhost",
  outbound: { enabled: true, privateAllowed: ["10.50.0.0/16"], only: null, boxSubnet: "10.9.0.0/16" },
  events: { firstRetryMs: 1, maxRetryMs: 4 },
};

let dir: string;
let store: NodeStore;
let runtime: FakeRuntime;
let sink: RecordingSink;
let agent: NodeAgent;
const agents: NodeAgent[] = [];

function makeAgent(settings: NodeAgentSettings = SETTINGS, log: Logger = silent): NodeAgent {
  const made = new NodeAgent(store, runtime, settings, sink, log);
  agents.push(made);
  return made;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "sail-node-agent-"));
  mkdirSync(join(dir, "logs"));
  store = new NodeStore(join(dir, "node.db"));
  runtime = new FakeRuntime(join(dir, "logs"));
  sink = new RecordingSink();
  agent = makeAgent();
});
afterEach(async () => {
  for (const made of agents.splice(0)) await made.close();
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

let serial = 0;
const OPEN: NetworkInfo = { outbound: "open", allowOut: [], denyOut: [] };
function spec(extra: Partial<NodeBoxSpec> = {}): NodeBoxSpec {
  const id = `sb-${String(++serial).padStart(12, "0")}`;
  return { id, hostname: id, image: { arch: "amd64", aptPackages: [] }, cpu: 1, memoryMiB: 512, idleTimeout: null, network: OPEN, listeners: [], ...extra };
}
/** `allowOut` / `denyOut` / `blockNetwork`, as the control plane normalizes them. */
const policy = (request: { allowOut?: string[]; denyOut?: string[]; blockNetwork?: boolean }): NetworkInfo =>
  request.blockNetwork
    ? { outbound: "blocked", allowOut: [], denyOut: [] }
    : request.allowOut
      ? { outbound: "allowlist", allowOut: request.allowOut, denyOut: [] }
      : request.denyOut
        ? { outbound: "denylist", allowOut: [], denyOut: request.denyOut }
        : OPEN;
const http = (port: number) => ({ port, protocol: "http" as const, publicPort: null });
const tcp = (port: number, publicPort: number, extra: object = {}) => ({ port, protocol: "tcp" as const, allowPublic: true, publicPort, ...extra });

const create = async (extra: Partial<NodeBoxSpec> = {}) => {
  const state = await agent.createBox(spec(extra));
  return { ...state, id: state.sailboxId };
};
const statusOf = (id: string) => store.getBox(id)?.status;
const codeOf = async (work: Promise<unknown>) => {
  try {
    await work;
    return "resolved";
  } catch (err) {
    return (err as SailError).code;
  }
};
async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const item of items) all.push(item);
  return all;
}

describe("the lifecycle table", () => {
  test("every change between statuses is allowed exactly when the table says so; terminated is removal", async () => {
    for (const from of STATUSES.filter((s) => s !== "terminated")) {
      for (const to of STATUSES) {
        const box = store.insertBox(spec(), { maxSlots: 64 });
        if (from !== "creating") store.setStatus(box.id, from as NodeBoxStatus);
        const outcome = await codeOf(agent.lifecycle.transition(box.id, to));
        const expected = from === to || canTransition(from, to) ? "resolved" : "SAIL_SAILBOX_NOT_RUNNING";
        assert.equal(outcome, expected, `${from} → ${to}`);
        const now = expected === "resolved" ? (to === "terminated" ? undefined : to) : from;
        assert.equal(statusOf(box.id), now, `${from} → ${to} left node.db as the table says`);
      }
    }
  });

  test("a refused change names the box, its status and what would allow it", async () => {
    const box = await create();
    await agent.setPower(box.id, "pause");
    await assert.rejects(agent.setPower(box.id, "sleep"), (e: SailError) => e.code === "SAIL_SAILBOX_NOT_RUNNING" && e.message === `Sailbox ${box.id} is paused: only a running sailbox can sleep`);
  });

  test("subscribers hear each change after node.db has it, in order; a terminated box's row is gone", async () => {
    const heard: string[] = [];
    agent.lifecycle.onTransition(({ box, from, to }) => heard.push(`${from}→${to}:${statusOf(box.id) ?? "gone"}`));
    const box = await create();
    await agent.setPower(box.id, "sleep");
    await agent.ingress.wakeOnIngress(box.id);
    await agent.setPower(box.id, "pause");
    await agent.setPower(box.id, "resume");
    await agent.destroyBox(box.id);
    assert.deepEqual(heard, ["creating→running:running", "running→sleeping:sleeping", "sleeping→running:running", "running→paused:paused", "paused→running:running", "running→terminated:gone"]);
  });

  test("a box the node does not hold is SAIL_SAILBOX_NOT_FOUND for every call but destroy, which removes its leftovers", async () => {
    const id = "sb-nothinghere";
    for (const call of [agent.setPower(id, "sleep"), agent.awake(id), agent.setNetwork(id, OPEN), agent.exec(id, { cmd: "true" }), agent.traffic(id), agent.waitListener(id, { port: 3000 }, 0)]) {
      assert.equal(await codeOf(call), "SAIL_SAILBOX_NOT_FOUND");
    }
    runtime.dirs.add(id);
    await agent.destroyBox(id);
    assert.ok(runtime.calls.includes(`destroy ${id}`));
    assert.equal(await codeOf(agent.destroyBox("../../etc")), "SAIL_INVALID_ARGUMENT", "an id never names a path");
  });
});

describe("steps past their deadline", () => {
  test("a stuck step before a change releases the box's lock with SAIL_RUNTIME_TIMEOUT, aborts its signal, and changes nothing", async () => {
    const box = await create();
    let stepSignal: AbortSignal | undefined;
    const stuck = agent.lifecycle.transition(box.id, "sleeping", {
      action: "sleep",
      deadlineMs: 50,
      before: (_box, signal) => {
        stepSignal = signal;
        return new Promise(() => {}); // never settles, and ignores its signal
      },
    });
    const error = await stuck.catch((err: unknown) => err);
    assert.ok(error instanceof SailError);
    assert.equal(error.code, "SAIL_RUNTIME_TIMEOUT");
    assert.match(error.message, new RegExp(`Sailbox ${box.id}: sleep did not finish within 0.1 s`));
    assert.equal(stepSignal?.aborted, true, "the step was told to stop (its runtime commands are killed)");
    assert.equal(statusOf(box.id), "running", "a stuck step before the change leaves the status as it was");
    // the lock is free: destroy proceeds although the stuck step never settles
    await agent.destroyBox(box.id);
    assert.equal(statusOf(box.id), undefined);
  });

  test("destroy preempts a freeze that is stuck: the sleep gives up at once and the box goes", async () => {
    const box = await create();
    runtime.freezeMode = "stuck";
    const sleeping = agent.setPower(box.id, "sleep").catch((err: unknown) => err);
    while (!runtime.calls.includes(`freeze ${box.id}`)) await new Promise((r) => setTimeout(r, 1));
    await agent.destroyBox(box.id);
    assert.equal(runtime.freezeSignal?.aborted, true);
    const error = await sleeping;
    assert.ok(error instanceof SailError);
    assert.match(error.message, /being terminated/);
    assert.equal(statusOf(box.id), undefined);
    assert.equal(runtime.boxes.has(box.id), false);
  });

  test("a freeze that fails: the box runs again (thawed, routes say running), and the error names it", async () => {
    const routes = new RecordingSubscriber();
    agent.routes.subscribe(routes);
    const box = await create({ listeners: [http(3000)] });
    runtime.freezeMode = "refuse";
    const error = await agent.setPower(box.id, "sleep").catch((err: unknown) => err);
    assert.ok(error instanceof SailError);
    assert.equal(error.code, "SAIL_RUNTIME_FAILED");
    assert.match(error.message, new RegExp(`Sailbox ${box.id} could not sleep: .*still FREEZING.*It is running again`));
    assert.equal(statusOf(box.id), "running");
    assert.equal(runtime.calls.at(-1), `thaw ${box.id}`);
    assert.deepEqual([...routes.http.values()], ["running"]);
    runtime.freezeMode = "ok";
    assert.equal((await agent.setPower(box.id, "sleep")).status, "sleeping", "a later sleep works");
  });

  test("a failed wake is logged with the box id", async () => {
    const logged: Array<[object, string]> = [];
    agent = makeAgent(SETTINGS, { info() {}, warn() {}, error: (obj: object, msg: string) => logged.push([obj, msg]) });
    const box = await create();
    await agent.setPower(box.id, "sleep");
    runtime.thaw = async () => {
      throw new Error("crun resume exited 1");
    };
    assert.equal(await agent.ingress.wakeOnIngress(box.id), "sleeping");
    assert.deepEqual(logged.at(-1), [{ sailboxId: box.id, err: "Error: crun resume exited 1" }, "wake on ingress failed"]);
  });
});

describe("sleep, pause and wake", () => {
  test("sleep drops connections before it freezes; a wake thaws before routes say running", async () => {
    const routes = new RecordingSubscriber();
    agent.routes.subscribe(routes);
    const box = await create({ listeners: [http(3000)] });
    await agent.setPower(box.id, "sleep");
    assert.deepEqual(routes.drops, [box.id]);
    assert.deepEqual([...routes.http.values()], ["sleeping"]);
    assert.equal(runtime.calls.at(-1), `freeze ${box.id}`);
    await agent.ingress.wakeOnIngress(box.id);
    assert.equal(runtime.calls.at(-1), `thaw ${box.id}`);
    assert.deepEqual([...routes.http.values()], ["running"]);
    assert.equal((await agent.box(box.id)).wakes, 1);
  });

  test("concurrent arrivals at a sleeping box share one resume", async () => {
    const box = await create();
    await agent.setPower(box.id, "sleep");
    runtime.thawDelayMs = 20;
    const statuses = await Promise.all(Array.from({ length: 10 }, () => agent.ingress.wakeOnIngress(box.id)));
    assert.deepEqual(new Set(statuses), new Set(["running"]));
    assert.equal(runtime.calls.filter((c) => c === `thaw ${box.id}`).length, 1);
    assert.equal((await agent.traffic(box.id)).wakes, 1);
  });

  test("traffic does not wake a paused box; an exec on it is SAIL_SAILBOX_PAUSED", async () => {
    const box = await create();
    await agent.setPower(box.id, "pause");
    assert.equal(await agent.ingress.wakeOnIngress(box.id), "paused");
    assert.equal(await codeOf(agent.exec(box.id, { cmd: "true" })), "SAIL_SAILBOX_PAUSED");
    assert.equal(await codeOf(agent.awake(box.id)), "SAIL_SAILBOX_PAUSED");
    assert.ok(!runtime.calls.includes(`thaw ${box.id}`));
  });

  test("a terminal (PTY exec) wakes a sleeping box, refuses a paused one, and a bad size opens nothing", async () => {
    const box = await create();
    await agent.setPower(box.id, "sleep");
    await agent.pty(box.id, { cols: 80, rows: 24 });
    assert.equal(statusOf(box.id), "running");
    await agent.setPower(box.id, "pause");
    assert.equal(await codeOf(agent.pty(box.id, { cols: 80, rows: 24 })), "SAIL_SAILBOX_PAUSED");
    await agent.setPower(box.id, "resume");
    const opened = runtime.calls.filter((c) => c === `execPty ${box.id}`).length;
    assert.equal(await codeOf(agent.pty(box.id, { cols: 0, rows: 24 })), "SAIL_INVALID_ARGUMENT");
    assert.equal(await codeOf(agent.pty(box.id, { cols: 80, rows: 24, cwd: "relative" })), "SAIL_EXEC_INVALID");
    assert.equal(runtime.calls.filter((c) => c === `execPty ${box.id}`).length, opened);
  });

  test("an exec wakes a sleeping box, and so does an API call that needs the guest", async () => {
    const box = await create();
    await agent.setPower(box.id, "sleep");
    await agent.exec(box.id, { cmd: "true" });
    assert.equal(statusOf(box.id), "running");
    await agent.setPower(box.id, "sleep");
    assert.equal((await agent.awake(box.id)).status, "running");
  });

  test("idle auto-sleep sleeps a box idle for its idleTimeout, not before", async () => {
    const box = await create({ idleTimeout: 5 });
    const created = Date.parse(store.getBox(box.id)!.createdAt);
    assert.deepEqual(await agent.idle.sleepIdleBoxes(Date.now() + 1000), []);
    agent.ingress.noteActivity("haproxy", { [box.id]: { open: 1, lastActiveMs: created } });
    assert.deepEqual(await agent.idle.sleepIdleBoxes(Date.now() + 60_000), [], "an open connection is activity");
    agent.ingress.noteActivity("haproxy", {});
    assert.deepEqual(await agent.idle.sleepIdleBoxes(Date.now() + 60_000), [box.id]);
    assert.equal(statusOf(box.id), "sleeping");
  });

  test("a foreground exec keeps a box awake while it runs", async () => {
    const box = await create({ idleTimeout: 5 });
    let exit!: (code: number) => void;
    const exec = runtime.exec.bind(runtime);
    runtime.exec = (id, execSpec) => ({ ...exec(id, execSpec), exit: new Promise<number>((resolve) => (exit = resolve)) });
    await agent.exec(box.id, { cmd: "sleep 600" });
    assert.deepEqual(await agent.idle.sleepIdleBoxes(Date.now() + 60_000), [], "an exec is running");
    exit(0);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(await agent.idle.sleepIdleBoxes(Date.now() + 60_000), [box.id]);
  });
});

describe("routes as versioned changes", () => {
  test("a new subscriber gets the whole table; then each change carries what one transition changed", async () => {
    const early = await create({ listeners: [http(3000), tcp(5432, 20000)] });
    const routes = new RecordingSubscriber();
    agent.routes.subscribe(routes);
    assert.equal(routes.changes[0]!.reset, true);
    assert.deepEqual([...routes.http.keys()], [`3000-${early.id.slice(3)}`]);
    assert.deepEqual([...routes.tcp.values()], ["running"]);
    const later = await create({ listeners: [http(8080)] });
    const versions = routes.changes.map((c) => c.version);
    assert.deepEqual(
      versions,
      [...versions].sort((a, b) => a - b),
      "versions only grow",
    );
    assert.equal(routes.http.get(`8080-${later.id.slice(3)}`), "running");
    await agent.destroyBox(early.id);
    assert.deepEqual([...routes.http.keys()], [`8080-${later.id.slice(3)}`]);
    assert.equal(routes.tcp.size, 0);
  });

  test("a box running when the node started is removed from the data paths when it ends", async () => {
    const box = await create({ listeners: [http(3000), tcp(5432, 20000)] });
    agent = makeAgent(); // a node restart: the same node.db, a new agent
    const routes = new RecordingSubscriber();
    agent.routes.subscribe(routes);
    assert.equal(routes.http.size + routes.tcp.size, 2);
    await agent.destroyBox(box.id);
    assert.equal(routes.http.size + routes.tcp.size, 0);
  });
});

describe("creates and destroys", () => {
  test("a runtime that fails leaves no row and no slot behind; the next box takes the slot", async () => {
    runtime.failCreate = true;
    const failed = spec({ hostname: "web" });
    await assert.rejects(agent.createBox(failed), (e: SailError) => e.code === "SAIL_RUNTIME_FAILED" && /Could not start sailbox web: crun run exited 1/.test(e.message));
    assert.equal(store.getBox(failed.id), undefined);
    runtime.failCreate = false;
    await create();
    assert.deepEqual(
      runtime.calls.filter((c) => c.startsWith("create ")).map((c) => c.split(" slot ")[1]),
      ["0", "0"],
    );
  });

  test("a spec that would harm the host is refused before anything exists", async () => {
    assert.equal(await codeOf(agent.createBox(spec({ id: "sb-../../x" }))), "SAIL_INVALID_ARGUMENT");
    assert.equal(await codeOf(agent.createBox(spec({ hostname: "web\n10.0.0.1 evil" }))), "SAIL_NAME_INVALID");
    assert.equal(await codeOf(agent.createBox(spec({ sshPublicKey: "ssh-ed25519 AAAA'; rm -rf / #" }))), "SAIL_SSH_KEY_INVALID");
    assert.equal(await codeOf(agent.createBox(spec({ listeners: [tcp(22, 20000, { cidrAllowlist: ["not-a-cidr"] })] }))), "SAIL_CIDR_INVALID");
    assert.equal(await codeOf(agent.createBox(spec({ cpu: 3 }))), "SAIL_RESOURCES_INVALID", "more cores than the host has");
    assert.equal(await codeOf(agent.createBox(spec({ image: { arch: "mips" as "amd64", aptPackages: [] } }))), "SAIL_IMAGE_UNKNOWN");
    assert.equal(await codeOf(agent.createBox(spec({ network: { outbound: "everything" } as unknown as NetworkInfo }))), "SAIL_INVALID_ARGUMENT");
    assert.deepEqual(store.listBoxes(), []);
    assert.deepEqual(runtime.calls, []);
  });

  test("a box's disk is its spec's size or the node's default; its inodes are in its state; a bad size makes nothing", async () => {
    const given = await create({ diskMiB: 512 });
    assert.equal(runtime.specs.get(given.id)!.diskMiB, 512);
    assert.equal(given.diskInodes, 512 * INODES_PER_MIB, "the node reports the inodes the runtime made");
    assert.deepEqual([store.getBox(given.id)!.diskMiB, store.getBox(given.id)!.diskInodes], [512, 512 * INODES_PER_MIB]);
    const defaulted = await create();
    assert.equal(runtime.specs.get(defaulted.id)!.diskMiB, SETTINGS.diskMiB);
    assert.equal((await agent.box(defaulted.id)).diskInodes, SETTINGS.diskMiB * INODES_PER_MIB);
    const creates = runtime.calls.filter((c) => c.startsWith("create ")).length;
    for (const diskMiB of [0, -1, 100.5, "512" as unknown as number]) {
      assert.equal(await codeOf(agent.createBox(spec({ diskMiB }))), "SAIL_RESOURCES_INVALID", `diskMiB ${JSON.stringify(diskMiB)}`);
    }
    assert.equal(runtime.calls.filter((c) => c.startsWith("create ")).length, creates, "the runtime was not asked");
    assert.equal(store.listBoxes().length, 2);
  });

  test("a background exec in a box whose disk is full is SAIL_DISK_FULL naming the box, not a runtime failure", async () => {
    const box = await create({ diskMiB: 64 });
    runtime.diskFull = true;
    const refused = await agent.execBackground(box.id, "ex-full1", { cmd: "sleep 1" }).catch((e: unknown) => e);
    assert.ok(refused instanceof SailError && refused.code === "SAIL_DISK_FULL" && refused.status === 507, String(refused));
    assert.deepEqual(refused.details, { sailboxId: box.id, diskMiB: 64 });
    assert.match(refused.message, /disk is full/);
  });

  test("a node whose box subnet is full refuses the box with SAIL_LIMIT_EXCEEDED", async () => {
    runtime.maxBoxes = 1;
    agent = makeAgent();
    await create();
    await assert.rejects(create(), (e: SailError) => e.code === "SAIL_LIMIT_EXCEEDED" && e.details.limit === 1 && /at most 1 sailboxes/.test(e.message));
  });

  test("a create sent again (a retry after a lost answer) answers with the box it made, once", async () => {
    const given = spec();
    const [a, b] = await Promise.all([agent.createBox(given), agent.createBox(given)]);
    assert.deepEqual(a, b);
    assert.equal(runtime.calls.filter((c) => c.startsWith("create ")).length, 1);
  });

  test("a caller that leaves while its box starts gets it removed again", async () => {
    let open!: () => void;
    runtime.createGate = new Promise((resolve) => (open = resolve));
    const controller = new AbortController();
    const given = spec();
    const starting = agent.createBox(given, { signal: controller.signal });
    await new Promise((resolve) => setImmediate(resolve));
    controller.abort();
    open();
    await assert.rejects(starting, /the caller went away/);
    assert.equal(store.getBox(given.id), undefined);
    assert.ok(runtime.calls.includes(`destroy ${given.id}`));
  });

  test("ssh sets up sshd in the box; sshd is started again on request", async () => {
    const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBd0fiDtYyCBqN3qqwJ0pXoDAtXJfjxd9FbZvUwm7n3N";
    const box = await create({ sshPublicKey: key, listeners: [tcp(22, 20000, { allowPublic: false })] });
    assert.ok(runtime.calls.includes(`exec ${box.id}`), "sshd was set up in the box");
    runtime.nextExec = { stderr: ["sshd: no hostkeys available"], exitCode: 1 };
    await assert.rejects(agent.startSshd(box.id), (e: SailError) => e.code === "SAIL_RUNTIME_FAILED" && /Could not start sshd in sailbox .*no hostkeys/.test(e.message));
  });

  test("destroy is idempotent", async () => {
    const box = await create();
    await agent.destroyBox(box.id);
    await agent.destroyBox(box.id);
    assert.equal(statusOf(box.id), undefined);
    assert.equal(runtime.calls.filter((c) => c === `destroy ${box.id}`).length, 2);
  });
});

describe("reconcile at start", () => {
  test("a box whose container vanished becomes failed with the reason, its leftovers go, and the control plane hears it; destroy then removes it", async () => {
    const kept = await create();
    const lost = await create();
    const creating = store.insertBox(spec(), { maxSlots: 8 }); // the node stopped while it was being created
    runtime.boxes.delete(lost.id); // its container vanished while the node was down
    agent = makeAgent();
    assert.deepEqual(await agent.start(), { kept: 1, failed: 2, restored: 1 });
    const states = new Map((await agent.boxes()).map((s) => [s.sailboxId, s]));
    assert.equal(states.get(kept.id)?.status, "running");
    assert.equal(states.get(lost.id)?.status, "failed");
    assert.match(states.get(lost.id)!.failureReason!, /container was missing when the daemon started/);
    assert.equal(states.get(creating.id)?.failureReason, "the daemon stopped while it was being created");
    assert.ok(runtime.calls.includes(`destroy ${lost.id} afterCrash`));
    await agent.eventsDelivered();
    assert.deepEqual(sink.statesOf(lost.id), ["running 2", "failed 3"]);
    assert.equal(await codeOf(agent.exec(lost.id, { cmd: "true" })), "SAIL_SAILBOX_NOT_RUNNING");
    await agent.destroyBox(lost.id);
    assert.equal(statusOf(lost.id), undefined);
  });

  test("a box the crash left thawed while node.db says sleeping is frozen again", async () => {
    const box = await create();
    await agent.setPower(box.id, "sleep");
    runtime.states.delete(box.id); // its freeze never happened
    agent = makeAgent();
    const before = runtime.calls.length;
    await agent.start();
    assert.deepEqual(runtime.calls.slice(before), [`freeze ${box.id}`, `setOutbound ${box.id} open `]);
    assert.equal(statusOf(box.id), "sleeping");
  });
});

describe("adopt: boxes from before node.db, and boxes nobody knows", () => {
  /** A box the old daemon made: its container and network.json exist, node.db has no row. */
  function oldBox(slot: number): NodeBoxSpec {
    const given = spec({ listeners: [http(3000)] });
    runtime.boxes.set(given.id, { hostAddress: `10.9.0.${slot * 4 + 1}`, guestAddress: `10.9.0.${slot * 4 + 2}` });
    runtime.dirs.add(given.id);
    return given;
  }

  test("a listed box the host runs is taken over with its slot and status; a lost one is failed; boxes nobody lists are removed", async () => {
    const running = oldBox(3);
    const sleeping = oldBox(5);
    runtime.states.set(sleeping.id, "paused");
    const lost = spec();
    const stray = oldBox(6); // the control plane does not list it: it terminated it while the node was down
    const orphan = await create(); // node.db has it, the control plane does not
    // adopt leaves a box made in the millisecond it began alone (a create in flight): this one is older
    while (Date.now() <= Date.parse(store.getBox(orphan.id)!.createdAt)) await new Promise((r) => setTimeout(r, 1));
    const routes = new RecordingSubscriber();
    agent.routes.subscribe(routes);
    const report = await agent.adopt([
      { spec: running, status: "running" },
      { spec: sleeping, status: "sleeping" },
      { spec: lost, status: "running" },
      { spec: spec(), status: "creating" }, // on its way: left alone
    ]);
    assert.deepEqual(report, { adopted: [running.id, sleeping.id], failed: [lost.id], removed: [orphan.id, stray.id] });
    assert.deepEqual([store.getBox(running.id)?.netSlot, store.getBox(sleeping.id)?.netSlot], [3, 5]);
    assert.equal(statusOf(sleeping.id), "sleeping");
    assert.match(store.getBox(lost.id)!.failureReason!, /container was missing when the node took it over/);
    assert.deepEqual([...routes.http.values()].sort(), ["running", "sleeping"], "the data paths route to what was taken over");
    assert.ok(runtime.calls.includes(`destroy ${stray.id} afterCrash`) && runtime.calls.includes(`destroy ${orphan.id} afterCrash`));
    assert.equal(store.getBox(orphan.id), undefined);
    assert.equal((await create()).id.length > 0, true);
    assert.ok(
      runtime.calls.some((c) => c.endsWith("slot 0")),
      "a new box takes a free slot, not one an adopted box holds",
    );
    await agent.eventsDelivered();
    assert.deepEqual(sink.statesOf(running.id), ["running 1"]);
    assert.deepEqual(sink.statesOf(lost.id), ["failed 1"]);
    // an adopted box is the node's own from now on: its power changes as any other's
    await agent.ingress.wakeOnIngress(sleeping.id);
    assert.equal(statusOf(sleeping.id), "running");
  });

  test("a taken-over box's outbound policy is in place and its resolver told", async () => {
    const given = { ...oldBox(2), network: policy({ allowOut: ["*.example.com"] }) };
    const added: string[] = [];
    agent.outbound.subscribe({ added: (id, host) => added.push(`${id} ${host}`), changed() {}, removed() {} });
    await agent.adopt([{ spec: given, status: "running" }]);
    assert.deepEqual(runtime.outbound.get(given.id)?.rules, { mode: "allow", cidrs: [] });
    assert.deepEqual(added, [`${given.id} 10.9.0.9`]);
    assert.equal(agent.outbound.decide(given.id, "a.example.com"), "forward-and-allow");
  });
});

describe("events to the control plane", () => {
  test("every power change of a box is an event with a growing sequence number; wakes are events too", async () => {
    const box = await create();
    await agent.setPower(box.id, "sleep");
    await agent.ingress.wakeOnIngress(box.id);
    await agent.setPower(box.id, "pause");
    await agent.eventsDelivered();
    assert.deepEqual(sink.statesOf(box.id), ["running 2", "sleeping 3", "running 4", "paused 5"]);
    const woken = sink.heard.filter((e) => e.type === "woken");
    assert.equal(woken.length, 1);
    assert.equal(woken[0]!.type === "woken" && woken[0]!.sailboxId, box.id);
    const afterWake = sink.heard.find((e) => e.type === "box" && e.state.seq === 4);
    assert.equal(afterWake?.type === "box" && afterWake.state.wakes, 1, "a wake's state carries the wake count");
  });

  test("while the control plane is away events wait, only a box's newest state, and are delivered in order once it is back", async () => {
    const a = await create();
    const b = await create();
    await agent.eventsDelivered();
    sink.failing = true;
    await agent.setPower(a.id, "sleep");
    await agent.setPower(b.id, "sleep");
    await agent.ingress.wakeOnIngress(a.id);
    await agent.setPower(a.id, "pause");
    while (sink.attempts < 3) await new Promise((r) => setTimeout(r, 1)); // retried with backoff
    sink.failing = false;
    await agent.eventsDelivered();
    const afterOutage = sink.batches.at(-1)!.map((e) => (e.type === "box" ? `${e.state.sailboxId === a.id ? "a" : "b"} ${e.state.status}` : `woken ${e.sailboxId === a.id ? "a" : "b"}`));
    assert.deepEqual(afterOutage, ["b sleeping", "woken a", "a paused"], "a's sleep and wake were replaced by its newest state");
  });

  test("a control plane that is reachable again gets what waits at once, not after the backoff's timer", { timeout: 60_000 }, async () => {
    const patient = makeAgent({ ...SETTINGS, events: { firstRetryMs: 3_600_000, maxRetryMs: 3_600_000 } }); // a timer that never fires in a test
    sink.failing = true;
    const box = await patient.createBox(spec());
    while (sink.attempts < 1) await new Promise((r) => setTimeout(r, 1));
    await new Promise((r) => setTimeout(r, 1)); // the failed delivery has set its retry timer
    sink.failing = false;
    patient.controlPlaneReachable();
    await patient.eventsDelivered();
    assert.deepEqual(sink.statesOf(box.sailboxId), ["running 2"]);
  });

  test("a raw-TCP listener's bind state is part of its box's state: a change is an event with a new sequence number", async () => {
    const box = await create({ listeners: [tcp(5432, 20000)] });
    assert.deepEqual((await agent.box(box.id)).listeners, [{ port: 5432, state: "pending" }]);
    const unbound = { code: "EADDRINUSE", message: "address already in use", since: "2026-01-01T00:00:00.000Z" };
    agent.ingress.noteTcpBind(20000, { state: "unbound", unbound });
    await agent.eventsDelivered();
    agent.ingress.noteTcpBind(20000, { state: "unbound", unbound: { ...unbound, since: "2026-01-01T00:00:05.000Z" } }); // a retry that failed the same way: no news
    await agent.eventsDelivered();
    agent.ingress.noteTcpBind(20000, { state: "bound" });
    await agent.eventsDelivered();
    assert.deepEqual(sink.statesOf(box.id), ["running 2", "running 3", "running 4"]);
    const last = sink.heard.at(-1);
    assert.deepEqual(last?.type === "box" && last.state.listeners, [{ port: 5432, state: "bound" }]);
  });
});

describe("listener waits", () => {
  test("a port the box does not publish, nothing listening, a port only on ::1, and an unbound public port each say so", async () => {
    const box = await create({ listeners: [http(3000), tcp(5432, 20000)] });
    await assert.rejects(
      agent.waitListener(box.id, { port: 8080 }, 0),
      (e: SailError) =>
        e.code === "SAIL_LISTENER_NOT_FOUND" && e.message === `Sailbox ${box.id} does not publish port 8080 (it publishes 3000, 5432): pass it in ingressPorts when you create the sailbox`,
    );
    runtime.listening = false;
    await assert.rejects(agent.waitListener(box.id, { port: 3000 }, 0), (e: SailError) => e.code === "SAIL_LISTENER_TIMEOUT" && /listens on ::1 only, which the gateway cannot reach/.test(e.message));
    runtime.listening = true;
    await agent.waitListener(box.id, { port: 3000 }, 0);
    agent.ingress.noteTcpBind(20000, { state: "unbound", unbound: { code: "EADDRINUSE", message: "address already in use", since: "2026-01-01T00:00:00.000Z" } });
    await assert.rejects(
      agent.waitListener(box.id, { port: 5432 }, 0),
      (e: SailError) => e.code === "SAIL_LISTENER_UNBOUND" && e.details.publicPort === 20000 && /could not bind its public TCP port 20000 \(EADDRINUSE/.test(e.message),
    );
    agent.ingress.noteTcpBind(20000, { state: "bound" });
    await agent.waitListener(box.id, { port: 5432 }, 0);
  });

  test("a wait wakes a sleeping box and refuses a paused one", async () => {
    const box = await create({ listeners: [http(3000)] });
    await agent.setPower(box.id, "sleep");
    await agent.waitListener(box.id, { port: 3000 }, 1000);
    assert.equal(statusOf(box.id), "running");
    await agent.setPower(box.id, "pause");
    assert.equal(await codeOf(agent.waitListener(box.id, { port: 3000 }, 1000)), "SAIL_SAILBOX_PAUSED");
  });
});

describe("execs", () => {
  test("a foreground command's output comes as UTF-8 text events (a character split between reads kept whole), then its exit code", async () => {
    const box = await create();
    const euro = Buffer.from("€");
    runtime.nextExec = { stdout: [Buffer.concat([Buffer.from("price: "), euro.subarray(0, 1)]) as unknown as string, euro.subarray(1) as unknown as string], stderr: ["warning\n"], exitCode: 3 };
    const exec = await agent.exec(box.id, { cmd: "price" });
    const events: NodeExecEvent[] = await collect(exec.events);
    const text = (stream: string) => events.flatMap((e) => ("stream" in e && e.stream === stream ? [e.data] : [])).join("");
    assert.equal(text("stdout"), "price: €");
    assert.equal(text("stderr"), "warning\n");
    assert.deepEqual(events.at(-1), { exitCode: 3 });
    assert.equal(await codeOf(agent.exec(box.id, { cmd: "" })), "SAIL_EXEC_INVALID");
  });

  test("a background exec's log is read back as it was written; followed, until its process ends", async () => {
    const box = await create();
    await agent.execBackground(box.id, "ex-abc123", { cmd: "serve" });
    const log = runtime.execLogPath(box.id, "ex-abc123");
    appendFileSync(log, "listening\n");
    const text = async (chunks: AsyncIterable<Uint8Array>) => Buffer.concat(await collect(chunks)).toString();
    assert.equal(await text(agent.execLog(box.id, "ex-abc123")), "listening\n");
    const followed = text(agent.execLog(box.id, "ex-abc123", { follow: true }));
    await new Promise((r) => setTimeout(r, 50));
    appendFileSync(log, "request 1\n");
    await new Promise((r) => setTimeout(r, 300));
    appendFileSync(log, "bye\n");
    runtime.execsRunning.delete("ex-abc123");
    assert.equal(await followed, "listening\nrequest 1\nbye\n", "the last words after the process ended are read too");
    const controller = new AbortController();
    runtime.execsRunning.add("ex-abc123");
    const following = agent.execLog(box.id, "ex-abc123", { follow: true, signal: controller.signal })[Symbol.asyncIterator]();
    const first = await following.next();
    controller.abort(); // while it waits for more
    assert.deepEqual([Buffer.from(first.value!).toString(), (await following.next()).done], ["listening\nrequest 1\nbye\n", true], "an aborted follow just ends");
    assert.equal(await codeOf(collect(agent.execLog(box.id, "ex-nothere"))), "SAIL_EXEC_NOT_FOUND");
    assert.equal(await codeOf(collect(agent.execLog(box.id, "../../../etc/passwd"))), "SAIL_EXEC_NOT_FOUND");
    assert.equal(await codeOf(agent.execBackground(box.id, "../x", { cmd: "true" })), "SAIL_INVALID_ARGUMENT");
  });
});

describe("outbound policy", () => {
  test("a create hands the box's rules to the runtime with the box and tells the resolver its name rules; a change and a destroy tell it too", async () => {
    const events: string[] = [];
    agent.outbound.subscribe({
      added: (id, host, guest, names) => events.push(`added ${id} ${host} ${guest} ${JSON.stringify(names)}`),
      changed: (id, names) => events.push(`changed ${id} ${JSON.stringify(names)}`),
      removed: (id) => events.push(`removed ${id}`),
    });
    const box = await create({ network: policy({ allowOut: ["198.51.100.0/24", "*.example.com"] }) });
    assert.deepEqual(runtime.outbound.get(box.id)?.rules, { mode: "allow", cidrs: ["198.51.100.0/24"] });
    assert.deepEqual(events, [`added ${box.id} 10.9.0.1 10.9.0.2 {"mode":"allowlist","domains":["*.example.com"]}`]);
    await agent.setNetwork(box.id, policy({ blockNetwork: true }));
    assert.equal(events[1], `changed ${box.id} {"mode":"refuse"}`);
    await agent.destroyBox(box.id);
    assert.equal(events[2], `removed ${box.id}`);
    assert.equal(agent.outbound.decide(box.id, "www.example.com"), "refuse", "a gone box resolves nothing");
  });

  test("a create the runtime fails tells the resolver the box is gone again", async () => {
    const events: string[] = [];
    agent.outbound.subscribe({ added: (id) => events.push(`added ${id}`), changed() {}, removed: (id) => events.push(`removed ${id}`) });
    const given = spec({ sshPublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBd0fiDtYyCBqN3qqwJ0pXoDAtXJfjxd9FbZvUwm7n3N" });
    runtime.nextExec = { exitCode: 1 }; // sshd's setup fails after the rules are in
    await assert.rejects(agent.createBox(given), /set up sshd exited 1/);
    assert.deepEqual(events, [`added ${given.id}`, `removed ${given.id}`]);
  });

  test("decideName, the rule the resolver's thread applies to its copy of a box's name rules", () => {
    assert.equal(decideName(undefined, "pypi.org"), "refuse", "a box the resolver does not know");
    assert.equal(decideName({ mode: "refuse" }, "pypi.org"), "refuse");
    assert.equal(decideName({ mode: "open" }, "pypi.org"), "forward");
    assert.equal(decideName({ mode: "allowlist", domains: ["*.example.com"] }, "A.Example.com."), "forward-and-allow");
    assert.equal(decideName({ mode: "allowlist", domains: ["*.example.com"] }, "pypi.org"), "nxdomain");
    assert.equal(decideName({ mode: "denylist", domains: ["evil.example"] }, "evil.example"), "nxdomain");
    assert.equal(decideName({ mode: "denylist", domains: ["evil.example"] }, "good.example"), "forward");
  });

  test("an answer the resolver decided on an older copy of the policy opens nothing the policy no longer allows", async () => {
    const box = await create({ network: policy({ allowOut: ["*.example.com"] }) });
    await agent.setNetwork(box.id, policy({ allowOut: ["pypi.org"] }));
    const before = runtime.allowed.length;
    await agent.outbound.answered(box.id, "a.example.com", ["198.51.100.9"], 60);
    assert.equal(runtime.allowed.length, before, "no firewall change for a name no longer allowed");
    await agent.outbound.answered(box.id, "pypi.org", ["198.51.100.10"], 60);
    assert.deepEqual(runtime.allowed.at(-1), [box.id, { add: ["198.51.100.10"], renew: [] }, 60]);
  });

  test("the resolver's decisions follow the policy: open forwards, blocked refuses, lists allow or deny names", async () => {
    const open = await create();
    const blocked = await create({ network: policy({ blockNetwork: true }) });
    const allow = await create({ network: policy({ allowOut: ["*.example.com", "pypi.org"] }) });
    const deny = await create({ network: policy({ denyOut: ["evil.example"] }) });
    assert.equal(agent.outbound.decide(open.id, "anything.test"), "forward");
    assert.equal(agent.outbound.decide(blocked.id, "pypi.org"), "refuse");
    assert.equal(agent.outbound.decide(allow.id, "files.example.com"), "forward-and-allow");
    assert.equal(agent.outbound.decide(allow.id, "PyPI.org."), "forward-and-allow");
    assert.equal(agent.outbound.decide(allow.id, "example.com"), "nxdomain");
    assert.equal(agent.outbound.decide(deny.id, "evil.example"), "nxdomain");
    assert.equal(agent.outbound.decide(deny.id, "good.example"), "forward");
  });

  test("what a box's lookups may open is bounded: past its number of addresses or its rate a lookup fails and opens nothing; a renewal past the rate waits", async (t) => {
    t.mock.timers.enable({ apis: ["Date"], now: 1_000_000 });
    // 3 addresses at a time, 5 changes at once (and next to no refill)
    const limited = makeAgent({ ...SETTINGS, outbound: { ...SETTINGS.outbound, resolvedLimits: { addressesPerBox: 3, perSecond: 0.001, burst: 5 } } });
    const box = await limited.createBox(spec({ network: policy({ allowOut: ["*.example.com"] }) }));
    const id = box.sailboxId;
    const changes = () => runtime.allowed.filter(([boxId]) => boxId === id).map(([, a]) => [...a.add, ...a.renew.map((r) => `renew ${r}`)]);
    await limited.outbound.answered(id, "a.example.com", ["198.51.100.1", "198.51.100.2"], 60);
    await limited.outbound.answered(id, "b.example.com", ["198.51.100.3"], 60);
    await assert.rejects(limited.outbound.answered(id, "c.example.com", ["198.51.100.4"], 60), /has 3 addresses open by DNS, at most 3: c\.example\.com is not opened/);
    t.mock.timers.tick(61_000); // the three expired: their places are free again
    await limited.outbound.answered(id, "c.example.com", ["198.51.100.4"], 60);
    await limited.outbound.answered(id, "d.example.com", ["198.51.100.5"], 60); // the 5th change: the burst is spent
    await assert.rejects(limited.outbound.answered(id, "e.example.com", ["198.51.100.6"], 60), /opens addresses by DNS faster than 0\.001 a second/);
    t.mock.timers.tick(40_000); // 198.51.100.4 has less than half its time left: a renewal, but past the rate
    await limited.outbound.answered(id, "c.example.com", ["198.51.100.4"], 60);
    assert.deepEqual(changes(), [["198.51.100.1", "198.51.100.2"], ["198.51.100.3"], ["198.51.100.4"], ["198.51.100.5"]], "no change for a refused lookup nor a renewal past the rate");
  });

  test("an answer to an allowed name opens its addresses for its TTL, at least 30 s; a change keeps those of names still allowed", async () => {
    const box = await create({ network: policy({ allowOut: ["*.example.com", "pypi.org"] }) });
    await agent.outbound.answered(box.id, "a.example.com", ["198.51.100.7"], 0);
    await agent.outbound.answered(box.id, "pypi.org", ["203.0.113.9"], 300);
    // asked again: still allowed for more than half the time, so the firewall is not touched
    await agent.outbound.answered(box.id, "pypi.org", ["203.0.113.9"], 300);
    // a longer TTL than it has left by half: renewed
    await agent.outbound.answered(box.id, "b.example.com", ["198.51.100.7"], 3600);
    assert.deepEqual(runtime.allowed, [
      [box.id, { add: ["198.51.100.7"], renew: [] }, 30],
      [box.id, { add: ["203.0.113.9"], renew: [] }, 300],
      [box.id, { add: [], renew: ["198.51.100.7"] }, 3600],
    ]);
    runtime.open.set(box.id, ["198.51.100.7", "203.0.113.9", "192.0.2.1"]);
    const changed = policy({ allowOut: ["*.example.com"] });
    await agent.setNetwork(box.id, changed);
    const kept = runtime.outbound.get(box.id)!.resolved.map((r) => r.address);
    assert.deepEqual(kept, ["198.51.100.7"], "pypi.org's address is no longer allowed");
    assert.deepEqual(store.getBox(box.id)!.network, changed);
  });

  test("a change cuts exactly the open connections the new policy does not allow", async () => {
    const box = await create();
    runtime.open.set(box.id, ["198.51.100.7", "203.0.113.9"]);
    let cut: string[] = [];
    const cutOutbound = runtime.cutOutbound.bind(runtime);
    runtime.cutOutbound = async (id, keep) => (cut = await cutOutbound(id, keep));
    await agent.setNetwork(box.id, policy({ denyOut: ["203.0.113.0/24"] }));
    assert.deepEqual(cut, ["203.0.113.9"]);
    await agent.setNetwork(box.id, policy({ blockNetwork: true }));
    assert.deepEqual(cut, ["198.51.100.7", "203.0.113.9"]);
    await agent.setNetwork(box.id, OPEN);
    assert.deepEqual(cut, []);
  });

  test("entries boxes can never reach here are refused, and a refused change changes nothing", async () => {
    const allowOut = (entries: string[]) => create({ network: policy({ allowOut: entries }) });
    assert.equal(await codeOf(allowOut(["192.168.0.0/16"])), "SAIL_NETWORK_ENTRY_REFUSED");
    assert.equal(await codeOf(allowOut(["10.9.1.0/24"])), "SAIL_NETWORK_ENTRY_REFUSED", "other boxes' subnet");
    assert.equal(await codeOf(allowOut(["10.50.1.0/24"])), "resolved", "a private range the operator opened");
    assert.equal(await codeOf(allowOut(["0.0.0.0/0"])), "resolved", "partly reachable is fine");
    assert.equal(await codeOf(agent.checkNetwork(policy({ allowOut: ["127.0.0.1/32"] }))), "SAIL_NETWORK_ENTRY_REFUSED", "a create can be refused before anything exists");
    const box = await allowOut(["198.51.100.0/24"]);
    const calls = runtime.calls.length;
    assert.equal(await codeOf(agent.setNetwork(box.id, policy({ allowOut: ["127.0.0.1/32"] }))), "SAIL_NETWORK_ENTRY_REFUSED");
    assert.equal(await codeOf(agent.setNetwork(box.id, { outbound: "allowlist", allowOut: ["x"], denyOut: [] })), "SAIL_NETWORK_ENTRY_INVALID");
    assert.equal(runtime.calls.length, calls, "the runtime was not asked");
    assert.deepEqual(store.getBox(box.id)!.network.allowOut, ["198.51.100.0/24"]);
    await agent.destroyBox(box.id);
    assert.equal(await codeOf(agent.setNetwork(box.id, OPEN)), "SAIL_SAILBOX_NOT_FOUND");
  });

  test("an entry on a network the host is directly connected to is refused while the host is on it, and a change cuts connections into it", async () => {
    const allowOut = (entries: string[]) => create({ network: policy({ allowOut: entries }) });
    runtime.connected = [parseIpv4Cidr("192.0.2.0/24")!.range];
    await assert.rejects(allowOut(["192.0.2.7/32"]), (e: SailError) => e.code === "SAIL_NETWORK_ENTRY_REFUSED" && /directly connected.*--outbound-private 192\.0\.2\.7\/32/.test(e.message));
    assert.equal(await codeOf(allowOut(["192.0.2.0/25"])), "SAIL_NETWORK_ENTRY_REFUSED");
    assert.equal(await codeOf(allowOut(["192.0.0.0/16"])), "resolved", "partly reachable is fine");
    const box = await create();
    runtime.open.set(box.id, ["192.0.2.7", "198.51.100.7"]);
    let cut: string[] = [];
    const cutOutbound = runtime.cutOutbound.bind(runtime);
    runtime.cutOutbound = async (id, keep) => (cut = await cutOutbound(id, keep));
    await agent.setNetwork(box.id, OPEN);
    assert.deepEqual(cut, ["192.0.2.7"], "an open policy keeps nothing on the host's LAN");
    runtime.connected = []; // the host left that network
    assert.equal(await codeOf(allowOut(["192.0.2.7/32"])), "resolved");
  });
});

describe("images", () => {
  test("a build's steps reach the caller; a caller that leaves stops waiting while the build goes on", async () => {
    const steps: string[] = [];
    await agent.prepareImage({ arch: "amd64", aptPackages: ["sl"] }, { onProgress: (p) => steps.push(`${p.step} ${p.detail ?? ""}`.trim()) });
    assert.deepEqual(steps, ["retrieving sl", "ready"]);
    let open!: () => void;
    runtime.buildGate = new Promise((resolve) => (open = resolve));
    const controller = new AbortController();
    const waiting = agent.prepareImage({ arch: "amd64", aptPackages: ["cowsay"] }, { signal: controller.signal });
    controller.abort();
    await assert.rejects(waiting, { name: "AbortError" });
    open();
    assert.equal(await codeOf(agent.prepareImage({ arch: "amd64", aptPackages: ["Not A Package"] })), "SAIL_IMAGE_PACKAGES_INVALID");
  });
});

describe("what the node tells", () => {
  test("info, every box's state, its metrics and a box's traffic", async () => {
    const info = await agent.info();
    assert.deepEqual({ ...info, nodeId: undefined }, { nodeId: undefined, version: 1, hostArch: "amd64", maxBoxes: 8 });
    assert.match(info.nodeId, /^node-/);
    const box = await create({ listeners: [http(3000), tcp(5432, 20000)] });
    await agent.setPower(box.id, "sleep");
    assert.deepEqual(await agent.boxes(), [{ sailboxId: box.id, status: "sleeping", seq: 3, wakes: 0, diskInodes: SETTINGS.diskMiB * INODES_PER_MIB, listeners: [{ port: 5432, state: "pending" }] }]);
    assert.match(await agent.metricsText(), /sail_sailboxes\{status="sleeping"\} 1/);
    agent.tcpWorkerReport(
      1,
      {
        connections: 2,
        requests: 0,
        tunnels: 0,
        bytesIn: 10,
        bytesOut: 20,
        refusals: {},
        listeners: { [`${box.id}:5432`]: { connections: 2, requests: 0, tunnels: 0, bytesIn: 10, bytesOut: 20, refusals: { cidr: 1 } } },
      },
      0,
      1,
    );
    const traffic = await agent.traffic(box.id);
    assert.deepEqual(traffic.listeners, [
      { port: 3000, open: 0, requests: 0, bytesIn: 0, bytesOut: 0, refusals: {} },
      { port: 5432, open: 0, requests: 2, bytesIn: 10, bytesOut: 20, refusals: { cidr: 1 } },
    ]);
  });
});
