/**
 * What happens when the host gets in the way, on a real daemon with real boxes: a public TCP
 * port another program holds, HAProxy refusing a route change. (A freeze that cannot complete is
 * tested on a real cgroup in test/unit/freezer.test.ts.)
 */
import assert from "node:assert/strict";
import { connect, createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { fetch, type Agent } from "undici";
import { IngressPort, SailError, type Sailbox } from "@sail/sdk";
import { RuntimeApi } from "../../packages/server/src/gateway/runtime-api.js";
import { DATA_DIR, gatewayAgent, runCli, startTcpEcho, TCP_PORTS, useTestDaemon } from "./harness.js";

let agent: Agent;
const { daemon, pool } = useTestDaemon({ setup: async (d) => void (agent = gatewayAgent(await d.caCert())) });

/** Bind every free port of the daemon's TCP range, as another program would: the next box's port is among them. */
async function holdTcpRange(): Promise<Map<number, Server>> {
  const [first, last] = TCP_PORTS.split("-").map(Number) as [number, number];
  const held = new Map<number, Server>();
  for (let port = first; port <= last; port++) {
    const server = createServer();
    const ok = await new Promise<boolean>((resolve) => {
      server.once("error", () => resolve(false));
      server.listen(port, "::", () => resolve(true));
    });
    if (ok) held.set(port, server);
  }
  return held;
}

const release = (held: Map<number, Server>) => Promise.all([...held.values()].map((s) => new Promise((resolve) => s.close(resolve))));

async function eventually<T>(read: () => Promise<T>, ok: (value: T) => boolean, what: string): Promise<T> {
  let last: T | undefined;
  for (let i = 0; i < 300; i++) {
    last = await read();
    if (ok(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`never: ${what} (last: ${JSON.stringify(last)})`);
}

describe("a public TCP port another program holds", () => {
  let held = new Map<number, Server>();
  after(() => release(held));

  test("listener.wait() fails with SAIL_LISTENER_UNBOUND naming the port and EADDRINUSE, `sail box listeners` shows it, and the retry binds it once the port is free", async () => {
    held = await holdTcpRange();
    const sb = await pool.create({ ingressPorts: [new IngressPort(7000, "tcp", { allowPublic: true })] });
    await startTcpEcho(sb, 7000);
    const publicPort = sb.listener(7000).endpoint.port;
    assert.ok(held.has(publicPort), `the test holds ${publicPort}`);

    const error = await sb
      .listener(7000)
      .wait({ timeout: 3 })
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    assert.ok(error instanceof SailError, `expected a SailError, got ${String(error)}`);
    assert.equal(error.code, "SAIL_LISTENER_UNBOUND");
    assert.match(error.message, new RegExp(`could not bind its public TCP port ${publicPort} \\(EADDRINUSE`));
    assert.equal(error.details.publicPort, publicPort);

    const [listener] = await sb.listeners();
    assert.equal(listener!.state, "unbound");
    assert.equal(listener!.unbound?.code, "EADDRINUSE");
    const cli = await runCli(daemon, ["box", "listeners", sb.id]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, new RegExp(`7000\\s+tcp\\s+\\S+:${publicPort}\\s+unbound: EADDRINUSE since \\S+ \\(retrying\\)`));

    // the other program lets go of the port: the retry binds it, and the endpoint works
    await release(held);
    held = new Map();
    const bound = await sb.listener(7000).wait({ timeout: 30 });
    assert.equal(bound.state, "bound");
    const cliAfter = await runCli(daemon, ["box", "listeners", sb.id]);
    assert.match(cliAfter.stdout, new RegExp(`7000\\s+tcp\\s+\\S+:${publicPort}\\s+bound`));
    const echoed = await eventually(
      () =>
        new Promise<string>((resolve) => {
          const socket = connect({ host: "127.0.0.1", port: publicPort, allowHalfOpen: true });
          let data = "";
          socket.on("connect", () => socket.end("through at last\n"));
          socket.on("data", (d: Buffer) => (data += d.toString()));
          socket.on("error", () => resolve(""));
          socket.on("close", () => resolve(data));
        }),
      (text) => text.length > 0,
      "an exchange through the public port",
    );
    assert.equal(echoed, "through at last\nBYE\n");
  });
});

/** A box serving /srv/who.txt (its name) on port 8000 over HTTP. */
async function namedBox(name: string): Promise<{ sb: Sailbox; url: string }> {
  const sb = await pool.create({ ingressPorts: [8000] });
  assert.equal(await sb.exec(`mkdir -p /srv && echo ${name} > /srv/who.txt`).wait(), 0);
  await sb.exec("python3 -m http.server 8000 --directory /srv", { background: true }).wait();
  const listener = await sb.listener(8000).wait({ timeout: 60 });
  return { sb, url: listener.endpoint.url };
}

const who = async (url: string) => {
  const res = await fetch(`${url}/who.txt`, { dispatcher: agent });
  return res.ok ? (await res.text()).trim() : `HTTP ${res.status}`;
};

describe("HAProxy refuses a route change", () => {
  test("the refusal is detected and the whole map replaced, so each box's URL reaches its own box again", async () => {
    const a = await namedBox("box-a");
    const b = await namedBox("box-b");
    assert.equal(await who(a.url), "box-a");
    assert.equal(await who(b.url), "box-b");

    // another writer at HAProxy's admin socket (an operator, a script): A's route goes, B's points at A's guest
    const api = new RuntimeApi(join(DATA_DIR, "gateway", "admin.sock"));
    const map = join(DATA_DIR, "gateway", "routes.map");
    const entries = new Map(
      (await api.run(`show map ${map}`))
        .split("\n")
        .filter(Boolean)
        .map((line) => line.split(" ").slice(1) as [string, string]),
    );
    const hostA = new URL(a.url).hostname;
    const hostB = new URL(b.url).hostname;
    await api.change([`del map ${map} ${hostA}`, `set map ${map} ${hostB} ${entries.get(hostA)!}`]);
    assert.equal(await who(b.url), "box-a", "B's URL reaches the wrong box now");

    // A sleeps: the daemon deletes A's route, which HAProxy no longer has ("Key not found.")
    await a.sb.sleep();
    await eventually(
      () => who(b.url),
      (answer) => answer === "box-b",
      "B's URL reaches B again",
    );
    assert.equal(await who(a.url), "box-a", "A wakes on its URL");
  });
});
