/**
 * Outbound network: real boxes reaching a fake internet (a network namespace this file
 * creates, on documentation ranges) through the host, with Sail's resolver forwarding to the
 * fake internet's DNS server. The daemon may reach only the fake internet (--outbound-only),
 * so no box sends a packet anywhere else, whatever a test does.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:net";
import { describe, test } from "node:test";
import { fetch } from "undici";
import { InvalidArgumentError, IngressPort, Sailbox, type SailError } from "@sail/sdk";
import { eventually, API_PORT, gatewayAgent, HTTPS_PORT, METRICS_PORT, runCli, startGuestServer, useTestDaemon } from "./harness.js";
import { DNS_SERVER, FAKE_RANGES, FakeInternet, HOST_SIDE, WEB_A, WEB_B } from "../fixtures/fake-internet.js";

const internet = new FakeInternet();
/** A listener on every host address, which no box may reach. */
let hostListener: Server;
let hostPort = 0;
const { daemon, pool } = useTestDaemon({
  upArgs: ["--outbound", "on", "--outbound-only", FAKE_RANGES.join(","), "--dns-upstream", DNS_SERVER],
  setup: async () => {
    await internet.start();
    hostListener = createServer((s) => s.end("host\n"));
    await new Promise<void>((resolve) => hostListener.listen(0, "0.0.0.0", resolve));
    hostPort = (hostListener.address() as { port: number }).port;
  },
  teardown: () => {
    hostListener?.close();
    internet.stop();
  },
});

/** Run a Python snippet in the box; its stdout. */
async function py(sb: Sailbox, code: string): Promise<string> {
  const result = await sb.exec(`python3 - <<'SAIL_EOF'\n${code}\nSAIL_EOF`).output();
  return result.stdout + result.stderr;
}

/** GET each URL from inside the box: the body, or ERR and the error's class. */
async function fetchFrom(sb: Sailbox, urls: string[]): Promise<string[]> {
  const out = await py(
    sb,
    `import urllib.request, json
out = []
for url in ${JSON.stringify(urls)}:
    try: out.append(urllib.request.urlopen(url, timeout=3).read().decode().strip())
    except Exception as e: out.append("ERR " + type(getattr(e, "reason", e)).__name__)
print(json.dumps(out))`,
  );
  return JSON.parse(out.trim().split("\n").pop()!) as string[];
}

/** Resolve each name inside the box (glibc, as any program would): its IPv4 addresses, or [] when it does not resolve. */
async function resolveFrom(sb: Sailbox, names: string[]): Promise<string[][]> {
  const out = await py(
    sb,
    `import socket, json
out = []
for name in ${JSON.stringify(names)}:
    try: out.append(sorted({a[4][0] for a in socket.getaddrinfo(name, 80, proto=socket.IPPROTO_TCP)}))
    except socket.gaierror: out.append([])
print(json.dumps(out))`,
  );
  return JSON.parse(out.trim().split("\n").pop()!) as string[][];
}

/** TCP connects from inside the box, 2 s each: "open" or the error. */
async function connectFrom(sb: Sailbox, targets: Array<[string, number]>): Promise<string[]> {
  const out = await py(
    sb,
    `import socket, json
out = []
for host, port in ${JSON.stringify(targets)}:
    try:
        socket.create_connection((host, port), timeout=2).close(); out.append("open")
    except Exception as e: out.append(type(e).__name__)
print(json.dumps(out))`,
  );
  return JSON.parse(out.trim().split("\n").pop()!) as string[];
}

describe("outbound network", () => {
  test("by default a box reaches the internet by address and by name (CNAMEs too); AAAA answers are hidden, as boxes have IPv4 only", async () => {
    const sb = await pool.create({});
    assert.deepEqual(sb.network, { outbound: "open", allowOut: [], denyOut: [] });
    assert.deepEqual(await fetchFrom(sb, [`http://${WEB_A}/`, "http://two.example.test/", "http://alias.example.test/"]), [`hello from ${WEB_A}`, `hello from ${WEB_B}`, `hello from ${WEB_A}`]);
    const resolved = await py(sb, "import socket; print(sorted({a[0] for a in socket.getaddrinfo('one.example.test', 80)}))");
    assert.match(resolved, /AF_INET/);
    assert.doesNotMatch(resolved, /AF_INET6/);
    assert.match((await sb.exec("cat /etc/resolv.conf").output()).stdout, /^nameserver 10\./m);
  });

  test("blockNetwork: nothing leaves, DNS included; published ports, exec, sleep and wake still work", async () => {
    const sb = await pool.create({ blockNetwork: true, ingressPorts: [3000] });
    assert.equal(sb.network.outbound, "blocked");
    assert.deepEqual(await resolveFrom(sb, ["one.example.test"]), [[]]);
    assert.deepEqual(
      await connectFrom(sb, [
        [WEB_A, 80],
        [DNS_SERVER, 53],
      ]),
      ["ConnectionRefusedError", "ConnectionRefusedError"],
    );
    await startGuestServer(sb, 3000);
    const url = (await sb.listener(3000).wait({ timeout: 30 })).endpoint.url;
    const agent = gatewayAgent(await daemon.caCert());
    try {
      assert.equal((await fetch(`${url}/headers`, { dispatcher: agent })).status, 200);
      await sb.sleep();
      assert.equal((await fetch(`${url}/headers`, { dispatcher: agent })).status, 200, "a request wakes it");
      assert.equal(await sb.status(), "running");
    } finally {
      await agent.close();
    }
    assert.equal((await sb.exec("echo still here").output()).stdout, "still here\n");
  });

  test("allowOut: only the listed CIDRs and names; *.domain covers names below it; a name outside does not resolve and its address stays unreachable", async () => {
    const sb = await pool.create({ allowOut: [`${WEB_A}/32`, "*.wild.test"] });
    assert.deepEqual(sb.network, { outbound: "allowlist", allowOut: [`${WEB_A}/32`, "*.wild.test"], denyOut: [] });
    assert.deepEqual(await resolveFrom(sb, ["two.example.test", "wild.test", "a.wild.test"]), [[], [], [WEB_B]]);
    // WEB_B became reachable through the allowed name's answer only
    assert.deepEqual(await fetchFrom(sb, [`http://${WEB_A}/`, "http://b.c.wild.test/", `http://${WEB_B}/`]), [`hello from ${WEB_A}`, `hello from ${WEB_B}`, `hello from ${WEB_B}`]);

    const other = await pool.create({ allowOut: [`${WEB_A}/32`] });
    assert.deepEqual(await fetchFrom(other, [`http://${WEB_B}/`, "http://two.example.test/"]), ["ERR ConnectionRefusedError", "ERR gaierror"]);
  });

  test("denyOut: the listed CIDRs and names are refused, the rest is reached", async () => {
    const sb = await pool.create({ denyOut: [WEB_B, "*.example.test"] });
    assert.deepEqual(sb.network, { outbound: "denylist", allowOut: [], denyOut: [`${WEB_B}/32`, "*.example.test"] });
    assert.deepEqual(await resolveFrom(sb, ["one.example.test", "wild.test"]), [[], [WEB_A]]);
    assert.deepEqual(await fetchFrom(sb, [`http://${WEB_A}/`, `http://${WEB_B}/`]), [`hello from ${WEB_A}`, "ERR ConnectionRefusedError"]);
  });

  test("a change at run time cuts an open connection it no longer allows and lets a newly allowed one through", async () => {
    const sb = await pool.create({ allowOut: [WEB_A] });
    assert.deepEqual(await fetchFrom(sb, [`http://${WEB_B}/`]), ["ERR ConnectionRefusedError"]);
    // a connection to WEB_A:9000 (echo) that stays open across the change
    await sb
      .exec(
        `cat > /tmp/hold.py <<'SAIL_EOF'
import socket, time
s = socket.create_connection(("${WEB_A}", 9000), timeout=5)
s.sendall(b"one"); print("before", s.recv(10).decode(), flush=True)
while True:
    time.sleep(0.2)
    try:
        s.sendall(b"x"); s.recv(10)
    except OSError as e:
        print("cut", type(e).__name__, flush=True); break
SAIL_EOF
python3 /tmp/hold.py > /tmp/hold.log 2>&1`,
        { background: true },
      )
      .wait();
    await waitFor(async () => (await sb.exec("cat /tmp/hold.log").output()).stdout.includes("before one"));
    const info = await sb.setNetwork({ allowOut: [WEB_B] });
    assert.deepEqual(info, { outbound: "allowlist", allowOut: [`${WEB_B}/32`], denyOut: [] });
    await waitFor(async () => /cut (ConnectionResetError|BrokenPipeError)/.test((await sb.exec("cat /tmp/hold.log").output()).stdout));
    assert.deepEqual(await fetchFrom(sb, [`http://${WEB_B}/`, `http://${WEB_A}/`]), [`hello from ${WEB_B}`, "ERR ConnectionRefusedError"]);
    // the change is kept: the API and the CLI show it
    assert.deepEqual((await Sailbox.fromId(sb.id, { client: daemon.client() })).network, info);
    const shown = await runCli(daemon, ["box", "network", sb.id]);
    assert.match(shown.stdout, new RegExp(`outbound: only ${WEB_B.replace(/\./g, "\\.")}/32`));
  });

  test("in every mode the host (API, metrics, gateway, any listener), other boxes and 169.254.169.254 stay unreachable", async () => {
    const target = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(target, 3000);
    await target.listener(3000).wait({ timeout: 30 });
    const guestB = (await target.exec("ip -4 -o addr show eth0").output()).stdout.split(/\s+/)[3]!.split("/")[0]!;
    const sb = await pool.create({});
    const hostAddress = (await sb.exec("ip route show default").output()).stdout.split(/\s+/)[2]!;
    const targets: Array<[string, number]> = [
      [hostAddress, API_PORT],
      [hostAddress, METRICS_PORT],
      [hostAddress, HTTPS_PORT],
      [hostAddress, hostPort],
      [HOST_SIDE, hostPort],
      [guestB, 3000],
      ["169.254.169.254", 80],
      ["10.0.0.1", 80],
      ["192.168.1.1", 80],
    ];
    for (const policy of [{}, { allowOut: ["0.0.0.0/0"] }, { denyOut: [WEB_B] }, { blockNetwork: true }]) {
      await sb.setNetwork(policy);
      const results = await connectFrom(sb, targets);
      results.forEach((r, i) => assert.notEqual(r, "open", `${JSON.stringify(policy)}: ${targets[i]!.join(":")} must be unreachable`));
    }
    // while the fake internet is reachable in the open modes
    await sb.setNetwork({});
    assert.deepEqual(await connectFrom(sb, [[WEB_A, 80]]), ["open"]);
  });

  test("a server bound to 127.0.0.1 is published: through its HTTP listener and its TCP listener, and wait() succeeds", async () => {
    const sb = await pool.create({ ingressPorts: [3000, new IngressPort(4000, "tcp", { cidrAllowlist: ["127.0.0.0/8"] })] });
    await startGuestServer(sb, 3000, "127.0.0.1");
    await sb
      .exec("python3 -c \"import socket; s=socket.socket(); s.bind(('127.0.0.1', 4000)); s.listen()\nwhile True:\n c,_=s.accept(); c.sendall(b'local tcp\\n'); c.close()\"", {
        background: true,
      })
      .wait();
    const http = await sb.listener(3000).wait({ timeout: 30 });
    const tcp = await sb.listener(4000).wait({ timeout: 30 });
    const agent = gatewayAgent(await daemon.caCert());
    try {
      const res = await fetch(`${http.endpoint.url}/headers`, { dispatcher: agent });
      assert.equal(res.status, 200);
    } finally {
      await agent.close();
    }
    const { connect } = await import("node:net");
    const got = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: "127.0.0.1", port: tcp.endpoint.port });
      let text = "";
      socket
        .on("data", (d) => (text += d))
        .on("end", () => resolve(text))
        .on("error", reject);
    });
    assert.equal(got, "local tcp\n");
  });

  test("refused attempts are counted per box and logged with the destination; bytes out are counted", async () => {
    const sb = await pool.create({ denyOut: [WEB_B] });
    assert.deepEqual(await fetchFrom(sb, [`http://${WEB_A}/bytes/100000`]), ["x".repeat(100_000)]);
    await connectFrom(sb, [[WEB_B, 9000]]);
    const metrics = async () => (await fetch(`http://127.0.0.1:${METRICS_PORT}/metrics`)).text();
    const value = (text: string, name: string) => Number(new RegExp(`^${name}\\{sailbox="${sb.id}"\\} (\\d+)`, "m").exec(text)?.[1] ?? 0);
    const text = await metrics();
    assert.ok(value(text, "sail_outbound_refused_total") >= 1, "the refused connect is counted");
    assert.ok(value(text, "sail_outbound_bytes_total") > 0, "bytes out are counted");
    assert.match(text, /sail_dns_queries_total\{result="forwarded"\} \d+/);
    await waitFor(async () => daemon.log.includes(`"destination":"${WEB_B}:9000"`) && daemon.log.includes(sb.id));
  });

  test("bad policies are refused with their code and change nothing", async () => {
    const app = await pool.app("egress-rules");
    const before = (await Sailbox.list({ app })).length;
    const refused = async (options: Parameters<typeof pool.create>[0], code: string, message: RegExp) =>
      assert.rejects(pool.create({ app, ...options }), (e: SailError) => e instanceof InvalidArgumentError && e.code === code && message.test(e.message), code);
    await refused({ allowOut: ["not a host!"] }, "SAIL_NETWORK_ENTRY_INVALID", /"not a host!"/);
    await refused({ allowOut: ["2001:db8::/32"] }, "SAIL_NETWORK_ENTRY_INVALID", /IPv4 only/);
    await refused({ allowOut: ["10.1.0.0/16"] }, "SAIL_NETWORK_ENTRY_REFUSED", /never reach.*--outbound-private/);
    await refused({ allowOut: ["192.0.2.0/24"] }, "SAIL_NETWORK_ENTRY_REFUSED", /only 198\.51\.100\.0\/25/);
    await refused({ blockNetwork: true, allowOut: [WEB_A] }, "SAIL_NETWORK_POLICY_CONFLICT", /blockNetwork and allowOut/);
    // the server says the same to a client that skips the SDK's checks
    const raw = daemon.client();
    await assert.rejects(raw.request("POST", "/v1/sailboxes", { appId: app.id, image: { name: "debian" }, denyOut: "x" }), (e: SailError) => e.code === "SAIL_NETWORK_ENTRY_INVALID");
    assert.equal((await Sailbox.list({ app })).length, before, "nothing was created");

    const sb = await pool.create({ app, allowOut: [WEB_A] });
    await assert.rejects(sb.setNetwork({ allowOut: ["*.*.bad"] }), (e: SailError) => e.code === "SAIL_NETWORK_ENTRY_INVALID");
    await assert.rejects(raw.request("PUT", `/v1/sailboxes/${sb.id}/network`, { allowOut: [WEB_A], extra: 1 }), (e: SailError) => e.code === "SAIL_UNKNOWN_FIELD");
    assert.deepEqual((await Sailbox.fromId(sb.id, { client: raw })).network.allowOut, [`${WEB_A}/32`], "the policy is unchanged");
  });

  test("the CLI: create --allow-out / --block-network prints the policy, ls shows it, box network changes it", async () => {
    const created = await runCli(daemon, ["box", "create", "--app", "egress-cli", "--allow-out", "*.example.test", "--json"]);
    assert.equal(created.code, 0, created.stderr);
    const box = JSON.parse(created.stdout) as { id: string; network: { outbound: string; allowOut: string[] } };
    pool.adopt(box.id);
    assert.deepEqual(box.network, { outbound: "allowlist", allowOut: ["*.example.test"], denyOut: [] });
    const ls = await runCli(daemon, ["box", "ls", "--app", "egress-cli"]);
    assert.match(ls.stdout, /NETWORK/);
    assert.match(ls.stdout, new RegExp(`${box.id}.*allow 1`));
    const blocked = await runCli(daemon, ["box", "network", box.id, "--block"]);
    assert.equal(blocked.code, 0, blocked.stderr);
    assert.match(blocked.stdout, /outbound: blocked/);
    const bad = await runCli(daemon, ["box", "network", box.id, "--allow-out", "::1"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /SAIL_NETWORK_ENTRY_INVALID/);
  });
});

const waitFor = (check: () => Promise<boolean>, what = "the condition") => eventually(what, check, { intervalMs: 200 });
