/**
 * The node agent's side of the node wire: its NodeApi over HTTP/JSON, NDJSON streams (image
 * builds, foreground execs), raw byte streams (exec logs) and a WebSocket (PTY), under
 * /node/v1, for the control plane only (the node credential as a bearer, the wire version in a
 * header). Every answer a node refuses with is the API's own error body.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type RawData } from "ws";
import { parsePtyQuery, ptyCloseCode, sailError, SailError, type NetworkInfo, type PtyServerMessage } from "@sail/protocol";
import type { NodeApi, NodeBoxSpec } from "./node-api.js";
import { checkWireRequest, readWireJson, sendWireError, sendWireJson, WIRE_PREFIX } from "./wire.js";
import type { Logger } from "../logger.js";

type Handler = (params: string[], req: IncomingMessage, res: ServerResponse, query: URLSearchParams) => Promise<void>;

/** Lines of a stream: one JSON value each. */
function writeLine(res: ServerResponse, value: unknown): boolean {
  return res.write(JSON.stringify(value) + "\n");
}

/** A signal that aborts when the caller (the control plane) hangs up before the answer. */
function goneSignal(req: IncomingMessage, res: ServerResponse): AbortSignal {
  const controller = new AbortController();
  res.once("close", () => {
    if (!res.writableFinished) controller.abort(new Error("the control plane went away"));
  });
  req.once("aborted", () => controller.abort(new Error("the control plane went away")));
  return controller.signal;
}

export function createNodeServer(node: NodeApi, credential: string, log: Logger): Server {
  const id = (value: string) => decodeURIComponent(value);
  const routes: Array<[string, RegExp, Handler]> = [
    ["GET", /^\/info$/, async (_p, _req, res) => sendWireJson(res, 200, await node.info())],
    ["GET", /^\/boxes$/, async (_p, _req, res) => sendWireJson(res, 200, { boxes: await node.boxes() })],
    ["GET", /^\/boxes\/([^/]+)$/, async ([box], _req, res) => sendWireJson(res, 200, await node.box(id(box!)))],
    ["POST", /^\/adopt$/, async (_p, req, res) => sendWireJson(res, 200, await node.adopt(((await readWireJson(req)) as { expected: Parameters<NodeApi["adopt"]>[0] }).expected ?? []))],
    ["POST", /^\/network-check$/, async (_p, req, res) => sendWireJson(res, 200, await node.checkNetwork((await readWireJson(req)) as unknown as NetworkInfo))],
    [
      "GET",
      /^\/metrics$/,
      async (_p, _req, res) => {
        const text = await node.metricsText();
        res.writeHead(200, { "content-type": "text/plain; charset=utf-8" }).end(text);
      },
    ],
    [
      "POST",
      /^\/images$/,
      async (_p, req, res) => {
        const body = (await readWireJson(req)) as { arch: NodeBoxSpec["image"]["arch"]; aptPackages: string[] };
        res.writeHead(200, { "content-type": "application/x-ndjson" });
        res.flushHeaders();
        await node.prepareImage({ arch: body.arch, aptPackages: body.aptPackages ?? [] }, { onProgress: (progress) => writeLine(res, { progress }), signal: goneSignal(req, res) });
        res.end(JSON.stringify({ done: true }) + "\n");
      },
    ],
    ["POST", /^\/boxes$/, async (_p, req, res) => sendWireJson(res, 201, await node.createBox((await readWireJson(req)) as unknown as NodeBoxSpec, { signal: goneSignal(req, res) }))],
    [
      "DELETE",
      /^\/boxes\/([^/]+)$/,
      async ([box], req, res, query) => {
        await node.destroyBox(id(box!), { afterCrash: query.get("afterCrash") === "true", signal: goneSignal(req, res) });
        sendWireJson(res, 200, {});
      },
    ],
    [
      "POST",
      /^\/boxes\/([^/]+)\/power$/,
      async ([box], req, res) => {
        const { action } = (await readWireJson(req)) as { action: "sleep" | "pause" | "resume" };
        sendWireJson(res, 200, await node.setPower(id(box!), action));
      },
    ],
    ["POST", /^\/boxes\/([^/]+)\/awake$/, async ([box], _req, res) => sendWireJson(res, 200, await node.awake(id(box!)))],
    [
      "PUT",
      /^\/boxes\/([^/]+)\/network$/,
      async ([box], req, res) => {
        await node.setNetwork(id(box!), (await readWireJson(req)) as unknown as NetworkInfo);
        sendWireJson(res, 200, {});
      },
    ],
    [
      "POST",
      /^\/boxes\/([^/]+)\/exec$/,
      async ([box], req, res) => {
        const request = (await readWireJson(req)) as { cmd: string; cwd?: string; env?: Record<string, string> };
        const running = await node.exec(id(box!), request);
        res.writeHead(200, { "content-type": "application/x-ndjson" });
        res.flushHeaders();
        res.once("close", () => res.writableFinished || running.kill());
        for await (const event of running.events) if (!writeLine(res, event)) await new Promise((resolve) => res.once("drain", resolve));
        res.end();
      },
    ],
    [
      "POST",
      /^\/boxes\/([^/]+)\/execs\/([^/]+)$/,
      async ([box, exec], req, res) => {
        await node.execBackground(id(box!), id(exec!), (await readWireJson(req)) as { cmd: string; cwd?: string; env?: Record<string, string> });
        sendWireJson(res, 201, {});
      },
    ],
    [
      "GET",
      /^\/boxes\/([^/]+)\/execs\/([^/]+)\/log$/,
      async ([box, exec], req, res, query) => {
        const chunks = node.execLog(id(box!), id(exec!), { follow: query.get("follow") === "true", signal: goneSignal(req, res) });
        const iterator = chunks[Symbol.asyncIterator]();
        const first = await iterator.next(); // a refusal (no such exec) answers with its status, before any byte
        res.writeHead(200, { "content-type": "application/octet-stream" });
        for (let step = first; !step.done; step = await iterator.next()) if (!res.write(step.value)) await new Promise((resolve) => res.once("drain", resolve));
        res.end();
      },
    ],
    [
      "POST",
      /^\/boxes\/([^/]+)\/sshd$/,
      async ([box], _req, res) => {
        await node.startSshd(id(box!));
        sendWireJson(res, 200, {});
      },
    ],
    [
      "POST",
      /^\/boxes\/([^/]+)\/listeners\/wait$/,
      async ([box], req, res) => {
        const { listener, timeoutMs } = (await readWireJson(req)) as { listener: Parameters<NodeApi["waitListener"]>[1]; timeoutMs: number };
        await node.waitListener(id(box!), listener, timeoutMs);
        sendWireJson(res, 200, {});
      },
    ],
    ["GET", /^\/boxes\/([^/]+)\/traffic$/, async ([box], _req, res) => sendWireJson(res, 200, await node.traffic(id(box!)))],
  ];

  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(`http://node${(req.url ?? "/").startsWith("/") ? req.url : "/"}`);
      checkWireRequest(req, credential);
      if (!url.pathname.startsWith(WIRE_PREFIX)) throw sailError("SAIL_ROUTE_NOT_FOUND", `No node wire route ${url.pathname}`);
      const path = url.pathname.slice(WIRE_PREFIX.length);
      for (const [method, pattern, handler] of routes) {
        const match = pattern.exec(path);
        if (match && req.method === method) return handler(match.slice(1), req, res, url.searchParams);
      }
      throw sailError("SAIL_ROUTE_NOT_FOUND", `No node wire route ${req.method} ${url.pathname}`);
    })().catch((err) => {
      if (!(err instanceof SailError)) log.error({ err: String((err as Error)?.stack ?? err), url: req.url }, "node wire request failed");
      sendWireError(res, err, `${req.method} ${req.url}`);
    });
  });

  // the PTY: a WebSocket whose binary frames are the terminal's bytes both ways; text frames
  // carry resize (in) and the exit or error (out, last), as the user-facing PTY socket does
  const wss = new WebSocketServer({ noServer: true, maxPayload: 1024 * 1024, perMessageDeflate: false });
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => socket.destroy());
    try {
      checkWireRequest(req, credential);
      const url = new URL(`http://node${req.url ?? "/"}`);
      const match = new RegExp(`^${WIRE_PREFIX}/boxes/([^/]+)/pty$`).exec(url.pathname);
      if (!match) throw sailError("SAIL_ROUTE_NOT_FOUND", `No node wire WebSocket ${url.pathname}`);
      const request = parsePtyQuery(url.searchParams);
      wss.handleUpgrade(req, socket, head, (ws) => {
        const early: Buffer[] = [];
        const keep = (data: RawData, isBinary: boolean) => isBinary && early.push(Buffer.from(data as Buffer));
        ws.on("message", keep);
        const finish = (message: PtyServerMessage, code: number) => {
          if (ws.readyState !== ws.OPEN) return;
          ws.send(JSON.stringify(message));
          ws.close(code);
        };
        node.pty(decodeURIComponent(match[1]!), request).then(
          (pty) => {
            ws.off("message", keep);
            for (const bytes of early) pty.write(bytes);
            ws.on("message", (data: RawData, isBinary: boolean) => {
              const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
              if (isBinary) return pty.write(bytes);
              const { cols, rows } = JSON.parse(bytes.toString("utf8")) as { cols: number; rows: number };
              pty.resize(cols, rows);
            });
            ws.once("close", () => pty.close());
            const output = (async () => {
              for await (const chunk of pty.output) {
                if (ws.readyState !== ws.OPEN) break;
                ws.send(chunk, { binary: true });
                while (ws.bufferedAmount > 1024 * 1024 && ws.readyState === ws.OPEN) await new Promise((resolve) => setTimeout(resolve, 10));
              }
            })().catch(() => {});
            void pty.exit.then(
              async (exitCode) => {
                // output still in the terminal goes out until it hangs up, or a moment (a background child may hold it open)
                await Promise.race([output, new Promise((resolve) => setTimeout(resolve, 250))]);
                finish({ type: "exit", exitCode }, 1000);
              },
              (err: unknown) => {
                const error = err instanceof SailError ? err : sailError("SAIL_INTERNAL", `The terminal failed: ${(err as Error).message}`);
                finish({ type: "error", error: error.toWire().error }, ptyCloseCode(error.status));
              },
            );
          },
          (err: unknown) => {
            const error = err instanceof SailError ? err : sailError("SAIL_INTERNAL", `The terminal failed: ${(err as Error).message}`);
            finish({ type: "error", error: error.toWire().error }, ptyCloseCode(error.status));
          },
        );
      });
    } catch (err) {
      const error = err instanceof SailError ? err : sailError("SAIL_INTERNAL", String(err));
      const body = JSON.stringify(error.toWire());
      socket.end(`HTTP/1.1 ${error.status} Refused\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    }
  });
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  return server;
}
