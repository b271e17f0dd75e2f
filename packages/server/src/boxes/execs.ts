import { checkExec, checkPtyRequest, sailError, type BackgroundExecInfo, type ExecRequest, type PtyRequest } from "@sail/protocol";
import { DiskFullError, type Runtime, type RunningExec, type RunningPty } from "../runtime/runtime.js";

export type { RunningPty };
import { newId, type OrgRow, type Store } from "../store/store.js";
import type { IdleSleeper } from "./idle.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Power } from "./power.js";
import { START_SSHD_SCRIPT } from "./sshd.js";

/** Commands in boxes: foreground (streamed), background (logged), and the box's sshd. */
export class Execs {
  constructor(
    private readonly store: Store,
    private readonly lifecycle: Lifecycle,
    private readonly power: Pick<Power, "awake">,
    private readonly idle: Pick<IdleSleeper, "touch" | "execRunning">,
    private readonly runtime: Pick<Runtime, "exec" | "execPty" | "execDetached" | "execLogPath">,
  ) {}

  /** Start a foreground command (a sleeping box is woken); the caller streams its output. */
  async exec(org: OrgRow, id: string, request: ExecRequest): Promise<RunningExec> {
    checkExec(request);
    const box = await this.busy(org, id);
    this.store.insertExec({ id: newId("ex-"), sailboxId: box.id, cmd: request.cmd, background: false });
    const running = this.runtime.exec(box.id, request);
    this.idle.execRunning(box.id, running.exit);
    return running;
  }

  /** Start a command on a pseudo-terminal (a sleeping box is woken); the caller pumps the terminal. The box is busy while it runs. */
  async execPty(org: OrgRow, id: string, request: PtyRequest): Promise<RunningPty> {
    checkPtyRequest(request);
    const box = await this.busy(org, id);
    this.store.insertExec({ id: newId("ex-"), sailboxId: box.id, cmd: request.cmd ?? "(login shell)", background: false });
    let running: RunningPty;
    try {
      running = await this.runtime.execPty(box.id, request);
    } catch (err) {
      throw sailError("SAIL_RUNTIME_FAILED", `Could not open a terminal in sailbox ${box.id}: ${(err as Error).message}`, { sailboxId: box.id });
    }
    this.idle.execRunning(box.id, running.exit);
    return running;
  }

  /** Start a background command; resolves once it runs, its output goes to a log. */
  async execBackground(org: OrgRow, id: string, request: ExecRequest): Promise<BackgroundExecInfo> {
    checkExec(request);
    const box = await this.busy(org, id);
    const exec = this.store.insertExec({ id: newId("ex-"), sailboxId: box.id, cmd: request.cmd, background: true });
    try {
      await this.runtime.execDetached(box.id, exec.id, request);
    } catch (err) {
      if (err instanceof DiskFullError) throw sailError("SAIL_DISK_FULL", `Could not start \`${request.cmd}\` in sailbox ${box.id}: ${err.message}`, { sailboxId: box.id, diskMiB: box.diskMiB });
      throw sailError("SAIL_RUNTIME_FAILED", `Could not start \`${request.cmd}\` in sailbox ${box.id}: ${(err as Error).message}`, { sailboxId: box.id });
    }
    return { execId: exec.id, sailboxId: box.id, cmd: exec.cmd, startedAt: exec.startedAt };
  }

  /** An API call that needs the guest: the box counts as active, and a sleeping one is woken. */
  private busy(org: OrgRow, id: string) {
    this.idle.touch(this.lifecycle.owned(org, id).id);
    return this.power.awake(org, id);
  }

  /** The box's background execs, newest first: what `GET …/execs` lists. */
  listBackground(org: OrgRow, id: string): BackgroundExecInfo[] {
    const box = this.lifecycle.owned(org, id);
    return this.store.listBackgroundExecs(box.id).map((e) => ({ execId: e.id, sailboxId: e.sailboxId, cmd: e.cmd, startedAt: e.startedAt }));
  }

  /** Where a background exec's output is; the API streams the file. */
  logPath(org: OrgRow, id: string, execId: string): string {
    const box = this.lifecycle.owned(org, id);
    const exec = this.store.getExec(box.id, execId);
    if (!exec || !exec.background) throw sailError("SAIL_EXEC_NOT_FOUND", `Sailbox ${id} has no background exec ${execId}`, { sailboxId: id, execId });
    if (box.status === "terminated" || box.status === "failed") {
      throw sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${id} is ${box.status}: its logs went with it`, { sailboxId: id, status: box.status });
    }
    return this.runtime.execLogPath(box.id, exec.id);
  }

  /** Start the box's sshd if it is not running (idempotent: never two daemons). */
  async startSshd(org: OrgRow, id: string): Promise<void> {
    const box = await this.busy(org, id);
    try {
      await runScript(this.runtime, box.id, START_SSHD_SCRIPT, "start sshd");
    } catch (err) {
      throw sailError("SAIL_RUNTIME_FAILED", `Could not start sshd in sailbox ${id}: ${(err as Error).message}`, { sailboxId: id });
    }
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
