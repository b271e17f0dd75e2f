import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import { connect, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { Pool } from "undici";
import type { HttpRoute } from "../boxes/sailboxes.js";
import { rejectUpgrade, sendGatewayError, type GatewayError } from "./error-pages.js";
import { clientAddress, downstreamResponseHeaders, requestHead, upstreamRequestHeaders } from "./headers.js";
import type { TlsMaterial } from "./tls.js";

/** What the gateway asks `boxes`: where a hostname label goes, and when a box is gone. */
export interface RouteSource {
  resolveHttpRoute(label: string): HttpRoute | undefined;
  onTerminated(handler: (sailboxId: string) => void): void;
}

export interface HttpGatewayOptions {
  host: string;
  port: number;
  domain: string;
  tls: TlsMaterial;
}

interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** Before answering 502, retry the guest dial briefly: servers restart (E2B uses 100, 200, 300 ms). */
const DIAL_RETRY_DELAYS_MS = [100, 200, 300];
/** Upstream keep-alive sockets per listener: enough for wrk -c64 without queueing. */
const UPSTREAM_CONNECTIONS = 128;

/**
 * The HTTPS side of the gateway: TLS, Host routing to `<label>.<domain>`, streaming
 * proxy with pooled upstream sockets keyed by the box's lifecycle, WebSocket upgrades
 * as raw pipes, and answers that name the box and port when it cannot forward.
 */
export class HttpGateway {
  private readonly server: Server;
  /** Upstream pools by `generation:port`: a restarted box never gets a stale socket. */
  private readonly pools = new Map<string, { pool: Pool; sailboxId: string }>();
  /** Live upgraded (WebSocket) connections by box, to drop them when the box goes. */
  private readonly tunnels = new Map<string, Set<Duplex>>();
  private readonly suffix: string;

  constructor(
    private readonly routes: RouteSource,
    private readonly options: HttpGatewayOptions,
    private readonly log: Logger,
  ) {
    this.suffix = `.${options.domain.toLowerCase()}`;
    this.server = createServer(
      {
        key: options.tls.key,
        cert: options.tls.cert,
        // uploads may stream for long; slow headers may not (slowloris)
        requestTimeout: 0,
        headersTimeout: 20_000,
        keepAliveTimeout: 30_000,
      },
      (req, res) => void this.proxyRequest(req, res),
    );
    this.server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => this.proxyUpgrade(req, socket, head));
    this.server.on("clientError", (_err, socket: Duplex) => {
      // malformed requests (including conflicting Content-Length / Transfer-Encoding) get a 400
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
      else socket.destroy();
    });
    routes.onTerminated((sailboxId) => this.dropBox(sailboxId));
  }

  async listen(): Promise<{ port: number }> {
    await new Promise<void>((resolve, reject) => this.server.once("error", reject).listen(this.options.port, this.options.host, resolve));
    const address = this.server.address();
    return { port: typeof address === "object" && address ? address.port : this.options.port };
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    for (const { pool } of this.pools.values()) await pool.destroy();
    for (const sockets of this.tunnels.values()) for (const s of sockets) s.destroy();
  }

  /** Close every proxied connection of a box (terminate now; sleep later). */
  dropBox(sailboxId: string): void {
    for (const [key, entry] of this.pools) {
      if (entry.sailboxId !== sailboxId) continue;
      this.pools.delete(key);
      void entry.pool.destroy();
    }
    for (const socket of this.tunnels.get(sailboxId) ?? []) socket.destroy();
    this.tunnels.delete(sailboxId);
  }

  private route(req: IncomingMessage): HttpRoute | GatewayError {
    const host = (req.headers.host ?? "").toLowerCase().replace(/:\d+$/, "");
    const label = host.endsWith(this.suffix) ? host.slice(0, -this.suffix.length) : "";
    const route = label && !label.includes(".") ? this.routes.resolveHttpRoute(label) : undefined;
    if (route) return route;
    return {
      status: 404,
      code: "SAIL_ROUTE_UNKNOWN",
      message: `No sailbox listener at ${host || "(no Host header)"}: the sailbox was terminated, or the URL is wrong (URLs look like https://<port>-<id>${this.suffix})`,
    };
  }

  private pool(route: HttpRoute): Pool {
    const key = `${route.generation}:${route.port}`;
    let entry = this.pools.get(key);
    if (!entry) {
      entry = {
        sailboxId: route.sailboxId,
        pool: new Pool(`http://${route.guestAddress}:${route.port}`, {
          connections: UPSTREAM_CONNECTIONS,
          pipelining: 1,
          keepAliveTimeout: 10_000,
          headersTimeout: 0, // long polls and SSE may wait for their first byte
          bodyTimeout: 0,
          connect: { timeout: 5_000 },
        }),
      };
      this.pools.set(key, entry);
    }
    return entry.pool;
  }

  private async proxyRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const route = this.route(req);
    if ("status" in route) return sendGatewayError(req, res, route);
    const hasBody = req.headers["transfer-encoding"] !== undefined || Number(req.headers["content-length"] ?? 0) > 0;
    const headers = upstreamRequestHeaders(req);
    const retries = hasBody ? [] : DIAL_RETRY_DELAYS_MS; // a streamed body cannot be replayed
    for (let attempt = 0; ; attempt++) {
      try {
        const upstream = await this.pool(route).request({
          method: req.method as "GET",
          path: req.url ?? "/",
          headers,
          body: hasBody ? req : null,
        });
        res.writeHead(upstream.statusCode, downstreamResponseHeaders(upstream.headers));
        res.flushHeaders(); // SSE and long polls: the client sees headers at once
        res.on("close", () => {
          if (!res.writableFinished) upstream.body.destroy();
        });
        upstream.body.on("error", () => res.destroy());
        upstream.body.pipe(res);
        return;
      } catch (err) {
        const code = (err as { code?: string }).code;
        const dialFailed = code === "ECONNREFUSED" || code === "UND_ERR_CONNECT_TIMEOUT" || code === "EHOSTUNREACH";
        if (dialFailed && attempt < retries.length) {
          await new Promise((resolve) => setTimeout(resolve, retries[attempt]));
          continue;
        }
        if (res.headersSent) return void res.destroy();
        this.log.warn({ sailboxId: route.sailboxId, port: route.port, peer: clientAddress(req), err: code ?? String(err) }, "gateway could not forward");
        return sendGatewayError(req, res, this.upstreamError(route, dialFailed));
      }
    }
  }

  private upstreamError(route: HttpRoute, dialFailed: boolean): GatewayError {
    return {
      status: 502,
      code: dialFailed ? "SAIL_NOTHING_LISTENING" : "SAIL_UPSTREAM_FAILED",
      message: dialFailed
        ? `No process listens on port ${route.port} in sailbox ${route.sailboxId}: start a server on 0.0.0.0:${route.port} inside it`
        : `The process on port ${route.port} in sailbox ${route.sailboxId} closed the connection without a valid answer`,
      sailboxId: route.sailboxId,
      port: route.port,
    };
  }

  /** WebSocket (any Upgrade): dial the guest, replay the request head, then pipe bytes both ways untouched. */
  private proxyUpgrade(req: IncomingMessage, client: Duplex, head: Buffer): void {
    const route = this.route(req);
    if ("status" in route) return rejectUpgrade(req, client, route);
    const headers = upstreamRequestHeaders(req, { keepUpgrade: true });
    const dial = (attempt: number) => {
      const upstream: Socket = connect({ host: route.guestAddress, port: route.port });
      upstream.once("connect", () => {
        upstream.setNoDelay(true);
        upstream.write(requestHead(req.method ?? "GET", req.url ?? "/", headers));
        if (head.length) upstream.write(head);
        this.tunnel(route.sailboxId, client, upstream);
      });
      upstream.once("error", (err: NodeJS.ErrnoException) => {
        if (upstream.bytesWritten > 0) return; // already tunnelled: the pipe handles it
        if (err.code === "ECONNREFUSED" && attempt < DIAL_RETRY_DELAYS_MS.length) {
          setTimeout(() => dial(attempt + 1), DIAL_RETRY_DELAYS_MS[attempt]);
          return;
        }
        rejectUpgrade(req, client, this.upstreamError(route, err.code === "ECONNREFUSED"));
      });
    };
    client.on("error", () => client.destroy());
    dial(0);
  }

  private tunnel(sailboxId: string, client: Duplex, upstream: Socket): void {
    let sockets = this.tunnels.get(sailboxId);
    if (!sockets) this.tunnels.set(sailboxId, (sockets = new Set()));
    sockets.add(client);
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
    };
    client.on("close", closeBoth);
    upstream.on("close", closeBoth);
    upstream.on("error", closeBoth);
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
