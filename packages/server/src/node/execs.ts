import { open } from "node:fs/promises";
import { finished } from "node:stream/promises";
import { StringDecoder } from "node:string_decoder";
import { setTimeout as delay } from "node:timers/promises";
import { checkExec, checkPtyRequest, sailError, type ExecRequest, type PtyRequest } from "@sail/protocol";
import type { NodeExec, NodeExecEvent, NodePty } from "../node-wire/node-api.js";
import { DiskFullError, type NodeRuntime, type Runtime, type RunningExec, type RunningPty } from "../runtime/runtime.js";
import { AsyncQueue } from "./async-queue.js";
import type { IdleSleeper } from "./idle.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Power } from "./power.js";
import { START_SSHD_SCRIPT } from "./sshd.js";

/** Events (or terminal chunks) held for a slow reader before the command's output is paused. */
const OUTPUT_HIGH_WATER = 64;
/** A followed log is read again this often while its exec runs (the file grows; a poll costs one read). */
const LOG_FOLLOW_POLL_MS = 200;
/** What one read of a log takes at most. */
const LOG_CHUNK_BYTES = 64 * 1024;
/** A background exec's id names its log file: nothing but the ids the control plane makes (`ex-` and [a-z0-9]). */
const EXEC_ID = /^ex-[a-z0-9]{1,32}$/;

/**
 * Commands in boxes: foreground (its output as events), background (its output to a log on the
 * node, read back as chunks), a terminal, and the box's sshd. The control plane records execs;
 * the node runs them.
 */
export class Execs {
  constructor(
    private readonly lifecycle: Lifecycle,
    private readonly power: Pick<Power, "awake">,
    private readonly idle: Pick<IdleSleeper, "touch" | "execRunning">,
    private readonly runtime: Pick<NodeRuntime, "exec" | "execPty" | "execDetached" | "execLogPath" | "execRunning">,
  ) {}

  /** Start a foreground command (a sleeping box is woken); its output and exit come as events. */
  async exec(id: string, request: ExecRequest): Promise<NodeExec> {
    checkExec(request);
    const box = await this.busy(id);
    const running = this.runtime.exec(box.id, request);
    this.idle.execRunning(box.id, running.exit);
    return { events: execEvents(running), kill: () => running.kill() };
  }

  /** Start a command on a pseudo-terminal (a sleeping box is woken). The box is busy while it runs. */
  async pty(id: string, request: PtyRequest): Promise<NodePty> {
    checkPtyRequest(request);
    const box = await this.busy(id);
    let running: RunningPty;
    try {
      running = await this.runtime.execPty(box.id, request);
    } catch (err) {
      throw sailError("SAIL_RUNTIME_FAILED", `Could not open a terminal in sailbox ${box.id}: ${(err as Error).message}`, { sailboxId: box.id });
    }
    this.idle.execRunning(box.id, running.exit);
    return ptyOf(running);
  }

  /** Start a background command; resolves once it runs, its output goes to its log on the node. */
  async execBackground(id: string, execId: string, request: ExecRequest): Promise<void> {
    checkExec(request);
    if (typeof execId !== "string" || !EXEC_ID.test(execId)) {
      throw sailError("SAIL_INVALID_ARGUMENT", `A background exec's id is ex- and up to 32 of [a-z0-9], not ${JSON.stringify(execId)}`, { sailboxId: id, field: "execId" });
    }
    const box = await this.busy(id);
    try {
      await this.runtime.execDetached(box.id, execId, request);
    } catch (err) {
      if (err instanceof DiskFullError) throw sailError("SAIL_DISK_FULL", `Could not start \`${request.cmd}\` in sailbox ${box.id}: ${err.message}`, { sailboxId: box.id, diskMiB: box.diskMiB });
      throw sailError("SAIL_RUNTIME_FAILED", `Could not start \`${request.cmd}\` in sailbox ${box.id}: ${(err as Error).message}`, { sailboxId: box.id });
    }
  }

  /**
   * A background exec's log: what it wrote so far, then (`follow`) what it writes until its
   * process ends or `signal` aborts (then the iteration just ends). Checked on the first read:
   * SAIL_EXEC_NOT_FOUND when the box has no such log, SAIL_SAILBOX_NOT_RUNNING when the box
   * failed (its logs went with it).
   */
  async *execLog(id: string, execId: string, options: { follow?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
    checkExecId(id, execId);
    const box = this.lifecycle.get(id);
    if (box.status === "failed") throw sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${id} is ${box.status}: its logs went with it`, { sailboxId: id, status: box.status });
    const file = await open(this.runtime.execLogPath(id, execId), "r").catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") throw sailError("SAIL_EXEC_NOT_FOUND", `Sailbox ${id} has no background exec ${execId}`, { sailboxId: id, execId });
      throw err;
    });
    try {
      let position = 0;
      for (;;) {
        if (options.signal?.aborted) return;
        const buffer = Buffer.allocUnsafe(LOG_CHUNK_BYTES);
        const { bytesRead } = await file.read(buffer, 0, LOG_CHUNK_BYTES, position);
        if (bytesRead > 0) {
          position += bytesRead;
          yield buffer.subarray(0, bytesRead);
          continue;
        }
        if (!options.follow) return;
        // at the end of what it wrote: once the process is gone, one more read takes its last words
        if (!(await this.runtime.execRunning(id, execId))) {
          options.follow = false;
          continue;
        }
        const slept = await delay(LOG_FOLLOW_POLL_MS, true, { signal: options.signal }).catch(() => false);
        if (!slept) return;
      }
    } finally {
      await file.close();
    }
  }

  /** Start the box's sshd if it is not running (idempotent: never two daemons). */
  async startSshd(id: string): Promise<void> {
    const box = await this.busy(id);
    try {
      await runScript(this.runtime, box.id, START_SSHD_SCRIPT, "start sshd");
    } catch (err) {
      throw sailError("SAIL_RUNTIME_FAILED", `Could not start sshd in sailbox ${id}: ${(err as Error).message}`, { sailboxId: id });
    }
  }

  /** An API call that needs the guest: the box counts as active, and a sleeping one is woken. */
  private busy(id: string) {
    this.idle.touch(this.lifecycle.get(id).id);
    return this.power.awake(id);
  }
}

/** Run a shell script in the box; throw with its output when it fails. */
export async function runScript(runtime: Pick<Runtime, "exec">, id: string, script: string, what: string): Promise<void> {
  const run = runtime.exec(id, { cmd: script, cwd: "/" });
  let output = "";
  run.stdout.on("data", (d: Buffer) => (output += d));
  run.stderr.on("data", (d: Buffer) => (output += d));
  const code = await run.exit;
  if (code !== 0) throw new Error(`${what} exited ${code}: ${output.trim().slice(-500)}`);
}

function checkExecId(id: string, execId: string): void {
  if (typeof execId !== "string" || !EXEC_ID.test(execId)) throw sailError("SAIL_EXEC_NOT_FOUND", `Sailbox ${id} has no background exec ${JSON.stringify(execId)}`, { sailboxId: id, execId });
}

/**
 * A foreground command's output as UTF-8 text events (a character split between two reads is
 * held until it is whole), then its exit code once both streams ended. A reader that stops
 * early ends the command: nobody would see its output.
 */
function execEvents(running: RunningExec): AsyncIterable<NodeExecEvent> {
  const streams = [running.stdout, running.stderr];
  const queue = new AsyncQueue<NodeExecEvent>({
    highWater: OUTPUT_HIGH_WATER,
    pause: () => streams.forEach((s) => s.pause()),
    resume: () => streams.forEach((s) => s.resume()),
    abandoned: () => running.kill(),
  });
  for (const stream of ["stdout", "stderr"] as const) {
    const decoder = new StringDecoder("utf8");
    running[stream].on("data", (chunk: Buffer) => {
      const data = decoder.write(chunk);
      if (data) queue.push({ stream, data });
    });
    running[stream].on("end", () => {
      const rest = decoder.end();
      if (rest) queue.push({ stream, data: rest });
    });
  }
  const ended = streams.map((s) => finished(s).catch(() => {}));
  Promise.all([running.exit, ...ended]).then(
    ([exitCode]) => {
      queue.push({ exitCode });
      queue.end();
    },
    (err) => queue.fail(err),
  );
  return queue;
}

/** A runtime terminal as the node boundary carries it: output as chunks, input, size, exit, hang-up. */
function ptyOf(running: RunningPty): NodePty {
  const { terminal } = running;
  const output = new AsyncQueue<Uint8Array>({
    highWater: OUTPUT_HIGH_WATER,
    pause: () => terminal.pause(),
    resume: () => terminal.resume(),
    abandoned: () => running.kill(),
  });
  terminal.on("data", (chunk: Buffer) => output.push(chunk));
  // the master reads EIO once every process holding the terminal has closed it (Linux): that is its end
  let ended = false;
  const end = () => {
    ended = true;
    output.end();
  };
  terminal.once("end", end);
  terminal.once("close", end);
  terminal.on("error", end);
  return {
    output,
    write: (bytes) => {
      if (!ended) terminal.write(bytes);
    },
    resize: (cols, rows) => running.resize(cols, rows),
    exit: running.exit,
    close: () => running.kill(),
  };
}
