/**
 * The control plane in process, in milliseconds: `createBoxes` over a real SqliteStore (a temp
 * file) with a real NodeAgent (its own node.db) on a fake runtime attached as its node, as the
 * daemon wires them in one process, so every call crosses the NodeApi as it is. The node's own
 * side (its lifecycle table, deadlines, power, wake, idle sleep, routes, outbound enforcement
 * and DNS bounds) is pinned down in node-agent.test.ts; these tests pin down what the control
 * plane decides and keeps: create rules and refusals, names, org limits and raw-TCP endpoints,
 * outbound policies, creates by Idempotency-Key, terminate and reconcile against the node, power
 * as relayed to the node and recorded from its answer, leases, and the node's events in the store.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import { canTransition, parseIpv4Cidr, SAILBOX_TRANSITIONS, SailError, type SailboxInfo, type SailboxStatus } from "@sail/protocol";
import { createBoxes, type Boxes, type BoxesSettings } from "../../packages/server/src/boxes/boxes.js";
import { CreateAbandonedError } from "../../packages/server/src/boxes/create.js";
import { IDEMPOTENCY_KEY_TTL_MS } from "../../packages/server/src/boxes/creates.js";
import { LEASE_TTL_MS, LEASE_WAIT_MS } from "../../packages/server/src/boxes/lifecycle.js";
import type { Logger } from "../../packages/server/src/boxes/logger.js";
import type { NodeBoxSpec, NodeEvent, NodeEventSink } from "../../packages/server/src/node-wire/node-api.js";
import { NodeAgent, type NodeAgentSettings } from "../../packages/server/src/node/node-agent.js";
import { NodeStore } from "../../packages/server/src/node/node-store.js";
import { SqliteStore } from "../../packages/server/src/store/sqlite-store.js";
import { newId, type NewSailbox, type OrgRow } from "../../packages/server/src/store/store.js";
import { FakeRuntime, INODES_PER_MIB } from "./fake-runtime.js";

const STATUSES = Object.keys(SAILBOX_TRANSITIONS) as SailboxStatus[];

/**
 * The node's events on their way to the control plane (in one process, a call to `boxes.nodes`).
 * `away`: refused, as by a control plane that is down or not up yet; the node keeps them and
 * tries again.
 */
class EventLink implements NodeEventSink {
  away = false;
  constructor(private readonly target: () => NodeEventSink) {}
  async deliver(events: NodeEvent[]): Promise<void> {
    if (this.away) throw new Error("connect ECONNREFUSED 127.0.0.1:7070");
    await this.target().deliver(events);
  }
}

const silent: Logger = { info() {}, warn() {}, error() {} };

/** The control plane's defaults differ from the node's on purpose: a create always sends its own. */
const SETTINGS: BoxesSettings = {
  defaults: { cpu: 1, memoryMiB: 512, diskMiB: 2048, hostCpus: 2 },
  tcp: { firstPort: 20000, lastPort: 20099, defaultLimitPerOrg: 32 },
  addresses: { domain: "sail.localhost", publicHttpsPort: 8443, publicHost: "localhost" },
  dialNode: (url) => dialled(url),
  nodeLease: { leaseMs: 60_000, graceMs: 0, sweepMs: 60_000 },
};
/** Nodes "on the network", by URL: what the control plane dials (tests attach a node agent at a URL). */
const remoteNodes = new Map<string, NodeAgent>();
function dialled(url: string): NodeAgent {
  const node = remoteNodes.get(url);
  if (!node) throw new Error(`no node at ${url}`);
  return node;
}
const NODE_SETTINGS: NodeAgentSettings = {
  pidsLimit: 64,
  diskMiB: 1024,
  hostCpus: 2,
  domain: "sail.localhost",
  outbound: { enabled: true, privateAllowed: ["10.50.0.0/16"], only: null, boxSubnet: "10.9.0.0/16" },
  events: { firstRetryMs: 1, maxRetryMs: 4 },
};

let dir: string;
let store: SqliteStore;
let nodeStore: NodeStore;
let runtime: FakeRuntime;
let link: EventLink;
let boxes: Boxes;
let agent: NodeAgent;
const agents: NodeAgent[] = [];
const stores: SqliteStore[] = [];
let org: OrgRow;
let appId: string;
/** Rows the control plane asked the store to insert (a create that got that far). */
let inserts: number;

/** A node agent on this test's node.db, started (it reconciles node.db with the runtime) and attached, as the daemon does. */
async function startNode(): Promise<NodeAgent> {
  const made = new NodeAgent(nodeStore, runtime, NODE_SETTINGS, link, silent);
  agents.push(made);
  await made.start();
  await boxes.nodes.attachLocal(made, await made.info());
  return made;
}

/** The node agent stops and starts again on the same node.db and host. */
async function restartNode(): Promise<NodeAgent> {
  await agent.close();
  agent = await startNode();
  return agent;
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "sail-boxes-"));
  mkdirSync(join(dir, "logs"));
  store = new SqliteStore(join(dir, "sail.db"));
  stores.push(store);
  inserts = 0;
  const insert = store.insertSailbox.bind(store);
  store.insertSailbox = (...args) => (inserts++, insert(...args));
  nodeStore = new NodeStore(join(dir, "node.db"));
  runtime = new FakeRuntime(join(dir, "logs"));
  boxes = createBoxes(store, SETTINGS, silent);
  link = new EventLink(() => boxes.nodes);
  agent = await startNode();
  org = await store.ensureOrg("default", { operator: true });
  appId = (await store.mintApp(org.id, "demo")).id;
});
afterEach(async () => {
  for (const made of agents.splice(0)) await made.close();
  for (const opened of stores.splice(0)) await opened.close();
  nodeStore.close();
  rmSync(dir, { recursive: true, force: true });
});

const create = (extra: object = {}) => boxes.creator.create(org, { appId, image: { name: "debian" }, ...extra });
const statusOf = async (id: string) => (await store.getSailbox(id))?.status;
const creates = () => runtime.calls.filter((c) => c.startsWith("create ")).length;
const codeOf = async (work: Promise<unknown>) => {
  try {
    await work;
    return "resolved";
  } catch (err) {
    return (err as SailError).code;
  }
};
/** One turn of the event loop: what resolved promises and synchronous SQLite have to do is done. */
const turn = () => new Promise((resolve) => setImmediate(resolve));
/** Polls until `probe` holds; the attempts only keep a broken build from hanging the run. */
async function eventually(what: string, probe: () => boolean | Promise<boolean>): Promise<void> {
  for (let attempt = 0; attempt < 2000; attempt++) {
    if (await probe()) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`never happened: ${what}`);
}

/** Until the clock passed the millisecond the node made the box in: `adopt` leaves boxes made since it began alone (creates in flight). */
async function madeBefore(id: string): Promise<void> {
  const madeAt = Date.parse(nodeStore.getBox(id)!.createdAt);
  await eventually("a millisecond passed", () => Date.now() > madeAt);
}

/** A gate a test opens when it wants the runtime to go on. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** A freeze that waits for the test: the node's sleep is in progress meanwhile. */
function holdFreezes(): () => void {
  const held = gate();
  const freeze = runtime.freeze.bind(runtime);
  runtime.freeze = async (id, signal) => {
    runtime.calls.push(`freeze held ${id}`);
    await held.promise;
    return freeze(id, signal);
  };
  return held.open;
}

/** A row as a create inserts it (`creating`), straight into the store. */
function row(fields: Partial<NewSailbox> = {}): NewSailbox {
  return { id: newId("sb-"), appId, orgId: org.id, name: null, imageName: "debian", imageArch: "amd64", imagePackages: "", cpu: 1, memoryMiB: 512, diskMiB: 1024, nodeId: null, ...fields };
}

/** The spec of a box the node is asked to run, without the control plane's knowledge. */
function nodeSpec(extra: Partial<NodeBoxSpec> = {}): NodeBoxSpec {
  const id = newId("sb-");
  return { id, hostname: id, image: { arch: "amd64", aptPackages: [] }, cpu: 1, memoryMiB: 512, idleTimeout: null, network: { outbound: "open", allowOut: [], denyOut: [] }, listeners: [], ...extra };
}

describe("the control plane's lifecycle table", () => {
  test("every status the control plane writes is allowed exactly when the table says so", async () => {
    for (const from of STATUSES) {
      for (const to of STATUSES) {
        const box = await store.insertSailbox(row(), { tcpEndpointsDefault: 32 });
        if (from !== "creating") await store.setStatus(box.id, from);
        const outcome = await codeOf(boxes.lifecycle.setStatus(box.id, to));
        const expected = from === to || canTransition(from, to) ? "resolved" : "SAIL_SAILBOX_NOT_RUNNING";
        assert.equal(outcome, expected, `${from} → ${to}`);
        assert.equal(await statusOf(box.id), expected === "resolved" ? to : from, `${from} → ${to} left the store as the table says`);
      }
    }
  });

  test("subscribers hear each change after the store has it, in order: the API's and the node's own", async () => {
    const heard: string[] = [];
    const pending: Array<Promise<void>> = [];
    boxes.lifecycle.onTransition(({ box, from, to }) => pending.push(statusOf(box.id).then((now) => void heard.push(`${from}→${to}:${now}`))));
    const box = await create();
    await boxes.power.sleep(org, box.id);
    await agent.ingress.wakeOnIngress(box.id); // the node alone: the store hears it as an event
    await agent.eventsDelivered();
    await boxes.power.pause(org, box.id);
    await boxes.power.resume(org, box.id);
    await boxes.endings.terminate(org, box.id);
    await agent.eventsDelivered();
    await Promise.all(pending);
    assert.deepEqual(heard, ["creating→running:running", "running→sleeping:sleeping", "sleeping→running:running", "running→paused:paused", "paused→running:running", "running→terminated:terminated"]);
  });
});

describe("creates: every rule before anything exists", () => {
  test("a refused create makes nothing, in the store or on the node; a node that fails the start leaves no row and the name free", async () => {
    const refusals: Array<[object, string]> = [
      [{ ingressPorts: [10000] }, "SAIL_PORT_RESERVED"],
      [{ ingressPorts: [{ port: 5432, protocol: "tcp" }] }, "SAIL_PORT_UNAUTHENTICATED"],
      [{ ingressPorts: [{ port: 22, protocol: "tcp", cidrAllowlist: ["not-a-cidr"] }] }, "SAIL_CIDR_INVALID"],
      [{ appId: "app-nothere" }, "SAIL_APP_NOT_FOUND"],
      [{ image: { name: "alpine" } }, "SAIL_IMAGE_UNKNOWN"],
      [{ name: "Not A Name" }, "SAIL_NAME_INVALID"],
      [{ cpu: 3 }, "SAIL_RESOURCES_INVALID"],
      [{ idleTimeout: 0 }, "SAIL_INVALID_ARGUMENT"],
      [{ ssh: { publicKey: "ssh-ed25519 AAAA'; rm -rf / #" } }, "SAIL_SSH_KEY_INVALID"],
    ];
    for (const [extra, code] of refusals) assert.equal(await codeOf(create(extra)), code, JSON.stringify(extra));
    assert.deepEqual(await store.listSailboxes({ orgId: org.id }), []);
    assert.deepEqual(runtime.calls, [], "the node was asked nothing");
    assert.equal(inserts, 0, "no row was inserted, not even for a moment");
    runtime.failCreate = true;
    const failed = await create({ name: "web" }).catch((e: unknown) => e);
    assert.ok(failed instanceof SailError && failed.code === "SAIL_RUNTIME_FAILED", String(failed));
    assert.match(failed.message, /Could not start sailbox web: .*crun run exited 1/);
    assert.deepEqual(await store.listSailboxes({ orgId: org.id }), []);
    assert.deepEqual(await agent.boxes(), [], "the node kept nothing of it either");
    runtime.failCreate = false;
    assert.equal((await create({ name: "web" })).name, "web", "the name is free again");
  });

  test("a start the node failed says so once: the box and the runtime's reason", async () => {
    runtime.failCreate = true;
    await assert.rejects(create({ name: "web" }), (e: SailError) => e.code === "SAIL_RUNTIME_FAILED" && e.message === "Could not start sailbox web: crun run exited 1");
  });

  test("with no node attached a create is SAIL_NODE_UNAVAILABLE and makes nothing", async () => {
    const alone = createBoxes(store, SETTINGS, silent);
    assert.equal(await codeOf(alone.creator.create(org, { appId, image: { name: "debian" } })), "SAIL_NODE_UNAVAILABLE");
    assert.deepEqual(await store.listSailboxes({ orgId: org.id }), []);
  });

  test("a name belongs to one live box of an app: taken is SAIL_NAME_TAKEN before the node is asked; another app may use it; it is free once the box ends", async () => {
    const web = await create({ name: "web" });
    const started = creates();
    await assert.rejects(create({ name: "web" }), (e: SailError) => e.code === "SAIL_NAME_TAKEN" && e.details.app === "demo" && e.details.name === "web");
    assert.equal(creates(), started, "the node was not asked");
    assert.equal((await store.listSailboxes({ orgId: org.id })).length, 1);
    const other = (await store.mintApp(org.id, "other")).id;
    assert.equal((await boxes.creator.create(org, { appId: other, image: { name: "debian" }, name: "web" })).name, "web");
    await boxes.endings.terminate(org, web.id);
    assert.equal((await create({ name: "web" })).name, "web");
  });

  test("a box's disk is the create's size or the control plane's default, its inodes the node's word; a bad size creates nothing", async () => {
    const given = await create({ diskMiB: 512 });
    assert.equal(runtime.specs.get(given.id)!.diskMiB, 512);
    assert.deepEqual([given.diskMiB, given.diskInodes], [512, 512 * INODES_PER_MIB]);
    const stored = (await store.getSailbox(given.id))!;
    assert.deepEqual([stored.diskMiB, stored.diskInodes], [512, 512 * INODES_PER_MIB], "the store keeps both");
    const defaulted = await create({});
    assert.equal(runtime.specs.get(defaulted.id)!.diskMiB, SETTINGS.defaults.diskMiB, "the control plane's default, not the node's");
    assert.deepEqual([defaulted.diskMiB, defaulted.diskInodes], [2048, 2048 * INODES_PER_MIB]);
    for (const diskMiB of [63, 1048577, 100.5, "512", null, -1]) {
      const refused = await create({ diskMiB }).catch((e: SailError) => e);
      assert.ok(refused instanceof SailError && refused.code === "SAIL_RESOURCES_INVALID" && refused.details.field === "disk", `diskMiB ${JSON.stringify(diskMiB)}`);
    }
    assert.equal((await store.listSailboxes({ orgId: org.id })).length, 2);
    assert.equal(creates(), 2);
  });

  test("a background exec in a box whose disk is full is the node's SAIL_DISK_FULL (507), passed on as it is", async () => {
    const box = await create({ diskMiB: 64 });
    runtime.diskFull = true;
    const refused = await boxes.execs.execBackground(org, box.id, { cmd: "sleep 1", background: true }).catch((e: unknown) => e);
    assert.ok(refused instanceof SailError && refused.code === "SAIL_DISK_FULL" && refused.status === 507, String(refused));
    assert.equal(refused.details.sailboxId, box.id);
    runtime.diskFull = false;
    const started = await boxes.execs.execBackground(org, box.id, { cmd: "sleep 1", background: true });
    assert.ok(runtime.calls.includes(`execDetached ${box.id} ${started.execId}`), "the exec the store records is the one the node runs");
  });

  test("ssh publishes port 22 as raw TCP unless the request already does, and the node sets sshd up", async () => {
    const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBd0fiDtYyCBqN3qqwJ0pXoDAtXJfjxd9FbZvUwm7n3N";
    const box = await create({ ssh: { publicKey: key } });
    assert.deepEqual(
      box.listeners.map((l) => [l.port, l.protocol]),
      [[22, "tcp"]],
    );
    assert.ok(runtime.calls.includes(`exec ${box.id}`), "sshd was set up in the box");
    assert.deepEqual(
      nodeStore.listListeners(box.id).map((l) => [l.port, l.publicPort]),
      [[22, SETTINGS.tcp.firstPort]],
      "the node routes the public port the control plane allocated",
    );
    const restricted = await create({ ssh: { publicKey: key }, ingressPorts: [{ port: 22, protocol: "tcp", cidrAllowlist: ["203.0.113.0/24"] }] });
    assert.deepEqual(
      (await boxes.listeners.list(org, restricted.id)).map((l) => l.protocol === "tcp" && l.cidrAllowlist),
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
    assert.deepEqual(await boxes.listeners.list(org, box.id), []);
  });

  test("another org's box answers exactly like a missing one", async () => {
    const box = await create();
    const other = await store.ensureOrg("acme");
    assert.equal(await codeOf(boxes.views.get(other, box.id)), "SAIL_SAILBOX_NOT_FOUND");
    assert.equal(await codeOf(boxes.endings.terminate(other, box.id)), "SAIL_SAILBOX_NOT_FOUND");
    assert.equal(await codeOf(boxes.power.sleep(other, box.id)), "SAIL_SAILBOX_NOT_FOUND");
    assert.equal(await codeOf(boxes.execs.exec(other, box.id, { cmd: "true" })), "SAIL_SAILBOX_NOT_FOUND");
    assert.equal(await statusOf(box.id), "running");
  });
});

describe("org limits", () => {
  test("an org holds at most its 32 raw-TCP endpoints unless the operator sets its own; a refusal makes nothing; terminating frees endpoints", async () => {
    const tcp = (from: number, n: number) => Array.from({ length: n }, (_, i) => ({ port: from + i, protocol: "tcp" as const }));
    const first = await create({ ingressPorts: tcp(40000, 30) });
    const started = creates();
    await assert.rejects(
      create({ ingressPorts: tcp(41000, 3) }),
      (e: SailError) => e.code === "SAIL_TCP_LIMIT_EXCEEDED" && e.details.limit === 32 && e.details.inUse === 30 && e.details.requested === 3,
    );
    assert.equal(creates(), started, "the node was not asked");
    assert.equal((await store.listSailboxes({ orgId: org.id })).length, 1);
    await boxes.orgLimits.set(org, "default", { tcpEndpoints: 40 });
    await create({ ingressPorts: tcp(41000, 3) });
    await boxes.orgLimits.set(org, "default", { tcpEndpoints: null });
    await boxes.endings.terminate(org, first.id);
    await create({ ingressPorts: tcp(42000, 29) });
  });

  test("an org's caps on live boxes, cores and memory refuse the box past them, count sleeping and paused boxes, and free on terminate", async () => {
    const tenant = await store.ensureOrg("tenant");
    const tenantApp = (await store.mintApp(tenant.id, "t")).id;
    const make = (cpu: number, memoryMiB: number) => boxes.creator.create(tenant, { appId: tenantApp, image: { name: "debian" }, cpu, memoryMiB });
    assert.equal(await codeOf(boxes.orgLimits.set(tenant, "tenant", { sailboxes: 1 })), "SAIL_FORBIDDEN", "a tenant cannot set its own limits");
    assert.equal(await codeOf(boxes.orgLimits.get(tenant, "default")), "SAIL_FORBIDDEN", "nor read another org's");
    await boxes.orgLimits.set(org, "tenant", { sailboxes: 2, cpu: 1.5, memoryMiB: 700 });
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
    assert.equal((await store.listSailboxes({ orgId: tenant.id, liveOnly: true })).length, 2, "refusals made nothing");
    assert.equal(creates(), 2, "nor asked the node");
    assert.deepEqual((await boxes.orgLimits.get(tenant, "tenant")).usage, { sailboxes: 2, cpu: 1.5, memoryMiB: 636, tcpEndpoints: 0 });
    await boxes.endings.terminate(tenant, b.id);
    await make(1, 444);
    await boxes.orgLimits.set(org, "tenant", { sailboxes: null, cpu: null, memoryMiB: null });
    await make(1, 1024);
    assert.equal((await boxes.orgLimits.get(org, "default")).limits.sailboxes, null, "other orgs are untouched");
  });

  test("org limits are checked as numbers before anything changes", async () => {
    for (const bad of [{ sailboxes: -1 }, { sailboxes: 1.5 }, { cpu: "2" }, { memoryMiB: Infinity }, { disk: 1 }, null]) {
      assert.match(await codeOf(boxes.orgLimits.set(org, "default", bad)), /^SAIL_(INVALID_ARGUMENT|UNKNOWN_FIELD)$/, JSON.stringify(bad));
    }
    assert.deepEqual((await boxes.orgLimits.get(org, "default")).limits, { sailboxes: null, cpu: null, memoryMiB: null, tcpEndpoints: null });
    assert.equal(await codeOf(boxes.orgLimits.get(org, "nobody")), "SAIL_ORG_NOT_FOUND");
  });
});

describe("outbound policy: its shape checked here, the host's refusals from the node", () => {
  test("a create's policy is normalized, kept by the store and handed to the node with the box; a change is applied by the node, then kept", async () => {
    const box = await create({ allowOut: ["198.51.100.0/24", "*.example.com"] });
    assert.deepEqual(box.network, { outbound: "allowlist", allowOut: ["198.51.100.0/24", "*.example.com"], denyOut: [] });
    assert.deepEqual(runtime.outbound.get(box.id)?.rules, { mode: "allow", cidrs: ["198.51.100.0/24"] });
    assert.equal((await store.getSailbox(box.id))!.networkPolicy, JSON.stringify(box.network));
    assert.equal(agent.outbound.decide(box.id, "a.example.com"), "forward-and-allow", "the node's resolver has its name rules");
    const changed = await boxes.outbound.set(org, box.id, { blockNetwork: true });
    assert.deepEqual(changed.network, { outbound: "blocked", allowOut: [], denyOut: [] });
    assert.deepEqual(runtime.outbound.get(box.id)?.rules, { mode: "blocked", cidrs: [] });
    assert.equal((await store.getSailbox(box.id))!.networkPolicy, JSON.stringify(changed.network));
  });

  test("a policy of the wrong shape is refused by the control plane: no row, nothing asked of the node, a live box's policy unchanged", async () => {
    assert.equal(await codeOf(create({ allowOut: ["x"], denyOut: ["y.com"] })), "SAIL_NETWORK_ENTRY_INVALID");
    assert.equal(await codeOf(create({ allowOut: "198.51.100.0/24" })), "SAIL_NETWORK_ENTRY_INVALID");
    assert.equal(await codeOf(create({ allowOut: ["198.51.100.0/24"], blockNetwork: true })), "SAIL_NETWORK_POLICY_CONFLICT");
    assert.equal(inserts, 0);
    assert.deepEqual(runtime.calls, []);
    const box = await create({ allowOut: ["198.51.100.0/24"] });
    const calls = runtime.calls.length;
    assert.equal(await codeOf(boxes.outbound.set(org, box.id, { allowOut: ["x"], denyOut: ["y.com"] })), "SAIL_NETWORK_ENTRY_INVALID");
    assert.equal(runtime.calls.length, calls, "the node was not asked");
    assert.deepEqual((await boxes.views.get(org, box.id)).network.allowOut, ["198.51.100.0/24"]);
  });

  test("what this host never lets boxes reach is the node's refusal, SAIL_NETWORK_ENTRY_REFUSED, before any row exists; a refused change changes nothing", async () => {
    assert.equal(await codeOf(create({ allowOut: ["192.168.0.0/16"] })), "SAIL_NETWORK_ENTRY_REFUSED");
    assert.equal(await codeOf(create({ allowOut: ["10.9.1.0/24"] })), "SAIL_NETWORK_ENTRY_REFUSED", "other boxes' subnet");
    assert.equal(inserts, 0, "no row was inserted, not even for a moment");
    assert.equal(creates(), 0);
    assert.equal(await codeOf(create({ allowOut: ["10.50.1.0/24"] })), "resolved", "a private range the node's operator opened");
    assert.equal(await codeOf(create({ allowOut: ["0.0.0.0/0"] })), "resolved", "partly reachable is fine");
    const box = await create({ allowOut: ["198.51.100.0/24"] });
    const calls = runtime.calls.length;
    assert.equal(await codeOf(boxes.outbound.set(org, box.id, { allowOut: ["127.0.0.1"] })), "SAIL_NETWORK_ENTRY_REFUSED");
    assert.equal(runtime.calls.length, calls, "the runtime was not asked");
    assert.deepEqual((await boxes.views.get(org, box.id)).network.allowOut, ["198.51.100.0/24"], "the store kept the old policy");
    assert.deepEqual(runtime.outbound.get(box.id)?.rules, { mode: "allow", cidrs: ["198.51.100.0/24"] });
    await boxes.endings.terminate(org, box.id);
    assert.equal(await codeOf(boxes.outbound.set(org, box.id, {})), "SAIL_SAILBOX_NOT_RUNNING");
  });

  test("a network the node's host is directly connected to is refused while the host is on it", async () => {
    runtime.connected = [parseIpv4Cidr("192.0.2.0/24")!.range];
    await assert.rejects(create({ allowOut: ["192.0.2.7"] }), (e: SailError) => e.code === "SAIL_NETWORK_ENTRY_REFUSED" && /directly connected.*--outbound-private 192\.0\.2\.7\/32/.test(e.message));
    assert.equal(await codeOf(create({ allowOut: ["192.0.2.0/25"] })), "SAIL_NETWORK_ENTRY_REFUSED");
    assert.equal(inserts, 0, "refused before any row existed");
    assert.equal(await codeOf(create({ allowOut: ["192.0.0.0/16"] })), "resolved", "partly reachable is fine");
    runtime.connected = []; // the host left that network
    assert.equal(await codeOf(create({ allowOut: ["192.0.2.7"] })), "resolved");
  });
});

describe("power: asked of the node under the box's lease, recorded from its answer", () => {
  test("sleep, pause and resume are done by the node and recorded from its answer, also while its events cannot reach the control plane", async () => {
    const box = await create();
    await agent.eventsDelivered();
    link.away = true;
    assert.equal((await boxes.power.sleep(org, box.id)).status, "sleeping");
    assert.equal(runtime.calls.at(-1), `freeze ${box.id}`);
    assert.equal(await statusOf(box.id), "sleeping");
    assert.equal((await boxes.power.pause(org, box.id)).status, "paused");
    assert.equal(await statusOf(box.id), "paused");
    assert.equal((await boxes.power.resume(org, box.id)).status, "running");
    assert.equal(runtime.calls.at(-1), `thaw ${box.id}`);
    assert.equal(await statusOf(box.id), "running");
    const calls = runtime.calls.length;
    assert.equal((await boxes.power.resume(org, box.id)).status, "running", "resuming a running box is a no-op");
    assert.equal(runtime.calls.length, calls);
    link.away = false;
    await agent.eventsDelivered();
    assert.equal(await statusOf(box.id), "running", "the node's events, heard late, change nothing");
  });

  test("a change the table refuses is refused, naming the box, its status and what would allow it; nothing changes", async () => {
    const box = await create();
    await boxes.power.pause(org, box.id);
    const calls = runtime.calls.length;
    await assert.rejects(boxes.power.sleep(org, box.id), (e: SailError) => e.code === "SAIL_SAILBOX_NOT_RUNNING" && e.message === `Sailbox ${box.id} is paused: only a running sailbox can sleep`);
    assert.equal(runtime.calls.length, calls, "the node was not asked");
    await boxes.endings.terminate(org, box.id);
    assert.equal(await codeOf(boxes.power.resume(org, box.id)), "SAIL_SAILBOX_NOT_RUNNING");
    assert.equal(await statusOf(box.id), "terminated");
  });

  test("an API call that needs the guest: the node wakes a sleeping box (the store hears it), a paused one is refused and not woken, an ended one is a conflict", async () => {
    const box = await create();
    await boxes.power.sleep(org, box.id);
    const exec = await boxes.execs.exec(org, box.id, { cmd: "true" });
    for await (const _ of exec.events);
    assert.equal(await statusOf(box.id), "running");
    assert.ok(runtime.calls.includes(`thaw ${box.id}`));
    assert.equal((await boxes.views.get(org, box.id)).wakes, 1);
    await boxes.power.pause(org, box.id);
    const calls = runtime.calls.length;
    assert.equal(await codeOf(boxes.execs.exec(org, box.id, { cmd: "true" })), "SAIL_SAILBOX_PAUSED");
    assert.equal(await codeOf(boxes.execs.execPty(org, box.id, { cols: 80, rows: 24 })), "SAIL_SAILBOX_PAUSED");
    assert.equal(runtime.calls.length, calls, "the node was not asked");
    await boxes.endings.terminate(org, box.id);
    assert.equal(await codeOf(boxes.execs.exec(org, box.id, { cmd: "true" })), "SAIL_SAILBOX_NOT_RUNNING");
  });
});

describe("the node's events in the store", () => {
  test("a wake on ingress and an idle sleep, decided on the node alone, reach the store as events; the view counts the wake", async () => {
    const box = await create({ idleTimeout: 5 });
    await boxes.power.sleep(org, box.id);
    await agent.ingress.wakeOnIngress(box.id);
    await agent.eventsDelivered();
    assert.equal(await statusOf(box.id), "running");
    assert.equal((await boxes.views.get(org, box.id)).wakes, 1);
    assert.deepEqual(await agent.idle.sleepIdleBoxes(Date.now() + 60_000), [box.id]);
    await agent.eventsDelivered();
    assert.equal(await statusOf(box.id), "sleeping");
  });

  test("while the control plane is away the node's changes wait, and the store catches up with the newest once it is back", async () => {
    const box = await create({ idleTimeout: 5 });
    await agent.eventsDelivered();
    link.away = true;
    await agent.idle.sleepIdleBoxes(Date.now() + 60_000);
    await agent.ingress.wakeOnIngress(box.id);
    await agent.idle.sleepIdleBoxes(Date.now() + 120_000);
    assert.equal(await statusOf(box.id), "running", "nothing reached the store yet");
    link.away = false;
    await agent.eventsDelivered();
    assert.equal(await statusOf(box.id), "sleeping");
  });

  test("a word older than the last one kept changes nothing, nor does any word on a box being created or ended", async () => {
    const box = await create();
    const heard: string[] = [];
    boxes.lifecycle.onTransition(({ box: changed, to }) => heard.push(`${changed.id} ${to}`));
    assert.equal((await boxes.power.sleep(org, box.id)).status, "sleeping");
    const seq = (await agent.box(box.id)).seq;
    const word = (status: SailboxStatus, n: number, id = box.id): NodeEvent => ({ type: "box", state: { sailboxId: id, status, seq: n, wakes: 0, listeners: [] } });
    await boxes.nodes.deliver([word("running", seq - 1)]);
    assert.equal(await statusOf(box.id), "sleeping", "an older word (a late delivery) is ignored");
    await boxes.nodes.deliver([word("running", seq + 1)]);
    assert.equal(await statusOf(box.id), "running", "a newer one is kept");
    const creating = await store.insertSailbox(row(), { tcpEndpointsDefault: 32 });
    await boxes.nodes.deliver([word("running", 99, creating.id)]);
    assert.equal(await statusOf(creating.id), "creating", "a create decides its own creating → running");
    await boxes.endings.terminate(org, box.id);
    await boxes.nodes.deliver([word("running", seq + 50)]);
    assert.equal(await statusOf(box.id), "terminated", "an ended box stays ended");
    assert.deepEqual(heard, [`${box.id} sleeping`, `${box.id} running`, `${box.id} terminated`]);
  });
});

describe("terminate and reconcile", () => {
  test("terminate removes the box from its node and ends it; it is idempotent; a failed box stays failed and its leftovers go", async () => {
    const box = await create();
    assert.equal((await boxes.endings.terminate(org, box.id)).status, "terminated");
    assert.equal(runtime.boxes.has(box.id), false);
    assert.equal(await codeOf(agent.box(box.id)), "SAIL_SAILBOX_NOT_FOUND", "the node holds nothing of it");
    assert.equal((await boxes.endings.terminate(org, box.id)).status, "terminated");
    const lost = await create();
    link.away = true;
    runtime.boxes.delete(lost.id); // its container vanished while the node was down
    await restartNode();
    assert.deepEqual(await boxes.endings.reconcile(boxes.nodes.some()), { kept: 0, failed: 1, removed: 0 });
    const failed = await boxes.endings.terminate(org, lost.id);
    assert.equal(failed.status, "failed");
    assert.match(failed.failureReason!, /container was missing/);
    assert.equal(await codeOf(agent.box(lost.id)), "SAIL_SAILBOX_NOT_FOUND", "its leftovers went");
  });

  test("a box its node lost while it was down becomes failed with the node's reason; the boxes it kept stay as they were", async () => {
    const kept = await create();
    const lost = await create();
    await boxes.power.sleep(org, kept.id);
    link.away = true; // as in one process: the node starts before the control plane takes its events
    runtime.boxes.delete(lost.id);
    await restartNode();
    assert.deepEqual(await boxes.endings.reconcile(boxes.nodes.some()), { kept: 1, failed: 1, removed: 0 });
    const failed = (await store.getSailbox(lost.id))!;
    assert.equal(failed.status, "failed");
    assert.match(failed.failureReason!, /its container was missing when the daemon started/);
    assert.equal(await statusOf(kept.id), "sleeping");
    link.away = false;
    await agent.eventsDelivered();
    assert.equal((await store.getSailbox(lost.id))!.status, "failed");
    assert.equal((await boxes.power.resume(org, kept.id)).status, "running", "a kept box is driven as before");
  });

  test("a box the store has in `creating` (the control plane stopped mid-create) is failed, and what its node made of it removed", async () => {
    const node = (await agent.info()).nodeId;
    const cut = await store.insertSailbox(row({ nodeId: node }), { tcpEndpointsDefault: 32 });
    await agent.createBox(nodeSpec({ id: cut.id })); // the node finished; the control plane never heard
    await madeBefore(cut.id);
    assert.deepEqual(await boxes.endings.reconcile(boxes.nodes.some()), { kept: 0, failed: 1, removed: 1 });
    const failed = (await store.getSailbox(cut.id))!;
    assert.equal(failed.status, "failed");
    assert.equal(failed.failureReason, "the daemon stopped while it was being created");
    assert.ok(runtime.calls.includes(`destroy ${cut.id} afterCrash`));
    assert.equal(runtime.boxes.has(cut.id), false);
  });

  test("a box the node holds that the store does not (terminated while the node was away) is removed from the node", async () => {
    const known = await create();
    const stray = await agent.createBox(nodeSpec());
    runtime.dirs.add("sb-leftover1"); // a directory neither knows
    await madeBefore(stray.sailboxId);
    assert.deepEqual(await boxes.endings.reconcile(boxes.nodes.some()), { kept: 1, failed: 0, removed: 2 });
    assert.equal(await codeOf(agent.box(stray.sailboxId)), "SAIL_SAILBOX_NOT_FOUND");
    assert.ok(runtime.calls.includes(`destroy ${stray.sailboxId} afterCrash`) && runtime.calls.includes("destroy sb-leftover1 afterCrash"));
    assert.equal(await statusOf(known.id), "running");
  });

  test("adopt: a live box from before node.db is taken over in the status the store has, with its slot, then driven as any other; one whose container is gone is failed", async () => {
    const legacy = await store.insertSailbox(row({ ports: [{ port: 3000, protocol: "http" }] }), { tcpEndpointsDefault: 32 });
    await store.setStatus(legacy.id, "sleeping");
    runtime.boxes.set(legacy.id, { hostAddress: "10.9.0.21", guestAddress: "10.9.0.22" }); // slot 5, from its network.json
    runtime.dirs.add(legacy.id);
    runtime.states.set(legacy.id, "paused"); // frozen, as it slept
    const gone = await store.insertSailbox(row(), { tcpEndpointsDefault: 32 });
    await store.setStatus(gone.id, "running");
    assert.deepEqual(await boxes.endings.reconcile(boxes.nodes.some()), { kept: 1, failed: 1, removed: 0 });
    const taken = nodeStore.getBox(legacy.id)!;
    assert.deepEqual([taken.status, taken.netSlot], ["sleeping", 5]);
    assert.deepEqual(
      nodeStore.listListeners(legacy.id).map((l) => [l.port, l.protocol]),
      [[3000, "http"]],
    );
    assert.equal(await statusOf(legacy.id), "sleeping");
    assert.equal((await store.getSailbox(gone.id))!.failureReason, "its container was missing when the node took it over");
    assert.equal((await boxes.power.resume(org, legacy.id)).status, "running");
    assert.equal(runtime.calls.at(-1), `thaw ${legacy.id}`);
    assert.equal(await statusOf(legacy.id), "running");
  });
});

describe("leases: one holder drives a box at a time", () => {
  test("two calls on one box in one control plane take turns: a terminate waits for the sleep its node is doing", async () => {
    const box = await create();
    const release = holdFreezes();
    const sleeping = boxes.power.sleep(org, box.id);
    await eventually("the node is freezing the box", () => runtime.calls.includes(`freeze held ${box.id}`));
    const terminating = boxes.endings.terminate(org, box.id);
    for (let i = 0; i < 5; i++) await turn();
    assert.ok(!runtime.calls.includes(`destroy ${box.id}`), "the terminate waits its turn (it would cut the freeze short)");
    release();
    assert.equal((await sleeping).status, "sleeping", "the sleep finished, not preempted");
    assert.equal((await terminating).status, "terminated");
    assert.ok(runtime.calls.indexOf(`freeze ${box.id}`) < runtime.calls.indexOf(`destroy ${box.id}`));
  });

  test("two control planes on one store: the second waits while the first holds the box's lease, then drives it", async () => {
    const box = await create();
    const second = new SqliteStore(join(dir, "sail.db"));
    stores.push(second);
    let refused = 0;
    const take = second.takeLease.bind(second);
    second.takeLease = async (...args) => {
      const taken = await take(...args);
      if (!taken) refused++;
      return taken;
    };
    const other = createBoxes(second, SETTINGS, silent);
    await other.nodes.attachLocal(agent, await agent.info());
    const release = holdFreezes();
    const sleeping = boxes.power.sleep(org, box.id);
    await eventually("the node is freezing the box", () => runtime.calls.includes(`freeze held ${box.id}`));
    const terminating = other.endings.terminate(org, box.id);
    await eventually("the second control plane was refused the lease twice", () => refused >= 2);
    assert.ok(!runtime.calls.includes(`destroy ${box.id}`), "it did not ask the node meanwhile");
    release();
    assert.equal((await sleeping).status, "sleeping");
    assert.equal((await terminating).status, "terminated");
    assert.equal(await statusOf(box.id), "terminated");
  });

  test("a lease another holder took (a control plane that crashed) is waited for until it expires; then the call proceeds", async (t) => {
    const box = await create();
    await agent.eventsDelivered();
    t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: Date.now() });
    assert.equal(await store.takeLease(box.id, "cp-crashed", 1000), true);
    const sleeping = boxes.power.sleep(org, box.id);
    for (let i = 0; i < 5; i++) await turn();
    assert.ok(!runtime.calls.includes(`freeze ${box.id}`), "it waits");
    t.mock.timers.tick(500);
    for (let i = 0; i < 5; i++) await turn();
    assert.ok(!runtime.calls.includes(`freeze ${box.id}`), "still held");
    t.mock.timers.tick(501);
    assert.equal((await sleeping).status, "sleeping");
    assert.equal(await statusOf(box.id), "sleeping");
  });

  test("past its wait for another holder's lease a call is SAIL_SAILBOX_BUSY naming the box, and the node was asked nothing", async (t) => {
    const box = await create();
    await agent.eventsDelivered();
    t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: Date.now() });
    assert.equal(await store.takeLease(box.id, "cp-other", LEASE_WAIT_MS * 10), true);
    const calls = runtime.calls.length;
    const sleeping = boxes.power.sleep(org, box.id).catch((e: unknown) => e);
    for (let i = 0; i < 5; i++) await turn();
    t.mock.timers.tick(LEASE_WAIT_MS);
    const error = await sleeping;
    assert.ok(error instanceof SailError && error.code === "SAIL_SAILBOX_BUSY" && error.status === 409, String(error));
    assert.equal(error.details.sailboxId, box.id);
    assert.match(error.message, new RegExp(`Sailbox ${box.id} is being changed by another request.*try sleep again`));
    assert.equal(runtime.calls.length, calls);
    assert.equal(await statusOf(box.id), "running");
  });

  test("a long step keeps its lease (renewed while it runs, released at its end): another holder cannot take it past the first TTL", async (t) => {
    const box = await create();
    await agent.eventsDelivered();
    const release = holdFreezes();
    t.mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: Date.now() });
    try {
      const sleeping = boxes.power.sleep(org, box.id);
      for (let i = 0; i < 10 && !runtime.calls.includes(`freeze held ${box.id}`); i++) await turn();
      assert.ok(runtime.calls.includes(`freeze held ${box.id}`));
      // past the lease's first TTL, within the node's deadline for the step (STEP_DEADLINE_MS, 30 s)
      for (let ms = 0; ms < LEASE_TTL_MS + 5000; ms += 1000) {
        t.mock.timers.tick(1000);
        await turn();
      }
      assert.equal(await store.takeLease(box.id, "cp-other", 1000), false, "past its first TTL, the lease is still held");
      release();
      assert.equal((await sleeping).status, "sleeping");
      assert.equal(await store.takeLease(box.id, "cp-other", 1000), true, "released at the end");
    } finally {
      t.mock.timers.reset(); // before afterEach closes the node: it clears its own intervals, which are real ones
    }
  });
});

describe("creates by Idempotency-Key, and creates nobody waits for", () => {
  const request = (extra: object = {}) => ({ appId, image: { name: "debian" }, ...extra });

  test("a retry with the same key and body gets the same box (in any key order); another body with the key is a 422, and the key is per org", async () => {
    const first = await boxes.creates.begin(org, request({ name: "web", cpu: 1 }), "key-1");
    const box = await first.result;
    const again = await boxes.creates.begin(org, { cpu: 1, name: "web", image: { name: "debian" }, appId }, "key-1");
    assert.equal(again.replayed, true);
    assert.equal((await again.result).id, box.id);
    await assert.rejects(boxes.creates.begin(org, request({ name: "other" }), "key-1"), (e: SailError) => e.code === "SAIL_IDEMPOTENCY_KEY_REUSED" && e.status === 422);
    assert.equal((await store.listSailboxes({ orgId: org.id })).length, 1);
    assert.equal(creates(), 1, "the node made one box");
    const tenant = await store.ensureOrg("acme");
    const theirs = await boxes.creates.begin(tenant, { appId: (await store.mintApp(tenant.id, "demo")).id, image: { name: "debian" } }, "key-1");
    assert.notEqual((await theirs.result).id, box.id);
  });

  test("a bad key is refused with SAIL_IDEMPOTENCY_KEY_INVALID and makes nothing", async () => {
    await assert.rejects(boxes.creates.begin(org, request(), "has a space"), (e: SailError) => e.code === "SAIL_IDEMPOTENCY_KEY_INVALID");
    assert.deepEqual(await store.listSailboxes({ orgId: org.id }), []);
    assert.deepEqual(runtime.calls, []);
  });

  test("a retry while the first is still building joins it: it hears the build's step at once, and both get one box", async () => {
    const build = gate();
    runtime.buildGate = build.promise;
    const body = request({ image: { name: "debian", aptPackages: ["sl"] } });
    const first = await boxes.creates.begin(org, body, "key-2");
    const retry = await boxes.creates.begin(org, body, "key-2");
    await eventually("the build reported its first step", () => runtime.calls.includes("preparePackageImage amd64 sl"));
    const heard: string[] = [];
    retry.listen((p) => heard.push(`${p.phase} ${p.image} ${p.step}`));
    assert.deepEqual(heard, ["image debian+sl retrieving"]);
    first.leave(); // the first caller's connection dropped: the retry still waits, so the create goes on
    build.open();
    const [a, b] = await Promise.all([first.result, retry.result]);
    assert.equal(a.id, b.id);
    assert.equal(creates(), 1);
  });

  test("a create whose every caller left during its build makes no box; the build itself goes on", async () => {
    const build = gate();
    runtime.buildGate = build.promise;
    const ticket = await boxes.creates.begin(org, request({ image: { name: "debian", aptPackages: ["sl"] } }));
    ticket.leave();
    build.open();
    await assert.rejects(ticket.result, CreateAbandonedError);
    assert.equal(inserts, 0, "no row, not even for a moment");
    assert.deepEqual(await store.listSailboxes({ orgId: org.id }), []);
    assert.deepEqual(runtime.calls, ["preparePackageImage amd64 sl"]);
  });

  test("a caller that leaves while its box starts gets it removed again: no row, the node's box destroyed", async () => {
    const starting = gate();
    runtime.createGate = starting.promise;
    const ticket = await boxes.creates.begin(org, request({ name: "gone" }), "key-3");
    let id = "";
    ticket.listen((p) => (id = p.sailboxId ?? id));
    await eventually("the node is starting the box", () => creates() === 1);
    assert.match(id, /^sb-/);
    ticket.leave();
    starting.open();
    await assert.rejects(ticket.result, CreateAbandonedError);
    assert.deepEqual(await store.listSailboxes({ orgId: org.id }), []);
    assert.ok(runtime.calls.includes(`destroy ${id}`));
    assert.equal(runtime.boxes.size, 0);
    assert.deepEqual(await agent.boxes(), []);
    // the key was not spent on it: a retry makes the box, named as asked
    runtime.createGate = undefined;
    const retry = await boxes.creates.begin(org, request({ name: "gone" }), "key-3");
    assert.equal((await retry.result).name, "gone");
  });

  test("a key is kept for a day: within it the same key answers the same box, after it the same key makes a new box", async (t) => {
    t.mock.timers.enable({ apis: ["Date"], now: Date.now() });
    const first = await (await boxes.creates.begin(org, request(), "key-4")).result;
    t.mock.timers.tick(IDEMPOTENCY_KEY_TTL_MS - 1000);
    const replayed = await boxes.creates.begin(org, request(), "key-4");
    assert.equal(replayed.replayed, true);
    assert.equal((await replayed.result).id, first.id);
    t.mock.timers.tick(2000);
    const later = await boxes.creates.begin(org, request(), "key-4");
    assert.equal(later.replayed, false);
    assert.notEqual((await later.result).id, first.id);
  });
});

describe("many nodes: placement, drain, loss", () => {
  /** A node agent "on the network" at http://<name>:7080 with its own node.db and host, joined by heartbeat as a remote node is. */
  async function joinNode(name: string, maxBoxes = 8): Promise<{ agent: NodeAgent; runtime: FakeRuntime; url: string; beat: () => Promise<boolean> }> {
    mkdirSync(join(dir, `logs-${name}`));
    const host = new FakeRuntime(join(dir, `logs-${name}`));
    host.maxBoxes = maxBoxes;
    const made = new NodeAgent(new NodeStore(join(dir, `${name}.db`)), host, NODE_SETTINGS, link, silent);
    agents.push(made);
    await made.start();
    const url = `http://${name}:7080`;
    remoteNodes.set(url, made);
    const info = await made.info();
    const beat = async () => {
      const reconcile = await boxes.nodes.heartbeat(url, info);
      if (reconcile) await boxes.endings.reconcile(boxes.nodes.get(info.nodeId)!);
      return reconcile;
    };
    await beat();
    return { agent: made, runtime: host, url, beat };
  }

  test("each box goes to the node with more free slots of two; each says its node; calls go to that node", async () => {
    const b = await joinNode("b", 4);
    const made: SailboxInfo[] = [];
    for (let i = 0; i < 6; i++) made.push(await create()); // the local node has 8 slots, b 4
    const [localId, bId] = [(await agent.info()).nodeId, (await b.agent.info()).nodeId];
    const on = (id: string) => made.filter((box) => box.node === id).length;
    assert.deepEqual([on(localId), on(bId)], [5, 1], "8-0 > 4-0, …, 4-4 > 4-0, 3 = 3 (either), then the other");
    for (const box of made) {
      const holder = box.node === bId ? b.runtime : runtime;
      assert.ok(holder.boxes.has(box.id), `${box.id} runs on ${box.node}`);
      await boxes.power.sleep(org, box.id);
      assert.ok(holder.calls.includes(`freeze ${box.id}`), `its sleep went to ${box.node}`);
    }
  });

  test("a draining node takes no new box and keeps its own; with no node left the create says why, and nothing is made", async () => {
    const b = await joinNode("b");
    const bId = (await b.agent.info()).nodeId;
    const localId = (await agent.info()).nodeId;
    await boxes.nodes.drain(bId, true);
    const made = await Promise.all(Array.from({ length: 4 }, () => create()));
    assert.deepEqual(new Set(made.map((box) => box.node)), new Set([localId]));
    await boxes.nodes.drain(localId, true);
    const before = inserts;
    await assert.rejects(create(), (e: SailError) => e.code === "SAIL_NODE_UNAVAILABLE" && e.message.includes(`${bId} is draining`) && e.message.includes(`${localId} is draining`));
    assert.equal(inserts, before, "no row was written");
    await assert.rejects(boxes.nodes.drain("node-nobody", true), (e: SailError) => e.code === "SAIL_NODE_NOT_FOUND");
    const listed = await boxes.nodes.list();
    assert.deepEqual(listed.map((n) => [n.nodeId === localId ? "local" : "b", n.state, n.boxes]).sort(), [
      ["b", "draining", 0],
      ["local", "draining", 4],
    ]);
  });

  test("a sweep after the control plane could not sweep for a while (a store failover, a restart) gives every node a whole lease instead of declaring it lost", async (t) => {
    const b = await joinNode("b");
    const bId = (await b.agent.info()).nodeId;
    await boxes.nodes.sweep();
    await store.heartbeatNode({ id: bId, url: b.url, info: JSON.stringify(await b.agent.info()) }, 1);
    await eventually("b's lease lapsed", async () => (await store.listNodes()).some((n) => n.id === bId && n.leaseUntil! < n.nowMs));
    t.mock.timers.enable({ apis: ["Date"], now: Date.now() + 10 * 60_000 }); // ten minutes without a sweep
    assert.deepEqual(await boxes.nodes.sweep(), [], "nothing is declared after the gap");
    t.mock.timers.reset();
    const row = (await store.listNodes()).find((n) => n.id === bId)!;
    assert.equal(row.lostAt, null);
    assert.ok(row.leaseUntil! > row.nowMs, "its lease runs again");
  });

  test("a node whose lease lapsed is lost: its boxes fail naming it, their TCP ports are free, creates go elsewhere; when it joins again its boxes are removed from it", async () => {
    const b = await joinNode("b");
    const bId = (await b.agent.info()).nodeId;
    await boxes.nodes.drain((await agent.info()).nodeId, true);
    const onB = await create({ ingressPorts: [{ port: 5432, protocol: "tcp", allowPublic: true }] });
    assert.equal(onB.node, bId);
    const publicPort = onB.listeners[0]!.endpoint.port;
    await boxes.nodes.drain((await agent.info()).nodeId, false);
    assert.deepEqual(await boxes.nodes.sweep(), [], "the first sweep of a control plane declares nothing");
    // b stops beating; its lease runs out (the store's clock), then the sweep declares it
    await store.heartbeatNode({ id: bId, url: b.url, info: JSON.stringify(await b.agent.info()) }, 1);
    await eventually("b's lease lapsed", async () => (await store.listNodes()).some((n) => n.id === bId && n.leaseUntil! < n.nowMs));
    assert.deepEqual(await boxes.nodes.sweep(), [{ nodeId: bId, failed: [onB.id] }]);
    const failed = await boxes.views.get(org, onB.id);
    assert.equal(failed.status, "failed");
    assert.match(failed.failureReason!, new RegExp(`its node ${bId} was lost`));
    assert.equal((await boxes.nodes.list()).find((n) => n.nodeId === bId)!.state, "lost");
    const next = await create({ ingressPorts: [{ port: 5432, protocol: "tcp", allowPublic: true }] });
    assert.notEqual(next.node, bId, "creates go elsewhere");
    assert.equal(next.listeners[0]!.endpoint.port, publicPort, "the lost box's public port was free again");
    // a late word of the lost node does not bring the box back
    await boxes.nodes.deliver([{ type: "box", state: { ...(await b.agent.box(onB.id)), seq: 1000 } }]);
    assert.equal((await boxes.views.get(org, onB.id)).status, "failed");
    assert.equal(b.runtime.boxes.has(onB.id), true, "b (cut off, fenced) still holds it");
    assert.equal(await b.beat(), true, "a lost node that joins again is reconciled");
    assert.equal(b.runtime.boxes.has(onB.id), false, "its failed box was removed from it");
    assert.equal((await boxes.nodes.list()).find((n) => n.nodeId === bId)!.generation, 2);
  });
});
