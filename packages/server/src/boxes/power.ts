import { sailError, type SailboxInfo } from "@sail/protocol";
import type { OrgRow, SailboxRow } from "../store/store.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";
import type { Nodes } from "./nodes.js";

/**
 * Sleep, pause and resume as the API asks them: the box's node does them (it owns power: it
 * also wakes a box on traffic and sleeps an idle one by itself), the control plane holds the
 * box's lease meanwhile, so they never overlap a terminate, and keeps the node's answer.
 */
export class Power {
  constructor(
    private readonly lifecycle: Lifecycle,
    private readonly nodes: Nodes,
    private readonly describe: (box: SailboxRow) => Promise<SailboxInfo>,
    private readonly log: Logger,
  ) {}

  sleep(org: OrgRow, id: string): Promise<SailboxInfo> {
    return this.set(org, id, "sleep", "sleeping");
  }

  pause(org: OrgRow, id: string): Promise<SailboxInfo> {
    return this.set(org, id, "pause", "paused");
  }

  /** Bring a sleeping or paused box back (a running one is left as it is). */
  resume(org: OrgRow, id: string): Promise<SailboxInfo> {
    return this.set(org, id, "resume", "running");
  }

  private async set(org: OrgRow, id: string, action: "sleep" | "pause" | "resume", to: "sleeping" | "paused" | "running"): Promise<SailboxInfo> {
    const box = await this.lifecycle.owned(org, id);
    this.lifecycle.check(box, to, action);
    const state = await this.lifecycle.withLease(id, action, async () => {
      const now = await this.lifecycle.current(id);
      if (now) this.lifecycle.check(now, to, action); // another request may have ended it meanwhile
      const answered = await (await this.nodes.of(box)).api.setPower(id, action);
      this.nodes.remember(answered);
      await this.lifecycle.applyNodeState(answered);
      return answered;
    });
    if (state.status !== to) this.log.warn({ sailboxId: id, action, status: state.status }, "the node left the sailbox in another state than asked");
    return this.describe(await this.lifecycle.owned(org, id));
  }

  /**
   * For an API call that needs the guest (exec, sshd, listener waits): the node wakes a
   * sleeping box (and counts the call as activity); a paused one is SailboxPausedError, an
   * ended one a conflict. Resolves to the box as the store has it.
   */
  async awake(org: OrgRow, id: string): Promise<SailboxRow> {
    const box = await this.lifecycle.owned(org, id);
    if (box.status === "paused") throw sailError("SAIL_SAILBOX_PAUSED", `Sailbox ${id} is paused: call resume() first`, { sailboxId: id });
    if (box.status !== "running" && box.status !== "sleeping") {
      throw sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${id} is ${box.status}${box.failureReason ? ` (${box.failureReason})` : ""}: create a new one`, { sailboxId: id, status: box.status });
    }
    const state = await (await this.nodes.of(box)).api.awake(id);
    this.nodes.remember(state);
    return (await this.lifecycle.applyNodeState(state)) ?? box;
  }
}
