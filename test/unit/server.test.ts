import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { hybridCgroup2Mounts } from "../../packages/server/src/runtime/crun.js";
import { BoxNetworks } from "../../packages/server/src/runtime/network.js";
import { BOX_ID_COUNT, FIRST_BOX_ID, hostIdsInBoxRanges, idRange, MAX_ID_RANGES } from "../../packages/server/src/runtime/userns.js";
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
    assert.equal(new BoxNetworks("192.168.77.5/24").firewallTable, "sail_192_168_77_0_24", "host bits cleared");
    assert.equal(new BoxNetworks("10.9.0.0/30").slots, 1);
    assert.throws(() => new BoxNetworks("10.9.0.0/31"), /box subnet 10.9.0.0\/31 is too small: it needs at least a \/30/);
    assert.throws(() => new BoxNetworks("10.9.0.0"), /box subnet 10.9.0.0 is not an IPv4 CIDR/);
  });

  test("interface names fit IFNAMSIZ", () => {
    assert.equal(BoxNetworks.hostInterface("sb-abcdefghijkl"), "svabcdefghijkl");
    assert.ok(BoxNetworks.hostInterface("sb-abcdefghijklmnop").length <= 15);
  });
});

describe("box id ranges", () => {
  test("one range of 65536 ids per network slot, disjoint, above 2^31 and below (uid_t) -1", () => {
    assert.deepEqual(idRange(0), { hostId: 2 ** 31, count: 65536 });
    assert.equal(idRange(1).hostId, idRange(0).hostId + BOX_ID_COUNT);
    const last = idRange(MAX_ID_RANGES - 1);
    assert.ok(last.hostId + last.count - 1 < 2 ** 32 - 1, "no box id is (uid_t) -1");
    assert.throws(() => idRange(MAX_ID_RANGES), RangeError);
    assert.throws(() => idRange(-1), RangeError);
    // a /16 box subnet (the default) fits: every slot has a range
    assert.ok(MAX_ID_RANGES >= new BoxNetworks("10.200.0.0/16").slots);
  });

  test("host users, groups and delegated ranges inside the boxes' ids are found", () => {
    const files = { passwd: join(dir, "passwd"), group: join(dir, "group"), subuid: join(dir, "subuid"), subgid: join(dir, "subgid") };
    writeFileSync(files.passwd, "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n");
    writeFileSync(files.group, "root:x:0:\n");
    writeFileSync(files.subuid, "alice:100000:65536\n");
    assert.deepEqual(hostIdsInBoxRanges(16384, { ...files, subgid: join(dir, "absent") }), [], "the usual host: nothing up there");

    writeFileSync(files.passwd, `ldap-user:x:${FIRST_BOX_ID + 5 * BOX_ID_COUNT}:100::/home/x:/bin/sh\n`);
    writeFileSync(files.subgid, `bob:${FIRST_BOX_ID - 10}:20\n`);
    assert.deepEqual(hostIdsInBoxRanges(16384, files), [`user ldap-user (uid ${FIRST_BOX_ID + 5 * BOX_ID_COUNT}, ${files.passwd})`, `the range ${FIRST_BOX_ID - 10}+20 of bob (${files.subgid})`]);
    assert.deepEqual(hostIdsInBoxRanges(5, { ...files, subgid: join(dir, "absent") }), [], "a user above the ranges in use does not count");
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

describe("daemon config", () => {
  test("unknown options are refused, and every value is checked against the schema, naming its flag", () => {
    assert.equal(resolveConfig({}).apiListen, "127.0.0.1:7070");
    assert.deepEqual(resolveConfig({}), DEFAULT_CONFIG);
    assert.deepEqual(resolveConfig({ prebuildImages: ["debian_arm64", "debian+postgresql,g++"] }).prebuildImages, ["debian_arm64", "debian+postgresql,g++"]);
    assert.deepEqual(resolveConfig({ outboundPrivate: ["198.51.100.7", "10.1.2.3/8"] }).outboundPrivate, ["198.51.100.7", "10.1.2.3/8"], "checked, kept as given");
    assert.throws(() => resolveConfig({ dataDirr: "/x" } as never), /unknown daemon option "dataDirr"/);
    const refusals: Array<[Partial<DaemonConfig>, RegExp]> = [
      [{ apiListen: "7070" }, /--api-listen "7070" listen address "7070" must be host:port/],
      [{ dataDir: "relative/dir" }, /--data-dir "relative\/dir" must be an absolute path/],
      [{ tcpListen: "everywhere" }, /--tcp-listen "everywhere" must be an IP address/],
      [{ tcpLimitPerOrg: -1 }, /--tcp-limit -1 must be a whole number from 0/],
      [{ boxSubnet: "10.0.0.0/31" }, /--box-subnet "10.0.0.0\/31" must be an IPv4 CIDR from \/8 to \/30/],
      [{ boxSubnet: "10.0.0.0/7" }, /--box-subnet "10.0.0.0\/7" must be an IPv4 CIDR from \/8 to \/30/],
      [{ boxSubnet: "10.200.0.0" }, /--box-subnet "10.200.0.0" must be an IPv4 CIDR from \/8 to \/30/],
      [{ boxSubnet: "10.256.0.0/16" }, /--box-subnet "10.256.0.0\/16" must be an IPv4 CIDR/],
      [{ boxSubnet: "010.200.0.0/16" }, /--box-subnet "010.200.0.0\/16" must be an IPv4 CIDR/],
      [{ outboundPrivate: ["198.51.100.0/24", "10.1"] }, /--outbound-private .* has "10.1", which is not an IPv4 address or CIDR/],
      [{ outboundPrivate: ["10.0.0.0/33"] }, /--outbound-private .* has "10.0.0.0\/33", which is not an IPv4 address or CIDR/],
      [{ outboundOnly: ["2001:db8::/32"] }, /--outbound-only .* has "2001:db8::\/32", which is not an IPv4 address or CIDR/],
      [{ debianMirror: "ftp://x" }, /--debian-mirror "ftp:\/\/x" must be an http:\/\/ or https:\/\/ URL/],
      [{ logLevel: "chatty" as never }, /--log-level "chatty" must be debug, info, warn, error or silent/],
      [{ gatewayThreads: 0 }, /--gateway-threads 0 must be a whole number from 1 to 64/],
      [{ boxMemoryMiB: 10 }, /boxMemoryMiB 10 must be a whole number from 64/],
      [{ boxDiskMiB: 10 }, /--box-disk 10 must be a whole number from 64 to 1048576 \(MiB\)/],
      [{ boxDiskBytesPerInode: 1024 }, /--box-disk-bytes-per-inode 1024 must be a whole number from 4096/],
      [{ tlsCert: "/etc/cert.pem" }, /give both --tls-cert and --tls-key/],
      [{ prebuildImages: ["debian_sparc"] }, /--prebuild-image \["debian_sparc"\] has "debian_sparc": Unknown image/],
      [{ prebuildImages: ["debian+Bad Name"] }, /--prebuild-image .* is not a Debian package name/],
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
