import assert from "node:assert/strict";
import { isIP } from "node:net";
import { test } from "node:test";
import fc from "fast-check";
import { cidrMatcher, intToIpv4, ipv4ToInt, normalizeCidr, normalizeIngressPorts, parseIpv4Cidr, UNAUTHENTICATED_PORTS, type SailError } from "@sail/protocol";

test("CIDRs normalize: bare addresses are one host, host bits are cleared, garbage is refused", () => {
  assert.equal(normalizeCidr("203.0.113.7"), "203.0.113.7/32");
  assert.equal(normalizeCidr("10.1.2.3/8"), "10.0.0.0/8");
  assert.equal(normalizeCidr("0.0.0.0/0"), "0.0.0.0/0");
  assert.equal(normalizeCidr("::1"), "::1/128");
  assert.equal(normalizeCidr("2001:db8::1/32"), "2001:db8::/32");
  assert.equal(normalizeCidr("2001:DB8:0:0::1"), "2001:db8::1/128", "IPv6 as RFC 5952 writes it");
  assert.equal(normalizeCidr("::/0"), "::/0");
  for (const bad of ["", "300.1.1.1", "10.0.0.0/33", "1.2.3.4/-1", "example.com", "::/129", "1.2.3.4/8/9", " 1.2.3.4", "10.0.0.0/8 ", "1.2.3.4/ 8", "2001:db8::g"]) {
    assert.equal(normalizeCidr(bad), undefined, bad);
  }
});

test("an IPv4 CIDR reads the same wherever Sail reads one: an allowlist, an outbound policy, the daemon's config", () => {
  for (const cidr of ["203.0.113.7", "10.1.2.3/8", "198.51.100.0/25", "0.0.0.0/0", "10.200.0.0/16"]) assert.equal(normalizeCidr(cidr), parseIpv4Cidr(cidr)!.cidr, cidr);
  assert.deepEqual(parseIpv4Cidr("192.168.77.5/24"), { cidr: "192.168.77.0/24", prefix: 24, range: [3232255232, 3232255487] });
  // the shorthand forms inet_aton reads name another address than they seem to ("010" is octal 8):
  // refused everywhere, as the outbound policy and the daemon's config always did (an allowlist took them)
  for (const loose of ["10.1", "3232235777", "1", "0x0a.0.0.1", "010.0.0.1", "1.2.3.04", "1.2.3.4/032"]) {
    assert.equal(normalizeCidr(loose), undefined, loose);
    assert.equal(parseIpv4Cidr(loose), undefined, loose);
  }
});

test("an IPv4 address is four decimal numbers up to 255 without leading zeros, exactly as node's isIP reads one", () => {
  const octet = fc.oneof(fc.integer({ min: 0, max: 300 }).map(String), fc.constantFrom("00", "01", "010", "0x1", "255", "256", ""));
  const dotted = fc.array(octet, { minLength: 1, maxLength: 5 }).map((parts) => parts.join("."));
  const anything = fc.string({ unit: fc.constantFrom("0", "1", "2", "5", "9", ".", "x", ":"), maxLength: 16 });
  fc.assert(
    fc.property(fc.oneof(dotted, anything), (text) => {
      const n = ipv4ToInt(text);
      assert.equal(n !== undefined, isIP(text) === 4, text);
      if (n !== undefined) assert.equal(intToIpv4(n), text);
    }),
    { numRuns: 2000 },
  );
});

test("the matcher admits listed sources only; IPv4-mapped IPv6 peers match as IPv4", () => {
  const allowed = cidrMatcher(["203.0.113.0/24", "198.51.100.7/32", "2001:db8::/32"]);
  assert.equal(allowed("203.0.113.200"), true);
  assert.equal(allowed("::ffff:203.0.113.200"), true);
  assert.equal(allowed("198.51.100.7"), true);
  assert.equal(allowed("198.51.100.8"), false);
  assert.equal(allowed("2001:db8:1::5"), true);
  assert.equal(allowed("2001:db9::5"), false);
  assert.equal(allowed(undefined), false);
  assert.equal(allowed("not an address"), false);
  assert.equal(cidrMatcher([])("192.0.2.1"), true); // empty: anyone
});

test("well-known unauthenticated ports need an allowlist or allowPublic as raw TCP, and the message says how", () => {
  for (const port of [5432, 3306, 6379, 27017, 11211, 9200]) assert.ok(UNAUTHENTICATED_PORTS[port], String(port));
  assert.throws(
    () => normalizeIngressPorts([{ port: 5432, protocol: "tcp" }]),
    (e: SailError) => e.code === "SAIL_PORT_UNAUTHENTICATED" && /allowPublic: true/.test(e.message) && /PostgreSQL/.test(e.message),
  );
  assert.throws(
    () => normalizeIngressPorts([{ port: 5432, protocol: "tcp", cidrAllowlist: [] }]),
    (e: SailError) => e.code === "SAIL_PORT_UNAUTHENTICATED",
  );
  assert.deepEqual(normalizeIngressPorts([{ port: 5432, protocol: "tcp", allowPublic: true }]), [{ port: 5432, protocol: "tcp", cidrAllowlist: [], allowPublic: true, proxyProtocol: false }]);
  assert.deepEqual(normalizeIngressPorts([{ port: 22, protocol: "tcp" }, 3000]), [
    { port: 22, protocol: "tcp", cidrAllowlist: [], allowPublic: false, proxyProtocol: false },
    { port: 3000, protocol: "http", h2c: false },
  ]);
});

test("h2c is for HTTP ports and proxyProtocol for TCP ones; each names the port when misplaced", () => {
  assert.deepEqual(normalizeIngressPorts([{ port: 50051, protocol: "http", h2c: true }]), [{ port: 50051, protocol: "http", h2c: true }]);
  assert.deepEqual(normalizeIngressPorts([{ port: 5432, protocol: "tcp", allowPublic: true, proxyProtocol: true }])[0]!.proxyProtocol, true);
  assert.throws(
    () => normalizeIngressPorts([{ port: 7070, protocol: "tcp", h2c: true }]),
    (e: SailError) => e.code === "SAIL_PROTOCOL_INVALID" && /raw TCP port 7070/.test(e.message),
  );
  assert.throws(
    () => normalizeIngressPorts([{ port: 3000, protocol: "http", proxyProtocol: true }]),
    (e: SailError) => e.code === "SAIL_PROTOCOL_INVALID" && /HTTP port 3000/.test(e.message),
  );
  assert.throws(
    () => normalizeIngressPorts([{ port: 3000, protocol: "http", h2c: "yes" as never }]),
    (e: SailError) => e.code === "SAIL_PROTOCOL_INVALID",
  );
});

import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveSshKey } from "../../packages/sdk/src/ssh.js";

test("ssh: true reads ~/.ssh/id_ed25519.pub, falls back to id_rsa.pub, and says which files it tried", () => {
  const home = mkdtempSync(join(tmpdir(), "sail-home-"));
  assert.throws(
    () => resolveSshKey(true, home),
    (e: SailError) => e.code === "SAIL_SSH_KEY_INVALID" && e.message.includes(join(home, ".ssh/id_ed25519.pub")) && e.message.includes(join(home, ".ssh/id_rsa.pub")),
  );
  mkdirSync(join(home, ".ssh"));
  const rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7 user@host";
  writeFileSync(join(home, ".ssh/id_rsa.pub"), rsa);
  assert.equal(resolveSshKey(true, home), "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7"); // the fallback
  assert.throws(
    () => resolveSshKey("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIKq2"),
    (e: SailError) => e.code === "SAIL_SSH_KEY_INVALID" && /does not match its type/.test(e.message),
  );
  const ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKq2mKSx7sU1fUC4+yCvhYXfa3Nfq7pP5/9Xc5K9B5cE me@laptop";
  writeFileSync(join(home, ".ssh/id_ed25519.pub"), ed);
  assert.equal(resolveSshKey(true, home), ed.split(" ").slice(0, 2).join(" "));
  assert.equal(resolveSshKey(ed), ed.split(" ").slice(0, 2).join(" "));
  assert.equal(resolveSshKey(join(home, ".ssh/id_ed25519.pub")), ed.split(" ").slice(0, 2).join(" "));
});
