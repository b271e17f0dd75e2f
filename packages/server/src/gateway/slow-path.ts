import { chmodSync, rmSync } from "node:fs";
import { setTimeout as delay } from "node:timers/promises";
import { connect as http2Connect, constants as h2 } from "node:http2";
import { createServer, request, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { decideAfterWake, decideIngress, nothingListening, WAKE_BUDGET_MS, type IngressDecision, type IngressRefusal } from "../node/ingress-policy.js";
import type { HttpRoute, RouteChange, RouteSubscriber } from "../node/routes.js";
import { ActivityMeter } from "./activity.js";
import { GatewayCounters } from "./counters.js";
import { dialWithRetries } from "./dial.js";
import { errorResponse, HOST_AMBIGUOUS, renderError, type GatewayError } from "./error-pages.js";
import { RefusalLog } from "./refusal-log.js";
import type { Logger } from "../logger.js";

/**
 * Hop-by-hop fields (RFC 9110 §7.6.1) are the connection's, not the message's: never forwarded.
 * Upgrade and Connection pass only on an upgrade, which takes the connection over.
 */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "http2-settings"]);

export interface SlowPathOptions {
  socketPath: string;
  domain: string;
  wakeOnIngress(sailboxId: string): Promise<string | undefined>;
  /** How long a request to a sleeping box is held while it wakes. */
  wakeBudgetMs?: number;
  /** The guest silent while it owes an answer. */
  responseMs: number;
}

/**
 * The gateway's decisions in TypeScript, for everything HAProxy does not forward itself: hosts
 * whose box is not running (sleeping: hold, wake, then forward; paused, unknown: Sail's pages)
 * and a running box whose guest refused HAProxy's connection (retry, then 502). Requests reach
 * it from HAProxy over a unix socket, parsed by Node's llhttp; HAProxy already dropped client
 * X-Forwarded-* and set its own, which pass through.
 */
export class SlowPath implements RouteSubscriber {
  private readonly server: Server;
  private readonly table = new Map<string, HttpRoute>();
  private readonly suffix: string;
  /** Open exchanges and tunnels per box, with how to close each (sleep drops them). */
  private readonly open = new Map<string, Set<Duplex>>();
  readonly activity = new ActivityMeter();
  readonly counters = new GatewayCounters();
  private readonly refusals: RefusalLog;

  constructor(
    private readonly options: SlowPathOptions,
    log: Logger,
  ) {
    this.suffix = `.${options.domain}`;
    this.refusals = new RefusalLog(log);
    this.server = createServer({ requestTimeout: 0, keepAliveTimeout: 60_000 }, (req, res) => void this.handle(req, res));
    this.server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => void this.upgrade(req, socket, head));
    this.server.on("clientError", (_err, socket) => socket.destroy());
  }

  async listen(): Promise<void> {
    rmSync(this.options.socketPath, { force: true });
    await new Promise<void>((resolve, reject) => this.server.once("error", reject).listen(this.options.socketPath, resolve));
    chmodSync(this.options.socketPath, 0o666); // HAProxy runs as its own user
  }

  async close(): Promise<void> {
    for (const sockets of this.open.values()) for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  apply(change: RouteChange): void {
    if (change.reset) this.table.clear();
    for (const label of change.http.remove) this.table.delete(`${label}${this.suffix}`);
    for (const [label, route] of change.http.set) this.table.set(`${label}${this.suffix}`, route);
  }

  dropConnections(sailboxId: string): void {
    for (const socket of this.open.get(sailboxId) ?? []) socket.destroy();
    this.open.delete(sailboxId);
  }

  async synced(): Promise<void> {}

  /** The route of the request's Host; `host` undefined when it names several (HAProxy refuses those first). */
  private route(req: IncomingMessage): { host: string | undefined; route: HttpRoute | undefined } {
    const hosts = req.rawHeaders.filter((_, i) => i % 2 === 0 && req.rawHeaders[i]!.toLowerCase() === "host").length;
    if (hosts > 1 || (req.headers.host ?? "").includes(",")) return { host: undefined, route: undefined };
    const host = (req.headers.host ?? "").replace(/:\d+$/, "").toLowerCase();
    return { host, route: this.table.get(host) };
  }

  /** The policy's answer, after a wake when it asks for one (held at most the wake budget). */
  private async decide(host: string, route: HttpRoute | undefined): Promise<IngressDecision> {
    const first = decideIngress(route, { host, domain: this.options.domain });
    if (first.action !== "wake" || !route) return first;
    const status = await Promise.race([this.options.wakeOnIngress(route.sailboxId).catch(() => undefined), delay(this.options.wakeBudgetMs ?? WAKE_BUDGET_MS, undefined, { ref: false })]);
    return decideAfterWake(route, status as HttpRoute["status"] | undefined);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { host, route } = this.route(req);
    if (host === undefined) return this.refuse(req, manyHosts(), (page) => res.writeHead(page.status, page.headers).end(page.body));
    // HAProxy counts the requests of running listeners (its stick table); one that wakes a box is only seen here
    const waking = route?.status === "sleeping" ? { sailboxId: route.sailboxId, port: route.port } : undefined;
    const decision = await this.decide(host, route);
    if (decision.action === "refuse") return this.refuse(req, decision, (page) => res.writeHead(page.status, page.headers).end(page.body));
    const target = this.table.get(host) ?? route!;
    const upstream = await dialWithRetries(target.guestAddress, target.port);
    if (!upstream) return this.refuse(req, nothingListening(target), (page) => res.writeHead(page.status, page.headers).end(page.body));
    if (res.destroyed) return void upstream.destroy();
    this.track(target.sailboxId, upstream);
    this.counters.add("requests", 1, waking);
    upstream.setTimeout(this.options.responseMs, () => upstream.destroy());
    res.on("close", () => upstream.destroy()); // answered, or HAProxy gave up: this connection is done either way
    const failed = () => {
      if (res.headersSent) return void res.destroy();
      const page = renderError(req.headers.accept, upstreamFailed(target));
      res.writeHead(page.status, page.headers).end(page.body);
    };
    if (target.h2c) return forwardH2c(req, res, upstream, host, failed);
    const forwarded = request({ method: req.method, path: req.url, headers: forwardable(req.headers), createConnection: () => upstream, setHost: false }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.statusMessage, forwardable(answer.headers));
      // trailers (gRPC-Web, chunked APIs) go after the body, so the body must not end the response by itself
      answer.pipe(res, { end: false });
      answer.on("end", () => {
        if (answer.trailers && Object.keys(answer.trailers).length) res.addTrailers(answer.trailers);
        res.end();
      });
    });
    forwarded.on("error", failed);
    req.pipe(forwarded);
  }

  /**
   * An upgrade (WebSocket). The guest's answer is parsed (llhttp) before any byte of it goes
   * back: only a 101 makes the connection a tunnel, which HAProxy then never reuses. Any other
   * answer is passed on as an HTTP response that closes the connection. A guest that answered
   * an upgrade with a complete 200 and had its bytes piped would leave HAProxy holding a
   * seemingly idle keep-alive connection to the guest, which its pool then hands to the next
   * slow-path request, whoever it is for (issue 26: the cross-tenant hijack).
   */
  private async upgrade(req: IncomingMessage, client: Socket, head: Buffer): Promise<void> {
    client.on("error", () => client.destroy());
    const { host, route } = this.route(req);
    if (host === undefined) return this.refuse(req, manyHosts(), () => client.end(errorResponse(req.headers.accept, manyHosts())));
    const decision = await this.decide(host, route);
    if (decision.action === "refuse") return this.refuse(req, decision, () => client.end(errorResponse(req.headers.accept, decision)));
    const target = this.table.get(host) ?? route!;
    const upstream = await dialWithRetries(target.guestAddress, target.port);
    if (!upstream) return this.refuse(req, nothingListening(target), () => client.end(errorResponse(req.headers.accept, nothingListening(target))));
    if (client.destroyed) return void upstream.destroy();
    this.counters.add("tunnels");
    this.track(target.sailboxId, client);
    this.track(target.sailboxId, upstream);
    client.on("close", () => upstream.destroy());
    upstream.setTimeout(this.options.responseMs, () => upstream.destroy());
    const forwarded = request({ method: req.method, path: req.url, headers: req.rawHeaders, createConnection: () => upstream, setHost: false });
    forwarded.on("upgrade", (answer: IncomingMessage, tunnel: Duplex, early: Buffer) => {
      upstream.setTimeout(0); // a quiet tunnel is HAProxy's to time out (timeout tunnel)
      client.write(`HTTP/1.1 101 ${answer.statusMessage || "Switching Protocols"}\r\n${rawHead(answer.rawHeaders)}\r\n`);
      if (early.length) client.write(early);
      if (head.length) tunnel.write(head);
      tunnel.on("error", () => client.destroy());
      tunnel.on("close", () => client.destroy());
      client.pipe(tunnel);
      tunnel.pipe(client);
    });
    forwarded.on("response", (answer: IncomingMessage) => {
      // not an upgrade: an HTTP answer, framed by the connection's end, and the connection is not reused
      const headers = forwardable(answer.headers);
      if (!answer.headers["content-length"]) delete headers["content-length"];
      client.write(
        `HTTP/1.1 ${answer.statusCode} ${answer.statusMessage ?? ""}\r\n${rawHead(
          Object.entries(headers)
            .flatMap(([name, value]) => (Array.isArray(value) ? value.map((v) => [name, v]) : [[name, String(value)]]))
            .flat(),
        )}connection: close\r\n\r\n`,
      );
      answer.pipe(client);
      answer.on("error", () => client.destroy());
    });
    forwarded.on("error", () => {
      if (!client.destroyed) client.end(errorResponse(req.headers.accept, upstreamFailed(target)));
    });
    forwarded.end();
  }

  private refuse(req: IncomingMessage, refusal: IngressRefusal, answer: (page: ReturnType<typeof renderError>) => void): void {
    this.counters.refuse(refusal.reason, refusal.sailboxId && refusal.port ? { sailboxId: refusal.sailboxId, port: refusal.port } : undefined);
    const peer = String(req.headers["x-forwarded-for"] ?? "")
      .split(",")
      .pop()
      ?.trim();
    const fields = { sailboxId: refusal.sailboxId, port: refusal.port, peer, status: refusal.status, code: refusal.code };
    if (refusal.status >= 500) this.refusals.warn(refusal.reason, fields, "gateway could not forward");
    else this.refusals.info(refusal.reason, fields, "gateway refused a request");
    answer(renderError(req.headers.accept, refusal));
  }

  private track(sailboxId: string, socket: Duplex): void {
    let sockets = this.open.get(sailboxId);
    if (!sockets) this.open.set(sailboxId, (sockets = new Set()));
    sockets.add(socket);
    this.activity.open(sailboxId);
    socket.on("data", () => this.activity.bytes(sailboxId));
    socket.once("close", () => {
      sockets.delete(socket);
      this.activity.close(sailboxId);
    });
  }
}

/** `name: value` lines of a raw header list ([name, value, name, value…]), each ending in CRLF. */
function rawHead(raw: readonly string[]): string {
  let text = "";
  for (let i = 0; i + 1 < raw.length; i += 2) text += `${raw[i]}: ${raw[i + 1]}\r\n`;
  return text;
}

/** The guest closed or broke the exchange before a valid answer. */
function upstreamFailed(target: HttpRoute): GatewayError {
  return {
    status: 502,
    code: "SAIL_UPSTREAM_FAILED",
    message: `The process on port ${target.port} in sailbox ${target.sailboxId} closed the connection without a valid answer`,
    sailboxId: target.sailboxId,
    port: target.port,
  };
}

function manyHosts(): IngressRefusal {
  return { action: "refuse", reason: HOST_AMBIGUOUS.code, ...HOST_AMBIGUOUS };
}

/** Fields to pass on: all but hop-by-hop ones and those the Connection field names (RFC 9110 §7.6.1). */
function forwardable(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const named = new Set(
    String(headers.connection ?? "")
      .toLowerCase()
      .split(",")
      .map((t) => t.trim())
      .filter(Boolean),
  );
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !HOP_BY_HOP.has(name) && !named.has(name)));
}

/**
 * Forward one request to a guest that speaks cleartext HTTP/2 (an h2c listener: gRPC) over the
 * dialed connection. HAProxy speaks HTTP/1.1 to the slow path, with trailers in the chunked
 * body, so gRPC's status trailers travel both ways.
 */
function forwardH2c(req: IncomingMessage, res: ServerResponse, upstream: Socket, authority: string, failed: () => void): void {
  const session = http2Connect(`http://${authority}`, { createConnection: () => upstream });
  session.on("error", failed);
  res.on("close", () => session.destroy());
  const headers: Record<string, string | string[]> = {
    [h2.HTTP2_HEADER_METHOD]: req.method ?? "GET",
    [h2.HTTP2_HEADER_PATH]: req.url ?? "/",
    [h2.HTTP2_HEADER_AUTHORITY]: authority,
    [h2.HTTP2_HEADER_SCHEME]: "http",
  };
  for (const [name, value] of Object.entries(forwardable(req.headers))) if (name !== "host" && value !== undefined) headers[name] = value;
  if (/\btrailers\b/i.test(String(req.headers.te ?? ""))) headers.te = "trailers"; // the one TE value HTTP/2 allows (RFC 9113 §8.2.2)
  const stream = session.request(headers);
  stream.on("error", failed);
  stream.on("response", (answer) => {
    const status = Number(answer[h2.HTTP2_HEADER_STATUS]) || 502;
    res.writeHead(status, Object.fromEntries(Object.entries(answer).filter(([name]) => !name.startsWith(":"))));
  });
  let trailers: Record<string, string | string[] | undefined> | undefined;
  stream.on("trailers", (t) => (trailers = Object.fromEntries(Object.entries(t).filter(([name]) => !name.startsWith(":"))) as Record<string, string | string[]>));
  stream.pipe(res, { end: false });
  stream.on("end", () => {
    if (!res.headersSent) return failed();
    if (trailers && Object.keys(trailers).length) res.addTrailers(trailers as Record<string, string>);
    res.end();
    session.close();
  });
  req.pipe(stream);
}
