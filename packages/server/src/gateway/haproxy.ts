import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { parseHttpLabel } from "@sail/protocol";
import type { ActivityReport } from "../node/idle.js";
import type { HttpRoute, RouteChange, RouteSubscriber } from "../node/routes.js";
import type { CounterDelta } from "./counters.js";
import { errorFile, gatewayPaths, HAPROXY_ERRORS, haproxyConfig, returnBodies, type HaproxySettings } from "./haproxy-config.js";
import { RefusalLog } from "./refusal-log.js";
import { RuntimeApi, splitAnswers } from "./runtime-api.js";
import type { TlsMaterial } from "./tls.js";

interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** How often HAProxy's per-listener counters are read for idle auto-sleep. */
const ACTIVITY_POLL_MS = 1000;
/** Restart backoff after HAProxy died: doubles from here up to 5 s. */
const RESTART_FIRST_MS = 250;

/**
 * The HTTPS data path: HAProxy (Debian's 2.6), run and supervised by the daemon. It terminates
 * TLS (session tickets, ALPN h2), routes by Host through routes.map and forwards
 * to running boxes; the daemon keeps the map current through the runtime API (no reload),
 * reads per-listener activity from a stick table, drops a box's sessions when it stops
 * running, and restarts HAProxy (with the current map) if it dies.
 */
export class HaproxyGateway implements RouteSubscriber {
  private readonly paths: ReturnType<typeof gatewayPaths>;
  private readonly api: RuntimeApi;
  /** Host → map value (`ip:port[:h2]`) of running listeners: what routes.map holds. */
  private readonly map = new Map<string, string>();
  /** Every HTTP route by Host, whatever its status (to find a box's guest address when dropping). */
  private readonly routes = new Map<string, HttpRoute>();
  private child: ChildProcess | undefined;
  private stopping = false;
  /** Route changes for HAProxy, in order; never rejects (a failure resynchronises or restarts). */
  private pushing: Promise<void> = Promise.resolve();
  /** Bumped at each write of routes.map; `loaded` is the write the running HAProxy started from. */
  private mapWrites = 0;
  private loaded = -1;
  /** Resolves once an HAProxy runs and answers (replaced when it dies): synced() waits for one. */
  private up = deferred();
  /** Idle guest connections being closed (dropConnections), which synced() waits for. */
  private readonly closing = new Set<Promise<void>>();
  private restartDelayMs = RESTART_FIRST_MS;
  private activityTimer: NodeJS.Timeout | undefined;
  /** Per listener host, from the stick table's last read: what the console's traffic panel shows. */
  private listenerTotals = new Map<string, HttpListenerTraffic>();
  /** Last counters per Host, and per box when they last moved. */
  private readonly lastCounters = new Map<string, string>();
  private readonly lastActive = new Map<string, number>();
  private lastStats: Record<string, number> = {};
  private readonly haproxyLog: RefusalLog;

  constructor(
    private readonly settings: HaproxySettings & { domain: string; tls: TlsMaterial; runtimeApiTimeoutMs?: number },
    private readonly log: Logger,
    private readonly onActivity: (report: ActivityReport) => void,
  ) {
    this.paths = gatewayPaths(settings.dir);
    this.api = new RuntimeApi(this.paths.admin, settings.runtimeApiTimeoutMs);
    this.haproxyLog = new RefusalLog(log);
  }

  /** Write the config, certificate and map; start HAProxy; resolve once it answers on its admin socket. */
  async start(): Promise<void> {
    writeGatewayFiles(this.settings);
    this.writeMap();
    stopOrphan(this.paths.pid, this.paths.config);
    // HAProxy creates its sockets as its own user: one left by an earlier run (maybe root's) must go
    for (const socket of [this.paths.admin, this.paths.metrics]) rmSync(socket, { force: true });
    await this.spawn();
    this.activityTimer = setInterval(() => void this.pollActivity(), ACTIVITY_POLL_MS);
    this.activityTimer.unref();
  }

  /**
   * Follow a route change: routes.map is rewritten (a restarted HAProxy loads it), then the
   * difference goes to the running HAProxy through the runtime API, each answer checked. If
   * HAProxy refuses any of it (its map is not what the daemon thinks), the whole map is
   * replaced atomically; if that fails too, HAProxy is restarted with the file.
   */
  apply(change: RouteChange): void {
    if (change.reset) {
      this.routes.clear();
      for (const host of this.map.keys()) this.lastCounters.delete(host);
    }
    const commands: string[] = [];
    const before = new Map(this.map);
    if (change.reset) this.map.clear();
    for (const label of change.http.remove) {
      this.routes.delete(this.host(label));
      this.map.delete(this.host(label));
    }
    for (const [label, route] of change.http.set) {
      const host = this.host(label);
      this.routes.set(host, route);
      if (route.status === "running") this.map.set(host, `${route.guestAddress}:${route.port}${route.h2c ? ":h2" : ""}`);
      else this.map.delete(host);
    }
    for (const host of before.keys()) if (!this.map.has(host)) commands.push(`del map ${this.paths.routes} ${host}`);
    for (const [host, value] of this.map) {
      const old = before.get(host);
      if (old === undefined) commands.push(`add map ${this.paths.routes} ${host} ${value}`);
      else if (old !== value) commands.push(`set map ${this.paths.routes} ${host} ${value}`);
    }
    if (!commands.length) return;
    const write = this.writeMap(); // a restarted HAProxy loads the routes as they are now
    const boxes = changedBoxes(change);
    this.pushing = this.pushing.then(() => this.push(commands, write, boxes));
  }

  private async push(commands: string[], write: number, sailboxIds: string[]): Promise<void> {
    // no HAProxy, or one started from this write or a later one: it has these routes from the file
    if (!this.child || this.loaded >= write) return;
    try {
      await this.api.change(commands);
    } catch (err) {
      this.log.error({ sailboxIds, err: String(err) }, "HAProxy refused a route change; replacing its whole map");
      await this.resync(sailboxIds);
    }
  }

  /** Make HAProxy's map the daemon's, atomically; restart HAProxy (which loads routes.map) if even that fails. */
  private async resync(sailboxIds: string[]): Promise<void> {
    try {
      await this.api.replaceMap(this.paths.routes, [...this.map]);
      this.log.warn({ sailboxIds, routes: this.map.size }, "HAProxy's routes resynchronised");
    } catch (err) {
      this.log.error({ sailboxIds, err: String(err) }, "could not resynchronise HAProxy's routes; restarting it");
      await this.restart();
    }
  }

  /** Kill HAProxy; the supervisor starts another from routes.map. Resolves once it answers. */
  private async restart(): Promise<void> {
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    }
    await this.up.promise;
  }

  /**
   * Close every HAProxy session to this box's guest (the slow path and TCP close theirs), and
   * every idle guest connection HAProxy keeps for reuse: with `http-reuse always` any client's
   * first request may take one, and a guest whose keep-alive timer ran out while it was frozen
   * would close it under the first request after the wake (a 502, and a POST that is lost).
   */
  dropConnections(sailboxId: string): void {
    const addresses = new Set([...this.routes.values()].filter((r) => r.sailboxId === sailboxId).map((r) => r.guestAddress));
    if (!addresses.size || !this.child) return;
    const closing = closeTcpTo([...addresses])
      .catch((err) => this.log.warn({ sailboxId, err: String(err) }, "could not close connections to the guest"))
      .finally(() => this.closing.delete(closing));
    this.closing.add(closing);
    void this.api
      .run("show sess all")
      .then(async (sessions) => {
        const ids = sessionsTo(sessions, addresses);
        if (!ids.length) return;
        const answers = splitAnswers(await this.api.run(...ids.map((id) => `shutdown session ${id}`)));
        // a session that ended meanwhile is "No such session": the goal is reached anyway
        const refused = answers.filter((a) => a !== "" && !a.startsWith("No such session"));
        if (answers.length < ids.length || refused.length)
          this.log.warn({ sailboxId, answers: refused.slice(0, 3), expected: ids.length, got: answers.length }, "HAProxy did not shut every session down");
      })
      .catch((err) => this.log.warn({ sailboxId, err: String(err) }, "could not drop HAProxy sessions"));
  }

  /**
   * Resolves once HAProxy routes by every change applied so far — its answers checked, or its
   * map replaced, or a new HAProxy started from routes.map — and holds no connection to a box
   * that stopped running.
   */
  async synced(): Promise<void> {
    await this.pushing;
    await Promise.all([this.up.promise, ...this.closing]);
  }

  /** Counters since the last call (connections, requests, bytes), from HAProxy's frontend statistics. */
  async takeCounters(): Promise<CounterDelta> {
    const delta: CounterDelta = { connections: 0, requests: 0, tunnels: 0, bytesIn: 0, bytesOut: 0, refusals: {} };
    if (!this.child) return delta;
    const stats = frontendStats(await this.api.run("show stat -1 1 -1").catch(() => ""), "https");
    const grew = (key: string) => {
      const now = stats[key] ?? 0;
      const before = this.lastStats[key] ?? 0;
      return now >= before ? now - before : now; // HAProxy restarted: its counters did too
    };
    delta.connections = grew("stot");
    delta.requests = grew("req_tot");
    delta.bytesIn = grew("bin");
    delta.bytesOut = grew("bout");
    this.lastStats = stats;
    return delta;
  }

  /** HAProxy's own Prometheus metrics (haproxy_*), to append to Sail's. */
  prometheusText(): Promise<string> {
    return new Promise((resolve) => {
      const req = request({ socketPath: this.paths.metrics, path: "/metrics" }, (res) => {
        let text = "";
        res
          .setEncoding("utf8")
          .on("data", (d: string) => (text += d))
          .on("end", () => resolve(text));
      });
      req.on("error", () => resolve(""));
      req.setTimeout(5000, () => req.destroy());
      req.end();
    });
  }

  /** HAProxy's resident memory, for the metrics. */
  rssBytes(): number | undefined {
    try {
      const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.child?.pid}/status`, "utf8"))?.[1];
      return kb ? Number(kb) * 1024 : undefined;
    } catch {
      return undefined;
    }
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async close(): Promise<void> {
    this.stopping = true;
    clearInterval(this.activityTimer);
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
  }

  private host(label: string): string {
    return `${label}.${this.settings.domain}`;
  }

  /** Returns which write this was. */
  private writeMap(): number {
    const text = [...this.map].map(([host, value]) => `${host} ${value}\n`).join("");
    writeFileSync(`${this.paths.routes}.tmp`, text);
    renameSync(`${this.paths.routes}.tmp`, this.paths.routes);
    return ++this.mapWrites;
  }

  /** Start HAProxy in the foreground (-db); resolve once its admin socket answers, reject with what it printed if it exits first. */
  private spawn(): Promise<void> {
    // setpriv: HAProxy parses hostile bytes, so it runs as its own user from the start (keeping
    // only the right to bind a port below 1024), and dies with the daemon (PR_SET_PDEATHSIG),
    // so a crashed daemon never leaves it holding the port
    const asUser = this.settings.user ? ["--reuid", this.settings.user, "--regid", this.settings.user, "--clear-groups", "--inh-caps", "+net_bind_service", "--ambient-caps", "+net_bind_service"] : [];
    // cwd /: HAProxy returns to its starting directory after reading its config, and its user cannot enter the daemon's (e.g. a checkout under /root)
    const child = spawn("setpriv", [...asUser, "--pdeathsig", "SIGKILL", "haproxy", "-db", "-m", String(this.settings.memoryMiB), "-f", this.paths.config], {
      cwd: "/",
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    this.loaded = this.mapWrites; // every write so far is in the file it reads
    if (child.pid) writeFileSync(this.paths.pid, String(child.pid));
    const output: string[] = [];
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on("line", (line) => {
        output.push(line);
        if (output.length > 20) output.shift();
        // HAProxy logs only what went wrong (dontlog-normal): refused, timed out, broken; rate-limited
        this.haproxyLog.info("haproxy", { line }, "haproxy");
      });
    }
    const started = new Promise<void>((resolve, reject) => {
      child.once("exit", (code, signal) => reject(new Error(`HAProxy exited (${code ?? signal}) while starting: ${output.join("\n").trim() || "no output"}`)));
      const ready = async () => {
        for (;;) {
          if (child.exitCode !== null || child.signalCode !== null) return;
          if (
            existsSync(this.paths.admin) &&
            (await this.api.run("show info").then(
              () => true,
              () => false,
            ))
          ) {
            this.up.resolve();
            return resolve();
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      void ready();
    });
    child.once("exit", (code, signal) => {
      if (this.child === child) this.child = undefined;
      if (this.up.settled) this.up = deferred();
      if (this.stopping) return;
      this.log.error({ code, signal, output: output.slice(-5) }, "HAProxy exited; restarting it");
      setTimeout(() => {
        if (this.stopping) return;
        this.spawn().then(
          () => (this.restartDelayMs = RESTART_FIRST_MS),
          (err) => this.log.error({ err: String(err) }, "HAProxy restart failed"),
        );
      }, this.restartDelayMs).unref();
      this.restartDelayMs = Math.min(this.restartDelayMs * 2, 5000);
    });
    return started;
  }

  /** Per box: open connections (conn_cur) and when its counters last moved. */
  private async pollActivity(): Promise<void> {
    if (!this.child) return;
    const table = await this.api.run("show table activity").catch(() => undefined);
    if (table === undefined) return;
    const now = Date.now();
    const report: ActivityReport = {};
    const totals = new Map<string, HttpListenerTraffic>();
    for (const entry of stickTableEntries(table)) {
      const [requests = 0, bytesIn = 0, bytesOut = 0] = entry.counters.split(",").map(Number);
      totals.set(entry.key, { open: entry.open, requests, bytesIn, bytesOut });
      const sailboxId = parseHttpLabel(entry.key.split(".")[0] ?? "")?.sailboxId;
      if (!sailboxId) continue;
      if (this.lastCounters.get(entry.key) !== entry.counters) {
        this.lastCounters.set(entry.key, entry.counters);
        this.lastActive.set(sailboxId, now);
      }
      const box = (report[sailboxId] ??= { open: 0, lastActiveMs: this.lastActive.get(sailboxId) ?? 0 });
      box.open += entry.open;
      if (entry.open > 0) box.lastActiveMs = now;
    }
    this.listenerTotals = totals;
    this.onActivity(report);
  }

  /** An HTTP listener's totals since HAProxy started (or the entry's hour of disuse ended): open connections, requests, bytes. */
  listenerTraffic(host: string): HttpListenerTraffic | undefined {
    return this.listenerTotals.get(host.toLowerCase());
  }
}

export interface HttpListenerTraffic {
  open: number;
  requests: number;
  bytesIn: number;
  bytesOut: number;
}

/** `show table` lines: `0x..: key=<host> use=0 exp=… conn_cur=N http_req_cnt=N bytes_in_cnt=N bytes_out_cnt=N`. */
export function stickTableEntries(text: string): Array<{ key: string; open: number; counters: string }> {
  const entries = [];
  for (const line of text.split("\n")) {
    const key = / key=(\S+)/.exec(line)?.[1];
    if (!key) continue;
    const open = Number(/ conn_cur=(\d+)/.exec(line)?.[1] ?? 0);
    const counters = [...line.matchAll(/ (http_req_cnt|bytes_in_cnt|bytes_out_cnt)=(\d+)/g)].map((m) => m[2]).join(",");
    entries.push({ key, open, counters });
  }
  return entries;
}

/** Session ids (`0x…`) in `show sess all` whose server connection goes to one of `addresses`. */
export function sessionsTo(text: string, addresses: Set<string>): string[] {
  const ids: string[] = [];
  let current: string | undefined;
  for (const line of text.split("\n")) {
    const start = /^(0x[0-9a-f]+): \[/.exec(line);
    if (start) current = start[1];
    const server = /^\s+server=guest \(id=\d+\) addr=([^\s]+):\d+/.exec(line);
    if (server && current && addresses.has(server[1]!)) ids.push(current);
  }
  return ids;
}

/** One frontend's counters from `show stat` (CSV with a `# pxname,svname,…` header). */
export function frontendStats(csv: string, frontend: string): Record<string, number> {
  const lines = csv.split("\n");
  const header =
    lines
      .find((l) => l.startsWith("# "))
      ?.slice(2)
      .split(",") ?? [];
  const row = lines.find((l) => l.startsWith(`${frontend},FRONTEND,`))?.split(",") ?? [];
  return Object.fromEntries(header.map((name, i) => [name, Number(row[i] ?? 0) || 0]));
}

/**
 * What HAProxy reads in `settings.dir`: the config, the certificate with its key, the error
 * pages. HAProxy's user creates its sockets there and reads the certificate; nobody else may look.
 */
export function writeGatewayFiles(settings: HaproxySettings & { tls: TlsMaterial }): void {
  const paths = gatewayPaths(settings.dir);
  mkdirSync(settings.dir, { recursive: true });
  const group = settings.user ? systemIds(settings.user)?.gid : undefined;
  chmodSync(settings.dir, 0o770);
  writeFileSync(paths.pem, `${settings.tls.cert.trim()}\n${settings.tls.key.trim()}\n`, { mode: 0o640 });
  chmodSync(paths.pem, 0o640); // the mode above applies only to a new file
  if (group !== undefined) {
    chownSync(settings.dir, 0, group);
    chownSync(paths.pem, 0, group);
  }
  for (const [status, code, text] of HAPROXY_ERRORS) writeFileSync(join(settings.dir, `${status}.http`), errorFile(status, code, text));
  for (const [file, body] of returnBodies()) writeFileSync(join(settings.dir, file), body);
  writeFileSync(paths.config, haproxyConfig(settings));
}

/** The boxes a route change is about (for logs). */
function changedBoxes(change: RouteChange): string[] {
  const ids = new Set(change.http.set.map(([, route]) => route.sailboxId));
  for (const label of change.http.remove) {
    const id = parseHttpLabel(label)?.sailboxId;
    if (id) ids.add(id);
  }
  return [...ids];
}

/** A promise with its resolve, and whether it was called. */
function deferred(): { promise: Promise<void>; resolve: () => void; settled: boolean } {
  let resolve!: () => void;
  const d = { promise: new Promise<void>((r) => (resolve = r)), resolve: () => {}, settled: false };
  d.resolve = () => {
    d.settled = true;
    resolve();
  };
  return d;
}

/** uid and gid of a system user, from /etc/passwd. */
function systemIds(user: string): { uid: number; gid: number } | undefined {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${user}:`));
  const [, , uid, gid] = line?.split(":") ?? [];
  return uid && gid ? { uid: Number(uid), gid: Number(gid) } : undefined;
}

/**
 * An HAProxy an earlier daemon started may still run if it could not take it down (its parent-
 * death signal is the first guard): stop it, by the pid that daemon recorded, and only if that
 * process still runs this data dir's config.
 */
function stopOrphan(pidFile: string, config: string): void {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, "utf8"));
    if (!pid || !readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(config)) return;
  } catch {
    return;
  }
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // gone meanwhile
  }
}

/**
 * Abort every TCP connection of the host to these addresses (`ss -K`, the kernel's
 * SOCK_DESTROY): HAProxy's idle ones among them, which no runtime-API command reaches by
 * destination. The peer gets a reset.
 */
function closeTcpTo(addresses: string[]): Promise<void> {
  const filter = addresses.flatMap((address, i) => [...(i ? ["or"] : []), "dst", address]);
  return new Promise((resolve, reject) => {
    execFile("ss", ["-K", "-t", "-n", ...filter], { timeout: 5000 }, (err) => (err ? reject(err) : resolve()));
  });
}
