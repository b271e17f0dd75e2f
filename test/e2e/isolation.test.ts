import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { connect, createServer, type AddressInfo, type Server } from "node:net";
import { describe, test } from "node:test";
import { fetch, type Agent } from "undici";
import type { Sailbox } from "@sail/sdk";
import { BOX_CAPABILITIES } from "../../packages/server/src/runtime/oci.js";
import { eventually, API_PORT, gatewayAgent, leftoversOnceRemoved, startGuestServer, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon({
  setup: async (daemon) => {
    agent = gatewayAgent(await daemon.caCert());
  },
  teardown: () => agent?.close(),
});
let agent: Agent;

/** Linux capability numbers (linux/capability.h). */
const CAPABILITY_NUMBERS: Record<string, number> = {
  CAP_CHOWN: 0,
  CAP_DAC_OVERRIDE: 1,
  CAP_DAC_READ_SEARCH: 2,
  CAP_FOWNER: 3,
  CAP_FSETID: 4,
  CAP_KILL: 5,
  CAP_SETGID: 6,
  CAP_SETUID: 7,
  CAP_SETPCAP: 8,
  CAP_LINUX_IMMUTABLE: 9,
  CAP_NET_BIND_SERVICE: 10,
  CAP_NET_BROADCAST: 11,
  CAP_NET_ADMIN: 12,
  CAP_NET_RAW: 13,
  CAP_IPC_LOCK: 14,
  CAP_IPC_OWNER: 15,
  CAP_SYS_MODULE: 16,
  CAP_SYS_RAWIO: 17,
  CAP_SYS_CHROOT: 18,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_PACCT: 20,
  CAP_SYS_ADMIN: 21,
  CAP_SYS_BOOT: 22,
  CAP_SYS_NICE: 23,
  CAP_SYS_RESOURCE: 24,
  CAP_SYS_TIME: 25,
  CAP_SYS_TTY_CONFIG: 26,
  CAP_MKNOD: 27,
  CAP_LEASE: 28,
  CAP_AUDIT_WRITE: 29,
  CAP_AUDIT_CONTROL: 30,
  CAP_SETFCAP: 31,
};

async function sh(sb: Sailbox, cmd: string): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  return sb.exec(cmd).output();
}

/** From inside the box: curl's exit code for a connection attempt (0 means it connected and got an answer). */
async function curlFrom(sb: Sailbox, url: string): Promise<number> {
  return (await sh(sb, `curl -s -g -m 3 -o /dev/null ${url}`)).exitCode;
}

/**
 * Docker's default masked paths (moby daemon/pkg/oci/defaults.go, 2026): written out here, not
 * imported, so the test says what a box must hide whatever the runtime's list says.
 */
const DOCKER_MASKED_PATHS = [
  "/proc/acpi",
  "/proc/asound",
  "/proc/interrupts",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/sched_debug",
  "/proc/scsi",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/sys/devices/virtual/powercap",
  "/sys/firmware",
];

/** The host's view of a box's init process: its pid (from crun) and its user namespace's uid_map lines. */
function boxInit(id: string): { pid: number; uidMap: Array<{ inside: number; outside: number; count: number }> } {
  const { pid } = JSON.parse(execFileSync("crun", ["--root", "/run/sail/crun", "state", id], { encoding: "utf8" })) as { pid: number };
  const uidMap = readFileSync(`/proc/${pid}/uid_map`, "utf8")
    .trim()
    .split("\n")
    .map((line) => {
      const [inside, outside, count] = line.trim().split(/\s+/).map(Number) as [number, number, number];
      return { inside, outside, count };
    });
  return { pid, uidMap };
}

/** Host users and groups by id (/etc/passwd, /etc/group). */
function hostIds(file: string): Set<number> {
  return new Set(
    readFileSync(file, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((line) => Number(line.split(":")[2])),
  );
}

async function guestAddress(sb: Sailbox): Promise<string> {
  return (await sh(sb, "ip -4 -o addr show eth0")).stdout.split(/\s+/)[3]!.split("/")[0]!;
}

/** Resolves once something accepts on host:port (servers started in the background need a moment). */
async function waitForPort(host: string, port: number): Promise<boolean> {
  return eventually(
    `something accepts on ${host}:${port}`,
    () =>
      new Promise<boolean>((resolve) => {
        const s = connect({ host, port }, () => (s.destroy(), resolve(true)));
        s.on("error", () => resolve(false));
      }),
  );
}

/** A host service on every address (0.0.0.0 and [::]) that counts who reached it. */
async function hostService(): Promise<{ server: Server; port: number; accepted: () => number }> {
  let count = 0;
  const server = createServer((s) => {
    s.on("error", () => {}); // probes close at once
    count++;
    s.end("HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nhost");
  });
  server.listen(0, "::");
  await once(server, "listening");
  return { server, port: (server.address() as AddressInfo).port, accepted: () => count };
}

describe("isolation", () => {
  test("a box cannot open connections to the host (IPv4, IPv6 link-local, the daemon API) nor to another box; the host still reaches boxes", async () => {
    const [a, b] = await Promise.all([pool.create({}), pool.create({})]);
    await startGuestServer(b, 8080);
    const [addressA, addressB] = await Promise.all([guestAddress(a), guestAddress(b)]);
    const hostAddress = addressA.replace(/\d+$/, (last) => String(Number(last) - 1)); // the /30's host side
    const veth = `sv${a.id.replace(/^sb-/, "")}`.slice(0, 15);
    const linkLocal = execFileSync("ip", ["-6", "-o", "addr", "show", "dev", veth, "scope", "link"], { encoding: "utf8" }).split(/\s+/)[3]!.split("/")[0]!;
    const service = await hostService();
    try {
      // controls: the host reaches its own service and box B's server; box A reaches its own loopback
      await new Promise<void>((resolve, reject) => {
        const s = connect({ host: "127.0.0.1", port: service.port }, () => (s.destroy(), resolve()));
        s.on("error", reject);
      });
      assert.equal(await waitForPort(addressB, 8080), true, "the host reaches box B's server");
      await startGuestServer(a, 8081, "127.0.0.1");
      assert.equal((await sh(a, "for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8081/headers && exit 0; sleep 0.1; done; exit 1")).exitCode, 0, "box A reaches its own loopback");
      const before = service.accepted();

      assert.notEqual(await curlFrom(a, `http://${hostAddress}:${service.port}/`), 0, "host service over the veth (IPv4)");
      assert.notEqual(await curlFrom(a, `http://[${linkLocal}%eth0]:${service.port}/`), 0, "host service over the veth (IPv6 link-local)");
      assert.notEqual(await curlFrom(a, `http://${hostAddress}:${API_PORT}/v1/apps`), 0, "the daemon API");
      assert.notEqual(await curlFrom(a, `http://127.0.0.1:${API_PORT}/v1/apps`), 0, "the daemon API as if on the box's loopback");
      assert.notEqual(await curlFrom(a, `http://${addressB}:8080/`), 0, "another box's port");
      assert.equal(service.accepted(), before, "nothing from the box reached the host service");
    } finally {
      service.server.close();
    }
  });

  test("a box sees only its own processes and files", async () => {
    const [a, b] = await Promise.all([pool.create({}), pool.create({})]);
    await b.exec("sleep 4242", { background: true }).wait();
    const marker = `/tmp/sail-isolation-${randomBytes(6).toString("hex")}`;
    writeFileSync(marker, "host file");
    try {
      const psA = (await sh(a, "ps -e -o pid=,comm=,args=")).stdout;
      const psB = (await sh(b, "ps -e -o args=")).stdout;
      assert.match(psB, /sleep 4242/, "control: box B sees its own process");
      assert.doesNotMatch(psA, /sleep 4242/);
      assert.doesNotMatch(psA, /node|crun|sail up/, "no host or daemon process is visible");
      assert.match(psA, /^\s*1 tini/m, "PID 1 is the box's own init");
      const files = await sh(a, `test -e ${marker}; echo $?; test -e /var/lib/sail-test; echo $?; ls /run/netns 2>/dev/null | wc -l`);
      assert.deepEqual(files.stdout.trim().split("\n"), ["1", "1", "0"]);
      // its /sys is its network namespace's: no other box's veth (nor its byte counters), no host interface
      assert.deepEqual((await sh(a, "ls /sys/class/net")).stdout.trim().split(/\s+/).sort(), ["eth0", "lo"]);
    } finally {
      rmSync(marker, { force: true });
    }
  });

  test("a box runs with the documented capabilities and seccomp filter: no mounts, namespaces, raw sockets or network changes", async () => {
    const sb = await pool.create({});
    const status = (await sh(sb, "grep -E '^(CapEff|CapBnd|Seccomp):' /proc/self/status")).stdout;
    const field = (name: string) => /^\w+:\s+(\S+)/.exec(status.split("\n").find((l) => l.startsWith(name))!)![1]!;
    const expected = BOX_CAPABILITIES.reduce((mask, cap) => mask | (1n << BigInt(CAPABILITY_NUMBERS[cap]!)), 0n);
    assert.equal(BigInt(`0x${field("CapEff")}`), expected);
    assert.equal(BigInt(`0x${field("CapBnd")}`), expected);
    assert.equal(field("Seccomp"), "2", "a seccomp filter is installed");

    const refused = async (what: string, cmd: string, message: RegExp) => {
      const out = await sh(sb, cmd);
      assert.notEqual(out.exitCode, 0, `${what} must fail`);
      assert.match(out.stdout + out.stderr, message, what);
    };
    // the host allows unprivileged user namespaces; in the box seccomp refuses them
    execFileSync("unshare", ["-U", "true"]);
    await refused("a user namespace", "unshare -U true", /Operation not permitted/);
    await refused("a mount namespace", "unshare -m true", /Operation not permitted/);
    await refused("a mount", "mkdir -p /mnt/x && mount -t tmpfs none /mnt/x", /permission denied|Operation not permitted/i);
    await refused("a raw socket", "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)'", /PermissionError|Operation not permitted/);
    await refused("a network change", "ip link add sail0 type dummy", /Operation not permitted/);
    await refused(
      "a kernel keyring",
      'python3 -c \'import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); r = libc.syscall(250 if os.uname().machine == "x86_64" else 219, 0, 0, 0, 0, 0); print(os.strerror(ctypes.get_errno()) if r == -1 else "allowed"); raise SystemExit(1 if r == -1 else 0)\'',
      /Operation not permitted/,
    );
    await refused("writing /proc/sys", "echo 1 > /proc/sys/kernel/panic", /Read-only file system/);
    await refused("writing /sys", "touch /sys/sail", /Read-only file system/);
    // masked /proc files read as empty in the box (the host's /proc/timer_list is not)
    assert.ok(Number(execFileSync("wc", ["-c", "/proc/timer_list"], { encoding: "utf8" }).split(" ")[0]) > 0);
    assert.equal((await sh(sb, "wc -c < /proc/timer_list")).stdout.trim(), "0");
  });

  test("root in a box is not root on the host: what it writes is owned by an unprivileged uid of the box's own range, disjoint from another box's", async () => {
    const [a, b] = await Promise.all([pool.create({}), pool.create({})]);
    const ranges: Array<{ outside: number; count: number }> = [];
    for (const sb of [a, b]) {
      const inside = await sh(sb, "id -u && echo from-the-box > /root/written-by-root && stat -c %u:%g /root/written-by-root / /etc/passwd");
      assert.deepEqual(inside.stdout.trim().split("\n"), ["0", "0:0", "0:0", "0:0"], "root in the box owns its files and the image's, as far as it can tell");

      const { pid, uidMap } = boxInit(sb.id);
      assert.equal(uidMap.length, 1, `one mapping: ${JSON.stringify(uidMap)}`);
      const [range] = uidMap as [{ inside: number; outside: number; count: number }];
      assert.equal(range.inside, 0);
      assert.equal(range.count, 65536, "ids 0-65535 inside: Debian's system users and nobody");
      assert.notEqual(range.outside, 0, "the box's root is not the host's root");
      ranges.push(range);

      // the host sees the file (through the box's root, wherever its directory is) as the range's first uid
      const written = statSync(`/proc/${pid}/root/root/written-by-root`);
      assert.equal(written.uid, range.outside, "the file the box's root wrote is owned by the box's host uid");
      assert.equal(written.gid, range.outside);
      for (const [file, what] of [
        ["/etc/passwd", "user"],
        ["/etc/group", "group"],
      ] as const) {
        const taken = [...hostIds(file)].filter((id) => id >= range.outside && id < range.outside + range.count);
        assert.deepEqual(taken, [], `no host ${what} has an id of the box's range`);
      }
    }
    const [ra, rb] = ranges as [(typeof ranges)[0], (typeof ranges)[0]];
    assert.ok(ra.outside + ra.count <= rb.outside || rb.outside + rb.count <= ra.outside, `disjoint ranges: ${ra.outside}+${ra.count} and ${rb.outside}+${rb.count}`);

    // servers still bind ports below 1024: the network namespace is not the box's to configure, so it allows them to any uid
    const bound = await sh(a, 'python3 -c \'import socket; s = socket.socket(); s.bind(("0.0.0.0", 80)); print("bound")\'');
    assert.equal(bound.stdout.trim(), "bound", bound.stderr);
  });

  test("the box's capabilities count in its own user namespace only: host-owned files it sees are not its to change", async () => {
    const sb = await pool.create({});
    await sb.exec("true").wait();
    await sb.exec("sleep 1", { background: true }).wait();
    // /dev/null is the host's device node, bound into the box. Starting the box and its commands left it the host root's
    // (crun hands every std stream it gets to the box's root: it must get no device), and both calls below
    // would change nothing on this host (it is root:root 0666 already)
    assert.deepEqual([statSync("/dev/null").uid, statSync("/dev/null").gid, statSync("/dev/null").mode & 0o777], [0, 0, 0o666]);
    for (const cmd of ["chown root:root /dev/null", "chmod 666 /dev/null"]) {
      const out = await sh(sb, cmd);
      assert.notEqual(out.exitCode, 0, `${cmd} must fail`);
      assert.match(out.stderr, /Operation not permitted/, cmd);
    }
    // the control: the box's root does own (and may change) its own files
    assert.equal((await sh(sb, "touch /root/mine && chown nobody:nogroup /root/mine && stat -c %U /root/mine")).stdout.trim(), "nobody");
  });

  test("the paths Docker masks (energy counters, interrupts, kernel internals) read as nothing in a box", async () => {
    const sb = await pool.create({});
    // the control: this host has some of them, with something in them
    assert.ok(readFileSync("/proc/interrupts", "utf8").length > 0, "the host's /proc/interrupts is readable");
    const script = DOCKER_MASKED_PATHS.map(
      (path) => `if [ -d ${path} ]; then echo "${path} $(ls -A ${path} | wc -l)"; elif [ -e ${path} ]; then echo "${path} $(cat ${path} 2>/dev/null | wc -c)"; else echo "${path} absent"; fi`,
    ).join("\n");
    const seen = (await sh(sb, script)).stdout.trim().split("\n");
    for (const line of seen) assert.match(line, / (0|absent)$/, `masked in the box: ${line}`);
    assert.equal(seen.length, DOCKER_MASKED_PATHS.length);
    // RAPL energy counters, wherever the kernel puts them (this host's kernel may have no powercap at all)
    assert.equal((await sh(sb, "cat /sys/class/powercap/*/energy_uj /sys/devices/virtual/powercap/*/*/energy_uj 2>/dev/null | wc -c")).stdout.trim(), "0");
  });

  test("memory and pids limits hold: an OOM and a fork bomb in one box leave the others and the daemon serving", async () => {
    const neighbour = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(neighbour, 3000);
    const url = (await neighbour.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const serving = async () => (await fetch(`${url}/headers`, { dispatcher: agent })).status;
    assert.equal(await serving(), 200);

    const hog = await pool.create({ memory: 128 });
    const oom = await sh(hog, "python3 -c \"b = b'x' * (400 * 1024 * 1024); print('allocated')\"");
    assert.equal(oom.exitCode, 137, "the OOM killer ends the hog");
    assert.doesNotMatch(oom.stdout, /allocated/);
    assert.equal(await serving(), 200);

    const bomb = await pool.create({});
    const forked = sh(
      bomb,
      `python3 -c "
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            null = os.open('/dev/null', os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            time.sleep(120)
            os._exit(0)
        n += 1
except OSError as e:
    print(n, e.errno)
"`,
    );
    // while it forks, the neighbour and the daemon answer
    assert.equal(await serving(), 200);
    const bombed = await forked;
    const [count, errno] = bombed.stdout.trim().split(" ").map(Number);
    assert.equal(errno, 11, `fork fails with EAGAIN at the pids limit: ${JSON.stringify(bombed).slice(0, 500)}`);
    assert.ok(count! > 100 && count! < 1024, `forked ${count} before the limit`);
    assert.equal(await serving(), 200);
    assert.equal((await daemon.client().request<{ apps: unknown[] }>("GET", "/v1/apps")).apps.length > 0, true);
    await bomb.terminate();
    assert.deepEqual(await leftoversOnceRemoved(bomb.id), []);
  });
});
