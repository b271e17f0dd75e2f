/**
 * Lifecycle: create→running and exec round trip through Sail, each next to the raw
 * runtime call it wraps (`crun run --detach`, `crun exec`) in the same run; and the same
 * through Sail's two forms taking turns — one process on SQLite (`sail up`) and the parts
 * apart on PostgreSQL (a control plane and a node agent, docs/architecture.md "The node
 * boundary") — with create throughput and the API's list and get among many live boxes.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, existsSync, writeFileSync, rmSync, openSync, closeSync } from "node:fs";
import { join } from "node:path";
import { App, Image } from "@sail/sdk";
import { Crun } from "../packages/server/src/runtime/crun.js";
import { ociConfig } from "../packages/server/src/runtime/oci.js";
import { mountSysfs, unmount } from "../packages/server/src/runtime/mounts.js";
import { idRange, MAX_ID_RANGES, mountIdmappedLower, prepareUpper } from "../packages/server/src/runtime/userns.js";
import { BoxPool, DATA_DIR, TestDaemon, terminateLeftovers } from "../test/e2e/harness.js";
import type { PostgresServer } from "../test/fixtures/postgres.js";
import { median, percentile, printRows, summary, timeMs } from "./stats.js";

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 20);
/**
 * The two forms take turns this many times, the order swapped each round, so the shared
 * machine's swings hit both; a ratio is the median of the rounds' ratios.
 */
const ROUNDS = Number(process.env.BENCH_LIFECYCLE_ROUNDS ?? 3);
/** Create throughput (issue 22): this many creates, this many at a time. */
const THROUGHPUT_CREATES = 40;
const CREATES_AT_ONCE = 8;
/**
 * Live boxes while list and get are timed (issue 22: 500). A node takes as many as its box
 * subnet has /30s (16,384 in the test's /16) and id ranges (32,767): no flag caps it lower.
 */
const LIST_BOXES = Number(process.env.BENCH_LIST_BOXES ?? 500);
/**
 * PostgreSQL's commits as durable as the one-process store's: SQLite in WAL mode with
 * synchronous = NORMAL syncs its WAL at checkpoints, not at each commit (a power loss may lose
 * the last commits, never corrupts), which is PostgreSQL's fsync = on with synchronous_commit
 * = off. The test fixture runs with fsync off, which no production database does. `on`: each
 * commit waits for its WAL flush (PostgreSQL's default).
 */
const PG_SYNCHRONOUS_COMMIT = process.env.BENCH_PG_SYNCHRONOUS_COMMIT ?? "off";
const CRUN_ROOT = "/run/sail/crun";
const crun = new Crun(CRUN_ROOT);

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

/** The crun calls Sail wraps, timed between Sail's own in both forms' turns. */
interface RawSamples {
  run: number[];
  exec: number[];
}

/** One form's turn: its daemon up, every part timed, every box terminated, its daemon stopped. */
interface Turn {
  create: number[];
  exec: number[];
  createsPerSecond: number;
  list: number[];
  get: number[];
  liveBoxes: number;
}

interface Form {
  name: string;
  /** The rows' label suffix. */
  tag: string;
  daemon: TestDaemon;
  pool: BoxPool;
  turns: Turn[];
}

function form(name: string, tag: string, split: boolean): Form {
  const daemon = new TestDaemon([], split);
  return { name, tag, daemon, pool: new BoxPool(daemon), turns: [] };
}

export async function lifecycle(): Promise<void> {
  // one after the other, never both up: they share the data dir, the API port and the box subnet
  const forms = [form("one process, SQLite", "Sail SDK", false), form("control plane on PostgreSQL + node agent", "split+PG", true)];
  const raw: RawSamples = { run: [], exec: [] };
  let listTarget = LIST_BOXES;
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const f of round % 2 ? [...forms].reverse() : forms) {
        const turn = await takeTurn(f, raw, listTarget);
        f.turns.push(turn);
        listTarget = Math.min(listTarget, turn.liveBoxes);
        const p50 = (samples: number[]) => (samples.length ? percentile(samples, 50).toFixed(1) : "–");
        console.log(
          `round ${round + 1}, ${f.name}: create p50 ${p50(turn.create)} ms, exec p50 ${p50(turn.exec)} ms, ${turn.createsPerSecond.toFixed(1)} creates/s, list p50 ${p50(turn.list)} ms with ${turn.liveBoxes} live`,
        );
      }
    }
  } finally {
    for (const f of forms) {
      await f.pool.terminateAll();
      await f.daemon.dispose();
    }
  }
  report(forms[0]!, forms[1]!, raw);
}

async function takeTurn(f: Form, raw: RawSamples, listTarget: number): Promise<Turn> {
  await f.daemon.start();
  try {
    await terminateLeftovers(f.daemon);
    if (f.daemon.store) await durableAsSqlite(f.daemon.store);
    await trashEmptied();
    const app = await f.pool.app("bench");
    const create = await timeCreates(f.pool, app, raw);
    const exec = await timeExecs(f.pool, app, raw);
    const createsPerSecond = await createThroughput(f.pool, app);
    return { create, exec, createsPerSecond, ...(await timeListAndGet(f, app, listTarget)) };
  } finally {
    await f.pool.terminateAll();
    await f.daemon.stop();
  }
}

/** create → running through the SDK, each next to a bare `crun run --detach` of a prepared bundle. */
async function timeCreates(pool: BoxPool, app: App, raw: RawSamples): Promise<number[]> {
  const create: number[] = [];
  for (let i = 0; i < ITERATIONS; i++) {
    create.push(await timeMs(() => pool.create({ app, image: Image.debian })));
    await pool.terminateAll();

    const id = `sb-bench${String(i).padStart(4, "0")}`;
    const bundle = rawBundle(id);
    const log = openSync(join(bundle.dir, "console.log"), "a");
    try {
      raw.run.push(await timeMs(() => crun.run(id, bundle.dir, log)));
    } finally {
      closeSync(log);
      bundle.cleanup();
    }
  }
  return create;
}

/** `true` through the SDK (HTTP, `crun exec`, NDJSON back), each next to `crun exec` in the same box. */
async function timeExecs(pool: BoxPool, app: App, raw: RawSamples): Promise<number[]> {
  const sb = await pool.create({ app });
  const exec: number[] = [];
  for (let i = 0; i < ITERATIONS * 5; i++) {
    exec.push(await timeMs(() => sb.exec("true").wait()));
    raw.exec.push(await timeMs(async () => execFileSync("crun", ["--root", CRUN_ROOT, "exec", sb.id, "true"])));
  }
  await pool.terminateAll();
  return exec;
}

/** Creates per second, THROUGHPUT_CREATES of them CREATES_AT_ONCE at a time, from the first call to the last answer. */
async function createThroughput(pool: BoxPool, app: App): Promise<number> {
  const elapsedMs = await timeMs(() => inParallel(THROUGHPUT_CREATES, () => pool.create({ app })));
  await pool.terminateAll();
  return THROUGHPUT_CREATES / (elapsedMs / 1000);
}

/**
 * GET /v1/sailboxes and GET /v1/sailboxes/{id} with `target` live boxes (fewer if the daemon
 * refuses more: the count it reached and why are printed). The list asks for live boxes only:
 * the one-process store holds every box earlier runs terminated, the PostgreSQL database is new.
 */
async function timeListAndGet(f: Form, app: App, target: number): Promise<Pick<Turn, "list" | "get" | "liveBoxes">> {
  const filled = await fill(f.pool, app, target);
  const client = f.daemon.client();
  const listPath = "/v1/sailboxes?live=true";
  const ids = (await client.request<{ sailboxes: Array<{ id: string }> }>("GET", listPath)).sailboxes.map((box) => box.id);
  if (ids.length !== filled.live) console.log(`${f.name}: the list shows ${ids.length} live boxes, ${filled.live} were made`);
  const list: number[] = [];
  const get: number[] = [];
  for (let i = 0; ids.length && i < ITERATIONS * 10; i++) {
    list.push(await timeMs(() => client.request("GET", listPath)));
    get.push(await timeMs(() => client.request("GET", `/v1/sailboxes/${ids[i % ids.length]!}`)));
  }
  await f.pool.terminateAll();
  return { list, get, liveBoxes: ids.length };
}

/** Up to `target` live boxes, CREATES_AT_ONCE at a time; on a refusal, what was made and why, with the host's memory then. */
async function fill(pool: BoxPool, app: App, target: number): Promise<{ live: number }> {
  let live = 0;
  const elapsedMs = await timeMs(() =>
    inParallel(target, async () => {
      await pool.create({ app });
      live++;
    }).catch((err: Error & { code?: string }) => console.log(`made ${live} of ${target} boxes, then: ${err.code ?? err.name}: ${err.message}`)),
  );
  console.log(`  ${live} live boxes made in ${(elapsedMs / 1000).toFixed(1)} s; host MemAvailable then ${memAvailableGiB().toFixed(1)} GiB`);
  return { live };
}

/** Runs `work` `count` times, CREATES_AT_ONCE at a time; after a failure starts no more, and throws it once the started ones ended. */
async function inParallel(count: number, work: () => Promise<unknown>): Promise<void> {
  let started = 0;
  let failure: unknown;
  const worker = async () => {
    while (started < count && failure === undefined) {
      started++;
      await work().catch((err: unknown) => (failure ??= err));
    }
  };
  await Promise.all(Array.from({ length: Math.min(CREATES_AT_ONCE, count) }, worker));
  if (failure !== undefined) throw failure;
}

function memAvailableGiB(): number {
  const kib = /^MemAvailable:\s+(\d+) kB$/m.exec(readFileSync("/proc/meminfo", "utf8"))?.[1];
  return Number(kib) / 1024 / 1024;
}

/** fsync and full-page writes on, synchronous_commit as PG_SYNCHRONOUS_COMMIT says; checked once the server reloaded. */
async function durableAsSqlite(server: PostgresServer): Promise<void> {
  const wanted = { fsync: "on", full_page_writes: "on", synchronous_commit: PG_SYNCHRONOUS_COMMIT };
  for (const [name, value] of Object.entries(wanted)) await server.superuserQuery("postgres", `ALTER SYSTEM SET ${name} = '${value}'`);
  await server.superuserQuery("postgres", "SELECT pg_reload_conf()");
  // the postmaster rereads its configuration when its SIGHUP is handled, a moment later
  for (let attempt = 0; attempt < 50; attempt++) {
    const { rows } = await server.superuserQuery("postgres", "SELECT name, setting FROM pg_settings WHERE name = ANY($1)", [Object.keys(wanted)]);
    if (rows.every((row: { name: keyof typeof wanted; setting: string }) => wanted[row.name] === row.setting)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`PostgreSQL did not take ${JSON.stringify(wanted)}`);
}

/** The other form's terminated boxes are removed in the background (the data dir's trash): not on this form's timings. */
async function trashEmptied(): Promise<void> {
  const trash = join(DATA_DIR, "trash");
  const deadline = Date.now() + 60_000;
  while (existsSync(trash) && readdirSync(trash).length && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
}

function report(one: Form, split: Form, raw: RawSamples): void {
  const pooled = (f: Form, key: "create" | "exec" | "list" | "get") => f.turns.flatMap((turn) => turn[key]);
  const rows = [
    summary("create → running (Sail SDK)", pooled(one, "create")),
    summary(`create → running (${split.tag})`, pooled(split, "create")),
    summary("crun run --detach (raw)", raw.run),
    summary("exec `true` round trip (Sail SDK)", pooled(one, "exec")),
    summary(`exec \`true\` round trip (${split.tag})`, pooled(split, "exec")),
    summary("crun exec true (raw)", raw.exec),
  ];
  console.log(`\nSail SDK: ${one.name}; ${split.tag}: ${split.name} (synchronous_commit ${PG_SYNCHRONOUS_COMMIT}); ${ROUNDS} rounds each, taking turns`);
  printRows(rows, { p99: true });
  const [c, , r, e, , x] = rows as [(typeof rows)[0], (typeof rows)[0], (typeof rows)[0], (typeof rows)[0], (typeof rows)[0], (typeof rows)[0]];
  console.log(`\ncreate p50 ratio Sail ÷ crun run: ${(c.p50 / r.p50).toFixed(2)}x   (goal: create ≤ 100 ms p50; it is ${c.p50.toFixed(1)} ms)`);
  console.log(`exec   p50 ratio Sail ÷ crun exec: ${(e.p50 / x.p50).toFixed(2)}x   (goal ≤ 2x)`);

  const live = [...one.turns, ...split.turns].map((turn) => turn.liveBoxes);
  console.log(`\nAPI with ${Math.min(...live)}–${Math.max(...live)} live boxes (asked for ${LIST_BOXES}), ${ITERATIONS * 10} calls of each per turn:`);
  printRows(
    [
      summary("GET /v1/sailboxes (SQLite)", pooled(one, "list")),
      summary(`GET /v1/sailboxes (${split.tag})`, pooled(split, "list")),
      summary("GET /v1/sailboxes/{id} (SQLite)", pooled(one, "get")),
      summary(`GET /v1/sailboxes/{id} (${split.tag})`, pooled(split, "get")),
    ].filter((row) => row.n > 0),
    { p99: true },
  );

  const perSecond = (f: Form) => f.turns.map((turn) => turn.createsPerSecond);
  const rates = (f: Form) =>
    perSecond(f)
      .map((rate) => rate.toFixed(1))
      .join(", ");
  console.log(`\ncreate throughput, ${THROUGHPUT_CREATES} creates ${CREATES_AT_ONCE} at a time (median of the turns; each turn):`);
  console.log(`  ${one.name.padEnd(42)} ${median(perSecond(one)).toFixed(1)} creates/s   (${rates(one)})`);
  console.log(`  ${split.name.padEnd(42)} ${median(perSecond(split)).toFixed(1)} creates/s   (${rates(split)})`);

  console.log(`\n${split.tag} ÷ one process, median of the rounds' ratios (each round's):`);
  const ratio = (label: string, of: (turn: Turn) => number, target: number) => {
    const ratios = one.turns.map((turn, i) => of(split.turns[i]!) / of(turn));
    const m = median(ratios);
    const verdict = m <= target ? "met" : "NOT MET";
    console.log(`  ${label.padEnd(30)} ${m.toFixed(2)}x   (${ratios.map((value) => value.toFixed(2)).join(", ")})   target ≤ ${target}x: ${verdict}`);
  };
  ratio("create → running p50", (turn) => percentile(turn.create, 50), 1.2);
  ratio("create → running p99", (turn) => percentile(turn.create, 99), 1.2);
  ratio("exec round trip p50", (turn) => percentile(turn.exec, 50), 1.2);
  ratio("exec round trip p99", (turn) => percentile(turn.exec, 99), 1.2);
  ratio("GET /v1/sailboxes p99", (turn) => percentile(turn.list, 99), 1.5);
  ratio("GET /v1/sailboxes/{id} p99", (turn) => percentile(turn.get, 99), 1.5);
}
