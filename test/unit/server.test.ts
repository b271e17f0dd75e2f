import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { hybridCgroup2Mounts } from "../../packages/server/src/runtime/crun.js";
import { BoxNetworks } from "../../packages/server/src/runtime/network.js";
import { NameTakenError, NetSlotsExhaustedError, Store, type NewSailbox } from "../../packages/server/src/store/store.js";
import { resolveConfig } from "../../packages/server/src/config.js";

const dir = mkdtempSync(join(tmpdir(), "sail-unit-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("box networks", () => {
  test("each slot is its own /30: host .1, guest .2", () => {
    const nets = new BoxNetworks("10.200.0.0/16");
    assert.equal(nets.slots, 16384);
    assert.deepEqual(nets.addresses(0), { hostAddress: "10.200.0.1", guestAddress: "10.200.0.2" });
    assert.deepEqual(nets.addresses(64), { hostAddress: "10.200.1.1", guestAddress: "10.200.1.2" });
    assert.throws(() => nets.addresses(16384), RangeError);
    assert.deepEqual(new BoxNetworks("192.168.77.5/24").addresses(1), { hostAddress: "192.168.77.5", guestAddress: "192.168.77.6" });
  });

  test("interface names fit IFNAMSIZ", () => {
    assert.equal(BoxNetworks.hostInterface("sb-abcdefghijkl"), "svabcdefghijkl");
    assert.ok(BoxNetworks.hostInterface("sb-abcdefghijklmnop").length <= 15);
  });
});

describe("hybrid cgroup detection", () => {
  const v1 = "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory";
  const v2 = "31 25 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
  const pureV2 = "31 25 0:27 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw";
  test("hides cgroup2 only where v1 controllers exist too", () => {
    assert.deepEqual(hybridCgroup2Mounts([v1, v2].join("\n")), ["/sys/fs/cgroup/unified"]);
    assert.deepEqual(hybridCgroup2Mounts(pureV2), []);
    assert.deepEqual(hybridCgroup2Mounts(v1), []);
  });
});

describe("store", () => {
  const store = new Store(join(dir, "sail.db"));
  const org = store.createOrg("default");
  const app = store.mintApp(org.id, "demo");
  const box = (id: string, name: string | null): NewSailbox => ({ id, appId: app.id, orgId: org.id, name, imageName: "debian", imageArch: "amd64", imagePackages: "", cpu: 1, memoryMiB: 512 });

  test("tokens are found by hash and only by the right token", () => {
    const { token } = store.createToken(org.id, "test");
    assert.equal(store.orgForToken(token)?.id, org.id);
    assert.equal(store.orgForToken(token + "x"), undefined);
  });

  test("minting an app twice returns the same app", () => {
    assert.equal(store.mintApp(org.id, "demo").id, app.id);
  });

  test("live names are unique per app and free again once terminated", () => {
    store.insertSailbox(box("sb-1", "web"), 10);
    assert.throws(() => store.insertSailbox(box("sb-2", "web"), 10), NameTakenError);
    store.setStatus("sb-1", "terminated");
    assert.equal(store.insertSailbox(box("sb-3", "web"), 10).name, "web");
  });

  test("network slots go to the lowest free one and are reused after terminate", () => {
    const fresh = new Store(join(dir, "slots.db"));
    const o = fresh.createOrg("o");
    const a = fresh.mintApp(o.id, "a");
    const mk = (id: string) => fresh.insertSailbox({ ...box(id, null), appId: a.id, orgId: o.id }, 3).netSlot;
    assert.deepEqual([mk("b0"), mk("b1"), mk("b2")], [0, 1, 2]);
    assert.throws(() => mk("b3"), NetSlotsExhaustedError);
    fresh.setStatus("b1", "terminated");
    assert.equal(mk("b4"), 1);
    fresh.setStatus("b0", "failed");
    assert.equal(mk("b5"), 0);
    fresh.close();
  });

  test("migrations are applied once: reopening keeps the data", () => {
    store.close();
    const again = new Store(join(dir, "sail.db"));
    assert.equal(again.findApp(org.id, "demo")?.id, app.id);
    again.close();
  });
});

describe("daemon config", () => {
  test("unknown options are refused, listen addresses checked", () => {
    assert.equal(resolveConfig({}).apiListen, "127.0.0.1:7070");
    assert.throws(() => resolveConfig({ dataDirr: "/x" } as never), /unknown daemon option "dataDirr"/);
    assert.throws(() => resolveConfig({ apiListen: "7070" }), /host:port/);
  });
});
