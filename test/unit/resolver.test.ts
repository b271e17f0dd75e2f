/**
 * The box resolver against hostile and broken peers, on loopback addresses of its own: a
 * "box" at 127.3.0.2 asking the resolver on 127.3.0.1:53, an upstream at 127.3.0.9:5353
 * that answers as told. Guest bytes are fuzzed; the resolver must keep answering.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import dnsPacket from "dns-packet";
import fc from "fast-check";
import type { NameDecision, ResolverDirectory } from "../../packages/server/src/boxes/outbound.js";
import { parseUpstream, Resolver, upstreamsFromResolvConf, type QueryResult } from "../../packages/server/src/egress/resolver.js";

const RESOLVER = "127.3.0.1";
const BOX = "127.3.0.2";
const UPSTREAM = { host: "127.3.0.9", port: 5353 };

/** What the upstream does with the next queries: answer right, lie, or stay silent. */
let upstreamMode: "answer" | "wrong-id" | "wrong-question" | "silent" = "answer";
const answered: Array<[string, string, string[], number]> = [];
const results: QueryResult[] = [];
let decisions: Record<string, NameDecision> = {};

const directory: ResolverDirectory = {
  subscribe() {},
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
  if (upstreamMode === "silent") return undefined;
  return dnsPacket.encode({
    type: "response",
    id: upstreamMode === "wrong-id" ? (q.id! + 1) % 65536 : q.id,
    flags: dnsPacket.RECURSION_AVAILABLE,
    questions: [upstreamMode === "wrong-question" ? { ...question, name: "evil.test" } : question],
    answers: question.type === "A" ? [{ type: "A", name: question.name, ttl: 120, data: "198.51.100.77" }] : [],
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
      if (a) s.end(Buffer.concat([Buffer.from([a.length >> 8, a.length & 255]), a]));
    }),
  );
  await new Promise<void>((resolve) => upstreamTcp.listen(UPSTREAM.port, UPSTREAM.host, resolve));
  resolver = new Resolver(directory, { upstreams: [UPSTREAM], timeoutMs: 300 }, { info() {}, warn() {}, error() {} }, (r) => results.push(r));
  await resolver.open("sb-test", RESOLVER, BOX);
});

after(() => {
  resolver.stop();
  upstream.close();
  upstreamTcp.close();
});

/** Send raw bytes from the box's address; the answer, or undefined after `waitMs`. */
function ask(bytes: Buffer, from = BOX, waitMs = 1000): Promise<dnsPacket.DecodedPacket | undefined> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket("udp4");
    const timer = setTimeout(() => done(undefined), waitMs);
    const done = (answer: dnsPacket.DecodedPacket | undefined) => {
      clearTimeout(timer);
      socket.close();
      resolve(answer);
    };
    socket.on("message", (m) => done(dnsPacket.decode(m)));
    socket.bind(0, from, () => socket.send(bytes, 53, RESOLVER));
  });
}

const query = (name: string, type: dnsPacket.RecordType = "A", id = 4242) => dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] });
const rcode = (p: dnsPacket.DecodedPacket | undefined) => (p as { rcode?: string } | undefined)?.rcode;
/** The data of each answer record (addresses for A). */
const data = (p: dnsPacket.DecodedPacket | undefined) => (p?.answers ?? []).map((a) => (a as { data?: unknown }).data);

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
    const socket = net.connect({ host: RESOLVER, port: 53, localAddress: BOX });
    await new Promise((resolve) => socket.once("connect", resolve));
    const frames = [query("one.test", "A", 1), query("two.test", "A", 2)].map((q) => Buffer.concat([Buffer.from([q.length >> 8, q.length & 255]), q]));
    socket.write(Buffer.concat(frames));
    let got = Buffer.alloc(0);
    const ids: number[] = [];
    await new Promise<void>((resolve) =>
      socket.on("data", (d: Buffer) => {
        got = Buffer.concat([got, d]);
        while (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) {
          ids.push(dnsPacket.decode(got.subarray(2, 2 + got.readUInt16BE(0))).id!);
          got = got.subarray(2 + got.readUInt16BE(0));
        }
        if (ids.length === 2) resolve();
      }),
    );
    assert.deepEqual(ids, [1, 2]);
    const closed = new Promise((resolve) => socket.once("close", resolve));
    socket.write(Buffer.from([0, 4, 1, 2, 3, 4]));
    await closed;
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
