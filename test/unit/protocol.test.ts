import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  AbortedError,
  checkDisk,
  AuthError,
  checkAptPackages,
  checkIdempotencyKey,
  imageName,
  parseImageName,
  checkExec,
  checkName,
  checkResources,
  ConflictError,
  ERROR_CODES,
  errorFromWire,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  sailError,
  SailError,
  SailboxPausedError,
  domainMatches,
  intToIpv4,
  ipv4ToInt,
  mergeRanges,
  forbiddenIpv4Ranges,
  connectedIpv4Ranges,
  rangesContain,
  NETWORK_ENTRIES_MAX,
  NEVER_REACHED_IPV4,
  normalizeNetworkPolicy,
  parseIpv4Cidr,
  rangeCovered,
  subtractRanges,
} from "@sail/protocol";

describe("errors", () => {
  test("every code carries an HTTP status and rebuilds into its class from the wire", () => {
    for (const code of Object.keys(ERROR_CODES) as Array<keyof typeof ERROR_CODES>) {
      const original = sailError(code, `message for ${code}`, { sailboxId: "sb-x", port: 1 });
      assert.equal(original.status, ERROR_CODES[code].status);
      const rebuilt = errorFromWire(JSON.parse(JSON.stringify(original.toWire())), original.status);
      assert.equal(rebuilt.constructor, original.constructor, code);
      assert.equal(rebuilt.code, code);
      assert.equal(rebuilt.message, `message for ${code}`);
      assert.equal(rebuilt.sailboxId, "sb-x");
      assert.ok(rebuilt instanceof SailError);
    }
  });

  test("codes map to the classes users instanceof on", () => {
    assert.ok(sailError("SAIL_NAME_TAKEN", "x") instanceof ConflictError);
    assert.ok(sailError("SAIL_SAILBOX_NOT_FOUND", "x") instanceof NotFoundError);
    assert.ok(sailError("SAIL_AUTH_INVALID", "x") instanceof AuthError);
    assert.ok(sailError("SAIL_SAILBOX_PAUSED", "x") instanceof SailboxPausedError);
    assert.ok(sailError("SAIL_IMAGE_ARCH_UNSUPPORTED", "x") instanceof InvalidArgumentError);
  });

  test("an answer without an error body becomes an InternalError naming the status", () => {
    const err = errorFromWire("<html>", 502);
    assert.ok(err instanceof InternalError);
    assert.match(err.message, /502/);
  });
});

describe("rules", () => {
  test("names are DNS-label-like", () => {
    for (const ok of ["a", "web-demo", "x1", "a".repeat(63)]) assert.equal(checkName("sailbox", ok), ok);
    for (const bad of ["", "-a", "a-", "A", "a_b", "a.b", "a".repeat(64), 7, null]) {
      assert.throws(
        () => checkName("app", bad),
        (e: SailError) => e.code === "SAIL_NAME_INVALID",
      );
    }
  });

  test("resources are bounded by the host's cores and sane memory", () => {
    checkResources(undefined, undefined, 2);
    checkResources(0.5, 256, 2);
    for (const [cpu, mem] of [
      [0, undefined],
      [3, undefined],
      [Number.NaN, undefined],
      [undefined, 63],
      [undefined, 100.5],
      [undefined, "512"],
    ] as const) {
      assert.throws(
        () => checkResources(cpu, mem, 2),
        (e: SailError) => e.code === "SAIL_RESOURCES_INVALID",
      );
    }
  });

  test("a disk is a whole number of MiB from 64 to 1 TiB, and a refusal names the disk", () => {
    for (const ok of [undefined, 64, 10240, 1048576]) checkDisk(ok);
    for (const bad of [0, 63, 1048577, 100.5, "1024", null, Number.NaN]) {
      assert.throws(
        () => checkDisk(bad),
        (e: SailError) => e.code === "SAIL_RESOURCES_INVALID" && e.details.field === "disk" && /disk must be/.test(e.message),
      );
    }
  });

  test("exec requests need a command, an absolute cwd and string env", () => {
    checkExec({ cmd: "true", cwd: "/srv", env: { A_1: "x" }, background: true });
    const bad = [
      { cmd: "" },
      { cmd: "a\0b" },
      { cmd: "true", cwd: "relative" },
      { cmd: "true", env: { "1A": "x" } },
      { cmd: "true", env: { A: 1 as unknown as string } },
      { cmd: "true", env: [] as unknown as Record<string, string> },
      { cmd: "true", background: "yes" as unknown as boolean },
      { cmd: "x".repeat(128 * 1024 + 1) },
    ];
    for (const req of bad)
      assert.throws(
        () => checkExec(req),
        (e: SailError) => e.code === "SAIL_EXEC_INVALID",
        JSON.stringify(req).slice(0, 80),
      );
  });
});

describe("apt packages", () => {
  test("Debian package names are accepted, sorted and deduplicated; anything else is refused with its code", () => {
    assert.deepEqual(checkAptPackages(["postgresql", "curl", "postgresql", "libc6-dev", "g++"]), ["curl", "g++", "libc6-dev", "postgresql"]);
    assert.deepEqual(checkAptPackages(undefined), []);
    for (const bad of [["Bad"], ["a"], ["-rf"], ["curl; rm -rf /"], ["$(id)"], [7], "postgresql", Array.from({ length: 65 }, (_, i) => `pkg${i}`)]) {
      assert.throws(
        () => checkAptPackages(bad),
        (e: SailError) => e.code === "SAIL_IMAGE_PACKAGES_INVALID" && /image\.aptPackages/.test(e.message),
        JSON.stringify(bad),
      );
    }
  });
});

describe("image names and idempotency keys", () => {
  test("an image's name is the SDKs' (debian_arm64+postgresql,redis-server), and parses back", () => {
    const cases: Array<[string, object]> = [
      ["debian", { name: "debian" }],
      ["debian_amd64", { name: "debian", arch: "amd64" }],
      ["debian_arm64+postgresql,g++", { name: "debian", arch: "arm64", aptPackages: ["g++", "postgresql"] }],
    ];
    for (const [text, ref] of cases) {
      assert.deepEqual(parseImageName(text), ref, text);
      assert.equal(imageName(parseImageName(text)), text.replace("postgresql,g++", "g++,postgresql"));
    }
    assert.deepEqual(parseImageName("debian_arm64", ["sl"]), { name: "debian", arch: "arm64", aptPackages: ["sl"] });
    for (const bad of ["ubuntu", "debian_sparc", "debian-arm64", "", "+sl"])
      assert.throws(
        () => parseImageName(bad),
        (e: SailError) => e.code === "SAIL_IMAGE_UNKNOWN",
        bad,
      );
    assert.throws(
      () => parseImageName("debian+Bad"),
      (e: SailError) => e.code === "SAIL_IMAGE_PACKAGES_INVALID",
    );
  });

  test("an Idempotency-Key is 1-255 visible ASCII characters", () => {
    assert.equal(checkIdempotencyKey("0b5e6f9c-2f1e-4a53-9d6c-5b1e2c3d4e5f"), "0b5e6f9c-2f1e-4a53-9d6c-5b1e2c3d4e5f");
    for (const bad of ["", "has space", "x".repeat(256), "é", 7, undefined])
      assert.throws(
        () => checkIdempotencyKey(bad),
        (e: SailError) => e.code === "SAIL_IDEMPOTENCY_KEY_INVALID" && e.status === 400,
      );
  });

  test("a key reused for another request is a 422 ConflictError; an abort is the SDK's AbortedError", () => {
    const reused = errorFromWire({ error: { code: "SAIL_IDEMPOTENCY_KEY_REUSED", message: "x" } }, 422);
    assert.ok(reused instanceof ConflictError);
    assert.equal(reused.status, 422);
    assert.ok(errorFromWire({ error: { code: "SAIL_ABORTED", message: "x" } }, 499) instanceof AbortedError);
  });
});

describe("outbound network rules", () => {
  test("a policy is open, blocked, an allowlist or a denylist; entries come back canonical and de-duplicated", () => {
    assert.deepEqual(normalizeNetworkPolicy({}), { outbound: "open", allowOut: [], denyOut: [] });
    assert.deepEqual(normalizeNetworkPolicy({ blockNetwork: true }), { outbound: "blocked", allowOut: [], denyOut: [] });
    assert.deepEqual(normalizeNetworkPolicy({ allowOut: ["198.51.100.7", "203.0.113.9/24", "Example.COM.", "*.Example.com", "198.51.100.7/32"] }), {
      outbound: "allowlist",
      allowOut: ["198.51.100.7/32", "203.0.113.0/24", "example.com", "*.example.com"],
      denyOut: [],
    });
    assert.deepEqual(normalizeNetworkPolicy({ denyOut: ["10.0.0.0/8"], allowOut: [] }), { outbound: "denylist", allowOut: [], denyOut: ["10.0.0.0/8"] });
  });

  test("bad entries and combinations are refused with their code, naming the entry", () => {
    const refused = (request: object, code: string, message: RegExp) =>
      assert.throws(
        () => normalizeNetworkPolicy(request),
        (e: SailError) => e.code === code && message.test(e.message),
        JSON.stringify(request),
      );
    refused({ allowOut: ["256.1.1.1"] }, "SAIL_NETWORK_ENTRY_INVALID", /"256\.1\.1\.1"/);
    refused({ allowOut: ["1.2.3.4/33"] }, "SAIL_NETWORK_ENTRY_INVALID", /1\.2\.3\.4\/33/);
    refused({ allowOut: ["01.2.3.4"] }, "SAIL_NETWORK_ENTRY_INVALID", /01\.2\.3\.4/);
    refused({ denyOut: ["2001:db8::/32"] }, "SAIL_NETWORK_ENTRY_INVALID", /IPv4 only/);
    refused({ allowOut: ["localhost"] }, "SAIL_NETWORK_ENTRY_INVALID", /localhost/);
    refused({ allowOut: ["a.*.example.com"] }, "SAIL_NETWORK_ENTRY_INVALID", /a\.\*\.example\.com/);
    refused({ allowOut: ["-bad.example.com"] }, "SAIL_NETWORK_ENTRY_INVALID", /-bad/);
    refused({ allowOut: [42] }, "SAIL_NETWORK_ENTRY_INVALID", /42/);
    refused({ allowOut: "example.com" }, "SAIL_NETWORK_ENTRY_INVALID", /must be a list/);
    refused({ allowOut: Array.from({ length: NETWORK_ENTRIES_MAX + 1 }, (_, i) => `198.51.100.${i % 256}`) }, "SAIL_NETWORK_ENTRY_INVALID", /at most 256/);
    refused({ blockNetwork: true, denyOut: ["example.com"] }, "SAIL_NETWORK_POLICY_CONFLICT", /blockNetwork and denyOut/);
    refused({ allowOut: ["example.com"], denyOut: ["example.org"] }, "SAIL_NETWORK_POLICY_CONFLICT", /allowOut and denyOut/);
    refused({ blockNetwork: "yes" }, "SAIL_INVALID_ARGUMENT", /true or false/);
  });

  test("a domain entry matches that name only; *.domain any name below it, not itself", () => {
    assert.ok(domainMatches("example.com", "EXAMPLE.com."));
    assert.ok(!domainMatches("example.com", "www.example.com"));
    assert.ok(domainMatches("*.example.com", "www.example.com"));
    assert.ok(domainMatches("*.example.com", "a.b.example.com"));
    assert.ok(!domainMatches("*.example.com", "example.com"));
    assert.ok(!domainMatches("*.example.com", "badexample.com"));
  });

  test("IPv4 ranges: subtract, merge and coverage, as the firewall's never-reached set is built", () => {
    const r = (cidr: string) => parseIpv4Cidr(cidr)!.range;
    assert.deepEqual(parseIpv4Cidr("10.1.2.3/8"), { cidr: "10.0.0.0/8", prefix: 8, range: [167772160, 184549375] });
    const left = subtractRanges([r("10.0.0.0/8")], [r("10.1.0.0/16")]);
    assert.deepEqual(
      left.map(([a, b]) => `${intToIpv4(a)}-${intToIpv4(b)}`),
      ["10.0.0.0-10.0.255.255", "10.2.0.0-10.255.255.255"],
    );
    assert.deepEqual(mergeRanges([r("10.0.0.0/9"), r("10.128.0.0/9"), r("11.0.0.0/8")]), [[r("10.0.0.0/8")[0], r("11.0.0.0/8")[1]]]);
    assert.ok(rangeCovered(r("10.1.0.0/16"), [r("10.0.0.0/8")]));
    assert.ok(!rangeCovered(r("0.0.0.0/0"), NEVER_REACHED_IPV4.map(r)));
    assert.ok(NEVER_REACHED_IPV4.map(r).some(([a, b]) => ipv4ToInt("169.254.169.254")! >= a && ipv4ToInt("169.254.169.254")! <= b));
    // one daemon's forbidden set: the never-reached ranges, less what its operator opened, plus its own box subnet
    const forbidden = forbiddenIpv4Ranges(["10.1.2.3/32"], "192.0.2.0/24");
    const inside = (address: string) => rangesContain(forbidden, ipv4ToInt(address)!);
    assert.ok(inside("10.1.2.2") && !inside("10.1.2.3") && inside("10.1.2.4"));
    assert.ok(inside("169.254.169.254") && inside("192.0.2.9") && !inside("192.0.3.9") && !inside("198.51.100.10"));
  });

  test("the clouds' host endpoints are never reached: Azure's wire server on its public address, metadata in link-local and CGNAT", () => {
    const forbidden = forbiddenIpv4Ranges([], "10.200.0.0/16");
    const inside = (address: string) => rangesContain(forbidden, ipv4ToInt(address)!);
    for (const endpoint of ["168.63.129.16", "169.254.169.254", "169.254.170.2", "100.100.100.200", "100.100.2.136", "192.0.0.192"]) assert.ok(inside(endpoint), endpoint);
    assert.ok(!inside("168.63.129.15") && !inside("168.63.129.17"), "only the wire server itself, not Azure's public neighbours");
    const opened = forbiddenIpv4Ranges(["168.63.129.16/32"], "10.200.0.0/16");
    assert.ok(!rangesContain(opened, ipv4ToInt("168.63.129.16")!), "an operator may open it with --outbound-private");
  });

  test("the host's directly connected networks boxes are refused: less the box subnet, what is refused already and what the operator opened", () => {
    const text = (ranges: Array<readonly [number, number]>) => ranges.map(([a, b]) => `${intToIpv4(a)}-${intToIpv4(b)}`);
    // a LAN, a link-scope route, the box subnet's /30s, loopback, a private LAN, and one the operator opened
    const prefixes = ["192.0.2.0/24", "203.0.113.0/26", "10.200.0.0/30", "127.0.0.0/8", "192.168.1.0/24", "198.51.100.120/30"];
    assert.deepEqual(text(connectedIpv4Ranges(prefixes, ["198.51.100.120/30"], "10.200.0.0/16")), ["192.0.2.0-192.0.2.255", "203.0.113.0-203.0.113.63"]);
    // part of a connected network opened: the rest stays refused
    assert.deepEqual(text(connectedIpv4Ranges(["192.0.2.0/24"], ["192.0.2.128/25"], "10.200.0.0/16")), ["192.0.2.0-192.0.2.127"]);
    assert.deepEqual(connectedIpv4Ranges([], [], "10.200.0.0/16"), []);
  });
});
