/**
 * The HTTPS gateway's HAProxy, for real (Debian's haproxy in a temp dir, on loopback): its
 * configuration passes `haproxy -c`, every runtime-API answer is checked, a refused route
 * change makes the gateway replace the whole map atomically, and an HAProxy that stops
 * answering is restarted from routes.map.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { httpLabel } from "@sail/protocol";
import type { HttpRoute, RouteChange } from "../../packages/server/src/node/routes.js";
import { DEFAULT_TIMEOUTS, gatewayPaths } from "../../packages/server/src/gateway/haproxy-config.js";
import { HaproxyGateway, writeGatewayFiles } from "../../packages/server/src/gateway/haproxy.js";
import { batchLines, LINE_BUDGET_BYTES, payloadChunks, RuntimeApi, RuntimeApiError, splitAnswers } from "../../packages/server/src/gateway/runtime-api.js";
import { ensureLocalTls } from "../../packages/server/src/gateway/tls.js";

const DOMAIN = "sail.localhost";
const dir = mkdtempSync(join(tmpdir(), "sail-haproxy-"));
const tls = ensureLocalTls(join(dir, "tls"), DOMAIN);
after(() => rmSync(dir, { recursive: true, force: true }));

async function freePort(): Promise<number> {
  const server = createServer().listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const settings = (sub: string, port: number) => ({ dir: join(dir, sub), host: "127.0.0.1", port, threads: 1, maxConnections: 100, memoryMiB: 64, timeouts: DEFAULT_TIMEOUTS, domain: DOMAIN, tls });

function route(sailboxId: string, port: number, guestAddress: string): [string, HttpRoute] {
  return [httpLabel(sailboxId, port), { sailboxId, port, guestAddress, status: "running", h2c: false }];
}

let version = 0;
const change = (set: Array<[string, HttpRoute]>, remove: string[] = [], reset = false): RouteChange => ({ version: ++version, reset, http: { set, remove }, tcp: { set: [], remove: [] } });

/** What HAProxy's map holds now: host → value. */
async function shownMap(api: RuntimeApi, map: string): Promise<Map<string, string>> {
  const text = await api.run(`show map ${map}`);
  return new Map(
    text
      .split("\n")
      .filter(Boolean)
      .map((line) => line.split(" "))
      .map(([, key, value]) => [key!, value!]),
  );
}

describe("the runtime API's answers", () => {
  test("each command's answer ends with an empty line: silence is success, anything else a refusal", () => {
    assert.deepEqual(splitAnswers("\n\n\n"), ["", "", ""]);
    assert.deepEqual(splitAnswers("Key not found.\n\n\n"), ["Key not found.", ""]);
    assert.deepEqual(splitAnswers("New version created: 4\n\n"), ["New version created: 4"]);
    assert.deepEqual(splitAnswers(""), []);
  });

  test("commands are batched into lines that fit HAProxy's buffer; a payload in chunks that do", () => {
    const commands = Array.from({ length: 300 }, (_, i) => `add map /var/lib/sail/gateway/routes.map sb-${"x".repeat(20)}-${i}.sail.localhost 10.0.0.2:${8000 + i}`);
    const lines = batchLines(commands);
    assert.ok(lines.length > 1);
    for (const line of lines) assert.ok(Buffer.byteLength(line) + 1 <= LINE_BUDGET_BYTES, `${Buffer.byteLength(line)} bytes`);
    assert.deepEqual(lines.join(";").split(";"), commands);
    const chunks = payloadChunks(
      commands.map((_, i) => [`h${i}.sail.localhost`, `10.0.0.2:${i}`] as const),
      1000,
    );
    for (const chunk of chunks) assert.ok(Buffer.byteLength(chunk) <= 1000);
    assert.equal(chunks.join("").split("\n").filter(Boolean).length, 300);
    assert.throws(() => batchLines(["set map m a;b"]), RuntimeApiError, "a separator in a word would make two commands");
  });
});

describe("HAProxy, for real", () => {
  test("haproxy -c accepts the generated configuration", async () => {
    const s = settings("check", await freePort());
    writeGatewayFiles(s);
    writeFileSync(gatewayPaths(s.dir).routes, "");
    const output = await new Promise<string>((resolve, reject) =>
      execFile("haproxy", ["-c", "-f", gatewayPaths(s.dir).config], (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stdout}${stderr}`)) : resolve(stdout + stderr))),
    );
    assert.match(output, /Configuration file is valid/);
  });

  describe("a route change HAProxy refuses", () => {
    let gateway: HaproxyGateway;
    let other: RuntimeApi;
    const logs: Array<[string, object, string]> = [];
    const log = { info: () => {}, warn: (o: object, m: string) => logs.push(["warn", o, m]), error: (o: object, m: string) => logs.push(["error", o, m]) };
    let routesMap: string;

    before(async () => {
      const s = { ...settings("live", await freePort()), runtimeApiTimeoutMs: 1000 };
      routesMap = gatewayPaths(s.dir).routes;
      gateway = new HaproxyGateway(s, log, () => {});
      gateway.apply(change([], [], true));
      await gateway.start();
      // another writer at the admin socket (an operator, a script): HAProxy's map stops being the daemon's
      other = new RuntimeApi(gatewayPaths(s.dir).admin);
    });
    after(() => gateway.close());

    test("is detected, and the whole map replaced atomically, so HAProxy routes exactly as the daemon says", async () => {
      const a = route("sb-aaaaaaaaaaaa", 8000, "10.0.0.2");
      const b = route("sb-bbbbbbbbbbbb", 8000, "10.0.0.6");
      gateway.apply(change([a, b]));
      await gateway.synced();
      const host = (r: [string, HttpRoute]) => `${r[0]}.${DOMAIN}`;
      assert.deepEqual(
        await shownMap(other, routesMap),
        new Map([
          [host(a), "10.0.0.2:8000"],
          [host(b), "10.0.0.6:8000"],
        ]),
      );

      // behind the daemon's back: A's entry goes, B's points at A's guest
      await other.change([`del map ${routesMap} ${host(a)}`, `set map ${routesMap} ${host(b)} 10.0.0.2:8000`]);
      // A stops running: the daemon deletes its entry, which HAProxy no longer has
      logs.length = 0;
      gateway.apply(change([], [a[0]]));
      await gateway.synced();
      assert.deepEqual(await shownMap(other, routesMap), new Map([[host(b), "10.0.0.6:8000"]]), "B routes to its own guest again");
      const refused = logs.find(([level, , msg]) => level === "error" && msg.includes("HAProxy refused a route change"));
      assert.ok(refused, JSON.stringify(logs));
      assert.match(JSON.stringify(refused[1]), /Key not found/);
      assert.deepEqual((refused[1] as { sailboxIds: string[] }).sailboxIds, ["sb-aaaaaaaaaaaa"]);
      assert.ok(logs.some(([level, , msg]) => level === "warn" && msg === "HAProxy's routes resynchronised"));
    });

    test("a box with hundreds of ports: every route reaches HAProxy, in lines within its buffer", async () => {
      const many = Array.from({ length: 400 }, (_, i) => route("sb-cccccccccccc", 1000 + i, "10.0.0.10"));
      logs.length = 0;
      gateway.apply(change(many));
      await gateway.synced();
      const shown = await shownMap(other, routesMap);
      for (const [label, r] of many) assert.equal(shown.get(`${label}.${DOMAIN}`), `10.0.0.10:${r.port}`, label);
      assert.equal(logs.filter(([level]) => level === "error").length, 0, JSON.stringify(logs));
    });

    test("an HAProxy that stops answering is restarted as a last resort, with the routes of routes.map", async () => {
      const before = gateway.pid!;
      process.kill(before, "SIGSTOP"); // the HAProxy this test's gateway started: its runtime API goes silent
      try {
        logs.length = 0;
        const d = route("sb-dddddddddddd", 9000, "10.0.0.14");
        gateway.apply(change([d]));
        await gateway.synced();
        assert.notEqual(gateway.pid, before, "a new HAProxy");
        const shown = await shownMap(other, routesMap);
        assert.equal(shown.get(`${d[0]}.${DOMAIN}`), "10.0.0.14:9000");
        assert.ok(
          logs.some(([level, , msg]) => level === "error" && msg.includes("restarting it")),
          JSON.stringify(logs),
        );
      } finally {
        try {
          process.kill(before, "SIGCONT");
        } catch {
          // killed by the restart, as it should be
        }
      }
    });
  });
});
