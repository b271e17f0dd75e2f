import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import { connect, createServer, type AddressInfo, type NetConnectOpts, type Server, type Socket } from "node:net";
import { after, describe, test } from "node:test";
import { SplicePumps, type PumpResult } from "../../packages/server/src/gateway/splice-pump.js";

const servers: Server[] = [];
/** Every socket the tests open, so that a failed test does not keep the process alive. */
const sockets = new Set<Socket>();
after(() => {
  sockets.forEach((s) => s.destroy());
  servers.forEach((s) => s.close());
});

function track(socket: Socket): Socket {
  sockets.add(socket);
  socket.once("close", () => sockets.delete(socket));
  return socket;
}

function dial(options: NetConnectOpts): Socket {
  return track(connect(options));
}

async function listen(onConnection: (socket: Socket) => void, options: { pauseOnConnect?: boolean } = {}): Promise<number> {
  const server = createServer({ allowHalfOpen: true, ...options }, (socket) => onConnection(track(socket)));
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
  const client = dial({ host: "127.0.0.1", port: frontPort, allowHalfOpen: true });
  const front = await frontAccepted;
  const upstream = dial({ host: "127.0.0.1", port: upstreamPort, allowHalfOpen: true });
  await once(upstream, "connect");
  return { client, front, upstream };
}

/** The pump's pipes hold 1 MiB (F_SETPIPE_SZ), and it keeps at most 16 spare pipes per thread. */
const PIPE_BYTES = 1 << 20;
const SPARE_PIPES = 16;
/** Pump threads: as many as CPUs, at most 4, unless SAIL_PUMP_THREADS says otherwise. */
const POOL_MAX = Number(process.env.SAIL_PUMP_THREADS) || 4;

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");
const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));
const count = (dir: string) => readdirSync(dir).length;

/** Resolves once the socket saw the other side go away: FIN, reset, or close. */
function gone(socket: Socket): Promise<void> {
  socket.on("error", () => {});
  return new Promise((r) => {
    socket.once("end", r);
    socket.once("close", r);
  });
}

/** Reads until `end`; resolves with everything read. */
function readAll(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on("data", (d: Buffer) => chunks.push(d));
  return once(socket, "end").then(() => Buffer.concat(chunks));
}

/** Polls until `ready()` holds (no deadline of its own: the test's timeout is the bound). */
async function until(ready: () => boolean, every = 5): Promise<void> {
  while (!ready()) await tick(every);
}

/** The kernel's send and receive queues of a loopback TCP socket, from /proc/net/tcp. */
function queues(localPort: number, remotePort: number): { tx: number; rx: number } {
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5) continue;
    const port = (address: string) => parseInt(address.split(":")[1], 16);
    if (port(f[1]) !== localPort || port(f[2]) !== remotePort) continue;
    const [tx, rx] = f[4].split(":").map((n) => parseInt(n, 16));
    return { tx, rx };
  }
  throw new Error(`no TCP socket ${localPort} -> ${remotePort}`);
}

describe("native splice pump", () => {
  const { pumps, why } = SplicePumps.load();

  /** How often the native module called onDone for each id (SplicePumps looks its waiter up once per call). */
  const doneCalls = new Map<number, number>();
  if (pumps) {
    const waiting = (pumps as unknown as { waiting: Map<number, (r: PumpResult) => void> }).waiting;
    const get = waiting.get.bind(waiting);
    waiting.get = (id: number) => {
      doneCalls.set(id, (doneCalls.get(id) ?? 0) + 1);
      return get(id);
    };
  }

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

  test("bytes Node had read that do not fit at once are queued, and go first", { timeout: 60_000 }, async () => {
    const early = randomBytes(8 * 1024 * 1024);
    const late = randomBytes(1024 * 1024);
    const upstreamPort = await listen((s) => {
      s.write(early);
      s.once("data", () => s.end(late));
    });
    let accepted!: (s: Socket) => void;
    const frontAccepted = new Promise<Socket>((r) => (accepted = r));
    const frontPort = await listen((s) => accepted(s), { pauseOnConnect: true });
    const client = dial({ host: "127.0.0.1", port: frontPort, allowHalfOpen: true });
    const front = await frontAccepted;
    // Node reads all of `early` before the hand-over: more than the client's socket takes at once
    // (a stream option sockets take too, though @types/node 20 does not list it for them)
    const options: NetConnectOpts & { readableHighWaterMark: number } = { host: "127.0.0.1", port: upstreamPort, allowHalfOpen: true, readableHighWaterMark: 16 * 1024 * 1024 };
    const upstream = dial(options);
    await until(() => upstream.readableLength === early.length);
    const { id, finished } = pumps!.splice(front, upstream);
    await tick(100); // the client reads nothing yet: the head waits
    assert.ok(pumps!.bytes(id)![1] < early.length, "the whole head was written to a client that reads nothing");
    const back = readAll(client);
    client.end("go");
    const data = await back;
    assert.equal(data.length, early.length + late.length);
    assert.equal(sha256(data), sha256(Buffer.concat([early, late])));
    assert.deepEqual(await finished, { aToB: 2, bToA: early.length + late.length, errno: 0 });
    client.destroy();
  });

  test("holds 2,000 idle connections on a bounded number of threads and no pipes", { timeout: 300_000 }, async () => {
    const N = 2000;
    const upstreamPort = await listen((s) => s.pipe(s)); // echo, and end after the client's FIN
    // the front server's accepted sockets, met with their clients by port (either may come first)
    const fronts = new Map<number, Socket>();
    const waiters = new Map<number, (s: Socket) => void>();
    const frontPort = await listen(
      (s) => {
        const waiter = waiters.get(s.remotePort!);
        if (waiter) waiter(s);
        else fronts.set(s.remotePort!, s);
      },
      { pauseOnConnect: true },
    );
    const frontOf = (port: number) =>
      new Promise<Socket>((r) => {
        const s = fronts.get(port);
        fronts.delete(port);
        if (s) r(s);
        else waiters.set(port, r);
      });

    const tasksBefore = count("/proc/self/task");
    const fdsBefore = count("/proc/self/fd");
    const conns: { client: Socket; id: number; finished: Promise<PumpResult> }[] = [];
    async function open(): Promise<void> {
      const client = dial({ host: "127.0.0.1", port: frontPort, allowHalfOpen: true });
      await once(client, "connect");
      const front = await frontOf(client.localPort!);
      waiters.delete(client.localPort!);
      const upstream = dial({ host: "127.0.0.1", port: upstreamPort, allowHalfOpen: true });
      await once(upstream, "connect");
      conns.push({ client, ...pumps!.splice(front, upstream) });
    }
    for (let i = 0; i < N; i += 100) await Promise.all(Array.from({ length: 100 }, open));
    await tick(100); // let the threads take their connections on

    // what the process holds, whatever the pump says
    const tasks = count("/proc/self/task") - tasksBefore;
    const fds = count("/proc/self/fd") - fdsBefore;
    console.log(`${N} idle connections: ${tasks} more threads, ${fds} more descriptors (${(fds / N).toFixed(2)} a connection)`);
    assert.ok(tasks <= POOL_MAX, `the process gained ${tasks} threads`);
    // per connection: the client and the echo server's socket here, and the pump's two; then
    // each pump thread's spare pipes, epoll and eventfd
    assert.ok(fds <= 4 * N + POOL_MAX * (2 * SPARE_PIPES + 2), `${fds} descriptors for ${N} connections`);
    const stats = pumps!.stats();
    console.log(`pump: ${JSON.stringify(stats)}`);
    assert.equal(stats.connections, N);
    assert.ok(stats.threads >= 1 && stats.threads <= POOL_MAX, `threads: ${stats.threads}`);
    assert.ok(tasks <= stats.threads, `the process gained ${tasks} threads, the pool has ${stats.threads}`);
    assert.ok(stats.pipes <= stats.threads * SPARE_PIPES, `idle connections hold pipes: ${stats.pipes}`);

    await Promise.all(
      conns.map(async ({ client }, i) => {
        const message = `connection ${i} says hello\n`;
        let back = "";
        client.setEncoding("utf8");
        client.on("data", (d: string) => (back += d));
        client.write(message);
        await until(() => back.length >= message.length, 20);
        assert.equal(back, message);
      }),
    );
    assert.ok(pumps!.stats().pipes <= 2 * stats.threads * SPARE_PIPES, `pipes after the exchange: ${pumps!.stats().pipes}`);

    for (const { client } of conns) client.end();
    const results = await Promise.all(conns.map(({ finished }) => finished));
    results.forEach((r, i) => assert.deepEqual(r, { aToB: `connection ${i} says hello\n`.length, bToA: `connection ${i} says hello\n`.length, errno: 0 }));
    assert.equal(pumps!.stats().connections, 0);
    for (const { id } of conns) assert.equal(doneCalls.get(id), 1, `onDone calls for ${id}`);
    assert.ok(pumps!.stats().pipes <= stats.threads * SPARE_PIPES);
    conns.forEach(({ client }) => client.destroy());
  });

  test("a slow reader gets back-pressure, not unbounded buffering", { timeout: 120_000 }, async () => {
    const TOTAL = 64 * 1024 * 1024;
    const CHUNK = 64 * 1024;
    let serverAccepted!: (s: Socket) => void;
    const accepted = new Promise<Socket>((r) => (serverAccepted = r));
    const upstreamPort = await listen((s) => serverAccepted(s), { pauseOnConnect: true }); // reads nothing yet
    const { client, front, upstream } = await pair(upstreamPort);
    const serverSide = await accepted;
    const ports = { client: client.localPort!, front: front.localPort!, upstream: upstream.localPort!, server: upstreamPort };
    const { id, finished } = pumps!.splice(front, upstream);

    // one chunk at a time: `written` is what the kernel took, give or take the chunk in progress
    const payload = randomBytes(TOTAL);
    let written = 0;
    const write = () => {
      if (written === TOTAL) return void client.end();
      const chunk = payload.subarray(written, written + CHUNK);
      client.write(chunk, () => {
        written += chunk.length;
        write();
      });
    };
    write();

    // wait until nothing moves any more (the receiver still reads nothing)
    const snapshot = () => JSON.stringify({ written, bytes: pumps!.bytes(id), client: queues(ports.client, ports.front), front: queues(ports.front, ports.client) });
    let last = "";
    let still = 0;
    while (still < 3 && written < TOTAL) {
      await tick(100);
      const now = snapshot();
      still = now === last ? still + 1 : 0;
      last = now;
    }
    const { bytes, client: clientQ, front: frontQ } = JSON.parse(last) as { bytes: [number, number]; client: { tx: number; rx: number }; front: { tx: number; rx: number } };
    // what the pump took from the front socket but has not written upstream sits in its pipe
    const held = written + CHUNK - clientQ.tx - frontQ.rx - bytes[0];
    console.log(`back-pressure: the kernel took ${written} of ${TOTAL} bytes, ${bytes[0]} went upstream, the pump holds at most ${held}, ${JSON.stringify(pumps!.stats())}`);
    assert.ok(written < TOTAL, "the sender was held back");
    assert.ok(client.writableLength > 0, "the sender's own buffer holds the rest");
    assert.ok(bytes[0] < TOTAL / 2, `${bytes[0]} bytes went upstream to a reader that reads nothing`);
    assert.ok(held <= PIPE_BYTES + CHUNK, `the pump holds ${held} bytes, more than one pipe`);

    const received = readAll(serverSide);
    serverSide.resume();
    const data = await received;
    assert.equal(data.length, TOTAL);
    assert.equal(sha256(data), sha256(payload));
    const back = readAll(client);
    serverSide.end();
    await back;
    assert.deepEqual(await finished, { aToB: TOTAL, bToA: 0, errno: 0 });
    client.destroy();
    serverSide.destroy();
  });

  test("half-close works in both directions independently", { timeout: 60_000 }, async () => {
    const SIZE = 8 * 1024 * 1024;
    const fromClient = [randomBytes(SIZE), randomBytes(SIZE)];
    const fromServer = [randomBytes(SIZE), randomBytes(SIZE)];
    const serverGot: ((data: Buffer) => void)[] = [];
    const gotByServer = [0, 1].map((i) => new Promise<Buffer>((r) => (serverGot[i] = r)));
    const upstreamPort = await listen((s) => {
      s.once("data", (first: Buffer) => {
        const which = first[0];
        const rest = readAll(s).then((data) => Buffer.concat([first.subarray(1), data]));
        // 0: the client finishes first, and the server answers after the client's FIN;
        // 1: the server finishes first, then reads the client's data after its own FIN
        if (which === 0) {
          void rest.then((data) => {
            serverGot[0](data);
            s.end(fromServer[0]);
          });
        } else {
          s.end(fromServer[1]);
          void rest.then(serverGot[1]);
        }
      });
    });

    async function run(which: number): Promise<void> {
      const { client, front, upstream } = await pair(upstreamPort);
      const { finished } = pumps!.splice(front, upstream);
      const back = readAll(client);
      client.write(Buffer.from([which]));
      if (which === 0) {
        client.end(fromClient[0]);
        assert.equal(sha256(await back), sha256(fromServer[0]));
      } else {
        assert.equal(sha256(await back), sha256(fromServer[1])); // the server's FIN came through...
        client.end(fromClient[1]); // ...and this direction still flows
      }
      assert.equal(sha256(await gotByServer[which]), sha256(fromClient[which]));
      assert.deepEqual(await finished, { aToB: SIZE + 1, bToA: SIZE, errno: 0 });
      client.destroy();
    }
    await Promise.all([run(0), run(1)]);
  });

  test("drop during a large transfer ends both sides and reports once", { timeout: 60_000 }, async () => {
    const block = randomBytes(1024 * 1024);
    /** Writes blocks as fast as the socket takes them, until it goes away. */
    const flood = (s: Socket) => {
      const more = () => {
        while (!s.destroyed && !s.writableEnded && s.write(block)) continue;
      };
      s.on("drain", more);
      more();
    };
    let serverAccepted!: (s: Socket) => void;
    const accepted = new Promise<Socket>((r) => (serverAccepted = r));
    const upstreamPort = await listen((s) => serverAccepted(s));
    const { client, front, upstream } = await pair(upstreamPort);
    const serverSide = await accepted;
    const connectionsBefore = pumps!.stats().connections;
    const { id, finished } = pumps!.splice(front, upstream);
    const clientGone = gone(client);
    const serverGone = gone(serverSide);
    client.resume();
    serverSide.resume();
    flood(client);
    flood(serverSide);

    await until(() => {
      const b = pumps!.bytes(id)!;
      return b[0] >= 16 * block.length && b[1] >= 16 * block.length;
    });
    pumps!.drop(id);
    pumps!.drop(id); // twice: still one report
    const result = await finished;
    await Promise.all([clientGone, serverGone]);
    assert.ok(result.aToB >= 16 * block.length && result.bToA >= 16 * block.length, JSON.stringify(result));
    assert.equal(pumps!.bytes(id), undefined);
    assert.equal(pumps!.stats().connections, connectionsBefore);
    await tick(50);
    assert.equal(doneCalls.get(id), 1);
    client.destroy();
    serverSide.destroy();
  });
});
