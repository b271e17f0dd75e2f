/**
 * Sail's DNS resolver for boxes: one UDP socket and one TCP listener per box, on the box's
 * host-side address, port 53 (its resolv.conf names it). A box cannot reach the host's own
 * resolver (often on loopback or a private range), so this one forwards to it, and it is
 * where a domain allowlist is enforced: names the box's policy refuses get NXDOMAIN (or
 * REFUSED when nothing may leave), and the addresses an allowed name answers with become
 * reachable for the answer's TTL before the box sees the answer.
 *
 * Queries are guest bytes: parsed by dns-packet (a JavaScript parser, so a malformed packet
 * can only throw), only from the box's own address, with a bound on queries in flight.
 * Answers are relayed as the upstream sent them, with the box's query id put back.
 */
import { randomInt } from "node:crypto";
import dgram from "node:dgram";
import net from "node:net";
import dnsPacket from "dns-packet";
import type { ResolverDirectory } from "../boxes/outbound.js";
import type { Logger } from "../boxes/logger.js";

export interface Upstream {
  host: string;
  port: number;
}

export interface ResolverSettings {
  upstreams: readonly Upstream[];
  /** Per upstream try. */
  timeoutMs?: number;
  /** Queries one box may have in flight; more are dropped (a box flooding its resolver hurts only itself). */
  maxInFlight?: number;
}

/** How a query ended, for the metrics. */
export type QueryResult = "forwarded" | "refused" | "nxdomain" | "empty" | "servfail" | "malformed" | "dropped";

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;
const TCP_IDLE_MS = 10_000;
const TCP_CONNECTIONS_PER_BOX = 16;

interface BoxSockets {
  guest: string;
  udp: dgram.Socket;
  tcp: net.Server;
  inFlight: number;
  tcpOpen: number;
}

export class Resolver {
  private readonly boxes = new Map<string, BoxSockets>();
  private readonly timeoutMs: number;
  private readonly maxInFlight: number;

  constructor(
    private readonly directory: ResolverDirectory,
    private readonly settings: ResolverSettings,
    private readonly log: Logger,
    private readonly onQuery: (result: QueryResult) => void = () => {},
  ) {
    this.timeoutMs = settings.timeoutMs ?? 2000;
    this.maxInFlight = settings.maxInFlight ?? 64;
    directory.subscribe({ added: (id, host, guest) => void this.open(id, host, guest), removed: (id) => this.close(id) });
  }

  /** Listen for one box (idempotent). A failure to bind is logged: the box then resolves nothing. */
  async open(id: string, host: string, guest: string): Promise<void> {
    if (this.boxes.has(id)) return;
    const udp = dgram.createSocket({ type: "udp4" });
    const tcp = net.createServer({ pauseOnConnect: false });
    const box: BoxSockets = { guest, udp, tcp, inFlight: 0, tcpOpen: 0 };
    this.boxes.set(id, box);
    udp.on("message", (query, from) => {
      if (from.address !== guest) return; // only the box itself asks here
      void this.handle(id, box, query).then((answer) => answer && udp.send(answer, from.port, from.address));
    });
    tcp.on("connection", (socket) => this.serveTcp(id, box, socket));
    try {
      await Promise.all([
        new Promise<void>((resolve, reject) => udp.once("error", reject).bind(53, host, () => resolve())),
        new Promise<void>((resolve, reject) => tcp.once("error", reject).listen(53, host, () => resolve())),
      ]);
      udp.on("error", (err) => this.log.warn({ sailboxId: id, err: String(err) }, "resolver socket error"));
      tcp.on("error", (err) => this.log.warn({ sailboxId: id, err: String(err) }, "resolver listener error"));
    } catch (err) {
      this.close(id);
      this.log.error({ sailboxId: id, address: `${host}:53`, err: String(err) }, "could not start the sailbox's resolver: it cannot resolve names");
    }
  }

  close(id: string): void {
    const box = this.boxes.get(id);
    if (!box) return;
    this.boxes.delete(id);
    box.udp.close();
    box.tcp.close();
  }

  stop(): void {
    for (const id of [...this.boxes.keys()]) this.close(id);
  }

  /** DNS over TCP (RFC 7766): 2-byte length, then the message; several per connection, answered in order. */
  private serveTcp(id: string, box: BoxSockets, socket: net.Socket): void {
    if (socket.remoteAddress !== box.guest || box.tcpOpen >= TCP_CONNECTIONS_PER_BOX) {
      socket.destroy();
      return;
    }
    box.tcpOpen++;
    socket.on("close", () => box.tcpOpen--);
    socket.on("error", () => {});
    socket.setTimeout(TCP_IDLE_MS, () => socket.destroy());
    let buffered = Buffer.alloc(0);
    let queue = Promise.resolve();
    socket.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length > 2 * 65_537) return socket.destroy();
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        const query = buffered.subarray(2, 2 + buffered.readUInt16BE(0));
        buffered = buffered.subarray(2 + query.length);
        queue = queue.then(async () => {
          const answer = await this.handle(id, box, query, true);
          if (!answer)
            socket.destroy(); // junk (or past the in-flight bound): the stream cannot be trusted further
          else if (!socket.destroyed) socket.write(Buffer.concat([u16(answer.length), answer]));
        });
      }
    });
  }

  /** One query: the policy's decision, then an answer of our own or the upstream's. */
  private async handle(id: string, box: BoxSockets, query: Buffer, overTcp = false): Promise<Buffer | undefined> {
    if (box.inFlight >= this.maxInFlight) return this.count("dropped", undefined);
    let packet: dnsPacket.DecodedPacket;
    try {
      packet = dnsPacket.decode(query);
    } catch {
      return this.count("malformed", undefined);
    }
    const question = packet.questions?.[0];
    if (packet.type !== "query" || packet.questions?.length !== 1 || !question) return this.count("malformed", reply(packet, RCODE.FORMERR));
    const decision = this.directory.decide(id, question.name);
    if (decision === "refuse") return this.count("refused", reply(packet, RCODE.REFUSED));
    if (decision === "nxdomain") return this.count("nxdomain", reply(packet, RCODE.NXDOMAIN));
    // boxes reach the outside over IPv4 only: an IPv6 address would only make clients try and fail
    if (question.type === "AAAA") return this.count("empty", reply(packet, RCODE.NOERROR));
    box.inFlight++;
    try {
      const answer = await this.forward(query, question, overTcp);
      if (!answer) return this.count("servfail", reply(packet, RCODE.SERVFAIL));
      if (decision === "forward-and-allow") {
        const addresses = (answer.decoded.answers ?? []).filter((a) => a.type === "A").map((a) => (a as { data: string }).data);
        const ttl = Math.min(...(answer.decoded.answers ?? []).map((a) => (a as { ttl?: number }).ttl ?? 0), 3600);
        await this.directory.answered(id, question.name, addresses, ttl);
      }
      answer.raw.writeUInt16BE(packet.id ?? 0, 0);
      return this.count("forwarded", answer.raw);
    } catch (err) {
      this.log.warn({ sailboxId: id, name: question.name, err: String(err) }, "resolver could not answer");
      return this.count("servfail", reply(packet, RCODE.SERVFAIL));
    } finally {
      box.inFlight--;
    }
  }

  private count<T>(result: QueryResult, value: T): T {
    this.onQuery(result);
    return value;
  }

  /** Ask the upstreams in turn; the answer must carry our id and the same question. */
  private async forward(query: Buffer, question: dnsPacket.Question, overTcp: boolean): Promise<{ raw: Buffer; decoded: dnsPacket.DecodedPacket } | undefined> {
    for (const upstream of this.settings.upstreams) {
      const id = randomInt(65_536);
      const ours = Buffer.from(query);
      ours.writeUInt16BE(id, 0);
      const raw = overTcp ? await this.askTcp(upstream, ours) : await this.askUdp(upstream, ours);
      if (!raw) continue;
      try {
        const decoded = dnsPacket.decode(raw);
        const q = decoded.questions?.[0];
        if (decoded.id === id && decoded.type === "response" && q && q.name.toLowerCase() === question.name.toLowerCase() && q.type === question.type) return { raw, decoded };
      } catch {
        // a broken answer: try the next upstream
      }
    }
    return undefined;
  }

  /** A fresh socket (a random source port) per query. */
  private askUdp(upstream: Upstream, query: Buffer): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const socket = dgram.createSocket(net.isIPv6(upstream.host) ? "udp6" : "udp4");
      const done = (answer?: Buffer) => {
        clearTimeout(timer);
        socket.close();
        resolve(answer);
      };
      const timer = setTimeout(() => done(), this.timeoutMs);
      socket.on("error", () => done());
      socket.on("message", (answer, from) => {
        if (from.address === upstream.host && from.port === upstream.port) done(answer);
      });
      socket.send(query, upstream.port, upstream.host);
    });
  }

  private askTcp(upstream: Upstream, query: Buffer): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const socket = net.connect({ host: upstream.host, port: upstream.port });
      let buffered = Buffer.alloc(0);
      const done = (answer?: Buffer) => {
        socket.destroy();
        resolve(answer);
      };
      socket.setTimeout(this.timeoutMs, () => done());
      socket.on("error", () => done());
      socket.on("close", () => done());
      socket.on("connect", () => socket.write(Buffer.concat([u16(query.length), query])));
      socket.on("data", (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) done(buffered.subarray(2, 2 + buffered.readUInt16BE(0)));
      });
    });
  }
}

/** An answer of our own to `query`: its id, question and RD flag, with `rcode`. */
function reply(query: dnsPacket.DecodedPacket, rcode: number): Buffer {
  return dnsPacket.encode({
    type: "response",
    id: query.id ?? 0,
    flags: (query.flag_rd ? dnsPacket.RECURSION_DESIRED : 0) | dnsPacket.RECURSION_AVAILABLE | rcode,
    questions: (query.questions ?? []).slice(0, 1),
  });
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

/** Nameservers from a resolv.conf text, as upstreams (port 53). */
export function upstreamsFromResolvConf(text: string): Upstream[] {
  return text
    .split("\n")
    .map((line) => /^\s*nameserver\s+(\S+)/.exec(line)?.[1])
    .filter((host): host is string => !!host && net.isIP(host.replace(/%.*$/, "")) !== 0)
    .map((host) => ({ host: host.replace(/%.*$/, ""), port: 53 }));
}

/** "host[:port]" (IPv6 as "[addr]:port"), or undefined. */
export function parseUpstream(text: string): Upstream | undefined {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:]+)(?::(\d+))?$/.exec(text) ?? (net.isIPv6(text) ? [text, text, undefined] : null);
  if (!m || net.isIP(m[1]!) === 0) return undefined;
  const port = m[2] === undefined ? 53 : Number(m[2]);
  return port >= 1 && port <= 65535 ? { host: m[1]!, port } : undefined;
}
