/**
 * Adversarial: a box floods its resolver the way issue 26's audit did. Several DNS-over-TCP
 * connections with a tiny receive buffer pipeline queries (most refused locally by the box's
 * allowlist) and never read an answer, beside a UDP flood; before the fix this took the API's
 * p50 from 2 ms to 3.8 s and the daemon from 130 MB to 1.1 GB. While it runs, the test
 * measures the API's latency and the daemon's RSS, and a neighbour box must keep resolving.
 * The same flood of allowlisted names that answer a new address each time must not make the
 * daemon open (and remember) addresses without bound. Then a box sends UPDATE and NOTIFY (RFC 2136, RFC 1996): they are answered NOTIMP locally,
 * and an upstream this test runs (on a loopback address of its own) counts that no message
 * but a QUERY ever reached it.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomInt } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createInterface, type Interface } from "node:readline";
import { describe, test } from "node:test";
import { fetch } from "undici";
import type { Sailbox } from "@sail/sdk";
import { dnsServing } from "../fixtures/dns-serving.js";
import { BOX_SUBNET, METRICS_PORT, REPO, startPython, useTestDaemon } from "./harness.js";

/** The upstream: a loopback address of this run's own (no other test shares it), so nothing leaves the host. */
const UPSTREAM = `127.53.${randomInt(1, 255)}.${randomInt(1, 255)}`;
const UPSTREAM_PORT = 5353;
/** Allowed names answer with this address (a test-neighbour range; no box connects to it). */
const ANSWER = "198.51.100.77";
const FLOOD_SECONDS = 20;

/**
 * A DNS server in a process of its own (so its work does not slow this process's latency
 * measurements): A records for *.allowed.test, NXDOMAIN for the rest, and a count of every
 * message by opcode, printed as JSON for each line read on stdin.
 */
const UPSTREAM_SERVER = `
import dgram from "node:dgram";
import net from "node:net";
import { createInterface } from "node:readline";
import { createRequire } from "node:module";
const dnsPacket = createRequire(import.meta.url)(${JSON.stringify(join(REPO, "node_modules/dns-packet/index.js"))});
const opcodes = {};
function answer(bytes) {
  const query = dnsPacket.decode(bytes);
  opcodes[query.opcode] = (opcodes[query.opcode] ?? 0) + 1;
  const q = query.questions[0];
  const known = q.name.toLowerCase().endsWith(".allowed.test");
  // *.fresh.allowed.test: a new address each time (198.18.0.0/15, the benchmarking range), for a day
  const fresh = q.name.toLowerCase().endsWith(".fresh.allowed.test");
  const address = fresh ? "198.18." + Math.floor(Math.random() * 256) + "." + Math.floor(Math.random() * 256) : ${JSON.stringify(ANSWER)};
  const answers = known && q.type === "A" ? [{ type: "A", name: q.name, ttl: fresh ? 86400 : 60, data: address }] : [];
  return dnsPacket.encode({ type: "response", id: query.id, flags: dnsPacket.RECURSION_AVAILABLE | (known ? 0 : 3), questions: [q], answers });
}
${dnsServing(UPSTREAM, UPSTREAM_PORT, 'console.log("ready");')}
createInterface({ input: process.stdin }).on("line", () => console.log(JSON.stringify(opcodes)));
`;

/** What the guest floods with: DNS messages built by hand (the image has no DNS library), over TCP and UDP. */
const FLOOD = `
import os, socket, struct, sys, threading, time
resolver = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
def message(i, name, qtype=1):
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
    return struct.pack(">HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 1)
def frame(m): return struct.pack(">H", len(m)) + m
if sys.argv[2] == "mixed":
    # 7 in 8 answered by the resolver itself: NXDOMAIN (outside the allowlist) or an empty AAAA; 1 in 8 forwarded
    names = [(f"refused{i}.example.test", 1) if i % 8 < 6 else (f"n{i}.allowed.test", 28 if i % 8 == 6 else 1) for i in range(4000)]
else:
    # allowed names whose every answer is a new address for the firewall to open
    names = [(f"f{i}.{os.getpid()}.fresh.allowed.test", 1) for i in range(4000)]
batch = b"".join(frame(message(i, n, t)) for i, (n, t) in enumerate(names))
def tcp():
    while True:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # answers pile up on the resolver's side
        try:
            s.connect((resolver, 53))
            while True: s.sendall(batch)  # pipelining, never reading
        except OSError: time.sleep(0.05)
        finally: s.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    datagrams = [message(i, n, t) for i, (n, t) in enumerate(names[:512])]
    while True:
        for d in datagrams:
            try: s.sendto(d, (resolver, 53))
            except OSError: pass
for target in [tcp, tcp, tcp, tcp, udp]: threading.Thread(target=target, daemon=True).start()
print("flooding", flush=True)
time.sleep(float(sys.argv[1]))
os._exit(0)
`;

/** UPDATE (opcode 5) and NOTIFY (opcode 4) for allowed.test's SOA, over UDP and TCP: the rcode of each answer (or "none"). */
const OPCODES = `
import json, socket, struct
resolver = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
def message(i, opcode):
    qname = b"".join(bytes([len(p)]) + p.encode() for p in "allowed.test".split(".")) + b"\\0"
    return struct.pack(">HHHHHH", i, opcode << 11, 1, 0, 0, 0) + qname + struct.pack(">HH", 6, 1)
def rcode(answer): return answer[3] & 0x0F if len(answer) >= 4 else "short"
out = {}
for name, opcode in [("update", 5), ("notify", 4)]:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
    try: u.sendto(message(100 + opcode, opcode), (resolver, 53)); out[name + "/udp"] = rcode(u.recv(4096))
    except OSError: out[name + "/udp"] = "none"
    t = socket.create_connection((resolver, 53), timeout=3)
    try:
        m = message(200 + opcode, opcode); t.sendall(struct.pack(">H", len(m)) + m)
        n = struct.unpack(">H", t.recv(2))[0]; out[name + "/tcp"] = rcode(t.recv(n))
    except OSError: out[name + "/tcp"] = "none"
    t.close()
print(json.dumps(out))
`;

let upstream: ChildProcess;
let upstreamLines: Interface;
const upstreamDir = mkdtempSync(join(tmpdir(), "sail-dns-flood-"));
const { daemon, pool } = useTestDaemon({
  // boxes may reach only a test-neighbour range (nothing listens there); the resolver asks this test's upstream
  upArgs: ["--outbound", "on", "--outbound-only", "198.51.100.0/25", "--dns-upstream", `${UPSTREAM}:${UPSTREAM_PORT}`],
  setup: async () => {
    const script = join(upstreamDir, "upstream.mjs");
    writeFileSync(script, UPSTREAM_SERVER);
    upstream = spawn(process.execPath, [script], { stdio: ["pipe", "pipe", "inherit"] });
    upstreamLines = createInterface({ input: upstream.stdout! });
    const exited = once(upstream, "exit").then(([code]) => `exited ${code}`);
    assert.equal(await Promise.race([once(upstreamLines, "line").then(([line]) => line as string), exited]), "ready", "the test's upstream starts");
  },
  teardown: () => {
    upstream?.kill("SIGKILL");
    rmSync(upstreamDir, { recursive: true, force: true });
  },
});

/** Every opcode the upstream has received, with counts. */
async function upstreamOpcodes(): Promise<Record<string, number>> {
  const answer = once(upstreamLines, "line");
  upstream.stdin!.write("\n");
  const [line] = (await answer) as [string];
  return JSON.parse(line) as Record<string, number>;
}

function rssBytes(pid: number): number {
  const kib = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kib) * 1024;
}

/** Resolve each name inside the box (glibc): its IPv4 addresses, or [] when it does not resolve. */
async function resolveFrom(sb: Sailbox, names: string[]): Promise<string[][]> {
  const code = `import socket, json
out = []
for name in ${JSON.stringify(names)}:
    try: out.append(sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)}))
    except socket.gaierror: out.append([])
print(json.dumps(out))`;
  const result = await sb.exec(`python3 - <<'SAIL_EOF'\n${code}\nSAIL_EOF`).output();
  return JSON.parse(result.stdout.trim().split("\n").pop()!) as string[][];
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;
const mb = (bytes: number) => `${Math.round(bytes / 2 ** 20)} MB`;

async function dnsMetric(result: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${METRICS_PORT}/metrics`)).text();
  return Number(new RegExp(`^sail_dns_queries_total\\{result="${result}"\\} (\\d+)`, "m").exec(text)?.[1] ?? 0);
}

interface FloodReport {
  p50: number;
  rssBefore: number;
  rssPeak: number;
  neighbourResolved: string[][] | undefined;
}

/**
 * Flood from `attacker` (FLOOD in `mode`) for FLOOD_SECONDS while this process asks the API
 * for `neighbour` every 50 ms, whether the last request has been answered or not (so a
 * stalled API shows in every request that waits for it, not in one slow sample), samples the
 * daemon's RSS, and lets the neighbour resolve halfway through.
 */
async function measureFlood(attacker: Sailbox, neighbour: Sailbox, mode: "mixed" | "fresh"): Promise<FloodReport> {
  const pid = daemon.pid!;
  const client = daemon.client();
  const path = `/v1/sailboxes/${neighbour.id}`;
  const timedGet = async () => {
    const started = performance.now();
    const info = await client.request<{ id: string }>("GET", path);
    assert.equal(info.id, neighbour.id);
    return performance.now() - started;
  };
  const quietMs: number[] = [];
  for (let i = 0; i < 50; i++) quietMs.push(await timedGet());
  quietMs.sort((a, b) => a - b);
  const counts = async () => Object.fromEntries(await Promise.all(["limited", "nxdomain", "forwarded", "servfail"].map(async (r) => [r, await dnsMetric(r)])));
  const countsBefore = await counts();
  const rssBefore = rssBytes(pid);
  let rssPeak = rssBefore;

  await startPython(attacker, `flood-${mode}`, FLOOD, `${FLOOD_SECONDS} ${mode}`);
  let neighbourResolved: string[][] | undefined;
  const neighbourLookup = (async () => {
    await new Promise((resolve) => setTimeout(resolve, (FLOOD_SECONDS * 1000) / 2));
    neighbourResolved = await resolveFrom(neighbour, ["www.allowed.test", "mid-flood.allowed.test"]);
  })();
  const requests: Array<Promise<number>> = [];
  const until = performance.now() + FLOOD_SECONDS * 1000;
  while (performance.now() < until) {
    requests.push(timedGet());
    rssPeak = Math.max(rssPeak, rssBytes(pid));
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const latenciesMs = (await Promise.all(requests)).sort((a, b) => a - b);
  await neighbourLookup;
  // the flood's python exits at its deadline; the resolver closes what is left after its idle timeout (10 s)
  await new Promise((resolve) => setTimeout(resolve, 12_000));
  const rssAfter = rssBytes(pid);
  const countsAfter = await counts();
  const p50 = percentile(latenciesMs, 50);
  console.log(
    `[${mode}] API GET ${path}: before the flood p50 ${percentile(quietMs, 50).toFixed(1)} ms, p99 ${percentile(quietMs, 99).toFixed(1)} ms; ` +
      `during a ${FLOOD_SECONDS} s flood ${latenciesMs.length} requests, p50 ${p50.toFixed(1)} ms, p99 ${percentile(latenciesMs, 99).toFixed(1)} ms; ` +
      `daemon RSS before ${mb(rssBefore)}, peak ${mb(rssPeak)}, 12 s after ${mb(rssAfter)}; ` +
      `queries during it: ${Object.keys(countsAfter)
        .map((r) => `${r} ${countsAfter[r] - countsBefore[r]}`)
        .join(", ")}`,
  );
  return { p50, rssBefore, rssPeak, neighbourResolved };
}

/** Addresses the firewall holds open for `sb` because its lookups answered them. */
function openedByDns(sb: Sailbox): number {
  const table = `sail_${BOX_SUBNET.replace(/[./]/g, "_")}`;
  const set = execFileSync("nft", ["list", "set", "inet", table, `dns_${sb.id.replace(/[^a-z0-9]/g, "_")}`], { encoding: "utf8" });
  return (set.match(/\d+\.\d+\.\d+\.\d+ timeout/g) ?? []).length;
}

/** Behavioural bounds, far from what the floods did before the fix (seconds, hundreds of MB), so a loaded machine does not trip them. */
function assertUnhurt(report: FloodReport): void {
  assert.ok(report.p50 < 500, `the API's p50 during the flood was ${report.p50.toFixed(0)} ms`);
  assert.ok(report.rssPeak - report.rssBefore < 256 * 2 ** 20, `the daemon grew from ${mb(report.rssBefore)} to ${mb(report.rssPeak)} during the flood`);
  assert.deepEqual(report.neighbourResolved, [[ANSWER], [ANSWER]], "a neighbour box resolves during the flood");
}

describe("attack: a box floods its resolver over DNS-over-TCP", () => {
  test("pipelined queries on tiny-window connections, never read, hurt only the box that sends them: the API answers, the daemon's memory stays bounded, a neighbour resolves", async () => {
    const attacker = await pool.create({ allowOut: ["*.allowed.test"] });
    const neighbour = await pool.create({});
    assert.deepEqual(await resolveFrom(attacker, ["n1.allowed.test"]), [[ANSWER]], "the attacker's resolver works before the flood");
    const limitedBefore = await dnsMetric("limited");
    assertUnhurt(await measureFlood(attacker, neighbour, "mixed"));
    // the rate limit dropped the UDP flood's excess, and said so
    assert.ok((await dnsMetric("limited")) > limitedBefore, "answers past the box's rate are counted as limited");
    // the attacker's own resolver works again once it stops
    assert.deepEqual(await resolveFrom(attacker, ["after.allowed.test", "refused.example.test"]), [[ANSWER], []]);
  });

  test("allowed names that answer a new address every time (a wildcard whose DNS the box runs) cost the daemon a bounded set and bounded firewall work", async () => {
    const attacker = await pool.create({ allowOut: ["*.allowed.test"] });
    const neighbour = await pool.create({});
    const servfailBefore = await dnsMetric("servfail");
    assertUnhurt(await measureFlood(attacker, neighbour, "fresh"));
    // 20 new addresses a second after a burst of 200: what a box's lookups may open
    const opened = openedByDns(attacker);
    assert.ok(opened > 0 && opened <= 200 + 20 * (FLOOD_SECONDS + 15), `${opened} addresses opened for the attacker`);
    assert.ok((await dnsMetric("servfail")) > servfailBefore, "lookups past the box's rate fail");
  });

  test("UPDATE and NOTIFY are answered NOTIMP by the resolver and never reach the upstream", async () => {
    const sb = await pool.create({});
    const result = await sb.exec(`python3 - <<'SAIL_EOF'\n${OPCODES}\nSAIL_EOF`).output();
    const rcodes = JSON.parse(result.stdout.trim().split("\n").pop()!) as Record<string, number | string>;
    assert.deepEqual(rcodes, { "update/udp": 4, "update/tcp": 4, "notify/udp": 4, "notify/tcp": 4 }, "NOTIMP (RFC 1035 rcode 4) for each");
    assert.deepEqual(await resolveFrom(sb, ["still.allowed.test"]), [[ANSWER]], "queries still go through");
    const seen = await upstreamOpcodes();
    assert.deepEqual(Object.keys(seen), ["QUERY"], `the upstream received ${JSON.stringify(seen)}`);
  });
});
