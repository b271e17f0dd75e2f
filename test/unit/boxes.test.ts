/**
 * The boxes room in process, in milliseconds: the real store (SQLite in memory) and a fake
 * runtime that records what it was asked. The end-to-end suite runs the same rules on real
 * boxes; these tests pin the lifecycle table and the domain rules down one by one.
 */
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { beforeEach, describe, test } from "node:test";
import { canTransition, parseIpv4Cidr, SAILBOX_TRANSITIONS, SailError, type Ipv4Range, type SailboxStatus } from "@sail/protocol";
import { createBoxes, type Boxes } from "../../packages/server/src/boxes/boxes.js";
import { decideName } from "../../packages/server/src/boxes/outbound.js";
import type { RouteChange, RouteSubscriber } from "../../packages/server/src/boxes/routes.js";
import { CreateAbandonedError } from "../../packages/server/src/boxes/create.js";
import { Creates } from "../../packages/server/src/boxes/creates.js";
import {
  DiskFullError,
  FreezeError,
  type BoxNetwork,
  type BoxSpec,
  type CreatedBox,
  type ImageProgress,
  type OutboundRules,
  type Runtime,
  type RuntimeState,
} from "../../packages/server/src/runtime/runtime.js";
import { Store, type OrgRow } from "../../packages/server/src/store/store.js";

const STATUSES = Object.keys(SAILBOX_TRANSITIONS) as SailboxStatus[];

/** Records every call; `failCreate` makes the next create fail as a broken runtime would. */
class FakeRuntime implements Runtime {
  readonly hostArch = "amd64" as const;
  readonly calls: string[] = [];
  readonly boxes = new Map<string, BoxNetwork>();
  failCreate = false;
  /** The next background exec finds the box's disk full. */
  diskFull = false;
  readonly specs = new Map<string, BoxSpec>();
  thawDelayMs = 0;
  /** "stuck": freeze waits until its signal aborts (then thaws, as the real freezer); "refuse": it fails at once. */
  freezeMode: "ok" | "stuck" | "refuse" = "ok";
  /** The signal the last freeze got. */
  freezeSignal: AbortSignal | undefined;
  /** While set, a package build reports its first step and waits for it; so does create. */
  buildGate: Promise<void> | undefined;
  createGate: Promise<void> | undefined;

  async prepareImage(arch: string) {
    this.calls.push(`prepareImage ${arch}`);
  }
  async preparePackageImage(arch: string, packages: readonly string[], onProgress?: (progress: ImageProgress) => void) {
    this.calls.push(`preparePackageImage ${arch} ${packages.join(" ")}`);
    onProgress?.({ phase: "retrieving", detail: packages[0] });
    await this.buildGate;
    onProgress?.({ phase: "ready", done: true });
  }
  async start() {}
  async shutdown() {}
  async create(spec: BoxSpec): Promise<CreatedBox> {
    this.calls.push(`create ${spec.id}`);
    await this.createGate;
    if (this.failCreate) throw new Error("crun run exited 1");
    const network = { hostAddress: `10.9.0.${spec.netSlot * 4 + 1}`, guestAddress: `10.9.0.${spec.netSlot * 4 + 2}` };
    this.boxes.set(spec.id, network);
    this.specs.set(spec.id, spec);
    this.outbound.set(spec.id, { rules: spec.outbound, resolved: [] }); // the real runtime sets them while the container starts
    return { network, diskInodes: spec.diskMiB * 64 }; // mkfs.ext4 -i 16384
  }
  network(id: string): BoxNetwork {
    const network = this.boxes.get(id);
    if (!network) throw new Error(`no box ${id}`);
    return network;
  }
  async state(id: string): Promise<RuntimeState> {
    return this.boxes.has(id) ? "running" : "missing";
  }
  exec(id: string) {
    this.calls.push(`exec ${id}`);
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    stdout.end();
    stderr.end();
    return { stdout, stderr, exit: Promise.resolve(0), kill() {} };
  }
  async execPty(id: string) {
    this.calls.push(`execPty ${id}`);
    const terminal = new PassThrough();
    return { terminal, exit: Promise.resolve(0), resize() {}, kill() {} };
  }
  async execDetached(id: string) {
    this.calls.push(`execDetached ${id}`);
    if (this.diskFull) throw new DiskFullError(`sailbox ${id}'s disk is full (ENOSPC)`);
  }
  execLogPath(id: string, execId: string) {
    return `/boxes/${id}/execs/${execId}.log`;
  }
  async probePort() {
    return true;
  }
  async listeningAddresses() {
    return [];
  }
  async freeze(id: string, signal?: AbortSignal) {
    this.calls.push(`freeze ${id}`);
    this.freezeSignal = signal;
    if (this.freezeMode === "refuse") throw new FreezeError(`sailbox ${id} could not be frozen: still FREEZING after 1000 attempts; thawed it again`);
    if (this.freezeMode === "stuck") {
      await new Promise((_, reject) => signal!.addEventListener("abort", () => reject(new FreezeError(`could not freeze ${id}: ${String(signal!.reason)}`)), { once: true }));
    }
  }
  async thaw(id: string) {
    this.calls.push(`thaw ${id}`);
    if (this.thawDelayMs) await new Promise((r) => setTimeout(r, this.thawDelayMs));
  }
  async destroy(id: string) {
    this.calls.push(`destroy ${id}`);
    this.boxes.delete(id);
  }
  readonly outbound = new Map<string, { rules: OutboundRules; resolved: ReadonlyArray<{ address: string; seconds: number }> }>();
  readonly allowed: Array<[string, { add: readonly string[]; renew: readonly string[] }, number]> = [];
  /** Destinations each box has open connections to (what conntrack would list). */
  readonly open = new Map<string, string[]>();
  async setOutbound(id: string, rules: OutboundRules, resolved: ReadonlyArray<{ address: string; seconds: number }> = []) {
    this.calls.push(`setOutbound ${id} ${rules.mode} ${rules.cidrs.join(",")}`);
    this.outbound.set(id, { rules, resolved });
  }
  async allowResolved(id: string, addresses: { add: readonly string[]; renew: readonly string[] }, seconds: number) {
    this.allowed.push([id, addresses, seconds]);
  }
  async cutOutbound(id: string, keep: (address: string) => boolean) {
    return (this.open.get(id) ?? []).filter((a) => !keep(a));
  }
  async outboundCounters() {
    return new Map();
  }
  async outboundRefusals() {
    return [];
  }
  /** The host's directly connected networks, as the runtime would follow them. */
  connected: Ipv4Range[] = [];
  connectedNetworks() {
    return this.connected;
  }
}

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

const silent = { info() {}, warn() {}, error() {} };

let store: Store;
let runtime: FakeRuntime;
let boxes: Boxes;
let org: OrgRow;
let appId: string;

const SETTINGS = {
  defaults: { cpu: 1, memoryMiB: 512, diskMiB: 2048, pidsLimit: 64, hostCpus: 2, maxBoxes: 8 },
  tcp: { firstPort: 20000, lastPort: 20099, defaultLimitPerOrg: 32 },
  addresses: { domain: "sail.localhost", publicHttpsPort: 8443, publicHost: "localhost" },
  outbound: { enabled: true, privateAllowed: ["10.50.0.0/16"], only: null, boxSubnet: "10.9.0.0/16" },
};

beforeEach(() => {
  store = new Store(":memory:");
  runtime = new FakeRuntime();
  boxes = createBoxes(store, runtime, SETTINGS, silent);
  org = store.createOrg("default", { operator: true });
  appId = store.mintApp(org.id, "demo").id;
});

const create = (extra: object = {}) => boxes.creator.create(org, { appId, image: { name: "debian" }, ...extra });
const codeOf = async (work: Promise<unknown>) => {
  try {
    await work;
    return "resolved";
  } catch (err) {
    return (err as SailError).code;
  }
};

describe("the lifecycle table", () => {
  test("every change between statuses is allowed exactly when the table says so", async () => {
    for (const from of STATUSES) {
      for (const to of STATUSES) {
        const id = `sb-${from.slice(0, 4)}${to.slice(0, 4)}xx`.slice(0, 15);
        store.insertSailbox({ id, appId, orgId: org.id, name: null, imageName: "debian", imageArch: "amd64", imagePackages: "", cpu: 1, memoryMiB: 512, diskMiB: 2048 }, 64);
        if (from !== "creating") store.setStatus(id, from);
        const outcome = await codeOf(boxes.lifecycle.transition(id, to));
        const expected = from === to || canTransition(from, to) ? "resolved" : "SAIL_SAILBOX_NOT_RUNNING";
        assert.equal(outcome, expected, `${from} → ${to}`);
        assert.equal(store.getSailbox(id)!.status, expected === "resolved" ? to : from, `${from} → ${to} left the store as the table says`);
      }
    }
  });

  test("a refused change names the box, its status and what would allow it", async () => {
    const box = await create();
    await boxes.power.pause(org, box.id);
    await assert.rejects(boxes.power.sleep(org, box.id), (e: SailError) => e.code === "SAIL_SAILBOX_NOT_RUNNING" && e.message === `Sailbox ${box.id} is paused: only a running sailbox can sleep`);
  });

  test("subscribers hear each change after the store has it, in order", async () => {
    const heard: string[] = [];
    boxes.lifecycle.onTransition(({ box, from, to }) => heard.push(`${from}→${to}:${store.getSailbox(box.id)!.status}`));
    const box = await create();
    await boxes.power.sleep(org, box.id);
    await boxes.power.wakeOnIngress(box.id);
    await boxes.power.pause(org, box.id);
    await boxes.power.resume(org, box.id);
    await boxes.endings.terminate(org, box.id);
    assert.deepEqual(heard, ["creating→running:running", "running→sleeping:sleeping", "sleeping→running:running", "running→paused:paused", "paused→running:running", "running→terminated:terminated"]);
  });
});

describe("steps past their deadline", () => {
  test("a stuck step before a change releases the box's lock with SAIL_RUNTIME_TIMEOUT, aborts its signal, and changes nothing", async () => {
    const box = await create();
    let stepSignal: AbortSignal | undefined;
    const stuck = boxes.lifecycle.transition(box.id, "sleeping", {
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
    assert.equal(boxes.views.get(org, box.id).status, "running", "a stuck step before the change leaves the status as it was");
    // the lock is free: terminate proceeds although the stuck step never settles
    assert.equal((await boxes.endings.terminate(org, box.id)).status, "terminated");
  });

  test("terminate preempts a freeze that is stuck: the sleep gives up at once and the box ends", async () => {
    const box = await create();
    runtime.freezeMode = "stuck";
    const sleeping = boxes.power.sleep(org, box.id).catch((err: unknown) => err);
    while (!runtime.calls.includes(`freeze ${box.id}`)) await new Promise((r) => setTimeout(r, 1));
    assert.equal((await boxes.endings.terminate(org, box.id)).status, "terminated");
    assert.equal(runtime.freezeSignal?.aborted, true);
    const error = await sleeping;
    assert.ok(error instanceof SailError);
    assert.match(error.message, /being terminated/);
    assert.equal(boxes.views.get(org, box.id).status, "terminated");
  });

  test("a freeze that fails: the box runs again (thawed, routes say running), and the error names it", async () => {
    const routes = new RecordingSubscriber();
    boxes.routes.subscribe(routes);
    const box = await create({ ingressPorts: [3000] });
    runtime.freezeMode = "refuse";
    const error = await boxes.power.sleep(org, box.id).catch((err: unknown) => err);
    assert.ok(error instanceof SailError);
    assert.equal(error.code, "SAIL_RUNTIME_FAILED");
    assert.match(error.message, new RegExp(`Sailbox ${box.id} could not sleep: .*still FREEZING.*It is running again`));
    assert.equal(boxes.views.get(org, box.id).status, "running");
    assert.equal(runtime.calls.at(-1), `thaw ${box.id}`);
    assert.deepEqual([...routes.http.values()], ["running"]);
    runtime.freezeMode = "ok";
    assert.equal((await boxes.power.sleep(org, box.id)).status, "sleeping", "a later sleep works");
  });

  test("a failed wake is logged with the box id", async () => {
    const logged: Array<[object, string]> = [];
    const log = { info() {}, warn() {}, error: (obj: object, msg: string) => logged.push([obj, msg]) };
    boxes = createBoxes(
      store,
      runtime,
      {
        defaults: { cpu: 1, memoryMiB: 512, diskMiB: 2048, pidsLimit: 64, hostCpus: 2, maxBoxes: 8 },
        tcp: { firstPort: 20000, lastPort: 20099, defaultLimitPerOrg: 32 },
        addresses: { domain: "sail.localhost", publicHttpsPort: 8443, publicHost: "localhost" },
        outbound: { enabled: true, privateAllowed: [], only: null, boxSubnet: "10.9.0.0/16" },
      },
      log,
    );
    const box = await create();
    await boxes.power.sleep(org, box.id);
    runtime.thaw = async () => {
      throw new Error("crun resume exited 1");
    };
    assert.equal(await boxes.power.wakeOnIngress(box.id), "sleeping");
    assert.deepEqual(logged.at(-1), [{ sailboxId: box.id, err: "Error: crun resume exited 1" }, "wake on ingress failed"]);
  });
});

describe("sleep, pause and wake", () => {
  test("sleep drops connections before it freezes; a wake thaws before routes say running", async () => {
    const routes = new RecordingSubscriber();
    boxes.routes.subscribe(routes);
    const box = await create({ ingressPorts: [3000] });
    await boxes.power.sleep(org, box.id);
    assert.deepEqual(routes.drops, [box.id]);
    assert.deepEqual([...routes.http.values()], ["sleeping"]);
    assert.equal(runtime.calls.at(-1), `freeze ${box.id}`);
    await boxes.power.wakeOnIngress(box.id);
    assert.equal(runtime.calls.at(-1), `thaw ${box.id}`);
    assert.deepEqual([...routes.http.values()], ["running"]);
    assert.equal(boxes.views.get(org, box.id).wakes, 1);
  });

  test("concurrent arrivals at a sleeping box share one resume", async () => {
    const box = await create();
    await boxes.power.sleep(org, box.id);
    runtime.thawDelayMs = 20;
    const statuses = await Promise.all(Array.from({ length: 10 }, () => boxes.power.wakeOnIngress(box.id)));
    assert.deepEqual(new Set(statuses), new Set(["running"]));
    assert.equal(runtime.calls.filter((c) => c === `thaw ${box.id}`).length, 1);
    assert.equal(boxes.views.get(org, box.id).wakes, 1);
  });

  test("traffic does not wake a paused box; an exec on it is a SailboxPausedError", async () => {
    const box = await create();
    await boxes.power.pause(org, box.id);
    assert.equal(await boxes.power.wakeOnIngress(box.id), "paused");
    assert.equal(await codeOf(boxes.execs.exec(org, box.id, { cmd: "true" })), "SAIL_SAILBOX_PAUSED");
    assert.ok(!runtime.calls.includes(`thaw ${box.id}`));
  });

  test("a terminal (PTY exec) wakes a sleeping box, refuses a paused one, and a bad size opens nothing", async () => {
    const box = await create();
    await boxes.power.sleep(org, box.id);
    await boxes.execs.execPty(org, box.id, { cols: 80, rows: 24 });
    assert.equal(boxes.views.get(org, box.id).status, "running");
    await boxes.power.pause(org, box.id);
    assert.equal(await codeOf(boxes.execs.execPty(org, box.id, { cols: 80, rows: 24 })), "SAIL_SAILBOX_PAUSED");
    await boxes.power.resume(org, box.id);
    const opened = runtime.calls.filter((c) => c === `execPty ${box.id}`).length;
    assert.equal(await codeOf(boxes.execs.execPty(org, box.id, { cols: 0, rows: 24 })), "SAIL_INVALID_ARGUMENT");
    assert.equal(await codeOf(boxes.execs.execPty(org, box.id, { cols: 80, rows: 24, cwd: "relative" })), "SAIL_EXEC_INVALID");
    assert.equal(runtime.calls.filter((c) => c === `execPty ${box.id}`).length, opened);
  });

  test("an exec wakes a sleeping box", async () => {
    const box = await create();
    await boxes.power.sleep(org, box.id);
    await boxes.execs.exec(org, box.id, { cmd: "true" });
    assert.equal(boxes.views.get(org, box.id).status, "running");
  });

  test("idle auto-sleep sleeps a box idle for its idleTimeout, not before", async () => {
    const box = await create({ idleTimeout: 5 });
    const created = Date.parse(box.createdAt);
    assert.deepEqual(await boxes.idle.sleepIdleBoxes(Date.now() + 1000), []);
    boxes.idle.noteActivity("gateway", { [box.id]: { open: 1, lastActiveMs: created } });
    assert.deepEqual(await boxes.idle.sleepIdleBoxes(Date.now() + 60_000), [], "an open connection is activity");
    boxes.idle.noteActivity("gateway", {});
    assert.deepEqual(await boxes.idle.sleepIdleBoxes(Date.now() + 60_000), [box.id]);
  });
});

describe("routes as versioned changes", () => {
  test("a new subscriber gets the whole table; then each change carries what one transition changed", async () => {
    const early = await create({ ingressPorts: [3000, { port: 5432, protocol: "tcp", allowPublic: true }] });
    const routes = new RecordingSubscriber();
    boxes.routes.subscribe(routes);
    assert.equal(routes.changes[0]!.reset, true);
    assert.deepEqual([...routes.http.keys()], [`3000-${early.id.slice(3)}`]);
    assert.deepEqual([...routes.tcp.values()], ["running"]);
    const later = await create({ ingressPorts: [8080] });
    const versions = routes.changes.map((c) => c.version);
    assert.deepEqual(
      versions,
      [...versions].sort((a, b) => a - b),
      "versions only grow",
    );
    assert.equal(routes.http.get(`8080-${later.id.slice(3)}`), "running");
    await boxes.endings.terminate(org, early.id);
    assert.deepEqual([...routes.http.keys()], [`8080-${later.id.slice(3)}`]);
    assert.equal(routes.tcp.size, 0);
  });
});

describe("domain rules", () => {
  test("a refused create changes nothing; a runtime that fails leaves no row behind", async () => {
    assert.equal(await codeOf(create({ ingressPorts: [10000] })), "SAIL_PORT_RESERVED");
    assert.equal(await codeOf(create({ ingressPorts: [{ port: 5432, protocol: "tcp" }] })), "SAIL_PORT_UNAUTHENTICATED");
    assert.equal(await codeOf(create({ ingressPorts: [{ port: 22, protocol: "tcp", cidrAllowlist: ["not-a-cidr"] }] })), "SAIL_CIDR_INVALID");
    runtime.failCreate = true;
    assert.equal(await codeOf(create({ name: "web" })), "SAIL_RUNTIME_FAILED");
    assert.deepEqual(store.listSailboxes({ orgId: org.id }), []);
    runtime.failCreate = false;
    assert.equal((await create({ name: "web" })).name, "web", "the name is free again");
  });

  test("a box's disk is the create's or the daemon's default, with its inodes shown; a bad size creates nothing", async () => {
    const given = await create({ diskMiB: 512 });
    assert.equal(runtime.specs.get(given.id)!.diskMiB, 512);
    assert.deepEqual([given.diskMiB, given.diskInodes], [512, 512 * 64]);
    const defaulted = await create({});
    assert.deepEqual([defaulted.diskMiB, defaulted.diskInodes], [2048, 2048 * 64]);
    for (const diskMiB of [63, 1048577, 100.5, "512", null, -1]) {
      const refused = await create({ diskMiB }).catch((e: SailError) => e);
      assert.ok(refused instanceof SailError && refused.code === "SAIL_RESOURCES_INVALID" && refused.details.field === "disk", `diskMiB ${JSON.stringify(diskMiB)}`);
    }
    assert.equal(store.listSailboxes({ orgId: org.id }).length, 2);
  });

  test("a background exec in a box whose disk is full is SAIL_DISK_FULL, not an internal error", async () => {
    const sb = await create({ diskMiB: 64 });
    runtime.diskFull = true;
    const refused = await boxes.execs.execBackground(org, sb.id, { cmd: "sleep 1", background: true }).catch((e: SailError) => e);
    assert.ok(refused instanceof SailError && refused.code === "SAIL_DISK_FULL" && refused.status === 507, String(refused));
    assert.equal(refused.details.sailboxId, sb.id);
  });

  test("an org holds at most its raw-TCP limit; terminating frees endpoints", async () => {
    const tcp = (from: number, n: number) => Array.from({ length: n }, (_, i) => ({ port: from + i, protocol: "tcp" as const }));
    const first = await create({ ingressPorts: tcp(40000, 30) });
    await assert.rejects(
      create({ ingressPorts: tcp(41000, 3) }),
      (e: SailError) => e.code === "SAIL_TCP_LIMIT_EXCEEDED" && e.details.limit === 32 && e.details.inUse === 30 && e.details.requested === 3,
    );
    store.setOrgTcpLimit(org.id, 40);
    await create({ ingressPorts: tcp(41000, 3) });
    store.setOrgTcpLimit(org.id, null);
    await boxes.endings.terminate(org, first.id);
    await create({ ingressPorts: tcp(42000, 29) });
  });

  test("an org's caps on live boxes, cores and memory refuse the box past them, count sleeping and paused boxes, and free on terminate", async () => {
    const tenant = store.createOrg("tenant");
    const tenantApp = store.mintApp(tenant.id, "t").id;
    const make = (cpu: number, memoryMiB: number) => boxes.creator.create(tenant, { appId: tenantApp, image: { name: "debian" }, cpu, memoryMiB });
    assert.equal(await codeOf(Promise.resolve().then(() => boxes.orgLimits.set(tenant, "tenant", { sailboxes: 1 }))), "SAIL_FORBIDDEN", "a tenant cannot set its own limits");
    boxes.orgLimits.set(org, "tenant", { sailboxes: 2, cpu: 1.5, memoryMiB: 700 });
    const a = await make(0.5, 192);
    await boxes.power.sleep(tenant, a.id);
    await assert.rejects(
      make(1.5, 128),
      (e: SailError) => e.code === "SAIL_ORG_LIMIT_EXCEEDED" && e.details.limit === "cpu" && /may use 1.5 cores in live sailboxes; they use 0.5 and this one asks for 1.5/.test(e.message),
    );
    await assert.rejects(make(0.5, 512), (e: SailError) => e.code === "SAIL_ORG_LIMIT_EXCEEDED" && e.details.limit === "memory" && e.details.inUse === 192 && e.details.requested === 512);
    const b = await make(1, 444);
    await boxes.power.pause(tenant, b.id);
    await assert.rejects(make(0.25, 64), (e: SailError) => e.code === "SAIL_ORG_LIMIT_EXCEEDED" && e.details.limit === "sailboxes" && e.details.max === 2);
    assert.equal(store.listSailboxes({ orgId: tenant.id, liveOnly: true }).length, 2, "refusals made nothing");
    assert.deepEqual(boxes.orgLimits.get(tenant, "tenant").usage, { sailboxes: 2, cpu: 1.5, memoryMiB: 636, tcpEndpoints: 0 });
    await boxes.endings.terminate(tenant, b.id);
    await make(1, 444);
    boxes.orgLimits.set(org, "tenant", { sailboxes: null, cpu: null, memoryMiB: null });
    await make(1, 1024);
    assert.equal(boxes.orgLimits.get(org, "default").limits.sailboxes, null, "other orgs are untouched");
  });

  test("org limits are checked as numbers before anything changes", () => {
    for (const bad of [{ sailboxes: -1 }, { sailboxes: 1.5 }, { cpu: "2" }, { memoryMiB: Infinity }, { disk: 1 }, null]) {
      const code = (() => {
        try {
          boxes.orgLimits.set(org, "default", bad);
          return "changed";
        } catch (err) {
          return (err as SailError).code;
        }
      })();
      assert.match(code, /^SAIL_(INVALID_ARGUMENT|UNKNOWN_FIELD)$/, JSON.stringify(bad));
    }
    assert.deepEqual(boxes.orgLimits.get(org, "default").limits, { sailboxes: null, cpu: null, memoryMiB: null, tcpEndpoints: null });
    assert.throws(
      () => boxes.orgLimits.get(org, "nobody"),
      (e: SailError) => e.code === "SAIL_ORG_NOT_FOUND",
    );
  });

  test("ssh publishes port 22 as raw TCP unless the request already does", async () => {
    const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBd0fiDtYyCBqN3qqwJ0pXoDAtXJfjxd9FbZvUwm7n3N";
    const box = await create({ ssh: { publicKey: key } });
    assert.deepEqual(
      box.listeners.map((l) => [l.port, l.protocol]),
      [[22, "tcp"]],
    );
    assert.ok(runtime.calls.includes(`exec ${box.id}`), "sshd was set up in the box");
    const restricted = await create({ ssh: { publicKey: key }, ingressPorts: [{ port: 22, protocol: "tcp", cidrAllowlist: ["203.0.113.0/24"] }] });
    assert.deepEqual(
      boxes.listeners.list(org, restricted.id).map((l) => l.protocol === "tcp" && l.cidrAllowlist),
      [["203.0.113.0/24"]],
    );
  });

  test("a box's endpoints are known at create, and gone once it is terminated", async () => {
    const box = await create({ ingressPorts: [3000, { port: 7070, protocol: "tcp" }] });
    assert.deepEqual(
      box.listeners.map((l) => (l.protocol === "http" ? l.endpoint.url : `${l.endpoint.host}:${l.endpoint.port}`)),
      [`https://3000-${box.id.slice(3)}.sail.localhost:8443`, "localhost:20000"],
    );
    const ended = await boxes.endings.terminate(org, box.id);
    assert.deepEqual(ended.listeners, []);
    assert.deepEqual(boxes.listeners.list(org, box.id), []);
  });

  test("another org's box answers exactly like a missing one", async () => {
    const box = await create();
    const other = store.createOrg("acme");
    assert.equal(await codeOf(Promise.resolve().then(() => boxes.views.get(other, box.id))), "SAIL_SAILBOX_NOT_FOUND");
    assert.equal(await codeOf(boxes.endings.terminate(other, box.id)), "SAIL_SAILBOX_NOT_FOUND");
    assert.equal(await codeOf(boxes.power.sleep(other, box.id)), "SAIL_SAILBOX_NOT_FOUND");
  });

  test("terminate is idempotent; a failed box stays failed and its leftovers go", async () => {
    const box = await create();
    await boxes.endings.terminate(org, box.id);
    assert.equal((await boxes.endings.terminate(org, box.id)).status, "terminated");
    const lost = await create();
    runtime.boxes.delete(lost.id); // its container vanished while the daemon was down
    assert.deepEqual(await boxes.endings.reconcile(), { kept: 0, failed: 1 });
    const failed = await boxes.endings.terminate(org, lost.id);
    assert.equal(failed.status, "failed");
    assert.match(failed.failureReason!, /container was missing/);
  });
});

describe("outbound policy", () => {
  test("a create hands the box's rules to the runtime with the box and tells the resolver its name rules; a change and terminate tell it too", async () => {
    const events: string[] = [];
    boxes.outbound.subscribe({
      added: (id, host, guest, names) => events.push(`added ${id} ${host} ${guest} ${JSON.stringify(names)}`),
      changed: (id, names) => events.push(`changed ${id} ${JSON.stringify(names)}`),
      removed: (id) => events.push(`removed ${id}`),
    });
    const box = await create({ allowOut: ["198.51.100.0/24", "*.example.com"] });
    assert.deepEqual(box.network, { outbound: "allowlist", allowOut: ["198.51.100.0/24", "*.example.com"], denyOut: [] });
    assert.deepEqual(runtime.outbound.get(box.id)?.rules, { mode: "allow", cidrs: ["198.51.100.0/24"] });
    assert.deepEqual(events, [`added ${box.id} 10.9.0.1 10.9.0.2 {"mode":"allowlist","domains":["*.example.com"]}`]);
    await boxes.outbound.set(org, box.id, { blockNetwork: true });
    assert.equal(events[1], `changed ${box.id} {"mode":"refuse"}`);
    await boxes.endings.terminate(org, box.id);
    assert.equal(events[2], `removed ${box.id}`);
    assert.equal(boxes.outbound.decide(box.id, "www.example.com"), "refuse", "a gone box resolves nothing");
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
    const box = await create({ allowOut: ["*.example.com"] });
    await boxes.outbound.set(org, box.id, { allowOut: ["pypi.org"] });
    const before = runtime.allowed.length;
    await boxes.outbound.answered(box.id, "a.example.com", ["198.51.100.9"], 60);
    assert.equal(runtime.allowed.length, before, "no firewall change for a name no longer allowed");
    await boxes.outbound.answered(box.id, "pypi.org", ["198.51.100.10"], 60);
    assert.deepEqual(runtime.allowed.at(-1), [box.id, { add: ["198.51.100.10"], renew: [] }, 60]);
  });

  test("the resolver's decisions follow the policy: open forwards, blocked refuses, lists allow or deny names", async () => {
    const open = await create({});
    const blocked = await create({ blockNetwork: true });
    const allow = await create({ allowOut: ["*.example.com", "pypi.org"] });
    const deny = await create({ denyOut: ["evil.example"] });
    assert.equal(boxes.outbound.decide(open.id, "anything.test"), "forward");
    assert.equal(boxes.outbound.decide(blocked.id, "pypi.org"), "refuse");
    assert.equal(boxes.outbound.decide(allow.id, "files.example.com"), "forward-and-allow");
    assert.equal(boxes.outbound.decide(allow.id, "PyPI.org."), "forward-and-allow");
    assert.equal(boxes.outbound.decide(allow.id, "example.com"), "nxdomain");
    assert.equal(boxes.outbound.decide(deny.id, "evil.example"), "nxdomain");
    assert.equal(boxes.outbound.decide(deny.id, "good.example"), "forward");
  });

  test("what a box's lookups may open is bounded: past its number of addresses or its rate a lookup fails and opens nothing; a renewal past the rate waits", async (t) => {
    t.mock.timers.enable({ apis: ["Date"], now: 1_000_000 });
    // 3 addresses at a time, 5 changes at once (and next to no refill)
    const limited = createBoxes(store, runtime, { ...SETTINGS, outbound: { ...SETTINGS.outbound, resolvedLimits: { addressesPerBox: 3, perSecond: 0.001, burst: 5 } } }, silent);
    const box = await limited.creator.create(org, { appId, image: { name: "debian" }, allowOut: ["*.example.com"] });
    const changes = () => runtime.allowed.filter(([id]) => id === box.id).map(([, a]) => [...a.add, ...a.renew.map((r) => `renew ${r}`)]);
    await limited.outbound.answered(box.id, "a.example.com", ["198.51.100.1", "198.51.100.2"], 60);
    await limited.outbound.answered(box.id, "b.example.com", ["198.51.100.3"], 60);
    await assert.rejects(limited.outbound.answered(box.id, "c.example.com", ["198.51.100.4"], 60), /has 3 addresses open by DNS, at most 3: c\.example\.com is not opened/);
    t.mock.timers.tick(61_000); // the three expired: their places are free again
    await limited.outbound.answered(box.id, "c.example.com", ["198.51.100.4"], 60);
    await limited.outbound.answered(box.id, "d.example.com", ["198.51.100.5"], 60); // the 5th change: the burst is spent
    await assert.rejects(limited.outbound.answered(box.id, "e.example.com", ["198.51.100.6"], 60), /opens addresses by DNS faster than 0\.001 a second/);
    t.mock.timers.tick(40_000); // 198.51.100.4 has less than half its time left: a renewal, but past the rate
    await limited.outbound.answered(box.id, "c.example.com", ["198.51.100.4"], 60);
    assert.deepEqual(changes(), [["198.51.100.1", "198.51.100.2"], ["198.51.100.3"], ["198.51.100.4"], ["198.51.100.5"]], "no change for a refused lookup nor a renewal past the rate");
  });

  test("an answer to an allowed name opens its addresses for its TTL, at least 30 s; a change keeps those of names still allowed", async () => {
    const box = await create({ allowOut: ["*.example.com", "pypi.org"] });
    await boxes.outbound.answered(box.id, "a.example.com", ["198.51.100.7"], 0);
    await boxes.outbound.answered(box.id, "pypi.org", ["203.0.113.9"], 300);
    // asked again: still allowed for more than half the time, so the firewall is not touched
    await boxes.outbound.answered(box.id, "pypi.org", ["203.0.113.9"], 300);
    // a longer TTL than it has left by half: renewed
    await boxes.outbound.answered(box.id, "b.example.com", ["198.51.100.7"], 3600);
    assert.deepEqual(runtime.allowed, [
      [box.id, { add: ["198.51.100.7"], renew: [] }, 30],
      [box.id, { add: ["203.0.113.9"], renew: [] }, 300],
      [box.id, { add: [], renew: ["198.51.100.7"] }, 3600],
    ]);
    runtime.open.set(box.id, ["198.51.100.7", "203.0.113.9", "192.0.2.1"]);
    const changed = await boxes.outbound.set(org, box.id, { allowOut: ["*.example.com"] });
    assert.equal(changed.network.outbound, "allowlist");
    const kept = runtime.outbound.get(box.id)!.resolved.map((r) => r.address);
    assert.deepEqual(kept, ["198.51.100.7"], "pypi.org's address is no longer allowed");
    assert.equal(store.getSailbox(box.id)!.networkPolicy, JSON.stringify(changed.network));
  });

  test("a change cuts exactly the open connections the new policy does not allow", async () => {
    const box = await create({});
    runtime.open.set(box.id, ["198.51.100.7", "203.0.113.9"]);
    let cut: string[] = [];
    const cutOutbound = runtime.cutOutbound.bind(runtime);
    runtime.cutOutbound = async (id, keep) => (cut = await cutOutbound(id, keep));
    await boxes.outbound.set(org, box.id, { denyOut: ["203.0.113.0/24"] });
    assert.deepEqual(cut, ["203.0.113.9"]);
    await boxes.outbound.set(org, box.id, { blockNetwork: true });
    assert.deepEqual(cut, ["198.51.100.7", "203.0.113.9"]);
    await boxes.outbound.set(org, box.id, {});
    assert.deepEqual(cut, []);
  });

  test("entries boxes can never reach here are refused, and a refused change changes nothing", async () => {
    assert.equal(await codeOf(create({ allowOut: ["192.168.0.0/16"] })), "SAIL_NETWORK_ENTRY_REFUSED");
    assert.equal(await codeOf(create({ allowOut: ["10.9.1.0/24"] })), "SAIL_NETWORK_ENTRY_REFUSED", "other boxes' subnet");
    assert.equal(await codeOf(create({ allowOut: ["10.50.1.0/24"] })), "resolved", "a private range the operator opened");
    assert.equal(await codeOf(create({ allowOut: ["0.0.0.0/0"] })), "resolved", "partly reachable is fine");
    const box = await create({ allowOut: ["198.51.100.0/24"] });
    const calls = runtime.calls.length;
    assert.equal(await codeOf(boxes.outbound.set(org, box.id, { allowOut: ["127.0.0.1"] })), "SAIL_NETWORK_ENTRY_REFUSED");
    assert.equal(await codeOf(boxes.outbound.set(org, box.id, { allowOut: ["x"], denyOut: ["y.com"] })), "SAIL_NETWORK_ENTRY_INVALID");
    assert.equal(runtime.calls.length, calls, "the runtime was not asked");
    assert.deepEqual(boxes.views.get(org, box.id).network.allowOut, ["198.51.100.0/24"]);
    await boxes.endings.terminate(org, box.id);
    assert.equal(await codeOf(boxes.outbound.set(org, box.id, {})), "SAIL_SAILBOX_NOT_RUNNING");
  });

  test("an entry on a network the host is directly connected to is refused while the host is on it, and a change cuts connections into it", async () => {
    runtime.connected = [parseIpv4Cidr("192.0.2.0/24")!.range];
    await assert.rejects(create({ allowOut: ["192.0.2.7"] }), (e: SailError) => e.code === "SAIL_NETWORK_ENTRY_REFUSED" && /directly connected.*--outbound-private 192\.0\.2\.7\/32/.test(e.message));
    assert.equal(await codeOf(create({ allowOut: ["192.0.2.0/25"] })), "SAIL_NETWORK_ENTRY_REFUSED");
    assert.equal(await codeOf(create({ allowOut: ["192.0.0.0/16"] })), "resolved", "partly reachable is fine");
    const box = await create({});
    runtime.open.set(box.id, ["192.0.2.7", "198.51.100.7"]);
    let cut: string[] = [];
    const cutOutbound = runtime.cutOutbound.bind(runtime);
    runtime.cutOutbound = async (id, keep) => (cut = await cutOutbound(id, keep));
    await boxes.outbound.set(org, box.id, {});
    assert.deepEqual(cut, ["192.0.2.7"], "an open policy keeps nothing on the host's LAN");
    runtime.connected = []; // the host left that network
    assert.equal(await codeOf(create({ allowOut: ["192.0.2.7"] })), "resolved");
  });
});

/** A gate a test opens when it wants the runtime to go on. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

describe("creates by Idempotency-Key, and creates nobody waits for", () => {
  const request = (extra: object = {}) => ({ appId, image: { name: "debian" }, ...extra });

  test("a retry with the same key and body gets the same box (in any key order); another body with the key is a 422, and the key is per org", async () => {
    const first = await boxes.creates.begin(org, request({ name: "web", cpu: 1 }), "key-1");
    const box = await first.result;
    const again = await boxes.creates.begin(org, { cpu: 1, name: "web", image: { name: "debian" }, appId }, "key-1");
    assert.equal(again.replayed, true);
    assert.equal((await again.result).id, box.id);
    await assert.rejects(boxes.creates.begin(org, request({ name: "other" }), "key-1"), (e: SailError) => e.code === "SAIL_IDEMPOTENCY_KEY_REUSED" && e.status === 422);
    assert.equal(store.listSailboxes({ orgId: org.id }).length, 1);
    const tenant = store.createOrg("acme");
    const theirs = await boxes.creates.begin(tenant, { appId: store.mintApp(tenant.id, "demo").id, image: { name: "debian" } }, "key-1");
    assert.notEqual((await theirs.result).id, box.id);
  });

  test("a bad key is refused with SAIL_IDEMPOTENCY_KEY_INVALID and makes nothing", async () => {
    await assert.rejects(boxes.creates.begin(org, request(), "has a space"), (e: SailError) => e.code === "SAIL_IDEMPOTENCY_KEY_INVALID");
    assert.deepEqual(store.listSailboxes({ orgId: org.id }), []);
  });

  test("a retry while the first is still building joins it: it hears the build's step at once, and both get one box", async () => {
    const build = gate();
    runtime.buildGate = build.promise;
    const body = request({ image: { name: "debian", aptPackages: ["sl"] } });
    const first = await boxes.creates.begin(org, body, "key-2");
    const retry = await boxes.creates.begin(org, body, "key-2");
    const heard: string[] = [];
    retry.listen((p) => heard.push(`${p.phase} ${p.image} ${p.step}`));
    assert.deepEqual(heard, ["image debian+sl retrieving"]);
    first.leave(); // the first caller's connection dropped: the retry still waits, so the create goes on
    build.open();
    const [a, b] = await Promise.all([first.result, retry.result]);
    assert.equal(a.id, b.id);
    assert.equal(runtime.calls.filter((c) => c.startsWith("create ")).length, 1);
  });

  test("a create whose every caller left during its build makes no box; the build itself goes on", async () => {
    const build = gate();
    runtime.buildGate = build.promise;
    const ticket = await boxes.creates.begin(org, request({ image: { name: "debian", aptPackages: ["sl"] } }));
    ticket.leave();
    build.open();
    await assert.rejects(ticket.result, CreateAbandonedError);
    assert.deepEqual(store.listSailboxes({ orgId: org.id }), []);
    assert.deepEqual(runtime.calls, ["preparePackageImage amd64 sl"]);
  });

  test("a caller that leaves while its box starts gets it removed again: no row, the runtime's box destroyed", async () => {
    const starting = gate();
    runtime.createGate = starting.promise;
    const ticket = await boxes.creates.begin(org, request({ name: "gone" }), "key-3");
    let id = "";
    ticket.listen((p) => (id = p.sailboxId ?? id));
    await new Promise((resolve) => setImmediate(resolve));
    assert.match(id, /^sb-/);
    ticket.leave();
    starting.open();
    await assert.rejects(ticket.result, CreateAbandonedError);
    assert.deepEqual(store.listSailboxes({ orgId: org.id }), []);
    assert.ok(runtime.calls.includes(`destroy ${id}`));
    assert.equal(runtime.boxes.size, 0);
    // the key was not spent on it: a retry makes the box, named as asked
    const retry = await boxes.creates.begin(org, request({ name: "gone" }), "key-3");
    assert.equal((await retry.result).name, "gone");
  });

  test("a key is kept for a bounded time: after it, the same key makes a new box", async () => {
    const shortMemory = new Creates(store, boxes.creator, (row) => boxes.views.describe(row), silent, 5);
    const first = await (await shortMemory.begin(org, request(), "key-4")).result;
    await new Promise((resolve) => setTimeout(resolve, 10));
    const later = await (await shortMemory.begin(org, request(), "key-4")).result;
    assert.notEqual(later.id, first.id);
  });
});
