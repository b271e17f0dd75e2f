/**
 * Sail's DNS resolver for boxes: one UDP socket and one TCP listener per box, on the box's
 * host-side address, port 53 (its resolv.conf names it). A box cannot reach the host's own
 * resolver (often on loopback or a private range), so this one forwards to it, and it is
 * where a domain allowlist is enforced: names the box's policy refuses get NXDOMAIN (or
 * REFUSED when nothing may leave), and the addresses an allowed name answers with become
 * reachable for the answer's TTL before the box sees the answer.
 *
 * Queries are guest bytes: parsed by dns-packet (a JavaScript parser, so a malformed packet
 * can only throw), only from the box's own address. Answers are relayed as the upstream sent
 * them, with the box's query id put back. Only standard queries go upstream (opcode QUERY);
 * UPDATE, NOTIFY and the rest are answered NOTIMP here.
 *
 * A box flooding its resolver hurts only itself: per box, a token bucket on answers (UDP and
 * TCP, our own refusals included), a bound on queries in flight upstream and on TCP
 * connections; per TCP connection, reading stops while answers wait for the guest to read
 * them or queries wait their turn (issue 26: four connections that never read used to queue
 * answers without end). The daemon runs this class on a thread of its own (resolver-thread.ts).
 */
import { randomInt } from "node:crypto";
import dgram from "node:dgram";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import dnsPacket from "dns-packet";
import type { NameDecision } from "../node/outbound.js";
import type { Logger } from "../node/logger.js";
import { TokenBucket } from "../node/token-bucket.js";

export interface Upstream {
  host: string;
  port: number;
}

/** What the resolver asks per query: the box's policy for a name, and where an allowed name's addresses go. */
export interface ResolverPolicy {
  decide(id: string, name: string): NameDecision;
  /** Resolves once the box may reach `addresses`; the answer waits for it. */
  answered(id: string, name: string, addresses: string[], ttl: number): Promise<void>;
}

export interface ResolverSettings {
  upstreams: readonly Upstream[];
  /** Per upstream try. */
  timeoutMs?: number;
  /** Queries one box may have upstream at once; more are dropped. */
  maxInFlight?: number;
  /** Answers a second one box gets, over UDP and TCP together; past it UDP queries are dropped and TCP connections wait. */
  answersPerSecond?: number;
  /** Answers a box may get at once after a quiet spell (the bucket's size). */
  answerBurst?: number;
}

/** How a query ended, for the metrics. */
export type QueryResult = "forwarded" | "refused" | "nxdomain" | "empty" | "servfail" | "malformed" | "notimp" | "dropped" | "limited";

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
/** The header's OPCODE bits: "set by the originator of a query and copied into the response" (RFC 1035 4.1.1). */
const OPCODE_MASK = 0x7800;
const TCP_IDLE_MS = 10_000;
const TCP_CONNECTIONS_PER_BOX = 16;
/**
 * Query bytes read from one TCP connection and not answered yet. Past this, or while the
 * socket's write buffer is over its high-water mark (16 KiB: the guest does not read its
 * answers), the connection is not read: TCP's flow control then fills the guest's own send
 * buffer and blocks its writes, and the resolver holds nothing more. With the chunk read
 * before the pause, a connection holds at most ~100 KiB.
 */
const TCP_PENDING_BYTES = 16 * 1024;
/** UDP answers waiting for the socket (libuv queues them when the kernel's buffer is full): past this, dropped. */
const UDP_SEND_QUEUE = 64;
/**
 * 200 answers a second per box, 400 at once: glibc asks A and AAAA per lookup, so a box may
 * look up 100 names a second without ever being paced, while a box that asks for more costs
 * the resolver's thread about 1 ms a second (an answer of ours takes ~5 µs to build here,
 * plus its socket calls) and the upstream at most 200 questions a second.
 */
const ANSWERS_PER_SECOND = 200;
const ANSWER_BURST = 400;
const WARN_EVERY_MS = 10_000;

interface BoxSockets {
  guest: string;
  udp: dgram.Socket;
  tcp: net.Server;
  inFlight: number;
  tcpOpen: number;
  answers: TokenBucket;
  warnedAtMs: number;
  unwarned: number;
}

export class Resolver {
  private readonly boxes = new Map<string, BoxSockets>();
  private readonly timeoutMs: number;
  private readonly maxInFlight: number;

  constructor(
    private readonly policy: ResolverPolicy,
    private readonly settings: ResolverSettings,
    private readonly log: Logger,
    private readonly onQuery: (result: QueryResult) => void = () => {},
  ) {
    this.timeoutMs = settings.timeoutMs ?? 2000;
    this.maxInFlight = settings.maxInFlight ?? 64;
  }

  /** Listen for one box (idempotent). A failure to bind is logged: the box then resolves nothing. */
  async open(id: string, host: string, guest: string): Promise<void> {
    if (this.boxes.has(id)) return;
    const udp = dgram.createSocket({ type: "udp4" });
    // half-open: a guest may send its queries, then FIN, and still read every answer
    const tcp = net.createServer({ allowHalfOpen: true });
    const answers = new TokenBucket(this.settings.answersPerSecond ?? ANSWERS_PER_SECOND, this.settings.answerBurst ?? ANSWER_BURST);
    const box: BoxSockets = { guest, udp, tcp, inFlight: 0, tcpOpen: 0, answers, warnedAtMs: 0, unwarned: 0 };
    this.boxes.set(id, box);
    udp.on("message", (query, from) => this.serveUdp(id, box, query, from));
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

  /** One datagram, one answer; past the box's rate, none (the guest's resolver asks again after its timeout). */
  private serveUdp(id: string, box: BoxSockets, query: Buffer, from: dgram.RemoteInfo): void {
    if (from.address !== box.guest) return; // only the box itself asks here
    if (box.answers.take() > 0) return void this.count("limited", undefined);
    void this.handle(id, box, query).then((answer) => {
      if (!answer) return;
      if (box.udp.getSendQueueCount() >= UDP_SEND_QUEUE) return void this.count("dropped", undefined);
      box.udp.send(answer, from.port, from.address, () => {});
    });
  }

  /**
   * DNS over TCP (RFC 7766): 2-byte length, then the message; several per connection,
   * answered in order, one at a time, each after a token of the box's bucket. Reading stops
   * while the connection is full (see TCP_PENDING_BYTES) and resumes on drain.
   */
  private serveTcp(id: string, box: BoxSockets, socket: net.Socket): void {
    if (socket.remoteAddress !== box.guest || box.tcpOpen >= TCP_CONNECTIONS_PER_BOX) {
      socket.destroy();
      return;
    }
    box.tcpOpen++;
    socket.on("close", () => box.tcpOpen--);
    socket.on("error", () => {});
    // no progress for this long (a guest that neither asks nor reads its answers) closes it
    socket.setTimeout(TCP_IDLE_MS, () => socket.destroy());
    // bytes read and not answered yet: whole queries, then perhaps the start of one
    let buffered: Buffer = Buffer.alloc(0);
    const nextLength = () => (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0) ? buffered.readUInt16BE(0) : undefined);
    // a query longer than the bound is still read whole (a message is at most 65,535 bytes)
    const full = () => socket.writableNeedDrain || (buffered.length >= TCP_PENDING_BYTES && nextLength() !== undefined);
    const readIfRoom = () => (full() ? socket.pause() : socket.resume());
    let answering = false;
    const answerQueries = async () => {
      if (answering) return;
      answering = true;
      while (!socket.destroyed && !socket.writableNeedDrain && nextLength() !== undefined) {
        const waitMs = box.answers.take();
        if (waitMs > 0) {
          await sleep(waitMs);
          continue;
        }
        const length = nextLength()!;
        const query = buffered.subarray(2, 2 + length);
        buffered = buffered.subarray(2 + length);
        const answer = await this.handle(id, box, query, true);
        // junk (or past the in-flight bound): the stream cannot be trusted further
        if (!answer) socket.destroy();
        else if (!socket.destroyed) socket.write(Buffer.concat([u16(answer.length), answer]));
      }
      answering = false;
      if (socket.destroyed) return;
      if (ended && nextLength() === undefined) socket.end();
      else readIfRoom();
    };
    let ended = false;
    socket.on("end", () => {
      ended = true;
      void answerQueries();
    });
    socket.on("drain", () => void answerQueries());
    socket.on("data", (chunk: Buffer) => {
      buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
      readIfRoom();
      void answerQueries();
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
    if (packet.type !== "query") return this.count("malformed", reply(packet, RCODE.FORMERR));
    // UPDATE, NOTIFY and the rest are not ours to relay to the host's resolver: "Not Implemented" (RFC 1035 4.1.1)
    if ((packet as { opcode?: string }).opcode !== "QUERY") return this.count("notimp", reply(packet, RCODE.NOTIMP));
    const question = packet.questions?.[0];
    if (packet.questions?.length !== 1 || !question) return this.count("malformed", reply(packet, RCODE.FORMERR));
    const decision = this.policy.decide(id, question.name);
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
        await this.policy.answered(id, question.name, addresses, ttl);
      }
      answer.raw.writeUInt16BE(packet.id ?? 0, 0);
      return this.count("forwarded", answer.raw);
    } catch (err) {
      this.warn(box, { sailboxId: id, name: question.name, err: String(err) }, "resolver could not answer");
      return this.count("servfail", reply(packet, RCODE.SERVFAIL));
    } finally {
      box.inFlight--;
    }
  }

  /** A box's warnings, one per WARN_EVERY_MS at most (a box can make every query fail), with how many were left out. */
  private warn(box: BoxSockets, fields: object, msg: string): void {
    const now = Date.now();
    if (now - box.warnedAtMs < WARN_EVERY_MS) {
      box.unwarned++;
      return;
    }
    this.log.warn(box.unwarned ? { ...fields, more: box.unwarned } : fields, msg);
    box.warnedAtMs = now;
    box.unwarned = 0;
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

/** An answer of our own to `query`: its id, opcode, question and RD flag, with `rcode`. */
function reply(query: dnsPacket.DecodedPacket, rcode: number): Buffer {
  return dnsPacket.encode({
    type: "response",
    id: query.id ?? 0,
    flags: ((query.flags ?? 0) & OPCODE_MASK) | (query.flag_rd ? dnsPacket.RECURSION_DESIRED : 0) | dnsPacket.RECURSION_AVAILABLE | rcode,
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
