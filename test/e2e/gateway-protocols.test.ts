/**
 * What the gateway speaks: HTTP/2 to clients, cleartext HTTP/2 (h2c) to a guest that asks for
 * it (a real gRPC server in a box, called with grpc-js), the PROXY protocol v2 to TCP guests
 * that want the client's address, and 10,000 TCP connections held at once on a bounded
 * number of threads.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Image, IngressPort } from "@sail/sdk";
import { HTTPS_PORT, startGuestServer, startPython, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon({
  setup: async (daemon) => {
    ca = await daemon.caCert();
    writeFileSync(caFile, ca);
  },
});
let ca = "";
const caFile = join(tmpdir(), `sail-protocols-ca-${process.pid}.pem`);

/** The TCP worker processes of the test daemon (children running tcp-worker.js). */
function tcpWorkerPids(): number[] {
  return execFileSync("pgrep", ["-P", String(daemon.pid), "-f", "tcp-worker"], { encoding: "utf8" })
    .trim()
    .split("\n")
    .map(Number)
    .filter(Boolean);
}

const threadsOf = (pid: number) => readdirSync(`/proc/${pid}/task`).length;

describe("protocols through the gateway", () => {
  test("clients get HTTP/2 by ALPN on the same URL (curl --http2)", async () => {
    const sb = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(sb, 3000);
    const url = (await sb.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const out = execFileSync("curl", ["-sS", "--http2", "--cacert", caFile, "-o", "/dev/null", "-w", "%{http_version} %{http_code}", `${url}/headers`], { encoding: "utf8" });
    assert.equal(out, "2 200");
    const body = JSON.parse(execFileSync("curl", ["-sS", "--http2", "--cacert", caFile, `${url}/headers`], { encoding: "utf8" })) as Record<string, string>;
    assert.equal(body["x-forwarded-proto"], "https", "the guest gets HTTP/1.1 with the gateway's X-Forwarded-*");
  });

  test("a gRPC server in a box answers through its HTTPS URL when its listener asks for h2c, also the call that wakes it", async () => {
    const sb = await pool.create({ image: Image.debian.aptInstall("python3-grpcio"), ingressPorts: [new IngressPort(50051, "http", { h2c: true })] });
    const server = [
      "import grpc",
      "from concurrent import futures",
      "def echo(request, context): return b'echo:' + request",
      "handler = grpc.method_handlers_generic_handler('sail.Echo', {'Echo': grpc.unary_unary_rpc_method_handler(echo)})",
      "server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))",
      "server.add_generic_rpc_handlers((handler,))",
      "server.add_insecure_port('0.0.0.0:50051')",
      "server.start()",
      "server.wait_for_termination()",
    ].join("\n");
    await startPython(sb, "grpc-echo", server); // not grpc.py: its own directory comes first on sys.path
    const listener = await sb.listener(50051).wait({ timeout: 60 });
    const host = new URL(listener.endpoint.url).hostname;
    // grpc-js resolves names itself: dial the gateway's address, and name the box for TLS (SNI) and :authority
    const client = new grpc.Client(`127.0.0.1:${HTTPS_PORT}`, grpc.credentials.createSsl(Buffer.from(ca)), {
      "grpc.ssl_target_name_override": host,
      "grpc.default_authority": `${host}:${HTTPS_PORT}`,
    });
    const echo = (text: string) =>
      new Promise<Buffer>((resolve, reject) =>
        client.makeUnaryRequest(
          "/sail.Echo/Echo",
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.from(text),
          (err, value) => (err ? reject(err) : resolve(value!)),
        ),
      );
    try {
      assert.equal((await echo("hello grpc")).toString(), "echo:hello grpc");
      // asleep, the call goes through the slow path, which wakes the box and must speak h2c to it too
      await sb.sleep();
      assert.equal((await echo("wake up")).toString(), "echo:wake up");
      assert.equal(await sb.status(), "running");
    } finally {
      client.close();
    }
  });

  test("a TCP listener with proxyProtocol tells the guest the client's real address (PROXY v2)", async () => {
    const sb = await pool.create({ ingressPorts: [new IngressPort(7070, "tcp", { proxyProtocol: true })] });
    // a guest that reads the PROXY v2 header as nginx would; listener.wait()'s probe sends the LOCAL form
    const guest = [
      "import socket, ipaddress",
      "def read(c, n):",
      "    data = b''",
      "    while len(data) < n:",
      "        chunk = c.recv(n - len(data))",
      "        if not chunk: return None",
      "        data += chunk",
      "    return data",
      "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 7070)); s.listen(8)",
      "while True:",
      "    c, _ = s.accept()",
      "    head = read(c, 16)",
      "    if head is None or head[:12] != b'\\r\\n\\r\\n\\x00\\r\\nQUIT\\n':",
      "        c.close(); continue",
      "    body = read(c, int.from_bytes(head[14:16], 'big')) or b''",
      "    if head[12] == 0x20:",
      "        c.close(); continue",
      "    src = str(ipaddress.ip_address(body[0:4])) + ':' + str(int.from_bytes(body[8:10], 'big'))",
      "    c.sendall(src.encode() + b'|' + c.recv(100)); c.close()",
    ].join("\n");
    await startPython(sb, "proxy", guest);
    const { port } = (await sb.listener(7070).wait({ timeout: 60 })).endpoint;
    const answer = await new Promise<{ text: string; localPort: number }>((resolve, reject) => {
      let localPort = 0;
      const s = connect({ host: "127.0.0.1", port, localAddress: "127.0.0.2" }, () => {
        localPort = s.localPort!;
        s.write("after the header");
      });
      let text = "";
      s.on("data", (d) => (text += d));
      s.on("close", () => resolve({ text, localPort }));
      s.on("error", reject);
    });
    assert.equal(answer.text, `127.0.0.2:${answer.localPort}|after the header`);
  });

  test("10,000 TCP connections held at once through the gateway, on a bounded number of threads", async () => {
    const sb = await pool.create({ ingressPorts: [new IngressPort(7070, "tcp")], memory: 2048 });
    // one process, no thread per connection: selectors holds them all
    const guest = [
      "import selectors, socket",
      "sel = selectors.DefaultSelector()",
      "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 7070)); s.listen(4096); s.setblocking(False)",
      "sel.register(s, selectors.EVENT_READ)",
      "while True:",
      "    for key, _ in sel.select():",
      "        if key.fileobj is s:",
      "            c, _ = s.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ)",
      "        else:",
      "            c = key.fileobj",
      "            try: d = c.recv(4096)",
      "            except OSError: d = b''",
      "            if d: c.send(d)",
      "            else: sel.unregister(c); c.close()",
    ].join("\n");
    await startPython(sb, "many", guest);
    const { port } = (await sb.listener(7070).wait({ timeout: 60 })).endpoint;
    const threadsBefore = tcpWorkerPids().reduce((n, pid) => n + threadsOf(pid), 0);

    const COUNT = 10_000;
    const sockets: Socket[] = [];
    try {
      // open them in waves, as clients arrive, then hold them all
      for (let wave = 0; wave < COUNT / 500; wave++) {
        const opened = Array.from({ length: 500 }, () => {
          const s = connect({ host: "127.0.0.1", port });
          s.on("error", () => {});
          sockets.push(s);
          return new Promise<void>((resolve, reject) => s.once("connect", () => resolve()).once("error", reject));
        });
        await Promise.all(opened);
      }
      // every one of them is piped to the guest: each gets its own bytes back
      const echoed = await Promise.all(
        sockets.map(
          (s, i) =>
            new Promise<boolean>((resolve) => {
              const token = `#${i}.`;
              let got = "";
              s.on("data", (d) => {
                got += d;
                if (got.length >= token.length) resolve(got === token);
              });
              s.write(token);
            }),
        ),
      );
      assert.equal(echoed.filter(Boolean).length, COUNT);
      const threadsHolding = tcpWorkerPids().reduce((n, pid) => n + threadsOf(pid), 0);
      // two blocking threads per connection would be 20,000
      assert.ok(threadsHolding - threadsBefore <= 8, `threads of the TCP workers: ${threadsBefore} before, ${threadsHolding} holding ${COUNT} connections`);
    } finally {
      for (const s of sockets) s.destroy();
    }
  });
});
