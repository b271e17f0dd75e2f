import type { Socket } from "node:net";
import { createServer, type Server, type TLSSocket } from "node:tls";
import type { HttpRoute } from "../boxes/sailboxes.js";
import type { GatewayError } from "./error-pages.js";
import { ProxyConnection, type ProxyContext } from "./proxy-connection.js";
import type { TlsMaterial } from "./tls.js";
import { UpstreamPool } from "./upstream-pool.js";

/** Where a hostname label goes (a table the primary keeps current in each worker). */
export interface RouteSource {
  resolveHttpRoute(label: string): HttpRoute | undefined;
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

/**
 * The HTTPS side of the gateway: TLS termination, Host routing to `<label>.<domain>`,
 * and a byte-level HTTP/1.1 proxy (see proxy-connection.ts) over pooled upstream sockets.
 * A naive node:http + http.request proxy measured 5k rps here; this one parses only heads.
 */
export class HttpGateway {
  private readonly server: Server;
  private readonly upstreams = new UpstreamPool();
  /** Live upgraded (WebSocket) connections by box, to drop them when the box goes. */
  private readonly tunnels = new Map<string, Set<Socket>>();
  private readonly clients = new Set<Socket>();
  private readonly suffix: string;
  private readonly context: ProxyContext;

  constructor(
    private readonly routes: RouteSource,
    private readonly options: HttpGatewayOptions,
    private readonly log: Logger,
  ) {
    this.suffix = `.${options.domain.toLowerCase()}`;
    this.context = {
      route: (host) => this.route(host),
      upstreams: this.upstreams,
      registerTunnel: (sailboxId, client, upstream) => this.registerTunnel(sailboxId, client, upstream),
      warn: (obj, msg) => log.warn(obj, msg),
    };
    this.server = createServer({ key: options.tls.key, cert: options.tls.cert, handshakeTimeout: 10_000 }, (socket: TLSSocket) => {
      this.clients.add(socket);
      socket.once("close", () => this.clients.delete(socket));
      new ProxyConnection(socket, this.context);
    });
    this.server.on("tlsClientError", () => {}); // garbage or aborted handshakes: the socket is already gone
  }

  async listen(): Promise<{ port: number }> {
    await new Promise<void>((resolve, reject) => this.server.once("error", reject).listen(this.options.port, this.options.host, resolve));
    const address = this.server.address();
    return { port: typeof address === "object" && address ? address.port : this.options.port };
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const client of this.clients) client.destroy();
    this.upstreams.closeAll();
    await closed;
  }

  /** Close every proxied connection of a box (terminate now; sleep later). */
  dropBox(sailboxId: string): void {
    this.upstreams.dropBox(sailboxId);
    for (const socket of this.tunnels.get(sailboxId) ?? []) socket.destroy();
    this.tunnels.delete(sailboxId);
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

  private registerTunnel(sailboxId: string, client: Socket, upstream: Socket): void {
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
