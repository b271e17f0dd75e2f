/**
 * The slow path on real sockets: HAProxy's side is a unix-socket client here, the guest a TCP
 * server on loopback. What bytes a guest can put on the connection HAProxy shares.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { SlowPath } from "../../packages/server/src/gateway/slow-path.js";

const quiet = { info: () => {}, warn: () => {}, error: () => {} };
const dir = mkdtempSync(join(tmpdir(), "sail-slow-"));
const socketPath = join(dir, "slow.sock");
let slow: SlowPath;
let guest: Server;
/** What the guest does with each request head it reads on a connection. */
let answerWith: (head: string, socket: Socket) => void = () => {};
const heads: string[] = [];

before(async () => {
  guest = createServer((socket) => {
    let buffered = "";
    socket.on("data", (d) => {
      buffered += d.toString("latin1");
      while (buffered.includes("\r\n\r\n")) {
        const [head, rest] = [buffered.slice(0, buffered.indexOf("\r\n\r\n")), buffered.slice(buffered.indexOf("\r\n\r\n") + 4)];
        buffered = rest;
        heads.push(head);
        answerWith(head, socket);
      }
    });
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => guest.listen(0, "127.0.0.1", resolve));
  const port = (guest.address() as { port: number }).port;
  slow = new SlowPath({ socketPath, domain: "sail.test", wakeOnIngress: async () => "running", responseMs: 5000 }, quiet);
  await slow.listen();
  const route = { sailboxId: "sb-guest", port, guestAddress: "127.0.0.1", status: "running" as const, h2c: false };
  slow.apply({ version: 1, reset: true, http: { set: [[`${port}-guest`, route]], remove: [] }, tcp: { set: [], remove: [] } });
  host = `${port}-guest.sail.test`;
});
let host = "";

after(async () => {
  await slow.close();
  guest.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Write `request` as HAProxy would, on a fresh connection; everything that comes back until the slow path closes it (or 2 s). */
function exchange(request: string): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = connect(socketPath, () => socket.write(request));
    let text = "";
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ text, closed: false });
    }, 2000);
    socket.setEncoding("latin1").on("data", (d: string) => (text += d));
    socket.on("end", () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ text, closed: true });
    });
  });
}

const upgrade = (path: string) =>
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;

describe("the slow path", () => {
  test("an upgrade the guest answers with a complete 200 comes back as an HTTP answer, and the connection closes", async () => {
    answerWith = (_head, socket) => socket.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    const { text, closed } = await exchange(upgrade("/poison"));
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n[^]*connection: close\r\n\r\nok$/i);
    assert.ok(closed, "the slow path closed the connection it would otherwise have left as a tunnel");
  });

  test("bytes the client sends after an upgrade the guest refused never reach the guest as a request", async () => {
    heads.length = 0;
    answerWith = (_head, socket) => socket.write("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
    const { text, closed } = await exchange(`${upgrade("/refused")}GET /smuggled HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    assert.match(text, /^HTTP\/1\.1 403 /);
    assert.ok(closed);
    assert.deepEqual(
      heads.map((h) => h.split("\r\n")[0]),
      ["GET /refused HTTP/1.1"],
    );
  });

  test("a real 101 makes a tunnel: both directions flow untouched", async () => {
    answerWith = (_head, socket) => {
      socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello");
      socket.removeAllListeners("data");
      socket.on("data", (d) => socket.write(d));
    };
    const text = await new Promise<string>((resolve) => {
      const socket = connect(socketPath, () => socket.write(upgrade("/ws")));
      let got = "";
      socket.setEncoding("latin1").on("data", (d: string) => {
        got += d;
        if (got.endsWith("hello")) socket.write("ping");
        if (got.endsWith("ping")) {
          socket.destroy();
          resolve(got);
        }
      });
    });
    assert.match(text, /^HTTP\/1\.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhelloping$/);
  });

  test("a Host with several values is a 400 and reaches no guest", async () => {
    heads.length = 0;
    for (const request of [`GET / HTTP/1.1\r\nHost: ${host}, other.sail.test\r\nAccept: application/json\r\n\r\n`, `${upgrade("/ws").replace(`Host: ${host}`, `Host: ${host},x`)}`]) {
      const { text } = await exchange(request);
      assert.match(text, /^HTTP\/1\.1 400 [^]*SAIL_HOST_AMBIGUOUS/);
    }
    assert.deepEqual(heads, []);
  });
});
