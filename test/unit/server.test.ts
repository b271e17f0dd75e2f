import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { hybridCgroup2Mounts } from "../../packages/server/src/runtime/crun.js";
import { BoxNetworks } from "../../packages/server/src/runtime/network.js";
import { NameTakenError, NetSlotsExhaustedError, Store, type NewSailbox } from "../../packages/server/src/store/store.js";
import { DAEMON_OPTIONS, DEFAULT_CONFIG, resolveConfig, type DaemonConfig } from "../../packages/server/src/config.js";

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
  const box = (id: string, name: string | null): NewSailbox => ({
    id,
    appId: app.id,
    orgId: org.id,
    name,
    imageName: "debian",
    imageArch: "amd64",
    imagePackages: "",
    cpu: 1,
    memoryMiB: 512,
    diskMiB: 1024,
  });

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
  test("unknown options are refused, and every value is checked against the schema, naming its flag", () => {
    assert.equal(resolveConfig({}).apiListen, "127.0.0.1:7070");
    assert.deepEqual(resolveConfig({}), DEFAULT_CONFIG);
    assert.throws(() => resolveConfig({ dataDirr: "/x" } as never), /unknown daemon option "dataDirr"/);
    const refusals: Array<[Partial<DaemonConfig>, RegExp]> = [
      [{ apiListen: "7070" }, /--api-listen "7070" listen address "7070" must be host:port/],
      [{ dataDir: "relative/dir" }, /--data-dir "relative\/dir" must be an absolute path/],
      [{ tcpListen: "everywhere" }, /--tcp-listen "everywhere" must be an IP address/],
      [{ tcpLimitPerOrg: -1 }, /--tcp-limit -1 must be a whole number from 0/],
      [{ boxSubnet: "10.0.0.0/31" }, /--box-subnet "10.0.0.0\/31" must be an IPv4 CIDR from \/8 to \/30/],
      [{ debianMirror: "ftp://x" }, /--debian-mirror "ftp:\/\/x" must be an http:\/\/ or https:\/\/ URL/],
      [{ logLevel: "chatty" as never }, /--log-level "chatty" must be debug, info, warn, error or silent/],
      [{ gatewayThreads: 0 }, /--gateway-threads 0 must be a whole number from 1 to 64/],
      [{ boxMemoryMiB: 10 }, /boxMemoryMiB 10 must be a whole number from 64/],
      [{ boxDiskMiB: 10 }, /--box-disk 10 must be a whole number from 64 to 1048576 \(MiB\)/],
      [{ boxDiskBytesPerInode: 1024 }, /--box-disk-bytes-per-inode 1024 must be a whole number from 4096/],
      [{ tlsCert: "/etc/cert.pem" }, /give both --tls-cert and --tls-key/],
    ];
    for (const [options, message] of refusals) assert.throws(() => resolveConfig(options), message);
  });

  test("every default passes its own check, and flags are kebab-case", () => {
    for (const option of DAEMON_OPTIONS) {
      if (option.flag) assert.match(option.flag, /^[a-z]+(-[a-z]+)*$/);
      if (option.default !== undefined) assert.equal((option.check as (v: unknown) => string | undefined)(option.default), undefined, option.key);
    }
  });
});
