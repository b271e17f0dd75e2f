/**
 * The native HTTPS engine on its own: a real TLS client in front, a real HTTP server on
 * loopback as the "guest", and the engine between them, as a gateway worker runs it. What it
 * serves itself is checked byte for byte; what it must not serve has to come out of the
 * hand-over callback with the bytes it read, over a socket that still reaches the client.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server as HttpServer } from "node:http";
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { after, before, describe, test } from "node:test";
import { Agent, request } from "undici";
import type { HttpRoute } from "../../packages/server/src/boxes/routes.js";
import { HttpEngine } from "../../packages/server/src/gateway/http-engine.js";
import type { HandedOver } from "../../packages/server/src/gateway/proxy-connection.js";
import { ensureLocalTls } from "../../packages/server/src/gateway/tls.js";

const DOMAIN = "engine.test";
const tlsDir = mkdtempSync(join(tmpdir(), "sail-engine-test-"));
const tls = ensureLocalTls(tlsDir, DOMAIN);
const { engine, why } = HttpEngine.load();

/** What the guest saw: its TCP connections and each request's head and body. */
const guest = { connections: 0, requests: [] as Array<{ url: string; headers: IncomingHttpHeaders; body: Buffer }> };
const handovers: Array<HandedOver & { socket: Socket }> = [];
let guestServer: HttpServer;
let closingServer: Server;
let front: Server;
let frontPort = 0;
let guestPort = 0;
let closingPort = 0;
let refusedPort = 0;
let agent: Agent;
let closerConnections = 0;

function route(sailboxId: string, port: number, status: HttpRoute["status"] = "running"): HttpRoute {
  return { sailboxId, port, guestAddress: "127.0.0.1", generation: `g-${sailboxId}`, status };
}

async function listen(server: Server | HttpServer): Promise<number> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return (server.address() as AddressInfo).port;
}

/** A TLS connection to the engine for `label`, and everything it receives until it closes. */
function open(label: string): { socket: TLSSocket; closed: Promise<string> } {
  const socket = tlsConnect({ host: "127.0.0.1", port: frontPort, servername: `${label}.${DOMAIN}`, ca: tls.caCert });
  const closed = new Promise<string>((resolve) => {
    let text = "";
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    socket.on("error", () => {});
    socket.on("close", () => resolve(text));
  });
  return { socket, closed };
}

/** Resolves with what arrived once `text` matches. */
function until(socket: TLSSocket, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const onData = (d: Buffer) => {
      text += d.toString("latin1");
      if (pattern.test(text)) {
        socket.off("data", onData);
        resolve(text);
      }
    };
    socket.on("data", onData);
    socket.once("close", () => reject(new Error(`closed before ${pattern}: ${JSON.stringify(text)}`)));
  });
}

describe("native HTTPS engine", { timeout: 60_000 }, () => {
  test("is built and loads on this host", () => {
    assert.ok(engine, why);
  });

  before(async () => {
    guestServer = createHttpServer({ keepAliveTimeout: 60_000 }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks);
        guest.requests.push({ url: req.url!, headers: req.headers, body });
        if (req.url === "/chunked") {
          res.write("one,");
          setTimeout(() => res.end("two"), 20);
        } else if (req.url === "/empty") {
          res.writeHead(204).end();
        } else if (req.url === "/hash") {
          res.end(createHash("sha256").update(body).digest("hex"));
        } else if (req.url === "/hang") {
          // never answers
        } else {
          res.setHeader("keep-alive", "timeout=60");
          res.end(`hello ${req.url}`);
        }
      });
    });
    guestServer.on("connection", () => guest.connections++);
    // a raw echo behind a 101, as a WebSocket server is once it has switched protocols
    guestServer.on("upgrade", (req, socket: Socket, head: Buffer) => {
      guest.requests.push({ url: req.url!, headers: req.headers, body: Buffer.alloc(0) });
      socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
      if (head.length) socket.write(head);
      socket.pipe(socket);
    });
    guestPort = await listen(guestServer);
    closingServer = createServer((s) => {
      closerConnections++;
      s.destroy(); // accepts, then closes without a word
    });
    closingPort = await listen(closingServer);
    const refused = createServer();
    refusedPort = await listen(refused);
    await new Promise((r) => refused.close(r)); // nothing listens there any more

    engine!.start(tls, DOMAIN, (socket, handedOver) => handovers.push({ socket, ...handedOver }));
    front = createServer({ pauseOnConnect: true }, (s) => engine!.adopt(s));
    frontPort = await listen(front);
    engine!.setRoutes(
      new Map([
        ["3000-box1", route("box1", guestPort)],
        ["3000-sleepy", route("sleepy", guestPort, "sleeping")],
        ["3000-closer", route("closer", closingPort)],
        ["3000-nobody", route("nobody", refusedPort)],
      ]),
    );
    agent = new Agent({ connect: { ca: tls.caCert, servername: `3000-box1.${DOMAIN}`, host: "127.0.0.1" } as never, connections: 1 });
  });

  after(async () => {
    await agent?.close();
    for (const h of handovers) h.socket.destroy();
    engine?.stop();
    front?.close();
    guestServer?.closeAllConnections();
    guestServer?.close();
    closingServer?.close();
    rmSync(tlsDir, { recursive: true, force: true });
  });

  test("serves a running box's requests itself over one pooled upstream socket, with X-Forwarded-* set and spoofed ones dropped", async () => {
    engine!.take();
    const before = { connections: guest.connections, requests: guest.requests.length };
    for (let i = 0; i < 20; i++) {
      const res = await request(`https://127.0.0.1:${frontPort}/n${i}`, {
        dispatcher: agent,
        headers: { host: `3000-box1.${DOMAIN}:${frontPort}`, "x-forwarded-for": "6.6.6.6", forwarded: "for=6.6.6.6" },
      });
      assert.equal(res.statusCode, 200);
      assert.equal(await res.body.text(), `hello /n${i}`);
      assert.equal(res.headers["keep-alive"], undefined, "hop-by-hop response fields are dropped");
    }
    const seen = guest.requests.slice(before.requests);
    assert.equal(seen.length, 20);
    assert.equal(guest.connections - before.connections, 1, "one upstream connection carried all 20 requests");
    for (const r of seen) {
      assert.equal(r.headers["x-forwarded-for"], "127.0.0.1");
      assert.equal(r.headers["x-forwarded-proto"], "https");
      assert.equal(r.headers["x-forwarded-host"], `3000-box1.${DOMAIN}:${frontPort}`);
      assert.equal(r.headers.forwarded, undefined);
    }
    assert.equal(handovers.length, 0, "nothing was handed to JavaScript");
    const totals = engine!.take();
    assert.equal(totals.requests, 20);
    assert.equal(totals.activity.box1?.open, 0);
  });

  test("pipelined requests, a chunked response, HEAD, 204 and a 1 MB upload arrive intact and in order", async () => {
    const { socket, closed } = open("3000-box1");
    await once(socket, "secureConnect");
    const host = `Host: 3000-box1.${DOMAIN}\r\n`;
    const upload = randomBytes(1024 * 1024);
    socket.write(`GET /a HTTP/1.1\r\n${host}\r\nGET /chunked HTTP/1.1\r\n${host}\r\nHEAD /b HTTP/1.1\r\n${host}\r\nGET /empty HTTP/1.1\r\n${host}\r\n`);
    socket.write(`POST /hash HTTP/1.1\r\n${host}content-length: ${upload.length}\r\n\r\n`);
    socket.write(upload);
    socket.write(`GET /last HTTP/1.1\r\n${host}connection: close\r\n\r\n`);
    const text = await closed;
    const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
    assert.deepEqual(statuses, ["200", "200", "200", "204", "200", "200"]);
    assert.match(text, /hello \/a/);
    assert.match(text, /transfer-encoding: chunked\r\n[\s\S]*4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n/i);
    assert.ok(text.includes(createHash("sha256").update(upload).digest("hex")), "the upload's hash came back");
    assert.match(text, /connection: close\r\n\r\nhello \/last$/, "the last answer says the connection closes, and it does");
    assert.equal(handovers.length, 0);
  });

  test("what it does not serve is handed over with the bytes it read, and the socket reaches the client both ways", async () => {
    const cases = [
      { label: "3000-box1", head: `GET / HTTP/1.1\r\nHost: 3000-box1.${DOMAIN}\r\nConnection: keep-alive, x-private\r\nX-Private: 1\r\n\r\n` },
      { label: "3000-box1", head: `PUT / HTTP/1.1\r\nHost: 3000-box1.${DOMAIN}\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n` },
      { label: "3000-sleepy", head: `GET / HTTP/1.1\r\nHost: 3000-sleepy.${DOMAIN}\r\n\r\n` },
      { label: "3000-unknown", head: `GET / HTTP/1.1\r\nHost: 3000-unknown.${DOMAIN}\r\n\r\n` },
      { label: "3000-box1", head: `GET / HTTP/1.0\r\nHost: 3000-box1.${DOMAIN}\r\n\r\n` },
      { label: "3000-box1", head: `POST / HTTP/1.1\r\nHost: 3000-box1.${DOMAIN}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n` },
      { label: "3000-box1", head: `GET /slow HTTP/1.1\r\nHost: 3000-box1.${DOMAIN}\r\nX-Slow: ` },
    ];
    for (const { label, head } of cases) {
      const already = handovers.length;
      const { socket, closed } = open(label);
      await once(socket, "secureConnect");
      socket.write(head);
      while (handovers.length === already) await new Promise((r) => setTimeout(r, 10));
      const h = handovers[already]!;
      assert.equal(h.bytes.toString("latin1"), head, "the bytes the engine read come with the connection");
      assert.equal(h.answer, null);
      assert.equal(h.peer, "127.0.0.1");
      // the JavaScript side reads what the client sends next and answers through the engine's TLS
      const more = once(h.socket, "data");
      socket.write("more");
      assert.equal(String((await more)[0]), "more");
      h.socket.end("HTTP/1.1 299 From JS\r\ncontent-length: 2\r\nconnection: close\r\n\r\njs");
      assert.match(await closed, /^HTTP\/1\.1 299 From JS\r\n[\s\S]*\r\n\r\njs$/);
    }
  });

  test("a guest that closes without answering is tried 3 more times, then handed over with the 502 to give; an unreachable one to be dialled again", async () => {
    let already = handovers.length;
    const connectionsBefore = closerConnections;
    const closer = open("3000-closer");
    await once(closer.socket, "secureConnect");
    closer.socket.write(`GET /x HTTP/1.1\r\nHost: 3000-closer.${DOMAIN}\r\nAccept: application/json\r\n\r\n`);
    while (handovers.length === already) await new Promise((r) => setTimeout(r, 10));
    const failed = handovers[already]!;
    assert.equal(failed.answer?.status, 502);
    assert.equal(failed.answer?.code, "SAIL_UPSTREAM_FAILED");
    assert.match(failed.answer!.message, /port \d+ in sailbox closer closed the connection without a valid answer/);
    assert.match(failed.bytes.toString("latin1"), /^GET \/x HTTP\/1\.1\r\n[\s\S]*Accept: application\/json/);
    assert.equal(closerConnections - connectionsBefore, 4, "a GET is sent again (after 100, 200, 300 ms) before giving up");
    failed.socket.end();
    await closer.closed;

    already = handovers.length;
    const nobody = open("3000-nobody");
    await once(nobody.socket, "secureConnect");
    nobody.socket.write(`GET /y HTTP/1.1\r\nHost: 3000-nobody.${DOMAIN}\r\n\r\n`);
    while (handovers.length === already) await new Promise((r) => setTimeout(r, 10));
    assert.equal(handovers[already]!.answer, null);
    assert.match(handovers[already]!.bytes.toString("latin1"), /^GET \/y HTTP\/1\.1\r\n/);
    handovers[already]!.socket.end();
    await nobody.closed;
  });

  test("dropBox closes the box's in-flight exchanges; a route that changes takes effect at once", async () => {
    const hanging = open("3000-box1");
    await once(hanging.socket, "secureConnect");
    const served = guest.requests.length;
    hanging.socket.write(`GET /hang HTTP/1.1\r\nHost: 3000-box1.${DOMAIN}\r\n\r\n`);
    while (guest.requests.length === served) await new Promise((r) => setTimeout(r, 10));
    engine!.dropBox("box1");
    assert.equal(await hanging.closed, "", "closed without an answer");

    // the box goes to sleep: its next request is JavaScript's (which wakes it)
    engine!.setRoutes(new Map([["3000-box1", route("box1", guestPort, "sleeping")]]));
    const already = handovers.length;
    const asleep = open("3000-box1");
    await once(asleep.socket, "secureConnect");
    asleep.socket.write(`GET / HTTP/1.1\r\nHost: 3000-box1.${DOMAIN}\r\n\r\n`);
    while (handovers.length === already) await new Promise((r) => setTimeout(r, 10));
    handovers[already]!.socket.end();
    await asleep.closed;
    engine!.setRoutes(new Map([["3000-box1", route("box1", guestPort)]]));
    const awake = open("3000-box1");
    await once(awake.socket, "secureConnect");
    awake.socket.write(`GET /again HTTP/1.1\r\nHost: 3000-box1.${DOMAIN}\r\n\r\n`);
    assert.match(await until(awake.socket, /hello \/again/), /^HTTP\/1\.1 200 /);
    awake.socket.destroy();
  });

  test("an Upgrade answered 101 becomes a tunnel both ways; dropBox tells a WebSocket 1001 before closing", async () => {
    engine!.take();
    const handedBefore = handovers.length;
    const { socket, closed } = open("3000-box1");
    await once(socket, "secureConnect");
    socket.write(`GET /ws HTTP/1.1\r\nHost: 3000-box1.${DOMAIN}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Forwarded-For: 6.6.6.6\r\n\r\nearly`);
    const switched = await until(socket, /\r\n\r\nearly$/);
    assert.match(switched, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    const seen = guest.requests.at(-1)!;
    assert.equal(seen.headers.upgrade, "websocket");
    assert.equal(seen.headers.connection, "upgrade");
    assert.equal(seen.headers["x-forwarded-for"], "127.0.0.1");
    for (const size of [1, 1000, 300_000]) {
      const payload = randomBytes(size);
      const echoed = new Promise<Buffer>((resolve) => {
        const chunks: Buffer[] = [];
        let got = 0;
        const onData = (d: Buffer) => {
          chunks.push(d);
          got += d.length;
          if (got >= size) {
            socket.off("data", onData);
            resolve(Buffer.concat(chunks));
          }
        };
        socket.on("data", onData);
      });
      socket.write(payload);
      assert.ok((await echoed).equals(payload), `${size} bytes came back as sent`);
    }
    const totals = engine!.take();
    assert.equal(totals.tunnels, 1);
    assert.equal(totals.activity.box1?.open, 1, "an open tunnel keeps its box busy");
    assert.equal(handovers.length, handedBefore, "the engine carried the upgrade itself");
    engine!.dropBox("box1");
    const all = await closed;
    assert.equal(Buffer.from(all.slice(-4), "latin1").toString("hex"), "880203e9", "a close frame with 1001, then the end");
  });

  test("refuses what is not TLS by closing it", async () => {
    const { connect } = await import("node:net");
    const s = connect({ host: "127.0.0.1", port: frontPort }, () => s.write(randomBytes(300)));
    s.on("error", () => {}); // closed or reset: either way, refused
    await new Promise((resolve) => s.on("close", resolve));
  });
});
