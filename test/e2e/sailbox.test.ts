import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { inspect } from "node:util";
import { App, ConflictError, Image, IngressPort, InvalidArgumentError, NotFoundError, Sailbox, SailError } from "@sail/sdk";
import { HTTPS_PORT, leftoversOf, leftoversOnceRemoved, runProcess, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon();

describe("a Sailbox, end to end", () => {
  test("the issue's script prints hello and 0 with no configuration but the config sail up wrote", async () => {
    const run = await runProcess(process.execPath, ["--import", "tsx", "examples/hello.ts"], daemon.env);
    assert.equal(run.stderr, "");
    assert.equal(run.stdout, "hello 0\n");
    assert.equal(run.code, 0);
  });

  test("the SDK still runs on Node 20 (the daemon needs 24)", async (t) => {
    const node20 = process.env.SAIL_TEST_NODE20 ?? "/usr/bin/node";
    const version = await runProcess(node20, ["--version"], daemon.env).catch(() => undefined);
    if (!version?.stdout.startsWith("v20.")) return t.skip(`no Node 20 at ${node20} (set SAIL_TEST_NODE20)`);
    const run = await runProcess(node20, ["--import", "tsx", "examples/hello.ts"], daemon.env);
    assert.deepEqual({ code: run.code, stdout: run.stdout, stderr: run.stderr }, { code: 0, stdout: "hello 0\n", stderr: "" });
  });

  test("exec reports non-zero exit codes and what the command wrote to stderr", async () => {
    const sb = await pool.create({ image: Image.debian });
    const out = await sb.exec("echo to-out; echo to-err >&2; exit 7").output();
    assert.deepEqual(out, { exitCode: 7, stdout: "to-out\n", stderr: "to-err\n" });
    assert.equal(await sb.exec("kill -TERM $$").wait(), 128 + 15);
    const missing = await sb.exec("no-such-command").output();
    assert.equal(missing.exitCode, 127);
    assert.match(missing.stderr, /not found/);
  });

  test("exec honours env and cwd, and defaults cwd to /root", async () => {
    const sb = await pool.create({});
    const out = await sb.exec('echo "$GREETING" "$(pwd)"', { env: { GREETING: "hi there" }, cwd: "/usr/share" }).output();
    assert.equal(out.stdout, "hi there /usr/share\n");
    assert.equal((await sb.exec("pwd").output()).stdout, "/root\n");
  });

  test("stdout streams as it is produced, before the command ends", async () => {
    const sb = await pool.create({});
    const proc = sb.exec("echo ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo done");
    const reader = proc.stdout[Symbol.asyncIterator]();
    assert.equal((await reader.next()).value, "ready\n");
    // the command is still waiting for /tmp/go: only now do we let it finish
    assert.equal(await sb.exec("touch /tmp/go").wait(), 0);
    assert.equal((await reader.next()).value, "done\n");
    assert.equal(await proc.wait(), 0);
  });

  test("a background server keeps running and a later exec reaches it", async () => {
    const sb = await pool.create({});
    await sb.exec("mkdir -p /srv/app && echo hello > /srv/app/index.html").wait();
    const server = await sb.exec("python3 -m http.server 3000", { background: true, cwd: "/srv/app" }).wait();
    assert.match(server.id!, /^ex-/);
    const probe = "for i in $(seq 100); do curl -sf http://127.0.0.1:3000/index.html && exit 0; sleep 0.1; done; exit 1";
    const out = await sb.exec(probe).output();
    assert.equal(out.stdout, "hello\n");
    assert.match(await server.log(), /GET \/index.html/);
  });

  test("two boxes serve on port 3000 at once, each on its own network stack", async () => {
    const [a, b] = await Promise.all([pool.create({}), pool.create({})]);
    for (const [sb, text] of [
      [a, "from-a"],
      [b, "from-b"],
    ] as const) {
      await sb.exec(`mkdir -p /srv && echo ${text} > /srv/who`).wait();
      await sb.exec("python3 -m http.server 3000 --bind 0.0.0.0", { background: true, cwd: "/srv" }).wait();
    }
    const probe = "for i in $(seq 100); do curl -sf http://127.0.0.1:3000/who && exit 0; sleep 0.1; done; exit 1";
    assert.equal((await a.exec(probe).output()).stdout, "from-a\n");
    assert.equal((await b.exec(probe).output()).stdout, "from-b\n");
    const addrA = (await a.exec("ip -4 -o addr show eth0").output()).stdout;
    const addrB = (await b.exec("ip -4 -o addr show eth0").output()).stdout;
    assert.notEqual(addrA.split(/\s+/)[3], addrB.split(/\s+/)[3]);
  });

  test("a box sees neither the host's files nor another box's processes", async () => {
    const [a, b] = await Promise.all([pool.create({}), pool.create({})]);
    await a.exec("sleep 424242", { background: true }).wait();
    const psB = (await b.exec("ps -eo args").output()).stdout;
    assert.doesNotMatch(psB, /424242/);
    assert.match((await a.exec("ps -eo args").output()).stdout, /sleep 424242/);
    // the host's data dir, its process list and its sail config do not exist inside
    assert.notEqual(await b.exec("test -e /var/lib/sail-test || test -e /root/.sail").wait(), 0);
    assert.equal((await b.exec("cat /proc/1/cmdline | tr '\\0' ' '").output()).stdout.trim(), "/usr/local/sbin/tini -s -- sleep infinity");
  });

  test("a box gets its memory and pids limits, and its own hostname, hosts and resolv.conf", async () => {
    const sb = await pool.create({ name: "limits", memory: 256, cpu: 0.5 });
    const mem = (await sb.exec("cat /sys/fs/cgroup/memory/memory.limit_in_bytes").output()).stdout.trim();
    assert.equal(Number(mem), 256 * 1024 * 1024);
    assert.equal((await sb.exec("cat /sys/fs/cgroup/pids/pids.max").output()).stdout.trim(), "1024");
    assert.equal((await sb.exec("cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us").output()).stdout.trim(), "50000");
    assert.equal((await sb.exec("hostname").output()).stdout, "limits\n");
    assert.match((await sb.exec("cat /etc/hosts").output()).stdout, /\tlimits\n/);
    assert.match((await sb.exec("cat /etc/resolv.conf").output()).stdout, /nameserver/);
  });

  test("after terminate no netns, veth, mount, cgroup, container or directory of the box is left", async () => {
    const sb = await pool.create({});
    assert.ok(leftoversOf(sb.id).length > 0, "a running box holds host resources");
    await sb.terminate();
    assert.deepEqual(await leftoversOnceRemoved(sb.id), []);
    assert.equal(await sb.status(), "terminated");
    await sb.terminate(); // idempotent
    assert.equal(await sb.status(), "terminated");
    await assert.rejects(sb.exec("true").wait(), (e: SailError) => e instanceof ConflictError && e.code === "SAIL_SAILBOX_NOT_RUNNING");
  });

  test("no SDK object shows the API token, in JSON or in console.log", async () => {
    const { token } = daemon.credentials();
    const client = daemon.client();
    const app = await App.find({ name: "e2e", client });
    const sb = await pool.create({ app, ingressPorts: [3000] });
    const objects = [client, app, sb, sb.listener(3000), ...(await sb.listeners()), sb.exec("true", { background: true })];
    for (const object of objects) {
      assert.ok(!JSON.stringify(object).includes(token), `JSON of ${object.constructor.name}`);
      assert.ok(!inspect(object, { depth: 10, showHidden: true }).includes(token), `inspect of ${object.constructor.name}`);
    }
    assert.equal(JSON.parse(JSON.stringify(sb)).id, sb.id, "a box's JSON is its info");
  });

  test("a listener's endpoint is known before its server runs; a port the box does not publish is a NotFoundError", async () => {
    const sb = await pool.create({ ingressPorts: [4000, new IngressPort(7070, "tcp")] });
    const url = sb.listener(4000).endpoint.url;
    assert.equal(url, `https://4000-${sb.id.slice(3)}.sail.localhost:${HTTPS_PORT}`);
    assert.equal(sb.listener(7070).protocol, "tcp");
    assert.match(String(sb.listener(7070).endpoint.port), /^\d+$/);
    assert.throws(
      () => sb.listener(9999).endpoint,
      (e: SailError) => e instanceof NotFoundError && e.code === "SAIL_LISTENER_NOT_FOUND" && /does not publish port 9999 \(it publishes 4000, 7070\)/.test(e.message),
    );
    await assert.rejects(sb.listener(9999).wait({ timeout: 1 }), (e: SailError) => e instanceof NotFoundError && e.code === "SAIL_LISTENER_NOT_FOUND");
    const again = await Sailbox.fromId(sb.id, { client: daemon.client() });
    assert.equal(again.listener(4000).endpoint.url, url, "the same URL from a handle found later");
  });

  test("terminating removes the listeners: listeners() of a terminated box is empty", async () => {
    const sb = await pool.create({ ingressPorts: [3000, new IngressPort(7070, "tcp")] });
    assert.equal((await sb.listeners()).length, 2);
    await sb.terminate();
    assert.deepEqual(await sb.listeners(), []);
    assert.deepEqual(sb.describe().listeners, []);
  });

  test("fromId, fromName, list and status find the same box", async () => {
    const app = await pool.app("lookup");
    const sb = await pool.create({ app, name: "findme" });
    const client = daemon.client();
    assert.equal((await Sailbox.fromId(sb.id, { client })).name, "findme");
    assert.equal((await Sailbox.fromName(app, "findme")).id, sb.id);
    assert.ok((await Sailbox.list({ app })).some((x) => x.id === sb.id));
    assert.equal(await sb.status(), "running");
    await assert.rejects(Sailbox.fromName(app, "nobody"), NotFoundError);
    await assert.rejects(Sailbox.fromId("sb-doesnotexist", { client }), (e: SailError) => e.code === "SAIL_SAILBOX_NOT_FOUND");
    await assert.rejects(App.find({ name: "never-minted", client }), (e: SailError) => e instanceof NotFoundError && e.code === "SAIL_APP_NOT_FOUND");
  });
});

describe("a refused create creates nothing", () => {
  async function snapshot() {
    const client = daemon.client();
    const boxes = (await Sailbox.list({ client })).map((sb) => sb.id).sort();
    const { execFileSync } = await import("node:child_process");
    const netns = execFileSync("ip", ["netns", "list"], { encoding: "utf8" })
      .split("\n")
      .filter((l) => l.startsWith("sail-"))
      .sort();
    return { boxes, netns };
  }

  test("a name already live in the app is a ConflictError; a bad name or bad resources an InvalidArgumentError", async () => {
    const app = await pool.app("refusals");
    await pool.create({ app, name: "taken" });
    const before = await snapshot();
    const cases: Array<[() => Promise<unknown>, new (...a: never[]) => SailError, string, RegExp]> = [
      [() => Sailbox.create({ app, name: "taken" }), ConflictError, "SAIL_NAME_TAKEN", /already has a live sailbox named "taken"/],
      [() => Sailbox.create({ app, name: "Bad Name!" }), InvalidArgumentError, "SAIL_NAME_INVALID", /not valid/],
      [() => Sailbox.create({ app, memory: 1 }), InvalidArgumentError, "SAIL_RESOURCES_INVALID", /memory/],
    ];
    for (const [attempt, Class, code, message] of cases) {
      await assert.rejects(attempt(), (e: SailError) => e instanceof Class && e.code === code && message.test(e.message));
    }
    assert.deepEqual(await snapshot(), before);
  });

  test("the server refuses what the SDK would have caught, with the same codes", async () => {
    const client = daemon.client();
    const app = await pool.app("refusals");
    const before = await snapshot();
    const raw = (body: unknown) => client.request("POST", "/v1/sailboxes", body);
    await assert.rejects(raw({ appId: app.id, image: { name: "debian" }, cpu: 999 }), (e: SailError) => e.code === "SAIL_RESOURCES_INVALID");
    await assert.rejects(raw({ appId: app.id, image: { name: "alpine" } }), (e: SailError) => e.code === "SAIL_IMAGE_UNKNOWN");
    await assert.rejects(raw({ appId: app.id, image: { name: "debian", arch: "sparc" } }), (e: SailError) => e.code === "SAIL_IMAGE_UNKNOWN" && /use amd64 or arm64/.test(e.message));
    await assert.rejects(raw({ appId: app.id, image: { name: "debian" }, colour: "red" }), (e: SailError) => e.code === "SAIL_UNKNOWN_FIELD" && /colour/.test(e.message));
    await assert.rejects(raw({ appId: "app-nope", image: { name: "debian" } }), (e: SailError) => e.code === "SAIL_APP_NOT_FOUND");
    const { apiUrl, token } = daemon.credentials();
    const res = await fetch(`${apiUrl}/v1/sailboxes`, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: "{not json" });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, "SAIL_BAD_JSON");
    assert.deepEqual(await snapshot(), before);
  });
});
