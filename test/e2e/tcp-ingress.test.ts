import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { connect } from "node:net";
import { describe, test } from "node:test";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Image, IngressPort, InvalidArgumentError, LimitExceededError, Sailbox, type SailError } from "@sail/sdk";
import { runCli, startTcpEcho, TCP_PORTS, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon();

/**
 * Connect, send `payload`, half-close (FIN), and collect everything until the server closes.
 * Resolves to the first 64 KiB that came back, its last 4 bytes and the SHA-256 of all of it,
 * or to null when the connection was closed before any byte arrived.
 */
function exchange(port: number, payload: Buffer | Iterable<Buffer>, options: { host?: string; localAddress?: string } = {}) {
  return new Promise<{ received: Buffer; tail: Buffer; hash: string } | null>((resolve) => {
    const socket = connect({ host: options.host ?? "127.0.0.1", port, localAddress: options.localAddress, allowHalfOpen: true });
    const hash = createHash("sha256");
    let received = Buffer.alloc(0);
    let tail = Buffer.alloc(0);
    let total = 0;
    socket.on("connect", async () => {
      for (const chunk of Buffer.isBuffer(payload) ? [payload] : payload) {
        if (!socket.write(chunk)) await new Promise((r) => socket.once("drain", r));
      }
      socket.end();
    });
    socket.on("data", (d: Buffer) => {
      total += d.length;
      hash.update(d);
      if (received.length < 65536) received = Buffer.concat([received, d]).subarray(0, 65536);
      tail = Buffer.concat([tail, d]).subarray(-4);
    });
    socket.on("error", () => {});
    socket.on("close", () => resolve(total === 0 ? null : { received, tail, hash: hash.digest("hex") }));
  });
}

async function tcpBox(options: { cidrAllowlist?: string[]; allowPublic?: boolean } = {}, port = 7000) {
  const sb = await pool.create({ ingressPorts: [new IngressPort(port, "tcp", options)] });
  await startTcpEcho(sb, port);
  const listener = await sb.listener(port).wait({ timeout: 60 });
  return { sb, listener };
}

describe("raw TCP ingress", () => {
  test("a TCP listener gives a host and port; bytes go both ways intact, and a half-close is honoured", async () => {
    const { listener } = await tcpBox({ allowPublic: true });
    assert.equal(listener.protocol, "tcp");
    assert.equal(listener.endpoint.host, "localhost");
    const [first, last] = TCP_PORTS.split("-").map(Number) as [number, number];
    assert.ok(listener.endpoint.port >= first && listener.endpoint.port <= last, `${listener.endpoint.port} is in --tcp-ports ${TCP_PORTS}`);

    const small = Buffer.from("hello over tcp\n");
    const echoed = await exchange(listener.endpoint.port, small);
    // the server answers "BYE" only after it saw our FIN, over the still-open reverse direction
    assert.equal(echoed!.received.toString(), "hello over tcp\nBYE\n");

    for (const size of [1024 * 1024, 100 * 1024 * 1024]) {
      const sent = createHash("sha256");
      const chunks = function* () {
        for (let left = size; left > 0; left -= 1 << 20) {
          const c = randomBytes(Math.min(1 << 20, left));
          sent.update(c);
          yield c;
        }
      };
      const result = await exchange(listener.endpoint.port, chunks());
      // what comes back is exactly what we sent, then "BYE\n"
      assert.equal(result!.tail.toString(), "BYE\n");
      assert.equal(result!.hash, sent.update("BYE\n").digest("hex"), `${size} bytes`);
    }
  });

  test("a connection from outside the cidrAllowlist never reaches the guest; one from inside does", async () => {
    const { sb, listener } = await tcpBox({ cidrAllowlist: ["127.0.0.2/32"] });
    const refused = await exchange(listener.endpoint.port, Buffer.from("from-127.0.0.1"), { localAddress: "127.0.0.1" });
    assert.equal(refused, null);
    const allowed = await exchange(listener.endpoint.port, Buffer.from("from-127.0.0.2"), { localAddress: "127.0.0.2" });
    assert.equal(allowed!.received.toString(), "from-127.0.0.2BYE\n");
    const peers = (await sb.exec("cat /tmp/peers.log").output()).stdout;
    assert.equal(peers, "from-127.0.0.2\n");
  });

  test("an IPv6 allowlist admits ::1 and refuses IPv4 loopback", async () => {
    const { sb, listener } = await tcpBox({ cidrAllowlist: ["::1"] });
    assert.equal(await exchange(listener.endpoint.port, Buffer.from("v4"), { host: "127.0.0.1" }), null);
    const v6 = await exchange(listener.endpoint.port, Buffer.from("v6"), { host: "::1" });
    assert.equal(v6!.received.toString(), "v6BYE\n");
    assert.equal((await sb.exec("cat /tmp/peers.log").output()).stdout, "v6\n");
  });

  test("the endpoint is the same after a daemon restart, and terminate releases it", async () => {
    const { sb, listener } = await tcpBox({ allowPublic: true });
    await daemon.restart();
    const again = await (await Sailbox.fromId(sb.id, { client: daemon.client() })).listener(7000).wait({ timeout: 60 });
    assert.equal(again.endpoint.port, listener.endpoint.port);
    assert.equal((await exchange(again.endpoint.port, Buffer.from("x")))!.received.toString(), "xBYE\n");
    await sb.terminate();
    assert.equal(await exchange(listener.endpoint.port, Buffer.from("x")), null);
  });
});

describe("access-control refusals", () => {
  test("bad CIDRs and unauthenticated well-known ports are refused with their codes; allowPublic, an allowlist, and 22 as TCP are accepted", async () => {
    const app = await pool.app("tcp-rules");
    const before = (await Sailbox.list({ app })).length;
    const refuse = async (port: IngressPort, code: string, message: RegExp) =>
      assert.rejects(Sailbox.create({ app, ingressPorts: [port] }), (e: SailError) => e instanceof InvalidArgumentError && e.code === code && message.test(e.message));
    await refuse(new IngressPort(7000, "tcp", { cidrAllowlist: ["300.1.1.1/8"] }), "SAIL_CIDR_INVALID", /"300\.1\.1\.1\/8".*not an IPv4 or IPv6 CIDR/);
    await refuse(new IngressPort(7000, "tcp", { cidrAllowlist: ["10.0.0.0/33"] }), "SAIL_CIDR_INVALID", /port 7000/);
    for (const port of [5432, 3306, 6379, 27017, 11211, 9200]) {
      await refuse(new IngressPort(port, "tcp"), "SAIL_PORT_UNAUTHENTICATED", /cidrAllowlist nor allowPublic/);
    }
    assert.equal((await Sailbox.list({ app })).length, before);

    const ok = await pool.create({
      app,
      ingressPorts: [new IngressPort(5432, "tcp", { allowPublic: true }), new IngressPort(6379, "tcp", { cidrAllowlist: ["127.0.0.1"] }), new IngressPort(22, "tcp")],
    });
    const listeners = await ok.listeners();
    assert.deepEqual(
      listeners.map((l) => [l.port, l.protocol]),
      [
        [22, "tcp"],
        [5432, "tcp"],
        [6379, "tcp"],
      ],
    );
    const info = (await daemon.client().request<{ listeners: Array<{ port: number; cidrAllowlist: string[] }> }>("GET", `/v1/sailboxes/${ok.id}/listeners`)).listeners;
    assert.deepEqual(info.find((l) => l.port === 6379)!.cidrAllowlist, ["127.0.0.1/32"]);
    await ok.terminate();
  });

  test("an org holds at most 32 raw-TCP endpoints: the 33rd is refused and nothing is created; a terminate frees them", async () => {
    await pool.terminateAll(); // the org's other endpoints from earlier tests
    const app = await pool.app("tcp-limit");
    const ports = (from: number, n: number) => Array.from({ length: n }, (_, i) => new IngressPort(from + i, "tcp"));
    const full = await pool.create({ app, ingressPorts: ports(7100, 32) });
    assert.equal((await full.listeners()).length, 32);
    const before = (await Sailbox.list({ app })).length;
    await assert.rejects(
      Sailbox.create({ app, ingressPorts: ports(7200, 1) }),
      (e: SailError) => e instanceof LimitExceededError && e.code === "SAIL_TCP_LIMIT_EXCEEDED" && /holds 32 of its 32 raw-TCP endpoints/.test(e.message),
    );
    assert.equal((await Sailbox.list({ app })).length, before);
    await full.terminate();
    const next = await pool.create({ app, ingressPorts: ports(7200, 1) });
    assert.equal((await next.listeners()).length, 1);
  });

  test("the CLI publishes TCP ports with --tcp/--allow and prints host:port", async () => {
    const create = await runCli(daemon, ["box", "create", "--app", "cli-tcp", "--tcp", "5432", "--allow", "127.0.0.0/8"]);
    assert.equal(create.code, 0, create.stderr);
    const id = /sb-[a-z0-9]{12}/.exec(create.stdout)![0];
    try {
      const [first, last] = TCP_PORTS.split("-").map(Number) as [number, number];
      const printed = Number(/port 5432 \(tcp\): localhost:(\d+)\n/.exec(create.stdout)?.[1]);
      assert.ok(printed >= first && printed <= last, `${create.stdout} names a port in --tcp-ports ${TCP_PORTS}`);
      const listed = await runCli(daemon, ["box", "listeners", id]);
      assert.match(listed.stdout, new RegExp(`5432\\s+tcp\\s+localhost:${printed}\\s`));
      const refused = await runCli(daemon, ["box", "create", "--app", "cli-tcp", "--tcp", "5432"]);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /SAIL_PORT_UNAUTHENTICATED/);
    } finally {
      await runCli(daemon, ["box", "terminate", id]);
    }
  });
});

describe("PostgreSQL in a box, reached with psql", () => {
  const password = "sail-test-pw";
  const psql = (host: string, port: number, sql: string) =>
    promisify(execFile)("psql", ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, `host=${host} port=${port} user=postgres dbname=postgres sslmode=disable connect_timeout=10`], {
      env: { ...process.env, PGPASSWORD: password },
    });

  test("Image.debian.aptInstall('postgresql') runs a real PostgreSQL that psql reaches through the TCP endpoint", async () => {
    const sb = await pool.create({
      image: Image.debian.aptInstall("postgresql"),
      ingressPorts: [new IngressPort(5432, "tcp", { cidrAllowlist: ["127.0.0.1/32", "::1/128"] })],
    });
    assert.deepEqual(sb.describe().image.aptPackages, ["postgresql"]);
    const setup = await sb
      .exec(
        [
          "set -e",
          "cfg=/etc/postgresql/15/main",
          `echo "listen_addresses = '*'" >> $cfg/postgresql.conf`,
          'echo "host all all 0.0.0.0/0 scram-sha-256" >> $cfg/pg_hba.conf',
          "pg_ctlcluster 15 main start",
          `su postgres -c "psql -q -c \\"ALTER USER postgres PASSWORD '${password}'\\""`,
        ].join("\n"),
      )
      .output();
    assert.equal(setup.exitCode, 0, setup.stderr);
    const listener = await sb.listener(5432).wait({ timeout: 60 });
    const { host, port } = listener.endpoint;

    const { stdout } = await psql(host, port, "CREATE TABLE seen (x int); INSERT INTO seen VALUES (40), (2); SELECT sum(x) FROM seen; SELECT version();");
    const [sum, version] = stdout.trim().split("\n");
    assert.equal(sum, "42");
    assert.match(version!, /^PostgreSQL 15\./);
    // a second connection sees the first one's data: one server, state kept
    assert.equal((await psql(host, port, "SELECT count(*) FROM seen")).stdout.trim(), "2");
  });

  test("a package apt cannot install refuses the create with SAIL_IMAGE_BUILD_FAILED and creates nothing; a bad name is refused before any build", async () => {
    const app = await pool.app("apt-refusals");
    const before = (await Sailbox.list({ app })).length;
    await assert.rejects(
      Sailbox.create({ app, image: Image.debian.aptInstall("sail-no-such-package") }),
      (e: SailError) => e instanceof InvalidArgumentError && e.code === "SAIL_IMAGE_BUILD_FAILED" && /sail-no-such-package/.test(e.message) && /Unable to locate package/.test(e.message),
    );
    assert.throws(
      () => Image.debian.aptInstall("Bad Name"),
      (e: SailError) => e.code === "SAIL_IMAGE_PACKAGES_INVALID" && /"Bad Name"/.test(e.message),
    );
    // the server checks too: a raw request with a shell injection attempt as a package name
    await assert.rejects(
      daemon.client().request("POST", "/v1/sailboxes", { appId: app.id, image: { name: "debian", aptPackages: ["curl; touch /tmp/pwned"] } }),
      (e: SailError) => e.code === "SAIL_IMAGE_PACKAGES_INVALID",
    );
    assert.equal((await Sailbox.list({ app })).length, before);
  });
});
