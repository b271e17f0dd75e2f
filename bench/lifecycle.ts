/**
 * Lifecycle: create→running and exec round trip through Sail, each next to the raw
 * runtime call it wraps (`crun run --detach`, `crun exec`) in the same run.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, existsSync, writeFileSync, rmSync, openSync, closeSync } from "node:fs";
import { join } from "node:path";
import { Image, Sailbox } from "@sail/sdk";
import { Crun } from "../packages/server/src/runtime/crun.js";
import { ociConfig } from "../packages/server/src/runtime/oci.js";
import { mountSysfs, unmount } from "../packages/server/src/runtime/mounts.js";
import { idRange, MAX_ID_RANGES, mountIdmappedLower, prepareUpper } from "../packages/server/src/runtime/userns.js";
import { BoxPool, DATA_DIR, TestDaemon } from "../test/e2e/harness.js";
import { printRows, summary, timeMs } from "./stats.js";

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 20);
const CRUN_ROOT = "/run/sail/crun";

function baseRootfs(): string {
  const dir = join(DATA_DIR, "images");
  const image = readdirSync(dir).find((d) => existsSync(join(dir, d, "complete")));
  if (!image) throw new Error(`no base image under ${dir}: run the tests or \`sail up\` once`);
  return join(dir, image, "rootfs");
}

/** A bundle like a box's (overlay rootfs on an idmapped lower, netns and its sysfs), prepared outside the timed part; in an id range no box of the daemon has. */
function rawBundle(id: string) {
  const dir = join("/tmp", `sail-bench-${id}`);
  const ids = idRange(MAX_ID_RANGES - 1);
  for (const sub of ["work", "rootfs"]) mkdirSync(join(dir, sub), { recursive: true });
  prepareUpper(join(dir, "upper"), baseRootfs(), ids);
  mountIdmappedLower(baseRootfs(), join(dir, "lower"), ids);
  execFileSync("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${dir}/lower,upperdir=${dir}/upper,workdir=${dir}/work`, join(dir, "rootfs")]);
  execFileSync("ip", ["netns", "add", `sail-${id}`]);
  mkdirSync(join(dir, "sys"));
  mountSysfs(`/run/netns/sail-${id}`, join(dir, "sys"));
  const spec = { id, hostname: id, arch: "amd64" as const, aptPackages: [], cpu: 1, memoryMiB: 1024, diskMiB: 10240, pidsLimit: 1024, netSlot: 0, outbound: { mode: "blocked" as const, cidrs: [] } };
  const options = { rootfs: join(dir, "rootfs"), netnsPath: `/run/netns/sail-${id}`, sysfs: join(dir, "sys"), nofile: 20000, hostArch: spec.arch, ids };
  writeFileSync(join(dir, "config.json"), JSON.stringify(ociConfig(spec, options)));
  return {
    dir,
    cleanup() {
      try {
        execFileSync("crun", ["--root", CRUN_ROOT, "delete", "--force", id], { stdio: "ignore" });
      } catch {
        /* not created */
      }
      for (const mount of ["rootfs", "lower", "sys"]) unmount(join(dir, mount));
      execFileSync("ip", ["netns", "del", `sail-${id}`]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function lifecycle(): Promise<void> {
  const daemon = new TestDaemon();
  const pool = new BoxPool(daemon);
  await daemon.start();
  try {
    const app = await pool.app("bench");
    const crun = new Crun(CRUN_ROOT);

    const create: number[] = [];
    const rawRun: number[] = [];
    for (let i = 0; i < ITERATIONS; i++) {
      let sb: Sailbox | undefined;
      create.push(await timeMs(async () => (sb = await Sailbox.create({ app, image: Image.debian }))));
      await sb!.terminate();

      const id = `sb-bench${String(i).padStart(4, "0")}`;
      const bundle = rawBundle(id);
      const log = openSync(join(bundle.dir, "console.log"), "a");
      try {
        rawRun.push(await timeMs(() => crun.run(id, bundle.dir, log)));
      } finally {
        closeSync(log);
        bundle.cleanup();
      }
    }

    const sb = await pool.create({ app });
    const exec: number[] = [];
    const rawExec: number[] = [];
    for (let i = 0; i < ITERATIONS * 5; i++) {
      exec.push(await timeMs(() => sb.exec("true").wait()));
      rawExec.push(await timeMs(async () => execFileSync("crun", ["--root", CRUN_ROOT, "exec", sb.id, "true"])));
    }
    await pool.terminateAll();

    const rows = [
      summary("create → running (Sail SDK)", create),
      summary("crun run --detach (raw)", rawRun),
      summary("exec `true` round trip (Sail SDK)", exec),
      summary("crun exec true (raw)", rawExec),
    ];
    printRows(rows);
    const [c, r, e, x] = rows as [(typeof rows)[0], (typeof rows)[0], (typeof rows)[0], (typeof rows)[0]];
    console.log(`\ncreate p50 ratio Sail ÷ crun run: ${(c.p50 / r.p50).toFixed(2)}x   (goal: create ≤ 100 ms p50; it is ${c.p50.toFixed(1)} ms)`);
    console.log(`exec   p50 ratio Sail ÷ crun exec: ${(e.p50 / x.p50).toFixed(2)}x   (goal ≤ 2x)`);
  } finally {
    await pool.terminateAll();
    await daemon.dispose();
  }
}
