/**
 * The box resolver against hostile and broken peers, on loopback addresses of its own: a
 * "box" at 127.3.0.2 asking the resolver on 127.3.0.1:53, an upstream at 127.3.0.9:5353
 * that answers as told and counts what it receives. Guest bytes are fuzzed; the resolver
 * must keep answering. A second resolver (127.3.1.x) has a small answer rate, and the
 * resolver's thread (as the daemon runs it) serves a third pair (127.3.2.x).
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { once } from "node:events";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import type { Worker } from "node:worker_threads";
import dnsPacket from "dns-packet";
import fc from "fast-check";
import type { NameDecision, NameRules, ResolverDirectory, ResolverSubscriber } from "../../packages/server/src/node/outbound.js";
import { TokenBucket } from "../../packages/server/src/node/token-bucket.js";
import { parseUpstream, Resolver, upstreamsFromResolvConf, type QueryResult, type ResolverPolicy } from "../../packages/server/src/egress/resolver.js";
import { ResolverThread } from "../../packages/server/src/egress/resolver-thread.js";

const RESOLVER = "127.3.0.1";
const BOX = "127.3.0.2";
const UPSTREAM = { host: "127.3.0.9", port: 5353 };
const quiet = { info() {}, warn() {}, error() {} };

/** What the upstream does with the next queries: answer right, lie, or stay silent. */
let upstreamMode: "answer" | "wrong-id" | "wrong-question" | "silent" = "answer";
/** Every message the upstream received: its opcode and first question's name. */
const upstreamSeen: Array<{ opcode: string; name: string }> = [];
const answered: Array<[string, string, string[], number]> = [];
const results: QueryResult[] = [];
let decisions: Record<string, NameDecision> = {};

const policy: ResolverPolicy = {
  decide: (_id, name) => decisions[name.toLowerCase()] ?? "forward",
  async answered(id, name, addresses, ttl) {
    answered.push([id, name, addresses, ttl]);
  },
};

let upstream: dgram.Socket;
let upstreamTcp: net.Server;
let resolver: Resolver;

function upstreamAnswer(query: Buffer): Buffer | undefined {
  const q = dnsPacket.decode(query);
  const question = q.questions![0]!;
  upstreamSeen.push({ opcode: (q as { opcode?: string }).opcode ?? "?", name: question.name });
  if (upstreamMode === "silent") return undefined;
  // big.test: a 60 KB TXT answer (over TCP), so a few unread answers fill the kernel's buffers
  const big = question.name === "big.test" && question.type === "TXT";
  return dnsPacket.encode({
    type: "response",
    id: upstreamMode === "wrong-id" ? (q.id! + 1) % 65536 : q.id,
    flags: dnsPacket.RECURSION_AVAILABLE,
    questions: [upstreamMode === "wrong-question" ? { ...question, name: "evil.test" } : question],
    answers: big
      ? [{ type: "TXT", name: question.name, ttl: 120, data: Array.from({ length: 240 }, () => "x".repeat(250)) }]
      : question.type === "A"
        ? [{ type: "A", name: question.name, ttl: 120, data: "198.51.100.77" }]
        : [],
  });
}

before(async () => {
  upstream = dgram.createSocket("udp4");
  upstream.on("message", (m, from) => {
    const a = upstreamAnswer(m);
    if (a) upstream.send(a, from.port, from.address);
  });
  await new Promise<void>((resolve) => upstream.bind(UPSTREAM.port, UPSTREAM.host, resolve));
  upstreamTcp = net.createServer((s) =>
    s.on("data", (d) => {
      const a = upstreamAnswer(d.subarray(2));
      if (a) s.end(Buffer.concat([u16(a.length), a]));
    }),
  );
  await new Promise<void>((resolve) => upstreamTcp.listen(UPSTREAM.port, UPSTREAM.host, resolve));
  // no rate limit to speak of here: the rate has tests of its own below
  resolver = new Resolver(policy, { upstreams: [UPSTREAM], timeoutMs: 300, answersPerSecond: 1e6, answerBurst: 1e6 }, quiet, (r) => results.push(r));
  await resolver.open("sb-test", RESOLVER, BOX);
});

after(() => {
  resolver.stop();
  upstream.close();
  upstreamTcp.close();
});

/** Send raw bytes from the box's address; the answer, or undefined after `waitMs`. */
function ask(bytes: Buffer, from = BOX, waitMs = 1000, to = RESOLVER): Promise<dnsPacket.DecodedPacket | undefined> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket("udp4");
    const timer = setTimeout(() => done(undefined), waitMs);
    const done = (answer: dnsPacket.DecodedPacket | undefined) => {
      clearTimeout(timer);
      socket.close();
      resolve(answer);
    };
    socket.on("message", (m) => done(dnsPacket.decode(m)));
    socket.bind(0, from, () => socket.send(bytes, 53, to));
  });
}

const u16 = (n: number) => Buffer.from([n >> 8, n & 255]);
const query = (name: string, type: dnsPacket.RecordType = "A", id = 4242) => dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] });
/** A query with another opcode (RFC 1035 4.1.1: bits 11-14 of the flags), for the zone's SOA as UPDATE and NOTIFY carry it. */
const withOpcode = (opcode: number, id: number) => {
  const bytes = dnsPacket.encode({ type: "query", id, questions: [{ type: "SOA", name: "example.test" }] });
  bytes.writeUInt16BE(opcode << 11, 2);
  return bytes;
};
const frame = (message: Buffer) => Buffer.concat([u16(message.length), message]);
const rcode = (p: dnsPacket.DecodedPacket | undefined) => (p as { rcode?: string } | undefined)?.rcode;
/** The data of each answer record (addresses for A). */
const data = (p: dnsPacket.DecodedPacket | undefined) => (p?.answers ?? []).map((a) => (a as { data?: unknown }).data);

/** A TCP connection from `from` to a resolver, and a reader of the answers it gets (in order). */
async function tcpConnect(from = BOX, to = RESOLVER): Promise<{ socket: net.Socket; answers: dnsPacket.DecodedPacket[]; next: (n: number) => Promise<void> }> {
  const socket = net.connect({ host: to, port: 53, localAddress: from });
  socket.on("error", () => {});
  await once(socket, "connect");
  const answers: dnsPacket.DecodedPacket[] = [];
  let got = Buffer.alloc(0);
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  socket.on("data", (d: Buffer) => {
    got = Buffer.concat([got, d]);
    while (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) {
      answers.push(dnsPacket.decode(got.subarray(2, 2 + got.readUInt16BE(0))));
      got = got.subarray(2 + got.readUInt16BE(0));
    }
    for (const w of waiters.filter((w) => answers.length >= w.n)) w.resolve();
  });
  const next = (n: number) => (answers.length >= n ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ n, resolve })));
  return { socket, answers, next };
}

/** Wait until `value()` stops changing for `quietMs`; its last value. */
async function settled(value: () => number, quietMs = 400): Promise<number> {
  let last = -1;
  for (;;) {
    const now = value();
    if (now === last) return now;
    last = now;
    await sleep(quietMs);
  }
}

describe("the box resolver", () => {
  test("forwards, keeps the box's query id, and reports an allowed name's addresses before answering", async () => {
    upstreamMode = "answer";
    decisions = { "pypi.org": "forward-and-allow" };
    const plain = await ask(query("example.test", "A", 7));
    assert.equal(plain?.id, 7);
    assert.deepEqual(data(plain), ["198.51.100.77"]);
    assert.equal(answered.length, 0, "an open policy reports nothing");
    const allowed = await ask(query("pypi.org"));
    assert.deepEqual(data(allowed), ["198.51.100.77"]);
    assert.deepEqual(answered, [["sb-test", "pypi.org", ["198.51.100.77"], 120]]);
  });

  test("answers by policy without asking upstream: REFUSED, NXDOMAIN, and an empty AAAA", async () => {
    decisions = { "blocked.test": "refuse", "denied.test": "nxdomain" };
    assert.equal(rcode(await ask(query("blocked.test"))), "REFUSED");
    assert.equal(rcode(await ask(query("denied.test"))), "NXDOMAIN");
    const v6 = await ask(query("example.test", "AAAA"));
    assert.equal(rcode(v6), "NOERROR");
    assert.deepEqual(v6?.answers, []);
  });

  test("an upstream answer with another id or question is not relayed (SERVFAIL), nor is silence", async () => {
    decisions = {};
    for (const mode of ["wrong-id", "wrong-question", "silent"] as const) {
      upstreamMode = mode;
      assert.equal(rcode(await ask(query("example.test"))), "SERVFAIL", mode);
    }
    upstreamMode = "answer";
  });

  test("only the box's own address is answered; malformed queries get nothing or FORMERR, and the resolver goes on", async () => {
    assert.equal(await ask(query("example.test"), "127.3.0.3", 300), undefined, "another source");
    const before = results.filter((r) => r === "malformed").length;
    assert.equal(await ask(Buffer.from("not dns at all"), BOX, 300), undefined);
    const two = dnsPacket.encode({
      type: "query",
      id: 9,
      questions: [
        { type: "A", name: "a.test" },
        { type: "A", name: "b.test" },
      ],
    });
    assert.equal(rcode(await ask(two)), "FORMERR");
    assert.equal(results.filter((r) => r === "malformed").length, before + 2);
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 600 }), async (bytes) => {
        await ask(Buffer.from(bytes), BOX, 10);
      }),
      { numRuns: 200 },
    );
    assert.deepEqual(data(await ask(query("example.test"))), ["198.51.100.77"], "still answering after the fuzz");
  });

  test("DNS over TCP: length-prefixed queries answered in order on one connection; junk closes it", async () => {
    const { socket, answers, next } = await tcpConnect();
    socket.write(Buffer.concat([frame(query("one.test", "A", 1)), frame(query("two.test", "A", 2))]));
    await next(2);
    assert.deepEqual(
      answers.map((a) => a.id),
      [1, 2],
    );
    const closed = once(socket, "close");
    socket.write(Buffer.from([0, 4, 1, 2, 3, 4]));
    await closed;
  });

  test("DNS over TCP: a guest that sends its queries and then FIN still gets every answer, then the connection ends", async () => {
    const { socket, answers } = await tcpConnect();
    socket.end(Buffer.concat([frame(query("one.test", "A", 3)), frame(query("two.test", "AAAA", 4))]));
    await once(socket, "close");
    assert.deepEqual(
      answers.map((a) => a.id),
      [3, 4],
    );
  });

  test("DNS over TCP back-pressure: a guest that pipelines and never reads is no longer read, so nothing piles up in the resolver; once it reads, every answer arrives in order", async () => {
    upstreamMode = "answer";
    decisions = {};
    const { socket, answers, next } = await tcpConnect();
    socket.pause(); // the guest reads nothing (for now)
    const total = 500;
    const asked = () => upstreamSeen.filter((s) => s.name === "big.test").length;
    const before = asked();
    socket.write(Buffer.concat(Array.from({ length: total }, (_, i) => frame(query("big.test", "TXT", i)))));
    // answered while unread: what the kernel's socket buffers hold (~4 MB here, some 70 answers) and one more
    const whileUnread = (await settled(asked)) - before;
    assert.ok(whileUnread < total / 2, `${whileUnread} of ${total} queries were answered while the guest read nothing`);
    socket.resume();
    await next(total);
    assert.deepEqual(
      answers.map((a) => a.id),
      Array.from({ length: total }, (_, i) => i),
    );
    assert.equal(asked() - before, total);
    socket.destroy();
  });

  test("a box has at most 16 DNS-over-TCP connections: the next one is closed at once, and one more fits when one ends", async () => {
    const held = await Promise.all(Array.from({ length: 16 }, () => tcpConnect()));
    const extra = await tcpConnect();
    await once(extra.socket, "close");
    held[0]!.socket.destroy();
    const answer = await eventually(async () => {
      const { socket, answers, next } = await tcpConnect();
      socket.write(frame(query("again.test", "A", 77)));
      await Promise.race([next(1), once(socket, "close")]);
      socket.destroy();
      return answers[0];
    }, "a connection in the freed place");
    assert.equal(answer.id, 77);
    for (const { socket } of held) socket.destroy();
  });

  test("UPDATE, NOTIFY and every opcode but QUERY are answered NOTIMP with their own opcode, over UDP and TCP, and never reach the upstream", async () => {
    upstreamMode = "answer";
    const opcodes: Array<[number, string]> = [
      [5, "UPDATE"],
      [4, "NOTIFY"],
      [2, "STATUS"],
      [1, "IQUERY"],
    ];
    const notimpBefore = results.filter((r) => r === "notimp").length;
    for (const [opcode, name] of opcodes) {
      const answer = await ask(withOpcode(opcode, 600 + opcode));
      assert.equal(rcode(answer), "NOTIMP", name);
      assert.equal((answer as { opcode?: string }).opcode, name);
      assert.equal(answer?.id, 600 + opcode);
    }
    const { socket, answers, next } = await tcpConnect();
    socket.write(Buffer.concat(opcodes.map(([opcode]) => frame(withOpcode(opcode, 700 + opcode)))));
    await next(opcodes.length);
    assert.deepEqual(
      answers.map((a) => [a.id, rcode(a), (a as { opcode?: string }).opcode]),
      opcodes.map(([opcode, name]) => [700 + opcode, "NOTIMP", name]),
    );
    socket.destroy();
    assert.equal(results.filter((r) => r === "notimp").length, notimpBefore + 2 * opcodes.length);
    assert.deepEqual(
      upstreamSeen.filter((s) => s.opcode !== "QUERY"),
      [],
      "the upstream saw only standard queries",
    );
  });

  test("upstreams come from resolv.conf or --dns-upstream", () => {
    assert.deepEqual(upstreamsFromResolvConf("# x\nnameserver 10.255.255.53\nnameserver fe80::1%eth0\nsearch lan\nnameserver bogus\n"), [
      { host: "10.255.255.53", port: 53 },
      { host: "fe80::1", port: 53 },
    ]);
    assert.deepEqual(parseUpstream("198.51.100.53"), { host: "198.51.100.53", port: 53 });
    assert.deepEqual(parseUpstream("198.51.100.53:5353"), { host: "198.51.100.53", port: 5353 });
    assert.deepEqual(parseUpstream("[2001:db8::1]:53"), { host: "2001:db8::1", port: 53 });
    assert.equal(parseUpstream("example.com"), undefined);
  });
});

describe("the answer rate of a box", () => {
  /** 2 answers a second, 5 at once: slow enough that no test here races a token. */
  const limitedResults: QueryResult[] = [];
  const limited = new Resolver(policy, { upstreams: [UPSTREAM], timeoutMs: 300, answersPerSecond: 2, answerBurst: 5 }, quiet, (r) => limitedResults.push(r));
  const A = { resolver: "127.3.1.1", box: "127.3.1.2" };
  const B = { resolver: "127.3.1.3", box: "127.3.1.4" };
  before(async () => {
    await limited.open("sb-a", A.resolver, A.box);
    await limited.open("sb-b", B.resolver, B.box);
  });
  after(() => limited.stop());

  test("a token bucket: `rate` a second, at most `burst` saved up, and how long until the next", () => {
    let nowMs = 0;
    const bucket = new TokenBucket(10, 2, () => nowMs);
    assert.deepEqual([bucket.take(), bucket.take(), bucket.take()], [0, 0, 100]);
    nowMs = 100;
    assert.deepEqual([bucket.take(), bucket.take()], [0, 100]);
    nowMs = 10_000;
    assert.deepEqual([bucket.take(), bucket.take(), bucket.take()], [0, 0, 100], "no more than the burst saved up");
  });

  test("UDP: past a box's rate, queries are dropped and counted as limited, refusals of our own included; another box keeps its own rate", async () => {
    decisions = { "refused.test": "nxdomain" };
    const socket = dgram.createSocket("udp4");
    const got: dnsPacket.DecodedPacket[] = [];
    socket.on("message", (m) => got.push(dnsPacket.decode(m)));
    await new Promise<void>((resolve) => socket.bind(0, A.box, resolve));
    for (let i = 0; i < 40; i++) socket.send(query("refused.test", "A", i), 53, A.resolver);
    const answeredCount = await settled(() => got.length);
    socket.close();
    // the burst, and perhaps a token or two that came while the queries were sent
    assert.ok(answeredCount >= 5 && answeredCount <= 8, `${answeredCount} of 40 answered`);
    assert.ok(got.every((a) => rcode(a) === "NXDOMAIN"));
    assert.equal(limitedResults.filter((r) => r === "limited").length, 40 - answeredCount);
    assert.equal(rcode(await ask(query("refused.test"), B.box, 1000, B.resolver)), "NXDOMAIN", "box B is not limited by box A's flood");
  });

  test("TCP: past a box's rate, a connection waits for tokens instead of losing queries; meanwhile the box's UDP queries are limited", async () => {
    decisions = { "refused.test": "nxdomain" };
    await sleep(3000); // box A's bucket fills up again (5 tokens at 2 a second)
    const limitedBefore = limitedResults.filter((r) => r === "limited").length;
    const { socket, answers, next } = await tcpConnect(A.box, A.resolver);
    const total = 8;
    socket.write(Buffer.concat(Array.from({ length: total }, (_, i) => frame(query("refused.test", "A", 900 + i)))));
    await next(5); // the burst
    assert.equal(await ask(query("refused.test", "A", 1), A.box, 300, A.resolver), undefined, "the connection holds the box's tokens");
    await next(total);
    assert.deepEqual(
      answers.map((a) => [a.id, rcode(a)]),
      Array.from({ length: total }, (_, i) => [900 + i, "NXDOMAIN"]),
    );
    assert.equal(limitedResults.filter((r) => r === "limited").length, limitedBefore + 1, "only the UDP query was dropped");
    socket.destroy();
  });
});

describe("the resolver's thread", () => {
  test("serves boxes off the main thread with a copy of their name rules: an allowed name's addresses are opened on the main thread before the answer, changes and removals follow, counts arrive in batches, and a thread that ends is replaced", async () => {
    upstreamMode = "answer";
    let subscriber: ResolverSubscriber | undefined;
    const opened: Array<[string, string, string[]]> = [];
    const directory: ResolverDirectory = {
      subscribe: (s) => void (subscriber = s),
      answered: async (id, name, addresses) => void opened.push([id, name, addresses]),
    };
    const counts = new Map<QueryResult, number>();
    const thread = new ResolverThread(directory, { upstreams: [UPSTREAM], timeoutMs: 300 }, quiet, (r, n) => counts.set(r, (counts.get(r) ?? 0) + n));
    await thread.start();
    const [resolverAt, box] = ["127.3.2.1", "127.3.2.2"];
    const askThread = (name: string, waitMs = 1000) => ask(query(name), box, waitMs, resolverAt);
    try {
      const rules: NameRules = { mode: "allowlist", domains: ["*.allowed.test"] };
      subscriber!.added("sb-thread", resolverAt, box, rules);
      const allowed = await eventually(() => askThread("www.allowed.test", 300), "an answer from the thread");
      assert.deepEqual(data(allowed), ["198.51.100.77"]);
      assert.deepEqual(opened, [["sb-thread", "www.allowed.test", ["198.51.100.77"]]]);
      assert.equal(rcode(await askThread("other.test")), "NXDOMAIN");
      subscriber!.changed("sb-thread", { mode: "refuse" });
      await eventually(async () => rcode(await askThread("www.allowed.test")) === "REFUSED", "the change");
      await eventually(async () => (counts.get("forwarded") ?? 0) >= 1 && (counts.get("nxdomain") ?? 0) >= 1 && (counts.get("refused") ?? 0) >= 1, "the counts");
      // the thread ends (as when its heap runs out): a new one serves every box, with its rules
      await (thread as unknown as { worker: Worker }).worker.terminate();
      await eventually(async () => rcode(await askThread("www.allowed.test", 300)) === "REFUSED", "a new thread");
      subscriber!.removed("sb-thread");
      await eventually(async () => (await askThread("www.allowed.test", 200)) === undefined, "the removal");
    } finally {
      await thread.stop();
    }
  });
});

/** `attempt` until it gives something (100 ms apart, 5 s at most). */
async function eventually<T>(attempt: () => Promise<T | undefined | false>, what: string): Promise<T> {
  for (let i = 0; i < 50; i++) {
    const value = await attempt();
    if (value) return value;
    await sleep(100);
  }
  assert.fail(`${what} did not happen`);
}
