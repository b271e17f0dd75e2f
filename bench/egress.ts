/**
 * Egress: throughput from a box to a fake internet (a namespace of our own, documentation
 * ranges) next to the same transfer from the host, interleaved rounds, medians; a box's
 * traffic goes veth → forward (its outbound chain) → NAT → the fake internet. Then how long
 * a policy change takes (the API call returns once the rules are in place and the connections
 * it no longer allows are cut), and a name lookup through Sail's resolver next to the same
 * lookup sent straight to the upstream, both from the box's namespace.
 */
import { execFileSync } from "node:child_process";
import { BoxPool, TestDaemon } from "../test/e2e/harness.js";
import { DNS_SERVER, FAKE_RANGES, FakeInternet, WEB_A } from "../test/fixtures/fake-internet.js";
import { percentile } from "./stats.js";

const SECONDS = Number(process.env.BENCH_EGRESS_SECONDS ?? 4);
const ROUNDS = Number(process.env.BENCH_EGRESS_ROUNDS ?? 5);
const CHANGES = Number(process.env.BENCH_EGRESS_CHANGES ?? 40);
const LOOKUPS = Number(process.env.BENCH_EGRESS_LOOKUPS ?? 300);

/** iperf3 to the fake internet's server from `netns` (or the host): GB/s received. */
function throughput(netns?: string): number {
  const iperf = ["iperf3", "-c", WEB_A, "-p", "5201", "-t", String(SECONDS), "-J"];
  const args = netns ? ["ip", "netns", "exec", netns, ...iperf] : iperf;
  const report = JSON.parse(execFileSync(args[0]!, args.slice(1), { encoding: "utf8" })) as { end: { sum_received: { bits_per_second: number } } };
  return report.end.sum_received.bits_per_second / 8 / 1e9;
}

/** Mean ms per A lookup of `name` sent to `server`, from the box's namespace (python's socket, no caching). */
function lookupMs(netns: string, server: string, name: string): number {
  const script = `
import socket, struct, time, random
def ask():
    q = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p.encode() for p in "${name}".split(".")) + b"\\x00\\x00\\x01\\x00\\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.sendto(q, ("${server}", 53)); s.recv(512); s.close()
ask()
t = time.perf_counter()
for _ in range(${LOOKUPS}): ask()
print((time.perf_counter() - t) * 1000 / ${LOOKUPS})`;
  return Number(execFileSync("ip", ["netns", "exec", netns, "python3", "-c", script], { encoding: "utf8" }).trim());
}

export async function egress(): Promise<void> {
  const internet = new FakeInternet();
  await internet.start();
  const daemon = new TestDaemon(["--outbound", "on", "--outbound-only", FAKE_RANGES.join(","), "--dns-upstream", DNS_SERVER]);
  const pool = new BoxPool(daemon);
  await daemon.start();
  try {
    const sb = await pool.create({});
    const netns = `sail-${sb.id}`;
    const resolverAddress = (await sb.exec("ip route show default").output()).stdout.split(/\s+/)[2]!;
    const host: number[] = [];
    const box: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      host.push(throughput());
      box.push(throughput(netns));
      console.log(`round ${round + 1}: host ${host[round]!.toFixed(2)} GB/s, box ${box[round]!.toFixed(2)} GB/s`);
    }
    const [hostGbps, boxGbps] = [percentile(host, 50), percentile(box, 50)];

    const changes: number[] = [];
    for (let i = 0; i < CHANGES; i++) {
      const policy = i % 2 ? {} : { allowOut: [WEB_A, "*.example.test"] };
      const start = process.hrtime.bigint();
      await sb.setNetwork(policy);
      changes.push(Number(process.hrtime.bigint() - start) / 1e6);
    }

    await sb.setNetwork({});
    const viaSail = lookupMs(netns, resolverAddress, "one.example.test");
    const direct = lookupMs(netns, DNS_SERVER, "one.example.test");
    await sb.setNetwork({ allowOut: ["*.example.test"] });
    const viaSailAllowlist = lookupMs(netns, resolverAddress, "one.example.test");

    console.log(`\niperf3 -t ${SECONDS}, one stream, median of ${ROUNDS} interleaved rounds, to the fake internet (${WEB_A})`);
    console.log(`host → internet        ${hostGbps.toFixed(2)} GB/s`);
    // each round's box and host transfers run back to back, so their ratio cancels most of a shared machine's drift
    const ratio = percentile(
      box.map((b, i) => b / host[i]!),
      50,
    );
    console.log(`box → internet         ${boxGbps.toFixed(2)} GB/s   box ÷ host: ${ratio.toFixed(2)}x, median of the rounds' ratios (target ≥ 0.9x)`);
    console.log(`policy change (PUT /network, rules in place, connections cut): p50 ${percentile(changes, 50).toFixed(1)} ms, p95 ${percentile(changes, 95).toFixed(1)} ms (n=${CHANGES})`);
    console.log(
      `DNS lookup from the box, mean of ${LOOKUPS}: straight to the upstream ${direct.toFixed(3)} ms, through Sail's resolver ${viaSail.toFixed(3)} ms (open), ${viaSailAllowlist.toFixed(3)} ms (allowlist: the answer's addresses go into the box's set first)`,
    );
  } finally {
    await pool.terminateAll();
    await daemon.dispose();
    internet.stop();
  }
}
