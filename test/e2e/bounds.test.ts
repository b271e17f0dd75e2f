/**
 * What happens when the host gets in the way, on a real daemon with real boxes: a public TCP
 * port another program holds.
 */
import assert from "node:assert/strict";
import { connect, createServer, type Server } from "node:net";
import { after, describe, test } from "node:test";
import { IngressPort, SailError } from "@sail/sdk";
import { runCli, startTcpEcho, TCP_PORTS, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon();

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
