/**
 * The edge's parts: the route feed's versions and long poll, the maps a snapshot becomes, and
 * the edge's HAProxy for real (Debian's haproxy on loopback) following a feed: a TCP port
 * routes to its node with PROXY v2 naming the client, a source outside the allowlist never
 * reaches the node, an SNI picks the node, and a route that leaves the feed leaves HAProxy.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { connect as tlsConnect, TLSSocket } from "node:tls";
import pino from "pino";
import type { SailboxStatus } from "@sail/protocol";
import { routeMap, RouteFeed } from "../../packages/server/src/boxes/route-feed.js";
import type { Transition } from "../../packages/server/src/boxes/lifecycle.js";
import { allowKey, edgeConfig, edgeMaps } from "../../packages/server/src/edge/edge-config.js";
import { startEdge } from "../../packages/server/src/edge/edge.js";
import { ensureLocalTls } from "../../packages/server/src/gateway/tls.js";
import type { EdgeRoutes } from "../../packages/server/src/node-wire/node-api.js";
import { WIRE_PREFIX } from "../../packages/server/src/node-wire/wire.js";
import { PROXY_V2_LOCAL, proxyV2Header, readProxyV2 } from "../../packages/server/src/wire/proxy-protocol.js";
import type { ListenerRow, SailboxRow } from "../../packages/server/src/store/store.js";

const log = pino({ level: process.env.EDGE_TEST_LOG ?? "silent" });
const dir = mkdtempSync(join(tmpdir(), "sail-edge-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A store holding some boxes and listeners (what the feed reads of it: live boxes and their listeners). */
class Boxes {
  boxes: Array<Pick<SailboxRow, "id" | "status" | "nodeId">> = [];
  listeners: Array<ListenerRow & { status: SailboxStatus }> = [];
  liveSailboxes = async () => this.boxes.filter((b) => b.status !== "terminated" && b.status !== "failed") as SailboxRow[];
  liveListeners = async () => this.listeners.filter((l) => this.boxes.some((b) => b.id === l.sailboxId && b.status !== "terminated" && b.status !== "failed"));
  add(id: string, status: SailboxStatus, listeners: Array<Partial<ListenerRow>>) {
    this.boxes.push({ id, status, nodeId: null });
    for (const l of listeners)
      this.listeners.push({ sailboxId: id, port: 3000, protocol: "http", cidrAllowlist: [], allowPublic: false, publicPort: null, h2c: false, proxyProtocol: false, status, ...l });
  }
}

class Transitions {
  private subscriber: ((change: Transition) => void) | undefined;
  onTransition(subscriber: (change: Transition) => void) {
    this.subscriber = subscriber;
  }
  emit(from: SailboxStatus, to: SailboxStatus) {
    this.subscriber?.({ box: {} as SailboxRow, from, to });
  }
}

const tls = ensureLocalTls(join(dir, "tls"), "sail.test");
const NODE = { nodeId: "node-a", httpsAddress: "127.0.0.1:9443", tcpAddress: "127.0.0.1" };

describe("the route feed", () => {
  test("a poll at the current version is held until a create changes the map, then answers the next version", async () => {
    const store = new Boxes();
    const lifecycle = new Transitions();
    const feed = new RouteFeed(store, () => ({ all: [NODE], fallback: "node-a" }), "sail.test", lifecycle, log, 3_600_000);
    after(() => feed.close());
    const first = await feed.poll(undefined, 0);
    assert.equal(first.version, `${feed.epoch}-0`);
    assert.equal(first.reset, true);
    assert.deepEqual(first.http, []);

    const held = feed.poll(first.version, 60_000);
    store.add("sb-aaaaaaaaaaaa", "running", [{ port: 3000 }]);
    lifecycle.emit("creating", "running");
    const next = await held;
    assert.equal(next.version, `${feed.epoch}-1`);
    assert.deepEqual(next.http, [{ host: "3000-aaaaaaaaaaaa.sail.test", nodeId: "node-a" }]);
  });

  test("sleep and wake do not change the version; a terminate does", async () => {
    const store = new Boxes();
    const lifecycle = new Transitions();
    const feed = new RouteFeed(store, () => ({ all: [NODE], fallback: "node-a" }), "sail.test", lifecycle, log, 3_600_000);
    after(() => feed.close());
    store.add("sb-bbbbbbbbbbbb", "running", [{ protocol: "tcp", port: 5000, publicPort: 34001, cidrAllowlist: ["10.0.0.0/8"] }]);
    const start = await feed.poll(undefined, 0);
    assert.deepEqual(start.tcp, [{ publicPort: 34001, nodeId: "node-a", allow: ["10.0.0.0/8"] }]);
    store.boxes[0]!.status = "sleeping";
    lifecycle.emit("running", "sleeping");
    lifecycle.emit("sleeping", "running");
    // held the whole (short) wait: nothing the edge routes by changed
    assert.equal((await feed.poll(start.version, 200)).version, start.version);
    store.boxes[0]!.status = "terminated";
    lifecycle.emit("sleeping", "terminated");
    const ended = await feed.poll(start.version, 60_000);
    assert.notEqual(ended.version, start.version);
    assert.deepEqual(ended.tcp, []);
  });

  test("a version of another epoch (a restarted control plane) gets the whole map at once", async () => {
    const feed = new RouteFeed(new Boxes(), () => ({ all: [NODE] }), "sail.test", undefined, log, 3_600_000);
    after(() => feed.close());
    const answer = await feed.poll("0123456789ab-7", 60_000);
    assert.equal(answer.reset, true);
    assert.equal(answer.version, `${feed.epoch}-0`);
  });

  test("a box without a recorded node is on the fallback node; hosts and ports are sorted, so equal maps compare equal", async () => {
    const store = new Boxes();
    store.add("sb-dddddddddddd", "paused", [{ port: 8080 }, { protocol: "tcp", port: 22, publicPort: 34002 }]);
    store.add("sb-cccccccccccc", "creating", [{ port: 3000 }]);
    const map = await routeMap(store, { all: [NODE], fallback: "node-a" }, "sail.test");
    assert.deepEqual(
      map.http.map((h) => h.host),
      ["3000-cccccccccccc.sail.test", "8080-dddddddddddd.sail.test"],
    );
    assert.deepEqual(map.tcp, [{ publicPort: 34002, nodeId: "node-a", allow: [] }]);
  });
});

describe("the edge's maps", () => {
  test("an allowlist entry is the port and the range in one IPv6 prefix", () => {
    assert.equal(allowKey(34005, "10.1.0.0/16"), "fd5a:0:0:0:3:4005:10.1.0.0/112");
    assert.equal(allowKey(20000, "192.0.2.7"), "fd5a:0:0:0:2:0:192.0.2.7/128");
    assert.equal(allowKey(20000, "not-a-cidr"), undefined);
  });

  test("hosts go to their node's HTTPS gateway, ports to its TCP address; a node without an address routes nothing", () => {
    const maps = edgeMaps({
      nodes: [NODE, { nodeId: "node-b" }],
      http: [
        { host: "3000-aaaaaaaaaaaa.sail.test", nodeId: "node-a" },
        { host: "3000-bbbbbbbbbbbb.sail.test", nodeId: "node-b" },
      ],
      tcp: [
        { publicPort: 34001, nodeId: "node-a", allow: ["10.0.0.0/8"] },
        { publicPort: 34002, nodeId: "node-a", allow: [] },
      ],
    });
    assert.deepEqual(maps.sni, [["3000-aaaaaaaaaaaa.sail.test", "127.0.0.1:9443"]]);
    assert.deepEqual(maps.tcp, [
      ["34001", "127.0.0.1"],
      ["34002", "127.0.0.1"],
    ]);
    assert.deepEqual(maps.tcpRestricted, [["34001", "1"]]);
    assert.deepEqual(maps.tcpAllow, [["fd5a:0:0:0:3:4001:10.0.0.0/104", "1"]]);
    assert.equal(maps.unroutable, 1);
  });
});

async function freePort(host = "127.0.0.1"): Promise<number> {
  const server = createServer().listen(0, host);
  await new Promise((resolve) => server.once("listening", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** What a client of the edge sees: the bytes the node answered, or that the connection closed without any. */
function exchange(port: number, options: { localAddress?: string; servername?: string } = {}): Promise<string> {
  return new Promise((resolve) => {
    let got = "";
    const socket: Socket = options.servername
      ? tlsConnect({ socket: connect({ host: "127.0.0.1", port, localAddress: options.localAddress }), servername: options.servername, ca: tls.caCert }, () => socket.write("hello\n"))
      : connect({ host: "127.0.0.1", port, localAddress: options.localAddress }, () => socket.write("hello\n"));
    socket.on("data", (d) => (got += d));
    socket.on("error", () => {});
    socket.on("close", () => resolve(got || "closed"));
  });
}

async function eventually<T>(what: string, probe: () => Promise<T | false>): Promise<T> {
  for (let i = 0; i < 300; i++) {
    const seen = await probe();
    if (seen !== false) return seen;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`never happened: ${what}`);
}

describe("the edge's HAProxy, following a feed", () => {
  test("its configuration passes haproxy -c", async () => {
    const { execFileSync } = await import("node:child_process");
    const { writeFileSync, mkdirSync } = await import("node:fs");
    const sub = join(dir, "check");
    mkdirSync(sub, { recursive: true });
    for (const map of ["sni.map", "tcp.map", "tcp-restricted.map", "tcp-allow.map"]) writeFileSync(join(sub, map), "");
    const settings = {
      dir: sub,
      https: { host: "127.0.0.1", port: 1 },
      tcpHost: "127.0.0.1",
      tcpPorts: { firstPort: 2, lastPort: 3 },
      threads: 1,
      maxConnections: 10,
      memoryMiB: 64,
      clientIdleMs: 1000,
      tunnelMs: 1000,
    };
    writeFileSync(join(sub, "haproxy.cfg"), edgeConfig(settings));
    execFileSync("haproxy", ["-c", "-q", "-f", join(sub, "haproxy.cfg")]);
  });

  test("TCP and TLS go to the node with the client's address; outside the allowlist or unknown never crosses; a route that leaves the feed leaves the edge", async () => {
    // the "node": 127.0.0.2, answering every connection with the client its PROXY v2 header names (and the TLS server name it saw, for HTTPS)
    const reached: string[] = [];
    const nodeServer = (port: number, secure = false): Promise<Server> =>
      new Promise((resolve) => {
        const server = createServer({ pauseOnConnect: true }, (raw) => {
          void readProxyV2(raw, 2000).then(
            (peer) => {
              // the node's gateway terminates TLS (with the wildcard certificate), after the PROXY header
              const socket: Socket = secure ? new TLSSocket(raw, { isServer: true, key: tls.key, cert: tls.cert }) : raw;
              socket.once("data", () => {
                reached.push(`${port} ${peer?.address}`);
                socket.end(`node saw ${peer?.address}${secure ? ` for ${(socket as TLSSocket).servername}` : ""}\n`);
              });
              socket.on("error", () => socket.destroy());
              raw.resume();
            },
            () => raw.destroy(),
          );
        }).listen(port, "127.0.0.2", () => resolve(server));
      });
    const [httpsPort, tcpFirst] = [await freePort(), await freePort()];
    const tcpPorts = { firstPort: tcpFirst, lastPort: tcpFirst + 1 };
    const nodeHttpsPort = await freePort("127.0.0.2");
    const servers = [await nodeServer(tcpFirst), await nodeServer(tcpFirst + 1), await nodeServer(nodeHttpsPort, true)];
    after(() => servers.forEach((s) => s.close()));

    // the feed: whatever `routes` holds, answered at once (the edge polls again when the version moves)
    let routes: EdgeRoutes = {
      version: "e-1",
      reset: true,
      nodes: [{ nodeId: "n", httpsAddress: `127.0.0.2:${nodeHttpsPort}`, tcpAddress: "127.0.0.2" }],
      http: [{ host: "3000-aaaaaaaaaaaa.sail.test", nodeId: "n" }],
      tcp: [
        { publicPort: tcpFirst, nodeId: "n", allow: [] },
        { publicPort: tcpFirst + 1, nodeId: "n", allow: ["127.0.0.3/32"] },
      ],
    };
    const control: HttpServer = createHttpServer((req, res) => {
      assert.ok(req.url?.startsWith(`${WIRE_PREFIX}/routes`));
      const after = new URL(req.url!, "http://x").searchParams.get("after");
      const answer = () => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(routes));
      if (after !== routes.version) return answer();
      setTimeout(answer, 100);
    });
    await new Promise<void>((resolve) => control.listen(0, "127.0.0.1", resolve));
    after(() => control.close());
    const edge = await startEdge(
      {
        dir: join(dir, "edge"),
        control: `http://127.0.0.1:${(control.address() as AddressInfo).port}`,
        credential: "x".repeat(24),
        https: { host: "127.0.0.1", port: httpsPort },
        tcpHost: "127.0.0.1",
        tcpPorts,
        threads: 1,
        maxConnections: 100,
        memoryMiB: 64,
        clientIdleMs: 5000,
        tunnelMs: 30_000,
      },
      log,
    );
    after(() => edge.close());
    await eventually("the edge applies the first map", async () => edge.version === "e-1");

    assert.equal(await exchange(tcpFirst, { localAddress: "127.0.0.4" }), "node saw 127.0.0.4\n");
    assert.equal(await exchange(tcpFirst + 1, { localAddress: "127.0.0.3" }), "node saw 127.0.0.3\n");
    const before = reached.length;
    assert.equal(await exchange(tcpFirst + 1, { localAddress: "127.0.0.4" }), "closed", "a source outside the allowlist");
    assert.equal(reached.length, before, "the refused connection never reached the node");
    assert.equal(await exchange(httpsPort, { servername: "3000-aaaaaaaaaaaa.sail.test", localAddress: "127.0.0.5" }), "node saw 127.0.0.5 for 3000-aaaaaaaaaaaa.sail.test\n");
    assert.equal(await exchange(httpsPort, { servername: "3000-zzzzzzzzzzzz.sail.test" }), "closed", "an unknown server name");

    routes = { ...routes, version: "e-2", http: [], tcp: [{ publicPort: tcpFirst + 1, nodeId: "n", allow: ["127.0.0.3/32"] }] };
    await eventually("the edge applies the second map", async () => edge.version === "e-2");
    assert.equal(await exchange(tcpFirst, { localAddress: "127.0.0.4" }), "closed", "a port whose route left");
    assert.equal(await exchange(httpsPort, { servername: "3000-aaaaaaaaaaaa.sail.test" }), "closed", "a host whose route left");
    assert.equal(await exchange(tcpFirst + 1, { localAddress: "127.0.0.3" }), "node saw 127.0.0.3\n");
  });
});

describe("reading an edge's PROXY v2 header", () => {
  /** Feed `bytes` to readProxyV2 over a real loopback connection; what it resolved or rejected with, and what the reader got after it. */
  async function read(bytes: Buffer, timeoutMs = 2000): Promise<{ peer?: unknown; error?: string; rest?: string }> {
    const server = createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const client = connect((server.address() as AddressInfo).port, "127.0.0.1", () => client.write(bytes));
    client.on("error", () => {});
    const [socket] = (await new Promise((resolve) => server.once("connection", (s) => resolve([s])))) as [Socket];
    try {
      const peer = await readProxyV2(socket, timeoutMs);
      const rest = await new Promise<string>((resolve) => {
        socket.once("data", (d) => resolve(String(d)));
        socket.resume();
      });
      return { peer, rest };
    } catch (err) {
      return { error: (err as Error).message };
    } finally {
      client.destroy();
      socket.destroy();
      server.close();
    }
  }

  test("the client's address and port, and the bytes after the header stay for the reader", async () => {
    const header = proxyV2Header({ address: "198.51.100.7", port: 40000 }, { address: "127.0.0.2", port: 34001 });
    assert.deepEqual(await read(Buffer.concat([header, Buffer.from("ping\n")])), { peer: { address: "198.51.100.7", port: 40000 }, rest: "ping\n" });
  });

  test("a LOCAL header names nobody; no header, a header longer than the bound, or silence is refused", async () => {
    assert.equal((await read(Buffer.concat([PROXY_V2_LOCAL, Buffer.from("x")]))).peer, undefined);
    assert.match((await read(Buffer.from("GET / HTTP/1.1\r\n\r\n"))).error ?? "", /does not start with a PROXY v2 header/);
    const long = Buffer.from(PROXY_V2_LOCAL);
    long.writeUInt16BE(4000, 14);
    assert.match((await read(long)).error ?? "", /longer than/);
    assert.match((await read(PROXY_V2_LOCAL.subarray(0, 10), 200)).error ?? "", /no PROXY v2 header within 200 ms/);
  });
});
