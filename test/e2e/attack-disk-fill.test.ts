/**
 * Adversarial: a guest tries to fill the host's disk (issue 26, items 3 and 4). Each box has
 * its own filesystem of the size its create asked for (or the daemon's --box-disk), so the
 * kernel refuses bytes and files past it, `df` in the box tells the truth, and the host holds
 * at most the limit. Terminating a box that wrote 250k files answers at once, and the API
 * keeps answering while its disk is removed in the background.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { InvalidArgumentError, LimitExceededError, Sailbox, type SailError } from "@sail/sdk";
import { DATA_DIR, leftoversOnceRemoved, loopDevices, METRICS_PORT, REPO, runCli, runProcess, useTestDaemon } from "./harness.js";

const MiB = 1024 * 1024;
/** The daemon's default for boxes that do not say: small, so filling one is quick. */
const DEFAULT_DISK_MIB = 300;
const { daemon, pool } = useTestDaemon({ upArgs: ["--box-disk", String(DEFAULT_DISK_MIB)] });

/** What `df` in the box says of `/`: total bytes and inodes. */
async function dfRoot(sb: Sailbox): Promise<{ bytes: number; inodes: number }> {
  const out = await sb.exec("df -B1 --output=size,itotal / | tail -1").output();
  const [bytes, inodes] = out.stdout.trim().split(/\s+/).map(Number);
  return { bytes: bytes!, inodes: inodes! };
}

/**
 * Bytes the box's directory takes on the host's own filesystem: its disk image, not what is
 * mounted in it. `du -x` alone is not enough: the idmapped bind of the shared image (`lower`) is
 * on the host's own filesystem too, so every mount point under the directory is left out by name.
 */
function hostBytesOf(id: string): number {
  const dir = join(DATA_DIR, "boxes", id);
  const mountPoints = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((point): point is string => point !== undefined && point.startsWith(`${dir}/`));
  assert.ok(mountPoints.includes(`${dir}/lower`), `the box's image is mounted at ${dir}/lower`);
  const excluded = mountPoints.map((point) => `--exclude=${point}`);
  return Number(execFileSync("du", ["-sx", "--block-size=1", ...excluded, dir], { encoding: "utf8" }).split("\t")[0]);
}

/**
 * The longest the daemon's event loop was blocked since the last scrape, in ms: prom-client's
 * `nodejs_eventloop_lag_max_seconds` (perf_hooks.monitorEventLoopDelay, reset at each scrape).
 */
async function eventLoopLagMaxMs(): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${METRICS_PORT}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("sail_daemon_nodejs_eventloop_lag_max_seconds "));
  assert.ok(line, "the daemon reports its event loop lag");
  return Number(line.split(" ")[1]) * 1000;
}

/** Every mount and loop device of the daemon's data dir. */
function dataDirMounts(): string[] {
  const mounts = readFileSync("/proc/mounts", "utf8")
    .split("\n")
    .filter((line) => line.includes(`${DATA_DIR}/`));
  const loops = loopDevices()
    .filter(([, file]) => file.startsWith(`${DATA_DIR}/`))
    .map(([device, file]) => `${device} ${file}`);
  return [...mounts, ...loops];
}

describe("attack: a guest fills the host's disk", () => {
  test("a box cannot write past its disk: fallocate and dd get ENOSPC, the host holds at most the limit, another box writes on", async () => {
    const sb = await pool.create({ disk: 128 });
    const neighbour = await pool.create({});

    const fallocate = await sb.exec("fallocate -l 3G /root/huge").output();
    assert.notEqual(fallocate.exitCode, 0, "a 3 GiB file does not fit a 128 MiB disk");
    assert.match(fallocate.stderr, /No space left on device/);
    // ext4 keeps what fallocate could allocate, past the file's end: the file goes, the room comes back
    const dd = await sb.exec("rm /root/huge && dd if=/dev/zero of=/root/fill bs=1M count=1024").output();
    assert.notEqual(dd.exitCode, 0);
    assert.match(dd.stderr, /No space left on device/);
    const written = Number((await sb.exec("stat -c %s /root/fill").output()).stdout);
    assert.ok(written > 64 * MiB && written <= 128 * MiB, `dd wrote ${written} bytes before the disk was full`);

    // the host's disk holds the box's image, never more than its size; the guest asked for 4 GiB
    const hostBytes = hostBytesOf(sb.id);
    assert.ok(hostBytes <= 129 * MiB, `the box takes ${hostBytes} bytes of the host's disk`);
    assert.equal(sb.describe().diskMiB, 128);

    // df in the box shows its own disk (less ext4's bookkeeping), not the host's
    const df = await dfRoot(sb);
    assert.ok(df.bytes <= 128 * MiB && df.bytes > 0.9 * 128 * MiB, `df / in the box says ${df.bytes} bytes`);
    assert.equal(df.inodes, sb.describe().diskInodes);

    // a full disk is the box's own: the daemon and the box still answer, and the neighbour writes
    assert.equal((await sb.exec("echo still here").output()).stdout, "still here\n");
    const neighbourWrite = await neighbour.exec("dd if=/dev/zero of=/root/data bs=1M count=64 && sync").output();
    assert.equal(neighbourWrite.exitCode, 0, neighbourWrite.stderr);
  });

  test("a box cannot create files past its inodes: ENOSPC, and df -i in the box shows the limit; a background exec is SAIL_DISK_FULL", async () => {
    const sb = await pool.create({ disk: 128 });
    const flood = await sb
      .exec(
        `python3 -c "
import os
os.makedirs('/root/many')
n = 0
try:
    while n < 400000:
        os.close(os.open('/root/many/%d' % n, os.O_CREAT | os.O_WRONLY))
        n += 1
    print(n, 0)
except OSError as e:
    print(n, e.errno)
"`,
      )
      .output();
    const [count, errno] = flood.stdout.trim().split(" ").map(Number);
    assert.ok(errno === 28 || errno === 122, `creating files ends in ENOSPC or EDQUOT: ${JSON.stringify(flood).slice(0, 300)}`);
    const inodes = sb.describe().diskInodes!;
    assert.ok(inodes > 1000 && inodes < 100_000, `a 128 MiB disk has ${inodes} inodes`);
    assert.ok(count! < inodes && count! > inodes - 200, `${count} files of ${inodes} inodes`);
    assert.equal((await dfRoot(sb)).inodes, inodes);

    // Sail's own write into the box (the exec's log) is refused as the box's limit, typed
    await assert.rejects(
      sb.exec("echo hi", { background: true }).wait(),
      (e: SailError) => e instanceof LimitExceededError && e.code === "SAIL_DISK_FULL" && e.status === 507 && e.message.includes(sb.id),
    );
    assert.equal((await sb.exec("echo still here").output()).stdout, "still here\n", "a foreground exec needs no room on the disk");
  });

  test("a box without `disk` gets the daemon's --box-disk, and df in the box shows it", async () => {
    const sb = await pool.create({});
    assert.equal(sb.describe().diskMiB, DEFAULT_DISK_MIB);
    const df = await dfRoot(sb);
    assert.ok(df.bytes <= DEFAULT_DISK_MIB * MiB && df.bytes > 0.9 * DEFAULT_DISK_MIB * MiB, `df / in the box says ${df.bytes} bytes`);
    assert.equal(df.inodes, sb.describe().diskInodes);
  });

  test("an invalid disk size is a typed refusal from the TypeScript SDK, the API, the Python SDK and the CLI, and creates nothing", async () => {
    const app = await pool.app("attack-disk");
    const before = (await Sailbox.list({ app })).length;
    for (const disk of [10, 63, 1048577, 100.5]) {
      await assert.rejects(Sailbox.create({ app, disk }), (e: SailError) => e instanceof InvalidArgumentError && e.code === "SAIL_RESOURCES_INVALID" && /disk/.test(e.message), `disk ${disk}`);
    }
    // past the SDK's own check: the server refuses the same
    for (const diskMiB of [0, 2 ** 40, "1024", -5]) {
      await assert.rejects(
        daemon.client().request("POST", "/v1/sailboxes", { appId: app.id, image: { name: "debian" }, diskMiB }),
        (e: SailError) => e.code === "SAIL_RESOURCES_INVALID" && e.details.field === "disk",
        `diskMiB ${JSON.stringify(diskMiB)}`,
      );
    }
    const python = await runProcess(
      "/usr/bin/python3",
      [
        "-c",
        "import sail\napp = sail.App.find(name='attack-disk', mint_if_missing=True)\ntry:\n    sail.Sailbox.create(app, disk=10)\nexcept sail.InvalidArgumentError as e:\n    print(e.code, e.message)",
      ],
      { ...daemon.env, PYTHONPATH: join(REPO, "sdks/python") },
    );
    assert.match(python.stdout, /^SAIL_RESOURCES_INVALID disk must be/, python.stderr);
    const cli = await runCli(daemon, ["box", "create", "--app", "attack-disk", "--disk", "10"]);
    assert.notEqual(cli.code, 0);
    assert.match(cli.stderr, /SAIL_RESOURCES_INVALID: disk must be a whole number of MiB between 64 and 1048576/);
    assert.equal((await Sailbox.list({ app })).length, before);
  });

  test("terminating a box that wrote 250k files answers at once, the API keeps answering, and its disk goes in the background", async (t) => {
    const sb = await pool.create({ disk: 8192 });
    const empty = await pool.create({ disk: 8192 });
    const made = await sb
      .exec(
        `python3 -c "
import os
for d in range(250):
    os.makedirs('/root/files/%d' % d)
    for f in range(1000):
        os.close(os.open('/root/files/%d/%d' % (d, f), os.O_CREAT | os.O_WRONLY))
print('made')
"`,
      )
      .output();
    assert.equal(made.stdout, "made\n", made.stderr);

    // one request after another while the box is terminated and its directory removed
    const { apiUrl, token } = daemon.credentials();
    await eventLoopLagMaxMs(); // from here on
    const latenciesMs: number[] = [];
    const failures: string[] = [];
    let probing = true;
    const prober = (async () => {
      while (probing) {
        const started = performance.now();
        try {
          const answer = await fetch(`${apiUrl}/v1/sailboxes/${empty.id}`, { headers: { authorization: `Bearer ${token}` } });
          await answer.arrayBuffer();
          if (answer.status !== 200) failures.push(`status ${answer.status}`);
        } catch (err) {
          failures.push(String((err as Error).cause ?? err));
        }
        latenciesMs.push(performance.now() - started);
      }
    })();
    const terminateStarted = performance.now();
    await sb.terminate();
    const terminateMs = performance.now() - terminateStarted;
    const leftovers = await leftoversOnceRemoved(sb.id);
    const removedMs = performance.now() - terminateStarted;
    probing = false;
    await prober;
    const loopBlockedMs = await eventLoopLagMaxMs();

    const emptyStarted = performance.now();
    await empty.terminate();
    const emptyTerminateMs = performance.now() - emptyStarted;
    const worstMs = Math.max(...latenciesMs);
    t.diagnostic(
      `terminate: ${terminateMs.toFixed(0)} ms with 250k files, ${emptyTerminateMs.toFixed(0)} ms empty; gone after ${removedMs.toFixed(0)} ms; ` +
        `API during it: ${latenciesMs.length} requests, worst ${worstMs.toFixed(0)} ms; the daemon's event loop blocked at most ${loopBlockedMs.toFixed(0)} ms`,
    );
    assert.deepEqual(leftovers, [], "the box's directory, disk and mounts are gone");
    // the audit saw the API stall 3.7 s (rmSync of 400k files on the event loop; 250k took 5.7 s
    // here on a busy machine): generously below that, on a machine other tests load too
    assert.ok(loopBlockedMs < 1500, `the daemon's event loop was blocked ${loopBlockedMs.toFixed(0)} ms while the box went`);
    assert.ok(worstMs < 1500, `the API answered within ${worstMs.toFixed(0)} ms while the box went`);
    assert.deepEqual(failures, [], "every request during it was answered");
  });

  test("stopping the daemon with no box left leaves no mount and no loop device of its data dir", async () => {
    await pool.terminateAll();
    await daemon.stop();
    try {
      assert.deepEqual(dataDirMounts(), []);
    } finally {
      await daemon.start();
    }
  });
});
