import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { describe, test } from "node:test";
import pg from "pg";
import { fetch } from "undici";
import { App, AuthError, SailClient, Sailbox, type SailError } from "@sail/sdk";
import { CLI, DATA_DIR, eventually, gatewayAgent, leftoversOnceRemoved, runProcess, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon();
const NOSTART_DIR = "/var/lib/sail-test-nostart";

describe("the daemon", () => {
  test("a box survives a graceful daemon restart and a crash, and still answers exec", async () => {
    const sb = await pool.create({ name: "survivor" });
    await sb.exec("echo kept > /root/state").wait();
    await sb.exec("sleep 31337", { background: true }).wait();
    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      await daemon.restart(signal);
      const again = await Sailbox.fromId(sb.id, { client: daemon.client() });
      assert.equal(await again.status(), "running");
      const out = await again.exec("cat /root/state; pgrep -f 'sleep 31337' >/dev/null && echo still-running").output();
      assert.equal(out.stdout, "kept\nstill-running\n", `after ${signal}`);
    }
  });

  test("sail up starts from a directory only root may enter (a checkout under /root): HAProxy, which runs as its own user, does not need it", async () => {
    const privateDir = mkdtempSync(join(tmpdir(), "sail-private-cwd-"));
    chmodSync(privateDir, 0o700);
    const sb = await pool.create({ ingressPorts: [3000] });
    await sb.exec("python3 -m http.server 3000", { background: true }).wait();
    try {
      await daemon.stop();
      daemon.cwd = privateDir;
      await daemon.start();
      const url = (await sb.listener(3000).wait({ timeout: 60 })).endpoint.url;
      const agent = gatewayAgent(await daemon.caCert());
      assert.equal((await fetch(url, { dispatcher: agent })).status, 200, "the gateway serves");
      await agent.close();
    } finally {
      await daemon.stop();
      daemon.cwd = undefined;
      await daemon.start();
      rmSync(privateDir, { recursive: true, force: true });
    }
  });

  test("SIGTERM lets in-flight API requests finish before the daemon exits", async () => {
    const sb = await pool.create({});
    const running = sb.exec("touch /tmp/under-way; sleep 1; echo finished").output();
    await eventually("the exec is under way", async () => (await sb.exec("test -e /tmp/under-way").wait()) === 0);
    const stopped = daemon.stop("SIGTERM");
    const out = await running;
    assert.deepEqual(out, { exitCode: 0, stdout: "finished\n", stderr: "" });
    await stopped;
    await daemon.start();
  });

  test("a box whose container vanished while the daemon was down is marked failed and cleaned up", async () => {
    const sb = await pool.create({});
    await daemon.stop();
    execFileSync("crun", ["--root", "/run/sail/crun", "delete", "--force", sb.id]);
    await daemon.start();
    const again = await Sailbox.fromId(sb.id, { client: daemon.client() });
    assert.equal(await again.status(), "failed");
    assert.match(again.describe().failureReason ?? "", /container was missing/);
    assert.deepEqual(await leftoversOnceRemoved(sb.id), []);
  });

  test("a wrong token and a missing token are refused with AuthError (401)", async () => {
    const { apiUrl } = daemon.credentials();
    const wrong = new SailClient({ apiUrl, token: "sail_not-a-real-token" });
    await assert.rejects(App.find({ name: "e2e", client: wrong }), (e: SailError) => e instanceof AuthError && e.code === "SAIL_AUTH_INVALID");
    const res = await fetch(`${apiUrl}/v1/apps`);
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, "SAIL_AUTH_MISSING");
  });

  test("the token is stored hashed, never in plain text", async () => {
    const { token } = daemon.credentials();
    const sha256 = createHash("sha256").update(token).digest("hex");
    if (daemon.storeUrl) {
      // the split form's store is PostgreSQL: every row of every table, as text
      const client = new pg.Client({ connectionString: daemon.storeUrl });
      await client.connect();
      try {
        const tables = (await client.query<{ name: string }>("SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'")).rows.map((r) => r.name);
        const dump = (await Promise.all(tables.map(async (t) => JSON.stringify((await client.query(`SELECT * FROM "${t}"`)).rows)))).join("\n");
        assert.ok(dump.includes(sha256), "the token's hash is stored");
        assert.equal(dump.includes(token), false, "the token itself is not");
      } finally {
        await client.end();
      }
      return;
    }
    const files = readdirSync(DATA_DIR).filter((f) => f.startsWith("sail.db"));
    assert.ok(files.includes("sail.db"));
    assert.ok(
      files.some((file) => readFileSync(join(DATA_DIR, file)).includes(Buffer.from(sha256))),
      "the token's hash is stored",
    );
    for (const file of files) assert.equal(readFileSync(join(DATA_DIR, file)).includes(Buffer.from(token)), false, file);
  });

  test("a daemon that cannot start says why and leaves the host as it found it", async () => {
    const forwarding = () => readFileSync("/proc/sys/net/ipv4/ip_forward", "utf8").trim();
    const forwardingBefore = forwarding();
    const taken = createServer().listen(0, "127.0.0.1");
    try {
      await once(taken, "listening");
      const { port } = taken.address() as AddressInfo;
      const subnet = "10.209.0.0/16";
      // its own data dir, sharing the test data dir's images so that it gets to the gateway without building one
      rmSync(NOSTART_DIR, { recursive: true, force: true });
      mkdirSync(NOSTART_DIR, { recursive: true });
      symlinkSync(join(DATA_DIR, "images"), join(NOSTART_DIR, "images"));
      const args = [
        "up",
        "--data-dir",
        NOSTART_DIR,
        "--api-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
        "--https-listen",
        `127.0.0.1:${port}`,
        "--box-subnet",
        subnet,
        "--tcp-ports",
        "23000-23009",
      ];
      const run = await runProcess(process.execPath, [CLI, ...args], { ...daemon.env, SAIL_CONFIG: "/tmp/sail-nostart-config.json" });
      assert.equal(run.code, 1);
      assert.match(run.stderr, /EADDRINUSE/);
      assert.doesNotMatch(run.stderr, /MaxListenersExceededWarning|ERR_INTERNAL_ASSERTION/);
      assert.doesNotMatch(execFileSync("ip", ["route", "show", subnet], { encoding: "utf8" }), /unreachable/, "the box subnet's fence route is gone");
      assert.doesNotMatch(execFileSync("nft", ["list", "tables"], { encoding: "utf8" }), /sail_10_209_0_0_16/, "its firewall table is gone");
      // outbound is on by default, so it turned forwarding on; the test daemon's own table (outbound off) must not keep it on
      assert.equal(forwarding(), forwardingBefore, "net.ipv4.ip_forward is as it was");
    } finally {
      taken.close();
      rmSync(NOSTART_DIR, { recursive: true, force: true });
    }
  });

  test("sail up refuses to start when not root, and says why", async () => {
    // a user namespace without a mapping: the daemon runs as uid 65534 (nobody) yet can still
    // read a checkout that nobody could (cloned under /root, mode 700)
    const run = await runProcess("unshare", ["--user", "--", process.execPath, CLI, "up", "--data-dir", "/tmp/sail-not-root"], daemon.env);
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /must run as root/);
  });

  test("sail up refuses to start without crun, debootstrap or tini, and gives the apt command", async () => {
    const env = { ...daemon.env, PATH: "/nonexistent" };
    const run = await runProcess(process.execPath, [CLI, "up", "--data-dir", "/tmp/sail-no-tools"], env);
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /needs crun, debootstrap/);
    assert.match(run.stderr, /apt-get install -y crun debootstrap tini/);
  });
});
