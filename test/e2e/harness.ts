/**
 * A real daemon (`sail up` as a child process) on a test data dir, and helpers
 * to create real Sailboxes that are always terminated, even when a test fails.
 * The data dir persists between runs so the base image is built once.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { after, before } from "node:test";
import { Agent, fetch } from "undici";
import { App, SailClient, Sailbox, type CreateSailboxOptions } from "@sail/sdk";
import { startPostgres, type PostgresServer } from "../fixtures/postgres.js";

export const REPO = new URL("../..", import.meta.url).pathname;
export const CLI = join(REPO, "packages/cli/dist/main.js");
export const DATA_DIR = process.env.SAIL_TEST_DATA_DIR ?? "/var/lib/sail-test";
export const API_PORT = Number(process.env.SAIL_TEST_API_PORT ?? 17171);
export const METRICS_PORT = Number(process.env.SAIL_TEST_METRICS_PORT ?? 17172);
export const BOX_SUBNET = process.env.SAIL_TEST_BOX_SUBNET ?? "10.203.0.0/16";
export const HTTPS_PORT = Number(process.env.SAIL_TEST_HTTPS_PORT ?? 18443);
export const TCP_PORTS = process.env.SAIL_TEST_TCP_PORTS ?? "21000-21999";

/** A database for the split form's control plane that a test file made itself: its URL, and how to stop it. */
export interface ExternalStore {
  url: string;
  stop(): Promise<void>;
}

/**
 * The form the suite runs Sail in: one `sail up` (the default), or the parts apart — a control
 * plane on PostgreSQL (a real server this process starts, one per test file) and a node agent,
 * two processes talking over the node wire (SAIL_TEST_SPLIT=1).
 */
export const SPLIT = process.env.SAIL_TEST_SPLIT === "1";
/** Where the split form's node agent listens for the control plane. */
export const NODE_WIRE_PORT = Number(process.env.SAIL_TEST_NODE_PORT ?? API_PORT + 9);

/** Boxes reach nothing beyond the host unless a test builds its own fake internet (egress.test.ts). */
const OUTBOUND_DEFAULT = ["--outbound", "off"];

export class TestDaemon {
  /**
   * More `sail up` options (the benchmarks try gateway settings; a test may change them before
   * a restart); `split`: run the parts apart whatever SAIL_TEST_SPLIT says (the node boundary's own tests);
   * `externalStore`: the split form's database made elsewhere (a Patroni cluster), instead of a
   * PostgreSQL of its own; its `stop` runs after the daemon's.
   */
  constructor(
    public upArgs: string[] = [],
    readonly split = SPLIT,
    private readonly externalStore?: () => Promise<ExternalStore>,
  ) {}

  readonly configDir = mkdtempSync(join(tmpdir(), "sail-test-"));
  readonly configPath = join(this.configDir, "config.json");
  /** One process (`sail up`), or the control plane and the node agent (SPLIT). */
  private children: { main?: ChildProcess; node?: ChildProcess } = {};
  private postgres: { server?: PostgresServer; url: string; stop(): Promise<void> } | undefined;
  /** The node wire's credential of the split form (an edge presents it too). */
  readonly nodeToken = randomBytes(24).toString("base64url");
  log = "";
  /** The directory `sail up` starts in (default: this process's). */
  cwd: string | undefined;

  /** Environment for child processes (CLI, examples) that should find this daemon. */
  get env(): NodeJS.ProcessEnv {
    const { SAIL_API_URL: _url, SAIL_TOKEN: _token, ...rest } = process.env;
    return { ...rest, SAIL_CONFIG: this.configPath };
  }

  /** The process that runs the boxes and the gateway (its children are HAProxy and the TCP workers). */
  get pid(): number | undefined {
    return (this.children.node ?? this.children.main)?.pid;
  }

  /** The control plane's process (the same as `pid` in one process). */
  get controlPid(): number | undefined {
    return this.children.main?.pid;
  }

  private get common(): string[] {
    return ["--log-level", "warn", "--box-subnet", BOX_SUBNET, "--https-listen", `127.0.0.1:${HTTPS_PORT}`, "--tcp-listen", "::", "--tcp-ports", TCP_PORTS];
  }

  async start(): Promise<void> {
    if (!this.split) {
      await this.spawnPart(
        "main",
        ["up", "--data-dir", DATA_DIR, "--api-listen", `127.0.0.1:${API_PORT}`, "--metrics-listen", `127.0.0.1:${METRICS_PORT}`, ...this.common, ...OUTBOUND_DEFAULT, ...this.upArgs],
        "Sail is up",
      );
      return;
    }
    await this.startControl();
    await this.startNode();
  }

  /** The split form's control plane, on this file's PostgreSQL (started on first use). */
  async startControl(): Promise<void> {
    if (!this.postgres) {
      if (this.externalStore) this.postgres = await this.externalStore();
      else {
        const server = await startPostgres();
        this.postgres = { server, url: await server.createDatabase(), stop: () => server.stop() };
      }
    }
    await this.spawnPart(
      "main",
      [
        "up",
        "--role",
        "control",
        "--store",
        this.postgres.url,
        "--node-token",
        this.nodeToken,
        "--data-dir",
        join(DATA_DIR, "control"),
        "--api-listen",
        `127.0.0.1:${API_PORT}`,
        "--metrics-listen",
        `127.0.0.1:${METRICS_PORT}`,
        ...this.common,
        ...OUTBOUND_DEFAULT,
        ...this.upArgs,
      ],
      "Sail is up",
    );
    // a control plane that restarted under a running node works once the node's next heartbeat joined it (NODE_HEARTBEAT_MS)
    if (this.children.node) await eventually("the running node joins the restarted control plane", () => this.caCert().then(Boolean, () => false), { intervalMs: 200 });
  }

  /** The split form's store (a postgres:// URL); undefined: the default form's sail.db in the data dir. */
  get storeUrl(): string | undefined {
    return this.postgres?.url;
  }

  /** The split form's PostgreSQL server (a test may stop it to play the database's loss). */
  get store(): PostgresServer | undefined {
    return this.postgres?.server;
  }

  /** The split form's node agent: up once it has joined the control plane. */
  async startNode(): Promise<void> {
    await this.spawnPart(
      "node",
      [
        "up",
        "--role",
        "node",
        "--control",
        `http://127.0.0.1:${API_PORT}`,
        "--node-token",
        this.nodeToken,
        "--node-listen",
        `127.0.0.1:${NODE_WIRE_PORT}`,
        "--data-dir",
        DATA_DIR,
        "--metrics-listen",
        "off",
        ...this.common,
        ...OUTBOUND_DEFAULT,
        ...this.upArgs,
      ],
      "Sail node is up",
    );
  }

  private async spawnPart(part: "main" | "node", args: string[], ready: string): Promise<void> {
    const child = spawn(process.execPath, [CLI, ...args], { env: this.env, cwd: this.cwd, stdio: ["ignore", "pipe", "pipe"] });
    this.children[part] = child;
    child.once("exit", (code, signal) => {
      if (this.children[part] === child) console.error(`sail up (${part}) exited unexpectedly (${code ?? signal}); its output:\n${this.log}`);
    });
    // this start's own output: after a stop, the log still holds the last start's ready line
    const from = this.log.length;
    await new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        this.log += chunk.toString();
        if (this.log.includes(ready, from)) resolve();
      };
      child.stdout!.on("data", onData);
      child.stderr!.on("data", onData);
      child.on("exit", (code) => reject(new Error(`sail up (${part}) exited ${code} before it was up:\n${this.log}`)));
    });
  }

  /** Stop Sail: SIGTERM (graceful) or SIGKILL (a crash), every part. Boxes keep running. */
  async stop(signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
    await Promise.all([this.stopPart("node", signal), this.stopPart("main", signal)]);
  }

  /** Stop one part of the split form (the other keeps running): a node agent that crashed, a control plane that did. */
  async stopPart(part: "main" | "node", signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
    const child = this.children[part];
    this.children[part] = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill(signal);
    await exited;
  }

  async restart(signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
    await this.stop(signal);
    this.log = "";
    await this.start();
  }

  /** What `sail up` wrote for clients: the API URL and the org's token. */
  credentials(): { apiUrl: string; token: string } {
    return JSON.parse(readFileSync(this.configPath, "utf8")) as { apiUrl: string; token: string };
  }

  client(): SailClient {
    return new SailClient(this.credentials());
  }

  /** The local CA's certificate, as `sail ca` prints it. */
  async caCert(): Promise<string> {
    return this.client().text("/v1/ca");
  }

  async dispose(): Promise<void> {
    await this.stop();
    await this.postgres?.stop();
    rmSync(this.configDir, { recursive: true, force: true });
  }
}

/** Creates real boxes and terminates every one of them at the end, logging their ids. */
export class BoxPool {
  private readonly ids: string[] = [];
  constructor(private readonly daemon: TestDaemon) {}

  async app(name: string): Promise<App> {
    return App.find({ name, mintIfMissing: true, client: this.daemon.client() });
  }

  async create(options: Omit<CreateSailboxOptions, "app"> & { app?: App }): Promise<Sailbox> {
    const app = options.app ?? (await this.app("e2e"));
    const sb = await Sailbox.create({ ...options, app });
    this.ids.push(sb.id);
    return sb;
  }

  /** A box made some other way (the CLI, the Python SDK): terminated at the end like the rest. */
  adopt(id: string): void {
    this.ids.push(id);
  }

  /** Terminate every box this pool made; say which ones if that fails. */
  async terminateAll(): Promise<void> {
    const client = this.daemon.client();
    for (const id of this.ids.splice(0)) {
      try {
        await (await Sailbox.fromId(id, { client })).terminate();
      } catch (err) {
        console.error(`could not terminate test sailbox ${id}: ${(err as Error).message}`);
      }
    }
  }
}

/** Terminate live boxes a crashed earlier run may have left in the test data dir. */
export async function terminateLeftovers(daemon: TestDaemon): Promise<void> {
  const client = daemon.client();
  for (const sb of await Sailbox.list({ client })) {
    const status = sb.describe().status;
    if (status !== "terminated" && status !== "failed") {
      console.error(`terminating sailbox ${sb.id} left by an earlier run`);
      await sb.terminate();
    }
  }
}

/**
 * Everything of a box the host still holds: netns, veth, mounts, its disk's loop device,
 * cgroups, directory (in boxes/, or in the trash until the background removal is done), container.
 */
export function leftoversOf(id: string): string[] {
  const found: string[] = [];
  const netns = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
  if (netns.includes(`sail-${id}`)) found.push(`netns sail-${id}`);
  const links = execFileSync("ip", ["-o", "link"], { encoding: "utf8" });
  const veth = `sv${id.replace(/^sb-/, "")}`;
  if (links.includes(veth)) found.push(`veth ${veth}`);
  for (const line of readFileSync("/proc/mounts", "utf8").split("\n")) if (line.includes(id)) found.push(`mount ${line}`);
  for (const controller of ["memory", "pids", "cpu", "freezer", "devices", "blkio", "cpuset", "systemd"]) {
    if (existsSync(`/sys/fs/cgroup/${controller}/sail/${id}`)) found.push(`cgroup ${controller}/sail/${id}`);
  }
  if (existsSync(join(DATA_DIR, "boxes", id))) found.push(`directory ${join(DATA_DIR, "boxes", id)}`);
  for (const name of listDir(join(DATA_DIR, "trash"))) if (name.startsWith(id)) found.push(`directory ${join(DATA_DIR, "trash", name)} (being removed)`);
  for (const [device, file] of loopDevices()) if (file.includes(id)) found.push(`loop device ${device} (${file})`);
  try {
    execFileSync("crun", ["--root", "/run/sail/crun", "state", id], { stdio: "ignore" });
    found.push(`container ${id}`);
  } catch {
    // crun knows nothing of it: good
  }
  return found;
}

/** The directories of the test data dir's built package images, with their package lists. */
export function packageImages(): Array<{ dir: string; packages: string[] }> {
  const images = join(DATA_DIR, "images");
  if (!existsSync(images)) return [];
  return readdirSync(images)
    .filter((entry) => entry.startsWith("apt-") && existsSync(join(images, entry, "complete")))
    .map((entry) => ({ dir: join(images, entry), packages: (JSON.parse(readFileSync(join(images, entry, "complete"), "utf8")) as { packages: string[] }).packages }));
}

/**
 * Remove the cached images of these package sets, so the next create of one builds it (a test
 * of build progress needs a build). Call it before the daemon uses them: a daemon remembers
 * what it built.
 */
export function forgetPackageImages(sets: string[][]): void {
  const wanted = new Set(sets.map((set) => [...set].sort().join(" ")));
  for (const image of packageImages()) if (wanted.has(image.packages.join(" "))) rmSync(image.dir, { recursive: true, force: true });
}

/**
 * What is left of a box once the daemon's background removal (the trash) had its time: empty
 * when all went. Terminate answers before the box's disk is unmounted and its directory removed.
 */
export async function leftoversOnceRemoved(id: string, patienceMs = 120_000): Promise<string[]> {
  const deadline = Date.now() + patienceMs;
  let found = leftoversOf(id);
  while (found.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    found = leftoversOf(id);
  }
  return found;
}

/** Attached loop devices and their backing files (/sys/block/loopN/loop/backing_file). */
export function loopDevices(): Array<[string, string]> {
  const found: Array<[string, string]> = [];
  for (const device of listDir("/sys/block")) {
    try {
      found.push([`/dev/${device}`, readFileSync(`/sys/block/${device}/loop/backing_file`, "utf8").trim()]);
    } catch {
      // not a loop device, or a detached one
    }
  }
  return found;
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Run the CLI against the test daemon; never throws, returns what it printed and its exit code. */
export function runCli(daemon: TestDaemon, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return runProcess(process.execPath, [CLI, ...args], daemon.env);
}

export function runProcess(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ["ignore", "pipe", "pipe"], cwd: REPO });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** `*.localhost` is loopback (RFC 6761); curl knows it, Node's resolver needs telling. */
export function loopbackLookup(_host: string, options: { all?: boolean }, callback: (...args: unknown[]) => void): void {
  if (options?.all) callback(null, [{ address: "127.0.0.1", family: 4 }]);
  else callback(null, "127.0.0.1", 4);
}

/** Write a Python program into the box as `/srv/<name>.py` and start it in the background with `args`. */
export async function startPython(sb: Sailbox, name: string, script: string, args = ""): Promise<void> {
  const write = await sb.exec(`mkdir -p /srv && cat > /srv/${name}.py <<'SAIL_EOF'\n${script}\nSAIL_EOF`).wait();
  if (write !== 0) throw new Error(`could not write /srv/${name}.py in ${sb.id}`);
  await sb.exec(`python3 /srv/${name}.py ${args}`, { background: true }).wait();
}

/** Put the test server (test/fixtures/guest-server.py) in a box and serve it on `port`. */
export async function startGuestServer(sb: Sailbox, port: number, bind = "0.0.0.0"): Promise<void> {
  await startPython(sb, "guest-server", readFileSync(join(REPO, "test/fixtures/guest-server.py"), "utf8"), `${port} ${bind}`);
}

/** A TCP echo server in the box: logs each connection's first bytes, echoes, and on EOF says "BYE" and closes. */
export async function startTcpEcho(sb: Sailbox, port: number): Promise<void> {
  const script = [
    "import socket, threading",
    "def handle(c):",
    "    first = True",
    "    with c:",
    "        while True:",
    "            d = c.recv(65536)",
    "            if not d: break",
    "            if first:",
    "                open('/tmp/peers.log', 'ab').write(d[:64] + b'\\n'); first = False",
    "            c.sendall(d)",
    "        c.sendall(b'BYE\\n')",
    "        c.shutdown(socket.SHUT_WR)",
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)",
    `s.bind(('0.0.0.0', ${port})); s.listen(64)`,
    "while True:",
    "    c, _ = s.accept(); threading.Thread(target=handle, args=(c,), daemon=True).start()",
  ].join("\n");
  await startPython(sb, "echo", script);
}

/**
 * The fixture every e2e file uses: a real daemon started before the file's tests (after
 * terminating what a crashed earlier run left), and every box the pool made terminated after.
 */
export function useTestDaemon(
  hooks: { setup?: (daemon: TestDaemon) => Promise<void> | void; teardown?: () => Promise<void> | void; upArgs?: string[]; split?: boolean; store?: () => Promise<ExternalStore> } = {},
): {
  daemon: TestDaemon;
  pool: BoxPool;
} {
  const daemon = new TestDaemon(hooks.upArgs, hooks.split, hooks.store);
  const pool = new BoxPool(daemon);
  // one hook each, so the file's setup runs after the daemon is up (hooks of one file may not run in order)
  before(async () => {
    await daemon.start();
    await terminateLeftovers(daemon);
    await hooks.setup?.(daemon);
  });
  after(async () => {
    await hooks.teardown?.();
    await pool.terminateAll();
    await daemon.dispose();
  });
  return { daemon, pool };
}

/** An undici dispatcher that trusts Sail's CA and resolves *.localhost to loopback. */
/** The status code of a GET to `url` through `dispatcher`, its body discarded (0: no answer at all within 30 s). */
export async function statusThrough(dispatcher: Agent, url: string): Promise<number> {
  try {
    const res = await fetch(url, { dispatcher, signal: AbortSignal.timeout(30_000) });
    await res.body?.cancel();
    return res.status;
  } catch {
    return 0;
  }
}

export function gatewayAgent(ca: string): Agent {
  return new Agent({ connect: { ca, lookup: loopbackLookup as never } });
}

/** OpenSSH options for a test login with `identity` to a throwaway box: no host key check, no prompt, only errors printed. */
export function sshOptions(identity: string): string[] {
  return ["-i", identity, "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"];
}

/**
 * Look again every `intervalMs` until `probe` gives something other than false, undefined or
 * null, and return it. What a test asserts is what appears, never how fast: `attempts` only
 * keeps a broken feature from hanging the run (3 minutes at the defaults), and the failure
 * says what never happened and what the probe saw last.
 */
export async function eventually<T>(
  what: string,
  probe: () => Promise<T | false | undefined | null> | T | false | undefined | null,
  options: { intervalMs?: number; attempts?: number } = {},
): Promise<T> {
  const intervalMs = options.intervalMs ?? 100;
  const attempts = options.attempts ?? Math.ceil(180_000 / intervalMs);
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    last = await probe();
    if (last !== false && last !== undefined && last !== null) return last as T;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`never happened: ${what} (last seen: ${JSON.stringify(last)})`);
}

/** mulberry32: a tiny seeded PRNG. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Every box id the host holds anything of: netns, veth, crun container, directory, mount, cgroup. */
export function hostBoxIds(): Map<string, string[]> {
  const found = new Map<string, string[]>();
  const note = (id: string, what: string) => found.set(id, [...(found.get(id) ?? []), what]);
  for (const line of execFileSync("ip", ["netns", "list"], { encoding: "utf8" }).split("\n")) {
    const m = /^sail-(sb-[a-z0-9]+)/.exec(line);
    if (m) note(m[1]!, "netns");
  }
  // another daemon on this host (its own data dir) shares the crun root and the netns names: its boxes are not ours to judge
  const foreign = new Set<string>();
  for (const line of execFileSync("crun", ["--root", "/run/sail/crun", "list"], { encoding: "utf8" }).split("\n")) {
    const [id, , , bundle] = line.trim().split(/\s+/);
    if (!id?.startsWith("sb-")) continue;
    if (bundle && !bundle.startsWith(`${DATA_DIR}/`)) foreign.add(id);
    else note(id, "container");
  }

  const boxes = join(DATA_DIR, "boxes");
  if (existsSync(boxes)) for (const id of readdirSync(boxes)) note(id, "directory");
  for (const line of readFileSync("/proc/mounts", "utf8").split("\n")) {
    const m = new RegExp(`${boxes}/(sb-[a-z0-9]+)`).exec(line);
    if (m) note(m[1]!, "mount");
  }
  for (const controller of ["memory", "pids", "freezer"]) {
    const dir = `/sys/fs/cgroup/${controller}/sail`;
    if (existsSync(dir)) for (const id of readdirSync(dir)) if (id.startsWith("sb-")) note(id, `cgroup ${controller}`);
  }
  for (const id of foreign) found.delete(id);
  return found;
}

/** What a TCP echo server at 127.0.0.1:`port` answers to "ping" (empty: nothing, or the connection was refused). */
export function echoPing(port: number): Promise<string> {
  return new Promise((resolve) => {
    let got = "";
    const s = connect({ host: "127.0.0.1", port }, () => s.end("ping\n"));
    s.on("data", (d) => (got += d));
    s.on("error", () => {});
    s.on("close", () => resolve(got));
  });
}
