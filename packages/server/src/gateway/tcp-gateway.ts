import { createServer, type Server, type Socket } from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import { cidrMatcher } from "@sail/protocol";
import { decideAfterWake, decideIngress, nothingListening, WAKE_BUDGET_MS, type IngressRefusal } from "../node/ingress-policy.js";
import type { RouteChange, RouteSubscriber, TcpRoute } from "../node/routes.js";
import { ActivityMeter } from "./activity.js";
import { GatewayCounters, meterPipe } from "./counters.js";
import { RefusalLog } from "./refusal-log.js";
import { dialWithRetries } from "./dial.js";
import { proxyV2Header, readProxyV2 } from "../wire/proxy-protocol.js";
import type { SplicePumps } from "./splice-pump.js";
import type { Logger } from "../logger.js";

/** An edge sends its PROXY v2 header at once, with the connection: a peer silent this long is not one. */
const EDGE_HEADER_MS = 5_000;

export interface TcpRouteSource {
  subscribe(subscriber: RouteSubscriber): void;
  wakeOnIngress(sailboxId: string): Promise<string | undefined>;
}

interface Bound {
  route: TcpRoute;
  server: Server;
  allowed: (peer: string | undefined) => boolean;
}

/**
 * Raw-TCP listeners: one public port per listener on `host`, bound while its box lives.
 * A peer outside the listener's cidrAllowlist is closed at accept, before the guest is
 * dialed; accepted connections are piped both ways with back-pressure and half-close —
 * by the kernel (splice) through `pumps`, or with Node streams when the native pump is
 * not available.
 */
export class TcpGateway implements RouteSubscriber {
  private readonly bound = new Map<number, Bound>();
  /** The TCP routes by public port, as the latest change left them. */
  private readonly wanted = new Map<number, TcpRoute>();
  /** Per box: how to close each of its open connections. */
  private readonly connections = new Map<string, Set<() => void>>();
  private syncing: Promise<void> = Promise.resolve();
  /** Open connections per box, and when bytes last moved (idle auto-sleep). */
  readonly activity = new ActivityMeter();
  /** Connections, bytes and refusals since metrics last read them. */
  readonly counters = new GatewayCounters();
  private readonly refusals: RefusalLog;
  /** Whether a connection comes from an edge (--edge-from): it starts with a PROXY v2 header naming the real client. */
  private readonly fromEdge: ((peer: string | undefined) => boolean) | undefined;

  constructor(
    private readonly source: TcpRouteSource,
    private readonly host: string,
    private readonly log: Logger,
    private readonly pumps?: SplicePumps,
    private readonly wakeBudgetMs = WAKE_BUDGET_MS,
    /** A port that could not be bound (the cluster's primary found it free a moment before). */
    private readonly onBindError?: (publicPort: number, err: NodeJS.ErrnoException) => void,
    edgeFrom: readonly string[] = [],
  ) {
    this.refusals = new RefusalLog(log);
    this.fromEdge = edgeFrom.length ? cidrMatcher(edgeFrom) : undefined;
  }

  async start(): Promise<void> {
    this.source.subscribe(this);
    await this.syncing;
  }

  apply(change: RouteChange): void {
    if (change.reset) this.wanted.clear();
    for (const port of change.tcp.remove) this.wanted.delete(port);
    for (const route of change.tcp.set) this.wanted.set(route.publicPort, route);
    void this.sync();
  }

  dropConnections(sailboxId: string): void {
    this.dropBox(sailboxId);
  }

  /** Resolves once the listeners bound are the routes' (the latest change included). */
  synced(): Promise<void> {
    return this.syncing;
  }

  /** Bind what the routes say, unbind what they no longer have. Serialised: one sync at a time. */
  private sync(): Promise<void> {
    this.syncing = this.syncing.then(() => this.reconcile()).catch((err) => this.log.error({ err: String(err) }, "TCP listener sync failed"));
    return this.syncing;
  }

  async close(): Promise<void> {
    for (const [port, b] of this.bound) {
      this.bound.delete(port);
      b.server.close();
    }
    for (const id of [...this.connections.keys()]) this.dropBox(id);
  }

  dropBox(sailboxId: string): void {
    for (const close of this.connections.get(sailboxId) ?? []) close();
    this.connections.delete(sailboxId);
  }

  private async reconcile(): Promise<void> {
    const wanted = new Map(this.wanted);
    for (const [port, b] of this.bound) {
      const next = wanted.get(port);
      if (next && next.sailboxId === b.route.sailboxId && next.port === b.route.port) {
        b.route = next;
        b.allowed = cidrMatcher(next.cidrAllowlist);
        continue;
      }
      this.bound.delete(port);
      b.server.close();
    }
    for (const [port, route] of wanted) {
      if (this.bound.has(port)) continue;
      const b: Bound = { route, allowed: cidrMatcher(route.cidrAllowlist), server: createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }) };
      b.server.on("connection", (client) => this.accept(b, client));
      await new Promise<void>((resolve) => {
        b.server.once("error", (err: NodeJS.ErrnoException) => {
          this.log.error({ sailboxId: route.sailboxId, port: route.port, publicPort: port, err: String(err) }, "could not bind TCP listener");
          this.onBindError?.(port, err);
          resolve();
        });
        b.server.listen(port, this.host, () => {
          this.bound.set(port, b);
          resolve();
        });
      });
    }
  }

  /**
   * The ingress policy decides, in its order: the allowlist before anything touches the box
   * (a refused source costs nothing and does not wake it), a paused box closes at once, a
   * sleeping one is woken; then the guest is dialed (retried briefly) and the bytes piped.
   * A connection from an edge is judged by the client its PROXY v2 header names.
   */
  private accept(b: Bound, client: Socket): void {
    const { route } = b;
    this.counters.add("connections", 1, route);
    client.on("error", () => client.destroy());
    const direct = { address: client.remoteAddress, port: client.remotePort };
    if (!this.fromEdge?.(client.remoteAddress)) return this.admit(b, client, direct);
    readProxyV2(client, EDGE_HEADER_MS).then(
      (peer) => this.admit(b, client, peer ?? direct),
      (err: unknown) => {
        this.refusals.warn(
          "edge-header",
          { sailboxId: route.sailboxId, port: route.port, peer: client.remoteAddress, err: String(err) },
          "TCP connection from an edge without a valid PROXY v2 header closed",
        );
        client.destroy();
      },
    );
  }

  private admit(b: Bound, client: Socket, peer: { address?: string; port?: number }): void {
    const { route } = b;
    const first = decideIngress(route, { sourceAllowed: b.allowed(peer.address) });
    if (first.action === "refuse") return this.refuse(client, first, route, peer.address);
    const ready = first.action === "wake" ? this.wake(route) : Promise.resolve(first);
    void ready
      .then(async (decision) => {
        if (decision.action === "refuse") return this.refuse(client, decision, route, peer.address);
        const upstream = await dialWithRetries(route.guestAddress, route.port, { allowHalfOpen: true });
        if (!upstream) return this.refuse(client, nothingListening(route), route, peer.address);
        if (client.destroyed) return void upstream.destroy();
        const header = route.proxyProtocol ? proxyV2Header(peer, { address: client.localAddress, port: client.localPort }) : undefined;
        this.pipe(route, client, upstream, header);
      })
      .catch((err) => {
        this.log.error({ sailboxId: route.sailboxId, port: route.port, err: String(err) }, "TCP connection failed");
        client.destroy();
      });
  }

  /** Held at most the wake budget; then what the policy says of the status it reached. */
  private async wake(route: TcpRoute) {
    const status = await Promise.race([this.source.wakeOnIngress(route.sailboxId).catch(() => undefined), delay(this.wakeBudgetMs, undefined, { ref: false })]);
    return decideAfterWake(route, status as TcpRoute["status"] | undefined);
  }

  /** TCP has no page to show: the connection closes (reset for an allowlist refusal), counted and logged. */
  private refuse(client: Socket, refusal: IngressRefusal, route: TcpRoute, peer: string | undefined): void {
    const reason = refusal.reason === "cidr" ? "cidr" : refusal.code === "SAIL_SAILBOX_PAUSED" ? "paused" : "unreachable";
    this.counters.refuse(reason, route);
    const fields = { sailboxId: route.sailboxId, port: route.port, peer, code: refusal.code };
    if (reason === "cidr") {
      this.refusals.warn(reason, fields, "TCP connection refused by cidrAllowlist");
      client.resetAndDestroy();
    } else {
      this.refusals.info(reason, fields, `TCP connection closed: ${refusal.message}`);
      client.destroy();
    }
  }

  /** Pipe both ways; `header` (PROXY v2) reaches the guest before the client's first byte. */
  private pipe(route: TcpRoute, client: Socket, upstream: Socket, header?: Buffer): void {
    const { sailboxId } = route;
    let closers = this.connections.get(sailboxId);
    if (!closers) this.connections.set(sailboxId, (closers = new Set()));
    this.activity.open(sailboxId);
    upstream.setNoDelay(true);
    if (this.pumps) {
      let pumped: ReturnType<SplicePumps["splice"]>;
      try {
        pumped = this.pumps.splice(client, upstream, { prefixForB: header });
      } catch (err) {
        // e.g. the client went away during the dial: its descriptor is gone
        this.log.info({ sailboxId, peer: client.remoteAddress, err: String(err) }, "TCP connection closed before it could be piped");
        client.destroy();
        upstream.destroy();
        this.activity.close(sailboxId);
        return;
      }
      const { id, finished } = pumped;
      const close = () => this.pumps!.drop(id);
      closers.add(close);
      void finished.then((result) => {
        closers.delete(close);
        this.activity.close(sailboxId);
        this.counters.add("bytesIn", result.aToB, route);
        this.counters.add("bytesOut", result.bToA, route);
      });
      return;
    }
    const close = () => client.destroy();
    closers.add(close);
    meterPipe(client, upstream, sailboxId, this.activity, this.counters, route);
    if (header) upstream.write(header);
    // pipe() ends the other side on 'end' (FIN) and keeps the reverse direction open
    client.pipe(upstream);
    upstream.pipe(client);
    // an error on one side closes the other at once; a clean close was already passed on as FIN
    client.on("close", (hadError) => {
      closers.delete(close);
      this.activity.close(sailboxId);
      if (hadError || !upstream.writableEnded) upstream.destroy();
    });
    upstream.on("close", (hadError) => {
      if (hadError || !client.writableEnded) client.destroy();
    });
    client.resume();
  }
}
