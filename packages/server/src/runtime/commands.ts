import { constants } from "node:os";
import { basename } from "node:path";
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** How long a host command may run before it is killed, and what else may stop it. */
export interface CommandBounds {
  /** Default: by program (`COMMAND_DEADLINES_MS`). */
  timeoutMs?: number;
  /** Aborting kills the command (e.g. a lifecycle step past its own deadline). */
  signal?: AbortSignal;
}

export type CommandOptions = Omit<SpawnOptions, "stdio" | "signal" | "timeout" | "detached"> & CommandBounds & { input?: string };

/**
 * Deadlines per kind of command. Netlink and nftables calls take milliseconds (ten `ip` calls
 * ≈ 82 ms here): seconds mean the kernel or a lock is stuck. crun's control calls are about as
 * quick (pause/resume ≈ 5 ms); starting a container or a process in it (`crun run` ≈ 34 ms)
 * and deleting one (it kills and waits for every process) get more. Image builds download and
 * install packages (≈ 1 min natively, ≈ 3.5 min emulated): bounded, but generously.
 */
export const COMMAND_DEADLINES_MS = {
  network: 5_000,
  mount: 10_000,
  crunControl: 10_000,
  crunDelete: 30_000,
  crunStart: 60_000,
  imageStep: 10 * 60_000,
  imageBuild: 30 * 60_000,
} as const;

const DEADLINE_BY_PROGRAM: Record<string, number> = {
  ip: COMMAND_DEADLINES_MS.network,
  nft: COMMAND_DEADLINES_MS.network,
  conntrack: COMMAND_DEADLINES_MS.network,
  ss: COMMAND_DEADLINES_MS.network,
  mount: COMMAND_DEADLINES_MS.mount,
  umount: COMMAND_DEADLINES_MS.mount,
  mountpoint: COMMAND_DEADLINES_MS.mount,
  crun: COMMAND_DEADLINES_MS.crunControl,
};
/** Anything not in the table above. */
const DEFAULT_DEADLINE_MS = 60_000;

export function deadlineOf(file: string): number {
  return DEADLINE_BY_PROGRAM[basename(file)] ?? DEFAULT_DEADLINE_MS;
}

/** A host command that ran past its deadline, or was stopped by its caller: it was killed (with its helpers). */
export class CommandStoppedError extends Error {
  override readonly name = "CommandStoppedError";
  constructor(
    readonly command: string,
    readonly timeoutMs: number,
    readonly why: "deadline" | "aborted",
    reason?: unknown,
  ) {
    super(why === "deadline" ? `\`${command}\` did not finish within its deadline of ${timeoutMs} ms: killed` : `\`${command}\` was stopped and killed: ${reasonText(reason)}`);
  }
}

const reasonText = (reason: unknown) => (reason instanceof Error ? reason.message : String(reason ?? "aborted"));

/** How a command reads in errors: the program and its first arguments. */
export const commandLine = (file: string, args: readonly string[]) => [basename(file), ...args].join(" ").slice(0, 200);

/**
 * Spawn `file` in a process group of its own and bound it: past `timeoutMs`, or when `signal`
 * aborts, the whole group gets SIGKILL (`ip netns exec … sh`, `unshare … crun`, debootstrap and
 * apt start helpers, which must not outlive a killed parent). `stopped()` then says why; the
 * bound is lifted once the child exits.
 */
export function spawnBounded(file: string, args: readonly string[], options: SpawnOptions & CommandBounds): { child: ChildProcess; stopped: () => CommandStoppedError | undefined } {
  const { timeoutMs = deadlineOf(file), signal, ...spawnOptions } = options;
  const command = commandLine(file, args);
  let stopped: CommandStoppedError | undefined;
  const child = spawn(file, args, { ...spawnOptions, detached: true });
  const kill = (error: CommandStoppedError) => {
    if (stopped || child.exitCode !== null || child.signalCode !== null) return;
    stopped = error;
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      child.kill("SIGKILL"); // the group is gone already: at least the child
    }
  };
  const timer = setTimeout(() => kill(new CommandStoppedError(command, timeoutMs, "deadline")), timeoutMs);
  const onAbort = () => kill(new CommandStoppedError(command, timeoutMs, "aborted", signal?.reason));
  if (signal?.aborted) queueMicrotask(onAbort);
  else signal?.addEventListener("abort", onAbort, { once: true });
  const lift = () => {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  };
  child.once("exit", lift);
  child.once("error", lift);
  return { child, stopped: () => stopped };
}

/** Run a program (no shell), collect its output; never throws for a non-zero exit, throws `CommandStoppedError` past its deadline. */
export function runCommand(file: string, args: readonly string[], options: CommandOptions = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const { input, ...rest } = options;
    const { child, stopped } = spawnBounded(file, args, { ...rest, stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    // a killed command rejects at its exit: a helper that left its group may still hold the pipes
    child.on("exit", () => stopped() && reject(stopped()));
    child.on("close", (code, signal) => {
      const error = stopped();
      if (error) reject(error);
      else resolve({ code: code ?? 128 + signalNumber(signal), stdout, stderr });
    });
    if (input !== undefined) {
      child.stdin!.on("error", () => {}); // a program that exits early reports through its exit code
      child.stdin!.end(input);
    }
  });
}

/** Run a program and throw, with its stderr, when it fails. */
export async function mustRun(file: string, args: readonly string[], options: CommandOptions = {}): Promise<string> {
  const result = await runCommand(file, args, options);
  if (result.code !== 0) {
    throw new Error(`${file} ${args.join(" ")} exited ${result.code}: ${(result.stderr || result.stdout).trim().slice(-2000)}`);
  }
  return result.stdout;
}

/** Run a program whose stdio the caller chose (e.g. a log file); resolves with its exit code, bounded like `runCommand`. */
export function runWithStdio(file: string, args: readonly string[], options: Omit<SpawnOptions, "detached" | "signal" | "timeout"> & CommandBounds): Promise<number> {
  return new Promise((resolve, reject) => {
    const { child, stopped } = spawnBounded(file, args, options);
    child.on("error", reject);
    child.on("exit", () => stopped() && reject(stopped()));
    child.on("close", (code, signal) => {
      const error = stopped();
      if (error) reject(error);
      else resolve(code ?? 128 + signalNumber(signal));
    });
  });
}

export function signalNumber(signal: NodeJS.Signals | null): number {
  return signal ? (constants.signals[signal] ?? 0) : 0;
}
