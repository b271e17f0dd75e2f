import type { Socket } from "node:net";
import type { HttpRoute } from "../boxes/routes.js";
import { errorResponse, type GatewayError } from "./error-pages.js";
import {
  ChunkedScanner, fieldTokens, headEnd, HttpParseError, MAX_HEAD_BYTES, parseRequestHead, parseResponseHead,
  requestFraming, responseFraming, type Framing, type MessageHead,
} from "./http1.js";
import type { ActivityMeter } from "./activity.js";
import type { GatewayCounters } from "./counters.js";
import type { UpstreamPool } from "./upstream-pool.js";

/** What a connection needs from the gateway. */
export interface ProxyContext {
  route(host: string): HttpRoute | GatewayError;
  /** Wake a sleeping box (the daemon shares one resume among arrivals); resolves to its status, or undefined past the budget. */
  wake(route: HttpRoute): Promise<string | undefined>;
  upstreams: UpstreamPool;
  activity: ActivityMeter;
  registerTunnel(sailboxId: string, client: Socket, upstream: Socket, websocket: boolean): void;
  counters: GatewayCounters;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/** Hop-by-hop fields (RFC 9110 §7.6.1) and forwarding fields a client could spoof. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "proxy-authorization", "proxy-authenticate"]);
const SPOOFABLE = new Set(["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "forwarded", "x-real-ip"]);
/** A keep-alive connection with no request in flight closes after this long. */
const IDLE_MS = 30_000;
/** A request head must arrive whole within this long (slowloris). */
const HEAD_DEADLINE_MS = 20_000;
/** Bytes read ahead of the request being served before the client is paused. */
const MAX_BUFFERED_BYTES = 64 * 1024;

interface Exchange {
  request: MessageHead;
  route: HttpRoute;
  framing: Framing;
  remaining: number;
  scanner: ChunkedScanner | undefined;
  upstreamHead: Buffer;
  upstream: Socket | undefined;
  reused: boolean;
  bodyDone: boolean;
  upgrade: boolean;
  clientWantsClose: boolean;
  // response side
  responseBuffer: Buffer | undefined;
  responseHeadSent: boolean;
  responseFraming: Framing | undefined;
  responseRemaining: number;
  responseScanner: ChunkedScanner | undefined;
  closeClientAfter: boolean;
  /** The guest said it closes after this response: never pool the socket. */
  upstreamCloses: boolean;
  retried: boolean;
  /** Counted as an open connection of the box until it ends (for idle auto-sleep). */
  counted: boolean;
}

/** A connection the native engine (http-engine.ts) passed on, with what it had read and not used. */
export interface HandedOver {
  /** The client's address (the socket is one end of a socketpair, it has none). */
  peer: string;
  /** Decrypted bytes the engine read and did not consume: they come first. */
  bytes: Buffer;
  /** The engine already sent the request and it failed: answer this instead of forwarding it. */
  answer: GatewayError | null;
}

/**
 * One client connection (already TLS-decrypted) of the HTTPS gateway: requests are
 * read one at a time, their heads rewritten, bodies and responses streamed as bytes
 * through pooled upstream sockets; an accepted Upgrade becomes a raw tunnel.
 */
export class ProxyConnection {
  private buffered: Buffer = Buffer.alloc(0);
  private state: "head" | "body" | "await" | "tunnel" | "closed" = "head";
  private exchange: Exchange | undefined;
  private headTimer: NodeJS.Timeout | undefined;
  private readonly peer: string;

  constructor(
    private readonly client: Socket,
    private readonly ctx: ProxyContext,
    handedOver?: HandedOver,
  ) {
    this.peer = handedOver ? handedOver.peer : (client.remoteAddress ?? "").replace(/^::ffff:/, "");
    client.setNoDelay(true);
    if (!handedOver) ctx.counters.add("connections"); // the engine counted it
    client.on("data", this.onClientData);
    client.on("error", () => client.destroy());
    client.on("close", this.onClientClose);
    client.setTimeout(IDLE_MS, () => this.state === "head" && client.destroy());
    if (handedOver?.answer) this.answerFirst(handedOver.bytes, handedOver.answer);
    else if (handedOver?.bytes.length) {
      this.buffered = handedOver.bytes; // counted by the engine as it read them
      try {
        this.process();
      } catch (err) {
        this.fail(err);
      }
    }
  }

  /** Answer the request at the start of `bytes` with `err` (its Accept picks JSON or HTML). */
  private answerFirst(bytes: Buffer, err: GatewayError): void {
    const end = headEnd(bytes);
    let request: MessageHead | undefined;
    try {
      request = end > 0 ? parseRequestHead(bytes.toString("latin1", 0, end - 4)) : undefined;
    } catch {
      request = undefined;
    }
    this.answer(request, err);
  }

  private readonly onClientData = (chunk: Buffer): void => {
    this.ctx.counters.add("bytesIn", chunk.length);
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    // a client sending ahead (pipelining, or a body before the upstream is ready) waits past this
    if (this.state === "await" && this.buffered.length > MAX_BUFFERED_BYTES) this.client.pause();
    try {
      this.process();
    } catch (err) {
      this.fail(err);
    }
  };

  private endActivity(exchange: Exchange | undefined): void {
    if (!exchange?.counted) return;
    exchange.counted = false;
    this.ctx.activity.close(exchange.route.sailboxId);
  }

  private readonly onClientClose = (): void => {
    this.state = "closed";
    clearTimeout(this.headTimer);
    this.endActivity(this.exchange);
    const upstream = this.exchange?.upstream;
    if (upstream) upstream.destroy();
  };

  private process(): void {
    if (this.state === "head") this.readHead();
    else if (this.state === "body") this.forwardBody();
  }

  private readHead(): void {
    if (this.buffered.length === 0) return;
    const end = headEnd(this.buffered);
    if (end < 0) {
      if (this.buffered.length > MAX_HEAD_BYTES) throw new HttpParseError(431, "request head too large");
      this.headTimer ??= setTimeout(() => this.answer(undefined, { status: 408, code: "SAIL_HEAD_TIMEOUT", message: "The request head did not arrive in time" }), HEAD_DEADLINE_MS);
      return;
    }
    if (end > MAX_HEAD_BYTES) throw new HttpParseError(431, "request head too large");
    clearTimeout(this.headTimer);
    this.headTimer = undefined;
    const request = parseRequestHead(this.buffered.toString("latin1", 0, end - 4));
    this.buffered = this.buffered.subarray(end);
    const hosts = request.fields.filter(([n]) => n === "host");
    if (hosts.length !== 1) throw new HttpParseError(400, "a request needs exactly one Host header");
    const framing = requestFraming(request);
    const route = this.ctx.route(hosts[0]![1]);
    if ("code" in route) return this.answer(request, route);
    if (route.status === "paused") return this.answer(request, pausedError(route));

    const connection = fieldTokens(request, "connection");
    const upgrade = connection.includes("upgrade") && fieldTokens(request, "upgrade").length > 0;
    this.exchange = {
      request, route, framing,
      remaining: framing.kind === "length" ? framing.length : 0,
      scanner: framing.kind === "chunked" ? new ChunkedScanner() : undefined,
      upstreamHead: Buffer.from(upstreamHead(request, this.peer, upgrade), "latin1"),
      upstream: undefined, reused: false, bodyDone: framing.kind === "none", upgrade,
      clientWantsClose: connection.includes("close") || (request.version === "1.0" && !connection.includes("keep-alive")),
      responseBuffer: undefined, responseHeadSent: false, responseFraming: undefined, responseRemaining: 0,
      responseScanner: undefined, closeClientAfter: false, upstreamCloses: false, retried: false, counted: true,
    };
    this.ctx.activity.open(route.sailboxId);
    this.state = "await";
    if (route.status === "sleeping") void this.wakeThenDispatch(this.exchange);
    else void this.dispatch(this.exchange);
  }

  /** Hold the request while the box wakes (bounded), then forward it as if it had never slept. */
  private async wakeThenDispatch(exchange: Exchange): Promise<void> {
    const status = await this.ctx.wake(exchange.route);
    if (this.state === "closed" || this.exchange !== exchange) return;
    if (status === "running") return this.dispatch(exchange);
    if (status === "paused") return this.answer(exchange.request, pausedError(exchange.route));
    if (status === undefined) {
      return this.answer(exchange.request, {
        status: 503, code: "SAIL_WAKE_TIMEOUT", sailboxId: exchange.route.sailboxId, port: exchange.route.port, retryAfterSeconds: 5,
        message: `Sailbox ${exchange.route.sailboxId} is waking up and did not finish in time: retry shortly`,
      });
    }
    return this.answer(exchange.request, { status: 404, code: "SAIL_ROUTE_UNKNOWN", message: `Sailbox ${exchange.route.sailboxId} is ${status}` });
  }

  /** Get an upstream socket (pooled, or dialled with brief retries), send the head, then the body. */
  private async dispatch(exchange: Exchange): Promise<void> {
    const got = await this.ctx.upstreams.acquire(exchange.route);
    if (this.state === "closed" || this.exchange !== exchange) {
      got.socket?.destroy();
      return;
    }
    if (!got.socket) return this.answer(exchange.request, nothingListening(exchange.route, got.error));
    const upstream = got.socket;
    this.ctx.counters.add("requests");
    exchange.upstream = upstream;
    exchange.reused = got.reused;
    upstream.on("data", this.onUpstreamData);
    upstream.on("close", this.onUpstreamClose);
    upstream.on("error", () => upstream.destroy());
    upstream.write(exchange.upstreamHead);
    this.state = exchange.bodyDone ? "await" : "body";
    if (!exchange.bodyDone) {
      this.forwardBody();
      if (this.state === "body" && this.client.isPaused()) this.client.resume();
    }
  }

  private forwardBody(): void {
    const exchange = this.exchange!;
    const upstream = exchange.upstream!;
    if (this.buffered.length === 0) return;
    let take: number;
    if (exchange.framing.kind === "length") {
      take = Math.min(exchange.remaining, this.buffered.length);
      exchange.remaining -= take;
      if (exchange.remaining === 0) exchange.bodyDone = true;
    } else {
      const end = exchange.scanner!.feed(this.buffered);
      take = end < 0 ? this.buffered.length : end;
      if (end >= 0) exchange.bodyDone = true;
    }
    const slice = this.buffered.subarray(0, take);
    this.buffered = this.buffered.subarray(take);
    const flowing = upstream.write(slice);
    if (exchange.bodyDone) {
      this.state = "await";
    } else if (!flowing) {
      this.client.pause();
      upstream.once("drain", () => this.state === "body" && this.client.resume());
    }
  }

  private readonly onUpstreamData = (chunk: Buffer): void => {
    this.ctx.counters.add("bytesOut", chunk.length);
    try {
      this.readResponse(chunk);
    } catch (err) {
      this.fail(err);
    }
  };

  private readResponse(chunk: Buffer): void {
    const exchange = this.exchange!;
    let data = chunk;
    while (!exchange.responseHeadSent) {
      const buffer = exchange.responseBuffer ? Buffer.concat([exchange.responseBuffer, data]) : data;
      const end = headEnd(buffer);
      if (end < 0) {
        if (buffer.length > MAX_HEAD_BYTES) throw new HttpParseError(502, "response head from the guest too large");
        exchange.responseBuffer = buffer;
        return;
      }
      exchange.responseBuffer = undefined;
      const head = parseResponseHead(buffer.toString("latin1", 0, end - 4));
      data = buffer.subarray(end);
      if (head.status === 101 && exchange.upgrade) return this.startTunnel(buffer.subarray(0, end), data);
      if (head.status >= 100 && head.status < 200) {
        this.client.write(buffer.subarray(0, end)); // interim (100 Continue, 103 Early Hints): pass on, read on
        continue;
      }
      const framing = responseFraming(head, exchange.request.method);
      exchange.responseFraming = framing;
      exchange.responseRemaining = framing.kind === "length" ? framing.length : 0;
      exchange.responseScanner = framing.kind === "chunked" ? new ChunkedScanner() : undefined;
      const connection = fieldTokens(head, "connection");
      const upstreamCloses = connection.includes("close") || (head.version === "1.0" && !connection.includes("keep-alive"));
      exchange.closeClientAfter = exchange.clientWantsClose || framing.kind === "close" || !exchange.bodyDone;
      exchange.upstreamCloses = upstreamCloses;
      exchange.responseHeadSent = true;
      const rewritten = Buffer.from(clientHead(buffer.toString("latin1", 0, end - 4), exchange.closeClientAfter), "latin1");
      if (framing.kind === "none") {
        this.client.write(rewritten);
        return this.finishExchange(data);
      }
      // head and the body bytes that came with it in one write: one TLS record, one syscall
      return this.forwardResponse(data, rewritten);
    }
    this.forwardResponse(data);
  }

  private forwardResponse(data: Buffer, head?: Buffer): void {
    if (data.length === 0) {
      if (head) this.client.write(head);
      return;
    }
    const exchange = this.exchange!;
    const framing = exchange.responseFraming!;
    let take = data.length;
    let done = false;
    if (framing.kind === "length") {
      take = Math.min(exchange.responseRemaining, data.length);
      exchange.responseRemaining -= take;
      done = exchange.responseRemaining === 0;
    } else if (framing.kind === "chunked") {
      const end = exchange.responseScanner!.feed(data);
      if (end >= 0) {
        take = end;
        done = true;
      }
    }
    const body = take === data.length ? data : data.subarray(0, take);
    const flowing = this.client.write(head ? Buffer.concat([head, body]) : body);
    if (done) return this.finishExchange(data.subarray(take));
    if (!flowing) {
      const upstream = exchange.upstream!;
      upstream.pause();
      this.client.once("drain", () => upstream.resume());
    }
  }

  /** The response is complete: pool or close the upstream, then read the next request or close. */
  private finishExchange(extra: Buffer): void {
    const exchange = this.exchange!;
    const upstream = exchange.upstream!;
    upstream.off("data", this.onUpstreamData);
    upstream.off("close", this.onUpstreamClose);
    upstream.removeAllListeners("error");
    if (exchange.bodyDone && !exchange.upstreamCloses && extra.length === 0 && !upstream.destroyed) this.ctx.upstreams.release(exchange.route, upstream);
    else upstream.destroy();
    this.endActivity(exchange);
    this.exchange = undefined;
    if (exchange.closeClientAfter) {
      this.state = "closed";
      this.client.end();
      return;
    }
    this.state = "head";
    if (this.client.isPaused()) this.client.resume();
    try {
      this.process(); // a pipelined request may be waiting
    } catch (err) {
      this.fail(err);
    }
  }

  private readonly onUpstreamClose = (): void => {
    const exchange = this.exchange;
    if (!exchange || this.state === "closed") return;
    if (exchange.responseHeadSent) {
      if (exchange.responseFraming?.kind === "close") return this.finishExchange(Buffer.alloc(0));
      this.client.destroy(); // cut mid-body: the client must not take a truncated body as whole
      return;
    }
    // a pooled socket the guest had already closed: try once more on a fresh one (no body was sent)
    if (exchange.reused && !exchange.retried && exchange.framing.kind === "none" && !exchange.responseBuffer) {
      exchange.retried = true;
      exchange.upstream = undefined;
      void this.dispatch(exchange);
      return;
    }
    this.answer(exchange.request, {
      status: 502,
      code: "SAIL_UPSTREAM_FAILED",
      message: `The process on port ${exchange.route.port} in sailbox ${exchange.route.sailboxId} closed the connection without a valid answer`,
      sailboxId: exchange.route.sailboxId,
      port: exchange.route.port,
    });
  };

  private startTunnel(head: Buffer, rest: Buffer): void {
    const exchange = this.exchange!;
    const upstream = exchange.upstream!;
    upstream.off("data", this.onUpstreamData);
    upstream.off("close", this.onUpstreamClose);
    this.client.off("data", this.onClientData);
    this.state = "tunnel";
    this.endActivity(exchange); // the tunnel counts itself from here
    this.client.write(head);
    if (rest.length) this.client.write(rest);
    if (this.buffered.length) upstream.write(this.buffered);
    this.buffered = Buffer.alloc(0);
    this.ctx.registerTunnel(exchange.route.sailboxId, this.client, upstream, fieldTokens(exchange.request, "upgrade").includes("websocket"));
    this.client.resume();
  }

  /** Answer the request ourselves and close the connection. */
  private answer(request: MessageHead | undefined, err: GatewayError): void {
    if (this.state === "closed") return;
    this.state = "closed";
    clearTimeout(this.headTimer);
    this.endActivity(this.exchange);
    this.exchange?.upstream?.destroy();
    // every refusal is counted and logged with the box, the port and the peer
    this.ctx.counters.refuse(err.code);
    const fields = { sailboxId: err.sailboxId, port: err.port, peer: this.peer, status: err.status, code: err.code };
    if (err.status >= 500) this.ctx.warn(fields, "gateway could not forward");
    else this.ctx.info(fields, "gateway refused a request");
    const accept = request?.fields.find(([n]) => n === "accept")?.[1];
    this.client.end(errorResponse(accept, err));
  }

  private fail(err: unknown): void {
    if (err instanceof HttpParseError && !this.exchange?.responseHeadSent) {
      const route = this.exchange?.route;
      return this.answer(this.exchange?.request, {
        status: err.status,
        code: err.status === 502 ? "SAIL_UPSTREAM_FAILED" : err.status === 431 ? "SAIL_HEAD_TOO_LARGE" : "SAIL_BAD_REQUEST",
        message: err.status === 502 && route ? `The process on port ${route.port} in sailbox ${route.sailboxId} sent an invalid response: ${err.message}` : err.message,
        sailboxId: route?.sailboxId,
        port: route?.port,
      });
    }
    this.exchange?.upstream?.destroy();
    this.client.destroy();
  }
}

function pausedError(route: HttpRoute): GatewayError {
  return {
    status: 503,
    code: "SAIL_SAILBOX_PAUSED",
    message: `Sailbox ${route.sailboxId} is paused and does not wake on traffic: resume it with sb.resume() or \`sail box resume ${route.sailboxId}\``,
    sailboxId: route.sailboxId,
    port: route.port,
  };
}

function nothingListening(route: HttpRoute, cause: string | undefined): GatewayError {
  return {
    status: 502,
    code: "SAIL_NOTHING_LISTENING",
    message: `No process listens on port ${route.port} in sailbox ${route.sailboxId}: start a server on 0.0.0.0:${route.port} inside it${cause ? ` (${cause})` : ""}`,
    sailboxId: route.sailboxId,
    port: route.port,
  };
}

/** The request head for the guest: end-to-end fields as received, X-Forwarded-* from what the gateway saw. */
function upstreamHead(request: MessageHead, peer: string, upgrade: boolean): string {
  const listed = new Set(fieldTokens(request, "connection"));
  let head = `${request.method} ${request.target} HTTP/1.1\r\n`;
  let host = "";
  for (const [name, value] of request.fields) {
    if (SPOOFABLE.has(name) || ((HOP_BY_HOP.has(name) || listed.has(name)) && !(upgrade && name === "upgrade"))) continue;
    if (name === "host") host = value;
    head += `${name}: ${value}\r\n`;
  }
  if (upgrade) head += "connection: upgrade\r\n";
  return `${head}x-forwarded-for: ${peer}\r\nx-forwarded-proto: https\r\nx-forwarded-host: ${host}\r\n\r\n`;
}

/** The response head for the client: hop-by-hop fields dropped, framing kept, `connection: close` when we will close. */
function clientHead(head: string, close: boolean): string {
  const lines = head.split("\r\n");
  const statusLine = lines[0]!.replace(/^HTTP\/1\.0/, "HTTP/1.1");
  const listed = new Set<string>();
  for (const line of lines) {
    if (/^connection:/i.test(line)) for (const t of line.slice(11).split(",")) listed.add(t.trim().toLowerCase());
  }
  let out = statusLine + "\r\n";
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const name = line.slice(0, line.indexOf(":")).toLowerCase();
    if (HOP_BY_HOP.has(name) || listed.has(name)) continue;
    out += line + "\r\n";
  }
  if (close) out += "connection: close\r\n";
  return out + "\r\n";
}
