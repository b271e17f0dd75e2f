import { checkExec, checkPtyRequest, sailError, type BackgroundExecInfo, type ExecRequest, type PtyRequest } from "@sail/protocol";
import type { NodeExec, NodePty } from "../node-wire/node-api.js";
import { newId, type OrgRow, type Store } from "../store/store.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Nodes } from "./nodes.js";
import type { Power } from "./power.js";

/** Commands in boxes, as the API asks: the control plane checks and records them, the box's node runs them. */
export class Execs {
  constructor(
    private readonly store: Store,
    private readonly lifecycle: Lifecycle,
    private readonly power: Pick<Power, "awake">,
    private readonly nodes: Pick<Nodes, "of">,
  ) {}

  /** Start a foreground command (a sleeping box is woken); the caller streams its events. */
  async exec(org: OrgRow, id: string, request: ExecRequest): Promise<NodeExec> {
    checkExec(request);
    const box = await this.power.awake(org, id);
    await this.store.insertExec({ id: newId("ex-"), sailboxId: box.id, cmd: request.cmd, background: false });
    return (await this.nodes.of(box)).api.exec(box.id, { cmd: request.cmd, cwd: request.cwd, env: request.env });
  }

  /** Start a command on a pseudo-terminal (a sleeping box is woken); the caller pumps the terminal. */
  async execPty(org: OrgRow, id: string, request: PtyRequest): Promise<NodePty> {
    checkPtyRequest(request);
    const box = await this.power.awake(org, id);
    await this.store.insertExec({ id: newId("ex-"), sailboxId: box.id, cmd: request.cmd ?? "(login shell)", background: false });
    return (await this.nodes.of(box)).api.pty(box.id, request);
  }

  /** Start a background command; resolves once it runs, its output goes to a log on the node. */
  async execBackground(org: OrgRow, id: string, request: ExecRequest): Promise<BackgroundExecInfo> {
    checkExec(request);
    const box = await this.power.awake(org, id);
    const exec = await this.store.insertExec({ id: newId("ex-"), sailboxId: box.id, cmd: request.cmd, background: true });
    await (await this.nodes.of(box)).api.execBackground(box.id, exec.id, { cmd: request.cmd, cwd: request.cwd, env: request.env });
    return { execId: exec.id, sailboxId: box.id, cmd: exec.cmd, startedAt: exec.startedAt };
  }

  /** The box's background execs, newest first: what `GET …/execs` lists. */
  async listBackground(org: OrgRow, id: string): Promise<BackgroundExecInfo[]> {
    const box = await this.lifecycle.owned(org, id);
    return (await this.store.listBackgroundExecs(box.id)).map((e) => ({ execId: e.id, sailboxId: e.sailboxId, cmd: e.cmd, startedAt: e.startedAt }));
  }

  /** A background exec's output so far, as its node streams it. */
  async log(org: OrgRow, id: string, execId: string, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    const box = await this.lifecycle.owned(org, id);
    const exec = await this.store.getExec(box.id, execId);
    if (!exec || !exec.background) throw sailError("SAIL_EXEC_NOT_FOUND", `Sailbox ${id} has no background exec ${execId}`, { sailboxId: id, execId });
    if (box.status === "terminated" || box.status === "failed") {
      throw sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${id} is ${box.status}: its logs went with it`, { sailboxId: id, status: box.status });
    }
    return (await this.nodes.of(box)).api.execLog(box.id, exec.id, { signal });
  }

  /** Start the box's sshd if it is not running (idempotent: never two daemons). */
  async startSshd(org: OrgRow, id: string): Promise<void> {
    const box = await this.power.awake(org, id);
    await (await this.nodes.of(box)).api.startSshd(box.id);
  }
}
