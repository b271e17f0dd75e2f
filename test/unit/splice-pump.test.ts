import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { after, describe, test } from "node:test";
import { SplicePumps } from "../../packages/server/src/gateway/splice-pump.js";

const servers: Server[] = [];
after(() => servers.forEach((s) => s.close()));

async function listen(onConnection: (socket: Socket) => void, options: { pauseOnConnect?: boolean } = {}): Promise<number> {
  const server = createServer({ allowHalfOpen: true, ...options }, onConnection);
  servers.push(server);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return (server.address() as AddressInfo).port;
}

/** A front socket (accepted, paused) and an upstream socket (dialed), as the TCP gateway holds them. */
async function pair(upstreamPort: number): Promise<{ client: Socket; front: Socket; upstream: Socket }> {
  let accepted!: (s: Socket) => void;
  const frontAccepted = new Promise<Socket>((r) => (accepted = r));
  const frontPort = await listen((s) => accepted(s), { pauseOnConnect: true });
  const client = connect({ host: "127.0.0.1", port: frontPort, allowHalfOpen: true });
  const front = await frontAccepted;
  const upstream = connect({ host: "127.0.0.1", port: upstreamPort, allowHalfOpen: true });
  await once(upstream, "connect");
  return { client, front, upstream };
}

describe("native splice pump", () => {
  const { pumps, why } = SplicePumps.load();

  test("is built and loads on this host", () => {
    assert.ok(pumps, why);
  });

  test("moves bytes both ways, passes on what Node had already read, and honours a half-close", async () => {
    const received = createHash("sha256");
    const upstreamPort = await listen((s) => {
      s.write("greeting\n"); // the server speaks first (SSH, MySQL do)
      s.on("data", (d) => received.update(d));
      s.on("end", () => s.end("BYE\n")); // answers only after the client's FIN
    });
    const { client, front, upstream } = await pair(upstreamPort);
    // let the greeting reach Node's buffer of the upstream socket before the hand-over
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(upstream.readableLength > 0, "the greeting was read by Node before the hand-over");
    const { finished } = pumps!.splice(front, upstream);

    let back = "";
    client.on("data", (d) => (back += d));
    const payload = randomBytes(4 * 1024 * 1024);
    client.end(payload);
    await once(client, "end");
    assert.equal(back, "greeting\nBYE\n");
    assert.equal(received.digest("hex"), createHash("sha256").update(payload).digest("hex"));
    const result = await finished;
    assert.deepEqual(result, { aToB: payload.length, bToA: back.length, errno: 0 });
    assert.equal(pumps!.size, 0);
    client.destroy();
  });

  test("drop closes both sides at once, and finished resolves", async () => {
    let serverAccepted!: (s: Socket) => void;
    const accepted = new Promise<Socket>((r) => (serverAccepted = r));
    const upstreamPort = await listen((s) => serverAccepted(s));
    const { client, front, upstream } = await pair(upstreamPort);
    const serverSide = await accepted;
    serverSide.resume(); // consume, so its "end" is emitted
    const { id, finished } = pumps!.splice(front, upstream);
    client.write("ping");
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(pumps!.bytes(id), [4, 0]);
    const clientClosed = once(client, "end");
    const serverEnded = once(serverSide, "end");
    client.on("error", () => {});
    pumps!.drop(id);
    await Promise.all([clientClosed, serverEnded, finished]);
    assert.equal(pumps!.bytes(id), undefined);
    serverSide.destroy();
  });
});
