import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { request as httpsRequest } from "node:https";
import { connect as tlsConnect } from "node:tls";
import { describe, test } from "node:test";
import { fetch, type Agent } from "undici";
import WebSocket from "ws";
import { Image, InvalidArgumentError, IngressPort, NotFoundError, Sailbox, TimeoutError, type SailError } from "@sail/sdk";
import { BoxPool, gatewayAgent, loopbackLookup, runCli, startGuestServer, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon({
  setup: async (daemon) => {
    ca = await daemon.caCert();
    caFile = join(daemon.configDir, "ca.pem");
    writeFileSync(caFile, ca);
    agent = gatewayAgent(ca);
  },
  teardown: () => agent?.close(),
});
let ca = "";
let caFile = "";
let agent: Agent;

const get = (url: string, init: Parameters<typeof fetch>[1] = {}) => fetch(url, { ...init, dispatcher: agent });

/** A box publishing `port` with the test server running and the listener ready. */
async function boxWithServer(port = 3000, options: Parameters<BoxPool["create"]>[0] = {}) {
  const sb = await pool.create({ ingressPorts: [port], ...options });
  await startGuestServer(sb, port);
  const listener = await sb.listener(port).wait({ timeout: 60 });
  return { sb, url: listener.endpoint.url };
}

describe("HTTP and WebSocket ingress", () => {
  test("the seed's example: a bare port gets an https:// URL that curl (with Sail's CA) and fetch both read", async () => {
    const sb = await pool.create({ image: Image.debian, name: "web-demo", ingressPorts: [3000] });
    assert.equal(await sb.exec("mkdir -p /srv/app && echo hello > /srv/app/index.html").wait(), 0);
    await sb.exec("python3 -m http.server 3000", { background: true, cwd: "/srv/app" }).wait();
    const listener = sb.listener(3000);
    assert.equal(await listener.wait({ timeout: 60 }), listener);
    assert.equal(listener.protocol, "http");
    assert.match(listener.endpoint.url, /^https:\/\/3000-[a-z0-9]{12}\.sail\.localhost:\d+$/);

    const curl = execFileSync("curl", ["-sS", "--fail", "--cacert", caFile, `${listener.endpoint.url}/index.html`], { encoding: "utf8" });
    assert.equal(curl, "hello\n");
    const res = await get(`${listener.endpoint.url}/index.html`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "hello\n");

    const listed = await sb.listeners();
    assert.deepEqual(
      listed.map((l) => [l.port, l.protocol, l.endpoint.url]),
      [[3000, "http", listener.endpoint.url]],
    );
  });

  test("the URL is stable across a daemon restart and still serves", async () => {
    const { sb, url } = await boxWithServer();
    await daemon.restart();
    const again = await (await Sailbox.fromId(sb.id, { client: daemon.client() })).listener(3000).wait({ timeout: 60 });
    assert.equal(again.endpoint.url, url);
    assert.equal((await get(`${url}/headers`)).status, 200);
  });

  test("a returning client resumes its TLS session (a fraction of a full handshake's cost)", async () => {
    const { url } = await boxWithServer();
    const { hostname, port } = new URL(url);
    const handshake = (session?: Buffer) =>
      new Promise<{ reused: boolean; session: Buffer }>((resolve, reject) => {
        const socket = tlsConnect({ host: "127.0.0.1", port: Number(port), servername: hostname, ca, session });
        // TLS 1.3 sends its ticket after the handshake, with the first answer
        socket.once("session", (ticket: Buffer) => {
          resolve({ reused: socket.isSessionReused(), session: ticket });
          socket.destroy();
        });
        socket.once("secureConnect", () => socket.write(`GET / HTTP/1.1\r\nHost: ${hostname}\r\nConnection: close\r\n\r\n`));
        socket.on("error", reject);
      });
    const first = await handshake();
    assert.equal(first.reused, false);
    assert.equal((await handshake(first.session)).reused, true);
  });

  test("the gateway chooses AES-128-GCM over the client's AES-256 preference, and refuses TLS 1.2 without forward secrecy", async () => {
    const { url } = await boxWithServer();
    const { hostname, port } = new URL(url);
    const negotiate = (options: { ciphers?: string; maxVersion?: "TLSv1.2" }) =>
      new Promise<string>((resolve, reject) => {
        const socket = tlsConnect({ host: "127.0.0.1", port: Number(port), servername: hostname, ca, ...options });
        socket.once("secureConnect", () => {
          resolve(socket.getCipher().standardName);
          socket.destroy();
        });
        socket.on("error", reject);
      });
    // Node, like curl and Python (OpenSSL), lists TLS_AES_256_GCM_SHA384 first
    assert.equal(await negotiate({}), "TLS_AES_128_GCM_SHA256");
    assert.equal(await negotiate({ maxVersion: "TLSv1.2" }), "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
    await assert.rejects(negotiate({ maxVersion: "TLSv1.2", ciphers: "AES128-GCM-SHA256" }), /handshake failure|alert/i);
  });

  test("requests carry X-Forwarded-* set by the gateway; client-supplied ones are dropped", async () => {
    const { url } = await boxWithServer();
    const res = await get(`${url}/headers`, { headers: { "x-forwarded-for": "6.6.6.6", "x-forwarded-host": "evil.example", forwarded: "for=6.6.6.6", "x-custom": "kept" } });
    const headers = (await res.json()) as Record<string, string>;
    assert.equal(headers["x-forwarded-for"], "127.0.0.1");
    assert.equal(headers["x-forwarded-proto"], "https");
    assert.equal(headers["x-forwarded-host"], new URL(url).host);
    assert.equal(headers["forwarded"], undefined);
    assert.equal(headers["x-custom"], "kept");
  });

  test("the same URL with wss:// carries a WebSocket: text, binary, ping/pong and the close code", async () => {
    const { url } = await boxWithServer();
    const ws = new WebSocket(`${url.replace("https://", "wss://")}/ws`, { ca, lookup: loopbackLookup as never });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const next = () => new Promise<{ data: Buffer; binary: boolean }>((resolve) => ws.once("message", (data: Buffer, binary: boolean) => resolve({ data, binary })));

    let reply = next();
    ws.send("hello over wss");
    assert.deepEqual(await reply, { data: Buffer.from("hello over wss"), binary: false });

    const blob = randomBytes(70_000); // past the 16-bit length form
    reply = next();
    ws.send(blob);
    const echoed = await reply;
    assert.equal(echoed.binary, true);
    assert.ok(echoed.data.equals(blob));

    const pong = new Promise<Buffer>((resolve) => ws.once("pong", resolve));
    ws.ping("are-you-there");
    assert.equal((await pong).toString(), "are-you-there");

    const closed = new Promise<number>((resolve) => ws.once("close", (code: number) => resolve(code)));
    ws.close(4001, "done");
    assert.equal(await closed, 4001);
  });

  test("Server-Sent Events arrive as they are sent, not when the response ends", async () => {
    const { sb, url } = await boxWithServer();
    const res = await get(`${url}/sse`);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let received = "";
    while (!received.includes("data: one\n\n")) received += decoder.decode((await reader.read()).value);
    assert.doesNotMatch(received, /two/); // the server is still waiting for /tmp/sse-go
    await sb.exec("touch /tmp/sse-go").wait();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      received += decoder.decode(value);
    }
    assert.equal(received, "data: one\n\ndata: two\n\n");
  });

  test("100 MB up and 100 MB down arrive intact (matching SHA-256)", async () => {
    const { sb, url } = await boxWithServer();
    const upload = createHash("sha256");
    const total = 100 * 1024 * 1024;
    let sent = 0;
    const body = Readable.from(
      (function* () {
        while (sent < total) {
          const chunk = randomBytes(Math.min(1 << 20, total - sent));
          sent += chunk.length;
          upload.update(chunk);
          yield chunk;
        }
      })(),
    );
    const up = await get(`${url}/upload`, { method: "POST", body, duplex: "half" } as never);
    const answer = (await up.json()) as { sha256: string; bytes: number };
    assert.deepEqual(answer, { sha256: upload.digest("hex"), bytes: total });

    await sb.exec("head -c 104857600 /dev/urandom > /srv/big.bin").wait();
    const expected = (await sb.exec("sha256sum /srv/big.bin").output()).stdout.split(" ")[0];
    const down = await get(`${url}/file?path=/srv/big.bin`);
    const download = createHash("sha256");
    let received = 0;
    for await (const chunk of down.body as unknown as AsyncIterable<Uint8Array>) {
      download.update(chunk);
      received += chunk.length;
    }
    assert.equal(received, total);
    assert.equal(download.digest("hex"), expected);
  });

  test("two boxes publishing the same guest port are each reached at their own URL", async () => {
    const [a, b] = await Promise.all([boxWithServer(), boxWithServer()]);
    await a.sb.exec("echo box-a > /srv/who").wait();
    await b.sb.exec("echo box-b > /srv/who").wait();
    assert.notEqual(a.url, b.url);
    assert.equal(await (await get(`${a.url}/file?path=/srv/who`)).text(), "box-a\n");
    assert.equal(await (await get(`${b.url}/file?path=/srv/who`)).text(), "box-b\n");

    // the gateway keeps guest connections open for reuse; none may carry one box's request to the
    // other: one client connection switching Host every request...
    const hosts = [a, b].map(({ url }) => new URL(url).hostname);
    const port = Number(new URL(a.url).port);
    const socket = tlsConnect({ host: "127.0.0.1", port, servername: hosts[0], ca });
    await new Promise((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
    let buffered = "";
    socket.on("data", (d) => (buffered += d));
    for (let i = 0; i < 20; i++) {
      socket.write(`GET /file?path=/srv/who HTTP/1.1\r\nHost: ${hosts[i % 2]}\r\n\r\n`);
      while (!/\r\n\r\nbox-[ab]\n$/.test(buffered)) await new Promise((resolve) => socket.once("data", resolve));
      assert.equal(buffered.slice(-6), i % 2 ? "box-b\n" : "box-a\n", `request ${i} on one connection`);
      buffered = "";
    }
    socket.destroy();
    // ...and many clients with one request per connection, interleaved, 16 at a time
    const once = (i: number) =>
      new Promise<string>((resolve, reject) => {
        const req = httpsRequest({ host: "127.0.0.1", port, servername: hosts[i % 2], ca, agent: false, path: "/file?path=/srv/who", headers: { host: hosts[i % 2], connection: "close" } }, (res) => {
          let body = "";
          res.on("data", (d) => (body += d)).on("end", () => resolve(body));
        });
        req.on("error", reject).end();
      });
    for (let batch = 0; batch < 10; batch++) {
      const answers = await Promise.all(Array.from({ length: 16 }, (_, j) => once(batch * 16 + j)));
      answers.forEach((body, j) => assert.equal(body, j % 2 ? "box-b\n" : "box-a\n", `request ${batch * 16 + j}`));
    }
  });
});

describe("answers when the gateway cannot forward", () => {
  test("nothing listening: 502 naming the box and port, as JSON or HTML", async () => {
    const sb = await pool.create({ ingressPorts: [3000] });
    const url = (await sb.listeners())[0]!.endpoint.url;
    const json = await get(url, { headers: { accept: "application/json" } });
    assert.equal(json.status, 502);
    const body = (await json.json()) as { error: { code: string; message: string; sailboxId: string; port: number } };
    assert.equal(body.error.code, "SAIL_NOTHING_LISTENING");
    assert.equal(body.error.sailboxId, sb.id);
    assert.equal(body.error.port, 3000);
    assert.match(body.error.message, new RegExp(`port 3000 in sailbox ${sb.id}`));
    const html = await get(url, { headers: { accept: "text/html" } });
    assert.equal(html.status, 502);
    assert.match(html.headers.get("content-type")!, /text\/html/);
    assert.match(await html.text(), new RegExp(`No process listens on port 3000 in sailbox ${sb.id}`));
  });

  test("an unknown host and a terminated box's URL get 404; terminate removes the route", async () => {
    const { sb, url } = await boxWithServer();
    assert.equal((await get(`${url}/headers`)).status, 200);
    await sb.terminate();
    const gone = await get(`${url}/headers`, { headers: { accept: "application/json" } });
    assert.equal(gone.status, 404);
    assert.equal(((await gone.json()) as { error: { code: string } }).error.code, "SAIL_ROUTE_UNKNOWN");
    const unknown = await get(url.replace(/\/\/\d+-[a-z0-9]+\./, "//3000-zzzzzzzzzzzz."));
    assert.equal(unknown.status, 404);
    assert.match(await unknown.text(), /No sailbox listener/);
  });

  test("a request smuggling attempt (Content-Length with Transfer-Encoding) never gets its hidden request to the guest", async () => {
    const { sb, url } = await boxWithServer();
    const host = new URL(url).hostname;
    const raw = `POST /upload HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = tlsConnect({ host: "127.0.0.1", port: Number(new URL(url).port), servername: host, ca }, () => socket.end(raw));
      let text = "";
      socket.on("data", (d) => (text += d));
      socket.on("close", () => resolve(text));
      socket.on("error", reject);
    });
    // RFC 9112 §6.3: Transfer-Encoding wins, Content-Length is dropped, and the connection closes
    // after the answer, so the bytes after the chunked body are never read as a request
    assert.equal(answer.match(/^HTTP\/1\.1 /gm)?.length, 1, answer);
    assert.match(answer, /^HTTP\/1\.1 200 [^]*"bytes": 0\}$/);
    const log = (await sb.exec("cat /tmp/requests.log 2>/dev/null || true").output()).stdout;
    assert.doesNotMatch(log, /smuggled/);
  });
});

describe("listeners and port rules", () => {
  test("wait() times out with a TimeoutError naming the box and port, and says when the process listens only on ::1", async () => {
    const sb = await pool.create({ ingressPorts: [3000, 4000] });
    await assert.rejects(
      sb.listener(4000).wait({ timeout: 0.5 }),
      (e: SailError) => e instanceof TimeoutError && e.code === "SAIL_LISTENER_TIMEOUT" && e.message.includes(`port 4000 in sailbox ${sb.id}`),
    );
    // IPv6 loopback only: the one bind the gateway cannot reach (127.0.0.1 it can: egress.test.ts)
    await startGuestServer(sb, 3000, "::1");
    await sb.exec("for i in $(seq 100); do curl -s 'http://[::1]:3000/headers' >/dev/null && exit 0; sleep 0.1; done").wait();
    await assert.rejects(sb.listener(3000).wait({ timeout: 0.5 }), (e: SailError) => e instanceof TimeoutError && /listens on ::1 only/.test(e.message) && e.message.includes("0.0.0.0 or 127.0.0.1"));
    await assert.rejects(sb.listener(5000).wait({ timeout: 1 }), (e: SailError) => e instanceof NotFoundError && e.code === "SAIL_LISTENER_NOT_FOUND" && /3000, 4000/.test(e.message));
  });

  test("each port rule refuses with its code and names the port, and nothing is created", async () => {
    const app = await pool.app("port-rules");
    const before = (await Sailbox.list({ app })).length;
    const raw = (ingressPorts: unknown) => daemon.client().request("POST", "/v1/sailboxes", { appId: app.id, image: { name: "debian" }, ingressPorts });
    const cases: Array<[unknown, string, RegExp]> = [
      [[0], "SAIL_PORT_INVALID", /port 0 is not valid/],
      [[65536], "SAIL_PORT_INVALID", /65536/],
      [[80.5], "SAIL_PORT_INVALID", /80.5/],
      [[3000, 3000], "SAIL_PORT_DUPLICATE", /3000 is listed twice/],
      [[10000], "SAIL_PORT_RESERVED", /10000 is reserved/],
      [[22], "SAIL_PORT_SSH_ON_HTTP", /22 .*cannot be HTTP/],
      [[{ port: 8080, protocol: "http", cidrAllowlist: ["10.0.0.0/8"] }], "SAIL_CIDR_ON_HTTP", /cidrAllowlist is a TCP-only control.*8080/],
      [[{ port: 8080, protocol: "udp" }], "SAIL_PROTOCOL_INVALID", /"udp"/],
    ];
    for (const [ports, code, message] of cases) {
      await assert.rejects(raw(ports), (e: SailError) => e instanceof InvalidArgumentError && e.code === code && message.test(e.message), `${JSON.stringify(ports)} → ${code}`);
    }
    // the SDK refuses the same before sending anything
    await assert.rejects(Sailbox.create({ app, ingressPorts: [new IngressPort(22)] }), (e: SailError) => e.code === "SAIL_PORT_SSH_ON_HTTP");
    await assert.rejects(Sailbox.create({ app, ingressPorts: [new IngressPort(3000, "http", { cidrAllowlist: ["1.2.3.4/32"] })] }), (e: SailError) => e.code === "SAIL_CIDR_ON_HTTP");
    assert.equal((await Sailbox.list({ app })).length, before);
  });

  test("the CLI prints the URL at create and in `sail box listeners`, and `sail ca` prints the CA", async () => {
    const create = await runCli(daemon, ["box", "create", "--app", "cli-http", "--port", "3000", "--port", "8080"]);
    assert.equal(create.code, 0, create.stderr);
    const id = /sb-[a-z0-9]{12}/.exec(create.stdout)![0];
    try {
      const urls = [...create.stdout.matchAll(/https:\/\/\d+-[a-z0-9]+\.sail\.localhost:\d+/g)].map((m) => m[0]);
      assert.equal(urls.length, 2);
      const listeners = await runCli(daemon, ["box", "listeners", id, "--json"]);
      assert.deepEqual(
        (JSON.parse(listeners.stdout) as Array<{ endpoint: string }>).map((l) => l.endpoint),
        urls,
      );
      const caOut = await runCli(daemon, ["ca"]);
      assert.equal(caOut.stdout, ca);
      assert.match(ca, /^-----BEGIN CERTIFICATE-----/);
    } finally {
      await runCli(daemon, ["box", "terminate", id]);
    }
  });
});
