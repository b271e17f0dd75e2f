/**
 * The node's own store (node.db): network slots, boxes and listeners, migrations. A temp file
 * per test; the runtime's side of the upgrade (a box's slot read back from its network.json)
 * on a LocalRuntime over a temp data dir, which runs no command for it.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import type { NodeBoxSpec } from "../../packages/server/src/node-wire/node-api.js";
import { NODE_MIGRATIONS } from "../../packages/server/src/node/node-migrations.js";
import { NetSlotsExhaustedError, NetSlotTakenError, NodeStore, PublicPortTakenError } from "../../packages/server/src/node/node-store.js";
import { LocalRuntime } from "../../packages/server/src/runtime/local-runtime.js";
import { BoxNetworks } from "../../packages/server/src/runtime/network.js";

let dir: string;
let store: NodeStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "sail-node-store-"));
  store = new NodeStore(join(dir, "node.db"));
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

let serial = 0;
function spec(extra: Partial<NodeBoxSpec> = {}): NodeBoxSpec {
  const id = `sb-${String(++serial).padStart(12, "0")}`;
  return {
    id,
    hostname: id,
    image: { arch: "amd64", aptPackages: [] },
    cpu: 1,
    memoryMiB: 512,
    idleTimeout: null,
    network: { outbound: "open", allowOut: [], denyOut: [] },
    listeners: [],
    ...extra,
  };
}

describe("network slots", () => {
  test("each box gets the lowest slot no other box holds; a removed or failed box's slot is reused", () => {
    const slots = () => store.listBoxes().map((b) => b.netSlot);
    const [a, b, c] = [spec(), spec(), spec()].map((s) => store.insertBox(s, { maxSlots: 8 }));
    assert.deepEqual([a!.netSlot, b!.netSlot, c!.netSlot], [0, 1, 2]);
    store.deleteBox(b!.id);
    assert.equal(store.insertBox(spec(), { maxSlots: 8 }).netSlot, 1, "the gap is filled first");
    store.setStatus(a!.id, "failed", "its container was missing when the daemon started");
    assert.equal(store.insertBox(spec(), { maxSlots: 8 }).netSlot, 0, "a failed box holds no slot: its leftovers were removed");
    assert.deepEqual(slots(), [0, 2, 1, 0]);
  });

  test("a full box subnet refuses the next box and stores nothing", () => {
    store.insertBox(spec(), { maxSlots: 2 });
    store.insertBox(spec(), { maxSlots: 2 });
    const refused = spec();
    assert.throws(
      () => store.insertBox(refused, { maxSlots: 2 }),
      (e: NetSlotsExhaustedError) => e instanceof NetSlotsExhaustedError && e.slots === 2,
    );
    assert.equal(store.getBox(refused.id), undefined);
  });

  test("an adopted box keeps the slot it was given; a slot held by another box is refused", () => {
    const adopted = store.insertBox(spec(), { maxSlots: 8, status: "sleeping", netSlot: 5 });
    assert.deepEqual([adopted.netSlot, adopted.status], [5, "sleeping"]);
    assert.equal(store.insertBox(spec(), { maxSlots: 8 }).netSlot, 0);
    assert.throws(
      () => store.insertBox(spec(), { maxSlots: 8, status: "running", netSlot: 5 }),
      (e: NetSlotTakenError) => e instanceof NetSlotTakenError && e.holder === adopted.id,
    );
    assert.throws(() => store.insertBox(spec(), { maxSlots: 8, status: "running", netSlot: 8 }), NetSlotsExhaustedError, "past the subnet");
    const lost = store.insertBox(spec(), { maxSlots: 8, status: "failed", netSlot: null, failureReason: "its container was missing when the node took it over" });
    assert.deepEqual([lost.netSlot, lost.failureReason], [null, "its container was missing when the node took it over"]);
  });
});

describe("boxes and listeners", () => {
  test("a box comes back as it went in, with its listeners; a status change bumps its sequence number", () => {
    const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBd0fiDtYyCBqN3qqwJ0pXoDAtXJfjxd9FbZvUwm7n3N";
    const given = spec({
      image: { arch: "arm64", aptPackages: ["postgresql", "redis-server"] },
      cpu: 0.5,
      diskMiB: 2048,
      idleTimeout: 60,
      network: { outbound: "allowlist", allowOut: ["198.51.100.0/24", "*.example.com"], denyOut: [] },
      sshPublicKey: key,
      listeners: [
        { port: 3000, protocol: "http", h2c: true, publicPort: null },
        { port: 5432, protocol: "tcp", cidrAllowlist: ["203.0.113.0/24"], allowPublic: false, proxyProtocol: true, publicPort: 20001 },
      ],
    });
    const box = store.insertBox(given, { maxSlots: 8 });
    assert.deepEqual(
      { ...box, createdAt: undefined },
      {
        id: given.id,
        hostname: given.id,
        arch: "arm64",
        aptPackages: ["postgresql", "redis-server"],
        cpu: 0.5,
        memoryMiB: 512,
        diskMiB: 2048,
        diskInodes: null,
        idleTimeout: 60,
        network: given.network,
        sshPublicKey: key,
        netSlot: 0,
        status: "creating",
        failureReason: null,
        seq: 1,
        createdAt: undefined,
      },
    );
    assert.deepEqual(store.listListeners(box.id), [
      { sailboxId: box.id, port: 3000, protocol: "http", cidrAllowlist: [], allowPublic: false, publicPort: null, h2c: true, proxyProtocol: false },
      { sailboxId: box.id, port: 5432, protocol: "tcp", cidrAllowlist: ["203.0.113.0/24"], allowPublic: false, publicPort: 20001, h2c: false, proxyProtocol: true },
    ]);
    store.setDiskInodes(box.id, 131_072);
    assert.deepEqual([store.getBox(box.id)!.diskMiB, store.getBox(box.id)!.diskInodes], [2048, 131_072], "the inodes the runtime made its disk with");
    const unsized = store.insertBox(spec(), { maxSlots: 8 });
    assert.equal(unsized.diskMiB, null, "no size in the spec: the node's default, decided when it is made");
    store.deleteBox(unsized.id);
    store.setStatus(box.id, "running");
    store.bumpSeq(box.id);
    assert.equal(store.getBox(box.id)!.seq, 3);
    assert.deepEqual(
      store.idleCandidates().map((b) => b.id),
      [box.id],
    );
    assert.equal(store.boxOfPublicPort(20001), box.id);
    assert.deepEqual(store.countByStatus(), { running: 1 });
    store.deleteBox(box.id);
    assert.deepEqual(store.listListeners(box.id), [], "a box's listeners go with it");
    assert.equal(store.boxOfPublicPort(20001), undefined);
  });

  test("a public TCP port another live box holds is refused; a failed box's is free", () => {
    const tcp = (publicPort: number) => [{ port: 5432, protocol: "tcp" as const, allowPublic: true, publicPort }];
    const first = store.insertBox(spec({ listeners: tcp(20000) }), { maxSlots: 8 });
    assert.throws(
      () => store.insertBox(spec({ listeners: tcp(20000) }), { maxSlots: 8 }),
      (e: PublicPortTakenError) => e instanceof PublicPortTakenError && e.holder === first.id,
    );
    store.setStatus(first.id, "failed", "lost");
    store.insertBox(spec({ listeners: tcp(20000) }), { maxSlots: 8 });
    assert.deepEqual(
      store.liveListeners().map((l) => [l.publicPort, l.status]),
      [[20000, "creating"]],
      "the route table holds no failed box's listeners",
    );
  });
});

describe("migrations", () => {
  test("a new node.db has every migration; opened again it keeps its boxes and the node's id", () => {
    assert.equal(store.version, NODE_MIGRATIONS.length);
    const id = store.nodeId();
    assert.match(id, /^node-[a-z0-9]{12}$/);
    const box = store.insertBox(spec(), { maxSlots: 8 });
    store.close();
    store = new NodeStore(join(dir, "node.db"));
    assert.equal(store.version, NODE_MIGRATIONS.length);
    assert.equal(store.nodeId(), id);
    assert.equal(store.getBox(box.id)?.netSlot, 0);
  });
});

describe("the upgrade: boxes from before node.db", () => {
  test("a box's slot is read back from its network.json (the inverse of the slot's addresses), and its directory is listed", async () => {
    const networks = new BoxNetworks("10.9.0.0/16");
    for (const slot of [0, 1, 77, networks.slots - 1]) assert.equal(networks.slotOf(networks.addresses(slot).guestAddress), slot);
    assert.equal(networks.slotOf(networks.addresses(3).hostAddress), undefined, "a host-side address is no guest's");
    assert.equal(networks.slotOf("10.10.0.2"), undefined, "outside the box subnet");
    assert.equal(networks.slotOf("not an address"), undefined);

    const dataDir = join(dir, "data");
    const runtime = new LocalRuntime({
      dataDir,
      hostArch: "amd64",
      boxSubnet: "10.9.0.0/16",
      debianMirror: "",
      tiniPath: "",
      crunRoot: join(dir, "crun"),
      nofileLimit: 1024,
      disk: { defaultMiB: 1024, bytesPerInode: 16384 },
    });
    mkdirSync(join(dataDir, "boxes", "sb-old000000001"), { recursive: true });
    writeFileSync(join(dataDir, "boxes", "sb-old000000001", "network.json"), JSON.stringify(networks.addresses(42)));
    mkdirSync(join(dataDir, "boxes", "sb-old000000002"), { recursive: true }); // no network.json: it never got one
    mkdirSync(join(dataDir, "boxes", "not-a-box"), { recursive: true });
    assert.deepEqual((await runtime.listBoxes()).sort(), ["sb-old000000001", "sb-old000000002"]);
    assert.equal(runtime.netSlotOf("sb-old000000001"), 42);
    assert.equal(runtime.netSlotOf("sb-old000000002"), undefined);
  });
});
