import { createServer as createTcpServer, type Server, type Socket } from "node:net";
import { createServer, type TLSSocket } from "node:tls";
import type { ActivityReport } from "../boxes/idle.js";
import type { HttpRoute } from "../boxes/routes.js";
import type { GatewayError } from "./error-pages.js";
import { ActivityMeter } from "./activity.js";
import { GatewayCounters, meterPipe, type CounterDelta } from "./counters.js";
import { HttpEngine } from "./http-engine.js";
import { ProxyConnection, type ProxyContext } from "./proxy-connection.js";
import { RefusalLog } from "./refusal-log.js";
import type { TlsMaterial } from "./tls.js";
import { UpstreamPool } from "./upstream-pool.js";

/** Where a hostname label goes (a table the primary keeps current in each worker), and how to wake a box. */
export interface RouteSource {
  resolveHttpRoute(label: string): HttpRoute | undefined;
  wake(sailboxId: string): Promise<string | undefined>;
}

/** RFC 6455 close frame, server to client (unmasked), code 1001 "going away". */
const WS_CLOSE_GOING_AWAY = Buffer.from([0x88, 0x02, 0x03, 0xe9]);

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

/**
 * The HTTPS side of the gateway: TLS termination, Host routing to `<label>.<domain>`,
 * and a byte-level HTTP/1.1 proxy (see proxy-connection.ts) over pooled upstream sockets.
 * A naive node:http + http.request proxy measured 5k rps here; this one parses only heads.
 * When the native engine is built (http-engine.ts), it terminates TLS and serves plain
 * requests to running boxes itself, and hands every other connection to the proxy here.
 */
export class HttpGateway {
  private readonly server: Server;
  private readonly upstreams = new UpstreamPool();
  /** Open exchanges and tunnels per box, and when bytes last moved (idle auto-sleep). */
  readonly activity = new ActivityMeter();
  /** Connections, requests, bytes and refusals since the last report (metrics). */
  readonly counters = new GatewayCounters();
  /** Live upgraded connections by box, each with how to close it when the box goes. */
  private readonly tunnels = new Map<string, Map<Socket, () => void>>();
  private readonly clients = new Set<Socket>();
  private readonly suffix: string;
  private readonly context: ProxyContext;
  private readonly engine: HttpEngine | undefined;

  constructor(
    private readonly routes: RouteSource,
    private readonly options: HttpGatewayOptions,
    private readonly log: Logger,
  ) {
    this.suffix = `.${options.domain.toLowerCase()}`;
    const refusals = new RefusalLog(log);
    this.context = {
      route: (host) => this.route(host),
      wake: (route) => routes.wake(route.sailboxId),
      upstreams: this.upstreams,
      activity: this.activity,
      registerTunnel: (sailboxId, client, upstream, websocket) => this.registerTunnel(sailboxId, client, upstream, websocket),
      counters: this.counters,
      // refusals by their code, rate-limited (a 404 scan must not fill the disk)
      warn: (obj, msg) => refusals.warn(String((obj as { code?: string }).code), obj, msg),
      info: (obj, msg) => refusals.info(String((obj as { code?: string }).code), obj, msg),
    };
    const { engine, why } = HttpEngine.load();
    this.engine = engine;
    if (engine) {
      engine.start(options.tls, options.domain, (socket, handedOver) => {
        this.clients.add(socket);
        socket.once("close", () => this.clients.delete(socket));
        new ProxyConnection(socket, this.context, handedOver);
      });
      this.server = createTcpServer({ pauseOnConnect: true }, (socket) => engine.adopt(socket));
      return;
    }
    log.warn({ why }, "native HTTPS engine not available: the gateway runs on Node's TLS (slower)");
    const server = createServer({ key: options.tls.key, cert: options.tls.cert, handshakeTimeout: 10_000 }, (socket: TLSSocket) => {
      this.clients.add(socket);
      socket.once("close", () => this.clients.delete(socket));
      new ProxyConnection(socket, this.context);
    });
    // garbage, aborted or timed-out handshakes: Node leaves closing the socket to this listener
    // (a client that connects and never says hello would otherwise be held forever)
    server.on("tlsClientError", (_err, socket) => socket.destroy());
    this.server = server;
  }

  /** The route table changed (the engine keeps its own copy of the running boxes' routes). */
  routesChanged(routes: Iterable<[string, HttpRoute]>): void {
    this.engine?.setRoutes(routes);
  }

  /** Activity now and counters since the last call, of the engine and the JavaScript proxy together. */
  takeReport(): { activity: ActivityReport; counters: CounterDelta } {
    const activity = this.activity.snapshot();
    const counters = this.counters.take();
    if (this.engine) {
      const totals = this.engine.take();
      counters.connections += totals.connections;
      counters.requests += totals.requests;
      counters.tunnels += totals.tunnels;
      counters.bytesIn += totals.bytesIn;
      counters.bytesOut += totals.bytesOut;
      for (const [id, entry] of Object.entries(totals.activity)) {
        const mine = activity[id];
        activity[id] = mine ? { open: mine.open + entry.open, lastActiveMs: Math.max(mine.lastActiveMs, entry.lastActiveMs) } : entry;
      }
    }
    return { activity, counters };
  }

  async listen(): Promise<{ port: number }> {
    await new Promise<void>((resolve, reject) => this.server.once("error", reject).listen(this.options.port, this.options.host, resolve));
    const address = this.server.address();
    return { port: typeof address === "object" && address ? address.port : this.options.port };
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.engine?.stop();
    for (const client of this.clients) client.destroy();
    this.upstreams.closeAll();
    await closed;
  }

  /** Close every proxied connection of a box (it sleeps, pauses or ends). */
  dropBox(sailboxId: string): void {
    this.engine?.dropBox(sailboxId);
    for (const close of this.tunnels.get(sailboxId)?.values() ?? []) close();
    this.tunnels.delete(sailboxId);
    this.upstreams.dropBox(sailboxId);
  }

  private route(hostHeader: string): HttpRoute | GatewayError {
    const host = hostHeader.toLowerCase().replace(/:\d+$/, "");
    const label = host.endsWith(this.suffix) ? host.slice(0, -this.suffix.length) : "";
    const route = label && !label.includes(".") ? this.routes.resolveHttpRoute(label) : undefined;
    if (route) return route;
    return {
      status: 404,
      code: "SAIL_ROUTE_UNKNOWN",
      message: `No sailbox listener at ${host || "(empty Host)"}: the sailbox was terminated, or the URL is wrong (URLs look like https://<port>-<id>${this.suffix})`,
    };
  }

  private registerTunnel(sailboxId: string, client: Socket, upstream: Socket, websocket: boolean): void {
    let tunnels = this.tunnels.get(sailboxId);
    if (!tunnels) this.tunnels.set(sailboxId, (tunnels = new Map()));
    this.activity.open(sailboxId);
    let counted = true;
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
      tunnels.delete(client);
      if (counted) this.activity.close(sailboxId);
      counted = false;
    };
    tunnels.set(client, () => {
      if (!websocket) return closeBoth();
      // a WebSocket hears why (1001 "going away", RFC 6455 §7.4.1) before the connection closes
      upstream.unpipe(client);
      upstream.off("close", closeBoth);
      upstream.destroy();
      client.end(WS_CLOSE_GOING_AWAY);
      setTimeout(() => client.destroy(), 1000).unref();
    });
    client.on("close", closeBoth);
    upstream.on("close", closeBoth);
    upstream.on("error", () => upstream.destroy());
    this.counters.add("tunnels");
    meterPipe(client, upstream, sailboxId, this.activity, this.counters);
    client.pipe(upstream);
    upstream.pipe(client);
  }

}
