/**
 * Outbound network, the attack: a box reaching the host's own networks. A box in open mode
 * tries a LAN neighbour (a namespace on a /30 the host is directly connected to), a network
 * the host joins and leaves while the daemon runs (and a flow it had open into it), and cloud
 * host endpoints. The fake internet is a routed network behind a router, as the real one is,
 * and stays reachable. The daemon may reach only 198.51.100.0/25 (--outbound-only), so nothing
 * a box sends leaves the machine.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, test } from "node:test";
import { fetch } from "undici";
import { Sailbox, type SailError } from "@sail/sdk";
import { BOX_SUBNET, METRICS_PORT, startPython, useTestDaemon } from "./harness.js";
import { DNS_SERVER, FAKE_RANGES, FakeInternet, WEB_A } from "../fixtures/fake-internet.js";
import { answeringListener, LanNeighbour, whenListening } from "../fixtures/lan-neighbour.js";

const UP_ARGS = ["--outbound", "on", "--outbound-only", FAKE_RANGES.join(","), "--dns-upstream", DNS_SERVER];
const internet = new FakeInternet();
/** On a network the host is directly connected to from before the first test. */
const lan = new LanNeighbour("198.51.100.120/30");
/** On a network the host joins and leaves during a test; the fake internet holds the same address beyond its router. */
const joined = new LanNeighbour("198.51.100.116/30");
const { daemon, pool } = useTestDaemon({
  upArgs: UP_ARGS,
  setup: async () => {
    await internet.start();
    await lan.start();
    await joined.start({ joined: false });
  },
  teardown: () => {
    joined.stop();
    lan.stop();
    internet.stop();
  },
});

/** The daemon's nftables table (one per box subnet). */
const TABLE = `sail_${BOX_SUBNET.replace(/[./]/g, "_")}`;

/**
 * Whether the daemon's firewall set `set` holds `address` (asks the kernel; sends nothing). nft
 * says ENOENT for an address the set lacks; any other failure (a dump interrupted by another
 * daemon's change on this shared host) is asked again.
 */
function inFirewallSet(set: string, address: string): boolean {
  for (let attempt = 1; ; attempt++) {
    try {
      execFileSync("nft", ["get", "element", "inet", TABLE, set, `{ ${address} }`], { stdio: "pipe" });
      return true;
    } catch (err) {
      const stderr = String((err as { stderr?: Buffer }).stderr ?? "");
      if (/No such file or directory/.test(stderr) || attempt === 5) return false;
    }
  }
}

/** From inside the box, a TCP connect to each target (3 s), "hi" sent and the first line answered, or the error's class. */
async function talkFrom(sb: Sailbox, targets: Array<[string, number]>): Promise<string[]> {
  const result = await sb
    .exec(
      `python3 - <<'SAIL_EOF'
import socket, json
out = []
for host, port in ${JSON.stringify(targets)}:
    try:
        s = socket.create_connection((host, port), timeout=3)
        s.sendall(b"hi\\n"); out.append(s.recv(100).decode().strip()); s.close()
    except Exception as e: out.append(type(e).__name__)
print(json.dumps(out))
SAIL_EOF`,
    )
    .output();
  return JSON.parse(result.stdout.trim().split("\n").pop()!) as string[];
}

/**
 * A UDP socket in the box, connected to `host:port` and kept open: each `send()` sends "hi" on
 * it and returns the answer (2 s) or the error's class, so every datagram belongs to one flow.
 */
async function udpFlowFrom(sb: Sailbox, host: string, port: number): Promise<{ send(): Promise<string> }> {
  const script = `import socket, os, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((${JSON.stringify(host)}, ${port})); s.settimeout(2)
n = 1
while True:
    while not os.path.exists(f"/tmp/udp-go-{n}"): time.sleep(0.02)
    try:
        s.send(b"hi"); r = s.recv(100).decode().strip()
    except Exception as e: r = type(e).__name__
    open(f"/tmp/udp-{n}", "w").write(r); n += 1`;
  await startPython(sb, "udp-flow", script);
  let n = 0;
  return {
    async send() {
      n++;
      await sb.exec(`touch /tmp/udp-go-${n}`).wait();
      let answer = "";
      await waitFor(async () => {
        answer = (await sb.exec(`cat /tmp/udp-${n} 2>/dev/null`).output()).stdout;
        return answer !== "";
      }, `UDP send ${n}`);
      return answer;
    },
  };
}

async function refusedCount(id: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${METRICS_PORT}/metrics`)).text();
  return Number(new RegExp(`^sail_outbound_refused_total\\{sailbox="${id}"\\} (\\d+)`, "m").exec(text)?.[1] ?? 0);
}

async function waitFor(check: () => boolean | Promise<boolean>, what: string): Promise<number> {
  const started = performance.now();
  for (let i = 0; i < 300; i++) {
    if (await check()) return performance.now() - started;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail(`${what} did not happen`);
}

describe("outbound network: the host's own networks", () => {
  test("a LAN neighbour on a network the host is directly connected to is refused from an open box (a reset, nothing arrives), while the fake internet beyond a router is reached", async () => {
    const sb = await pool.create({});
    assert.equal(sb.network.outbound, "open");
    const before = await refusedCount(sb.id);
    assert.deepEqual(
      await talkFrom(sb, [
        [lan.address, lan.port],
        [lan.hostAddress, lan.port],
        [WEB_A, 9000],
      ]),
      ["ConnectionRefusedError", "ConnectionRefusedError", "hi"],
      "the neighbour and the host's address on its network are refused at once; the echo server beyond the router answers",
    );
    assert.deepEqual(lan.peers, [], "no connection reached the neighbour");
    assert.ok((await refusedCount(sb.id)) > before, "the refusal is counted for the box");
    assert.ok(inFirewallSet("connected", lan.address), "the firewall's connected set holds the network");

    // an allowOut naming it is refused as one that can never work here
    await assert.rejects(
      pool.create({ allowOut: [lan.network] }),
      (e: SailError) => e.code === "SAIL_NETWORK_ENTRY_REFUSED" && /directly connected/.test(e.message) && /--outbound-private/.test(e.message),
    );
  });

  test("a network the host joins while the daemon runs is refused without a restart, and one it leaves is reached beyond the router again", async (t) => {
    // the fake internet holds the neighbour's address too: until the host joins, a box reaches that one through the router
    internet.hold(joined.address);
    const far: string[] = [];
    await whenListening(internet.exec(answeringListener(joined.address, joined.port, `internet ${joined.address}`)), far, "the fake internet's listener");
    const sb = await pool.create({});
    const target: Array<[string, number]> = [[joined.address, joined.port]];
    assert.deepEqual(await talkFrom(sb, target), [`internet ${joined.address}`]);

    joined.joinHost();
    const learnedMs = await waitFor(() => inFirewallSet("connected", joined.address), "the daemon refusing the network the host joined");
    t.diagnostic(`address added → in the firewall's connected set: ${learnedMs.toFixed(0)} ms (polled every 10 ms)`);
    const refusedBefore = await refusedCount(sb.id);
    assert.deepEqual(await talkFrom(sb, target), ["ConnectionRefusedError"]);
    assert.deepEqual(joined.peers, [], "no connection reached the neighbour");
    assert.ok((await refusedCount(sb.id)) > refusedBefore);

    joined.leaveHost();
    const forgottenMs = await waitFor(() => !inFirewallSet("connected", joined.address), "the daemon forgetting the network the host left");
    t.diagnostic(`address removed → out of the set: ${forgottenMs.toFixed(0)} ms`);
    assert.deepEqual(await talkFrom(sb, target), [`internet ${joined.address}`]);
    assert.deepEqual(joined.peers, []);
  });

  test("a flow a box opened before the host joined a network on the same link is cut: the kernel would keep it, as its way out did not change", async () => {
    // the host takes a second address on its link to the fake internet's router, which holds the target: before, the
    // target is routed through the router; after, it is on the link itself, through the same interface (masquerade
    // drops a flow only when its way out changes)
    const target = "198.51.100.114";
    internet.hold(target);
    const far: string[] = [];
    await whenListening(internet.exec(answeringListener(target, 7000, `internet ${target}`)), far, "the fake internet's listener");
    const sb = await pool.create({});
    const udp = await udpFlowFrom(sb, target, 7000);
    assert.equal(await udp.send(), `internet ${target}`);
    try {
      execFileSync("ip", ["addr", "add", "198.51.100.113/30", "dev", internet.veth], { stdio: "pipe" });
      await waitFor(() => inFirewallSet("connected", target), "the daemon refusing the network the host joined");
      const seen = far.length;
      assert.doesNotMatch(await udp.send(), /internet/, "its next datagram is refused, not sent on the host's link");
      assert.deepEqual(await talkFrom(sb, [[target, 7000]]), ["ConnectionRefusedError"]);
      assert.equal(far.length, seen, "nothing more arrived");
    } finally {
      execFileSync("ip", ["addr", "del", "198.51.100.113/30", "dev", internet.veth], { stdio: "ignore" });
    }
  });

  test("--outbound-private opens a directly connected network for an operator who means it; a daemon started without it learns the network at start and refuses it", async () => {
    try {
      daemon.upArgs = [...UP_ARGS, "--outbound-private", lan.network];
      await daemon.restart();
      const open = await pool.create({});
      const listed = await pool.create({ allowOut: [lan.address] });
      const seen = lan.peers.length;
      assert.deepEqual(await talkFrom(open, [[lan.address, lan.port]]), [`lan ${lan.address}`]);
      assert.deepEqual(await talkFrom(listed, [[lan.address, lan.port]]), [`lan ${lan.address}`]);
      assert.deepEqual(lan.peers.slice(seen), [lan.hostAddress, lan.hostAddress], "the neighbour saw the boxes, masqueraded to the host's address on its network");

      daemon.upArgs = UP_ARGS;
      await daemon.restart();
      assert.ok(inFirewallSet("connected", lan.address), "learned at start");
      const after = await pool.create({});
      // the allowlisted box keeps its policy, and the firewall refuses it the network all the same
      assert.deepEqual(await talkFrom(after, [[lan.address, lan.port]]), ["ConnectionRefusedError"]);
      assert.deepEqual(await talkFrom(listed, [[lan.address, lan.port]]), ["ConnectionRefusedError"]);
      assert.equal(lan.peers.length, seen + 2, "nothing more reached the neighbour");
      assert.deepEqual((await Sailbox.fromId(listed.id, { client: daemon.client() })).network.allowOut, [`${lan.address}/32`]);
    } finally {
      if (daemon.upArgs !== UP_ARGS) {
        daemon.upArgs = UP_ARGS;
        await daemon.restart();
      }
    }
  });

  test("cloud host endpoints are never reached: 168.63.129.16 (Azure's wire server), 169.254.169.254 and 100.100.100.200 are in the running firewall's never-reached set", async () => {
    // no packet is sent to these real addresses: the test reads the kernel's set, and the policy check
    for (const address of ["168.63.129.16", "169.254.169.254", "100.100.100.200"]) {
      assert.ok(inFirewallSet("forbidden", address), `${address} is in the forbidden set`);
    }
    await assert.rejects(pool.create({ allowOut: ["168.63.129.16"] }), (e: SailError) => e.code === "SAIL_NETWORK_ENTRY_REFUSED" && /never reach/.test(e.message));
  });
});
