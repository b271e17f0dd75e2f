import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { readFileSync } from "node:fs";
import { COMMAND_DEADLINES_MS, mustRun, runCommand, runWithStdio } from "./commands.js";
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
    const result = await runWithStdio(file!, args, {
      stdio: ["ignore", logFd, logFd],
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
  exec(id: string, argv: readonly string[], options: ExecOptions & { stdio: StdioOptions }): ChildProcess {
    return spawn(this.bin, this.execArgs(id, argv, options), { stdio: options.stdio });
  }

  /** `crun exec --detach`: resolves with its exit code once the process started, which is bounded (a stuck start is killed). */
  execDetached(id: string, argv: readonly string[], options: ExecOptions & { stdio: StdioOptions; signal?: AbortSignal }): Promise<number> {
    return runWithStdio(this.bin, this.execArgs(id, argv, { ...options, detach: true }), { stdio: options.stdio, timeoutMs: COMMAND_DEADLINES_MS.crunStart, signal: options.signal });
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
