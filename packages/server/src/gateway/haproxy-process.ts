import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createInterface } from "node:readline";
import type { Logger } from "./haproxy.js";
import type { gatewayPaths, HaproxySettings } from "./haproxy-config.js";
import { RefusalLog } from "./refusal-log.js";
import type { RuntimeApi } from "./runtime-api.js";

/** Restart backoff after HAProxy died: doubles from here up to 5 s. */
const RESTART_FIRST_MS = 250;

/**
 * HAProxy's process, supervised: started as its own user, ready once its admin socket answers,
 * restarted with backoff (from the routes.map of the moment) whenever it dies.
 */
export class HaproxyProcess {
  private child: ChildProcess | undefined;
  private stopping = false;
  /** Resolves once an HAProxy runs and answers (replaced when it dies). */
  private up = deferred();
  private restartDelayMs = RESTART_FIRST_MS;
  private readonly haproxyLog: RefusalLog;

  /** `onSpawn` runs as each HAProxy is started, before it reads its files. */
  constructor(
    private readonly settings: Pick<HaproxySettings, "user" | "memoryMiB">,
    private readonly paths: ReturnType<typeof gatewayPaths>,
    private readonly api: RuntimeApi,
    private readonly log: Logger,
    private readonly onSpawn: () => void,
  ) {
    this.haproxyLog = new RefusalLog(log);
  }

  /** Start HAProxy (its files written already); resolve once it answers on its admin socket. */
  async start(): Promise<void> {
    stopOrphan(this.paths.pid, this.paths.config);
    // HAProxy creates its sockets as its own user: one left by an earlier run (maybe root's) must go
    for (const socket of [this.paths.admin, this.paths.metrics]) rmSync(socket, { force: true });
    await this.spawn();
  }

  /** Whether an HAProxy was started and has not exited. */
  get running(): boolean {
    return this.child !== undefined;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Resolves once an HAProxy runs and answers (at once if one does). */
  ready(): Promise<void> {
    return this.up.promise;
  }

  /** Kill HAProxy; the supervisor starts another from routes.map. Resolves once it answers. */
  async restart(): Promise<void> {
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    }
    await this.up.promise;
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

  async close(): Promise<void> {
    this.stopping = true;
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
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
    this.onSpawn();
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
