import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { COMMAND_DEADLINES_MS, mustRun, runCommand, signalNumber, spawnBounded, type CommandBounds } from "./commands.js";
import type { RuntimeState } from "./runtime.js";

/**
 * On hybrid cgroup hosts (v1 controllers plus a cgroup2 mount) crun refuses to
 * create containers: "cgroups in hybrid mode not supported, drop all controllers
 * from cgroupv2". Those mounts are returned so `create` can hide them in a private
 * mount namespace. A pure v1 or v2 host returns none and needs no workaround.
 */
export function hybridCgroup2Mounts(mountinfo = readFileSync("/proc/self/mountinfo", "utf8")): string[] {
  const mounts = mountinfo.split("\n").map((line) => {
    const [before, after] = line.split(" - ");
    return { mountPoint: before?.split(" ")[4] ?? "", fsType: after?.split(" ")[0] ?? "" };
  });
  const hasV1 = mounts.some((m) => m.fsType === "cgroup");
  return hasV1 ? mounts.filter((m) => m.fsType === "cgroup2").map((m) => m.mountPoint) : [];
}

interface ExecOptions {
  cwd?: string;
  env?: Record<string, string>;
  consoleSocket?: string;
  /** Where crun writes the process's pid (as the host sees it). */
  pidFile?: string;
}

/** The `crun` CLI, with its state kept under `root` so Sail's containers are its own. */
export class Crun {
  private readonly hybridMounts = hybridCgroup2Mounts();

  constructor(
    private readonly root: string,
    private readonly bin = "crun",
  ) {}

  /** Start the container in `bundle`, detached: it keeps running when the daemon stops. */
  async run(id: string, bundle: string, logFd: number, signal?: AbortSignal): Promise<void> {
    const crun = [this.bin, "--root", this.root, "run", "--detach", "--bundle", bundle, id];
    const [file, ...args] = this.hybridMounts.length ? ["unshare", "-m", "--propagation", "private", "--", "sh", "-c", 'for m in $MOUNTS; do umount "$m"; done; exec "$@"', "sh", ...crun] : crun;
    const result = await runWithoutDevices(file!, args, ["ignore", logFd, logFd], {
      env: { ...process.env, MOUNTS: this.hybridMounts.join(" ") },
      timeoutMs: COMMAND_DEADLINES_MS.crunStart,
      signal,
    });
    if (result !== 0) throw new Error(`crun run ${id} exited ${result}; see the box's console log`);
  }

  async state(id: string, signal?: AbortSignal): Promise<RuntimeState> {
    const result = await runCommand(this.bin, ["--root", this.root, "state", id], { signal });
    if (result.code !== 0) return "missing";
    const status = (JSON.parse(result.stdout) as { status: string }).status;
    return status === "running" || status === "paused" ? status : "stopped";
  }

  /**
   * `crun exec` as a child process; the caller owns its stdio. A foreground command runs as long
   * as its user wants (the API streams it and can kill it); only starting one is bounded (`execDetached`).
   */
  exec(id: string, argv: readonly string[], options: ExecOptions & { stdio: CrunStdio }): ChildProcess {
    return withoutDevices(spawn(this.bin, this.execArgs(id, argv, options), { stdio: pipesForIgnored(options.stdio) }), options.stdio);
  }

  /** `crun exec --detach`: resolves with its exit code once the process started, which is bounded (a stuck start is killed). */
  execDetached(id: string, argv: readonly string[], options: ExecOptions & { stdio: CrunStdio; signal?: AbortSignal }): Promise<number> {
    return runWithoutDevices(this.bin, this.execArgs(id, argv, { ...options, detach: true }), options.stdio, { timeoutMs: COMMAND_DEADLINES_MS.crunStart, signal: options.signal });
  }

  private execArgs(id: string, argv: readonly string[], options: ExecOptions & { detach?: boolean }): string[] {
    const args = ["--root", this.root, "exec"];
    if (options.detach) args.push("--detach");
    // a terminal opened inside the box; its master end is sent to this unix socket (runtime/pty.ts)
    if (options.consoleSocket) args.push("--tty", "--console-socket", options.consoleSocket);
    if (options.pidFile) args.push("--pid-file", options.pidFile);
    if (options.cwd) args.push("--cwd", options.cwd);
    for (const [key, value] of Object.entries(options.env ?? {})) args.push("--env", `${key}=${value}`);
    args.push(id, ...argv);
    return args;
  }

  /** Kill and remove the container (and its cgroups). Idempotent. */
  async delete(id: string, signal?: AbortSignal): Promise<void> {
    const result = await runCommand(this.bin, ["--root", this.root, "delete", "--force", id], { timeoutMs: COMMAND_DEADLINES_MS.crunDelete, signal });
    if (result.code !== 0 && (await this.state(id, signal)) !== "missing") {
      throw new Error(`crun delete ${id} failed: ${result.stderr.trim()}`);
    }
  }

  async pause(id: string, signal?: AbortSignal): Promise<void> {
    await mustRun(this.bin, ["--root", this.root, "pause", id], { signal });
  }

  async resume(id: string, signal?: AbortSignal): Promise<void> {
    await mustRun(this.bin, ["--root", this.root, "resume", id], { signal });
  }
}

export type CrunStdio = ["ignore" | "pipe" | number, "ignore" | "pipe" | number, "ignore" | "pipe" | number];

/**
 * crun before 1.24 fchowns each std stream that is not a terminal to the root of the box's user
 * namespace (crun issue #1845), devices included: handed the host's /dev/null (what "ignore"
 * opens), it gives the host's /dev/null to the box's uid. So crun gets no device: a stream
 * nobody uses is a pipe instead, stdin ended at once (EOF, as /dev/null reads) and output drained.
 * (Log files it is handed become the box's uid's; they are outside the box's root.)
 */
function pipesForIgnored(stdio: CrunStdio): Array<"pipe" | number> {
  return stdio.map((s) => (s === "ignore" ? "pipe" : s));
}

function withoutDevices(child: ChildProcess, stdio: CrunStdio): ChildProcess {
  if (stdio[0] === "ignore") child.stdin!.end();
  if (stdio[1] === "ignore") child.stdout!.resume();
  if (stdio[2] === "ignore") child.stderr!.resume();
  return child;
}

/** Run crun bounded (its deadline, the caller's signal) with no device as a std stream; its exit code. */
function runWithoutDevices(file: string, args: readonly string[], stdio: CrunStdio, options: CommandBounds & { env?: NodeJS.ProcessEnv }): Promise<number> {
  return new Promise((resolve, reject) => {
    const { child, stopped } = spawnBounded(file, args, { ...options, stdio: pipesForIgnored(stdio) });
    withoutDevices(child, stdio);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const error = stopped();
      if (error) reject(error);
      else resolve(code ?? 128 + signalNumber(signal));
    });
  });
}
