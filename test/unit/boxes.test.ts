/**
 * The boxes room in process, in milliseconds: the real store (SQLite in memory) and a fake
 * runtime that records what it was asked. The end-to-end suite runs the same rules on real
 * boxes; these tests pin the lifecycle table and the domain rules down one by one.
 */
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { beforeEach, describe, test } from "node:test";
import { canTransition, SAILBOX_TRANSITIONS, SailError, type SailboxStatus } from "@sail/protocol";
import { createBoxes, type Boxes } from "../../packages/server/src/boxes/boxes.js";
import type { RouteChange, RouteSubscriber } from "../../packages/server/src/boxes/routes.js";
import { DiskFullError, type BoxNetwork, type BoxSpec, type CreatedBox, type OutboundRules, type Runtime, type RuntimeState } from "../../packages/server/src/runtime/runtime.js";
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

  async prepareImage(arch: string) {
    this.calls.push(`prepareImage ${arch}`);
  }
  async preparePackageImage(arch: string, packages: readonly string[]) {
    this.calls.push(`preparePackageImage ${arch} ${packages.join(" ")}`);
  }
  async start() {}
  async shutdown() {}
  async create(spec: BoxSpec): Promise<CreatedBox> {
    this.calls.push(`create ${spec.id}`);
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
  async freeze(id: string) {
    this.calls.push(`freeze ${id}`);
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

beforeEach(() => {
  store = new Store(":memory:");
  runtime = new FakeRuntime();
  boxes = createBoxes(
    store,
    runtime,
    {
      defaults: { cpu: 1, memoryMiB: 512, diskMiB: 2048, pidsLimit: 64, hostCpus: 2, maxBoxes: 8 },
      tcp: { firstPort: 20000, lastPort: 20099, defaultLimitPerOrg: 32 },
      addresses: { domain: "sail.localhost", publicHttpsPort: 8443, publicHost: "localhost" },
      outbound: { enabled: true, privateAllowed: ["10.50.0.0/16"], only: null, boxSubnet: "10.9.0.0/16" },
    },
    silent,
  );
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

  test("each start gives a box's routes a new generation, so no stale upstream socket is reused", async () => {
    const box = await create({ ingressPorts: [3000] });
    const generations: string[] = [];
    boxes.routes.subscribe({ apply: (c) => c.http.set.forEach(([, r]) => generations.push(r.generation)), dropConnections() {}, async synced() {} });
    await boxes.power.sleep(org, box.id);
    await boxes.power.wakeOnIngress(box.id);
    assert.equal(generations.length, 3);
    assert.equal(generations[0], generations[1], "sleeping keeps the generation");
    assert.notEqual(generations[1], generations[2], "the wake starts a new one");
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
  test("a create hands the box's rules to the runtime with the box and tells the resolver; terminate tells it the box is gone", async () => {
    const events: string[] = [];
    boxes.outbound.subscribe({ added: (id, host, guest) => events.push(`added ${id} ${host} ${guest}`), removed: (id) => events.push(`removed ${id}`) });
    const box = await create({ allowOut: ["198.51.100.0/24", "*.example.com"] });
    assert.deepEqual(box.network, { outbound: "allowlist", allowOut: ["198.51.100.0/24", "*.example.com"], denyOut: [] });
    assert.deepEqual(runtime.outbound.get(box.id)?.rules, { mode: "allow", cidrs: ["198.51.100.0/24"] });
    assert.deepEqual(events, [`added ${box.id} 10.9.0.1 10.9.0.2`]);
    await boxes.endings.terminate(org, box.id);
    assert.equal(events[1], `removed ${box.id}`);
    assert.equal(boxes.outbound.decide(box.id, "www.example.com"), "refuse", "a gone box resolves nothing");
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
});
