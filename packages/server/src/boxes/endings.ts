import type { SailboxInfo } from "@sail/protocol";
import type { NodeBoxState } from "../node-wire/node-api.js";
import type { OrgRow, SailboxRow, Store } from "../store/store.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";
import type { Nodes } from "./nodes.js";

/** The end of a box: on request (terminate), or when its node lost it (reconcile). */
export class Endings {
  constructor(
    private readonly store: Store,
    private readonly lifecycle: Lifecycle,
    private readonly nodes: Nodes,
    private readonly describe: (box: SailboxRow) => Promise<SailboxInfo>,
    private readonly log: Logger,
  ) {}

  /** Stop the box and release everything it holds. Idempotent; a failed box's leftovers are removed and it stays failed. */
  async terminate(org: OrgRow, id: string): Promise<SailboxInfo> {
    const box = await this.lifecycle.owned(org, id);
    if (box.status === "terminated") return this.describe(box);
    const ended = await this.lifecycle.withLease(id, "terminate", async () => {
      await this.nodes.node().api.destroyBox(id);
      const now = await this.lifecycle.current(id);
      if (now?.status === "failed") return now;
      return this.lifecycle.setStatus(id, "terminated", { action: "terminate" });
    });
    this.nodes.forget(id);
    this.log.info({ sailboxId: id }, "sailbox terminated");
    return this.describe(ended);
  }

  /**
   * The node (re)joined: what the store says runs there against what the node holds. A live
   * box the node does not hold (or holds as failed), or one still `creating` (its create was
   * cut short), is failed with the reason and its leftovers removed; the node's word is kept
   * for the rest; a box the node holds that is not live here is removed from the node.
   */
  async reconcile(): Promise<{ kept: number; failed: number; removed: number }> {
    const { api, info } = this.nodes.node();
    const held = new Map((await api.boxes()).map((state) => [state.sailboxId, state]));
    let kept = 0;
    let failed = 0;
    let removed = 0;
    const live = (await this.store.liveSailboxes()).filter((box) => box.nodeId === null || box.nodeId === info.nodeId);
    for (const box of live) {
      const state = held.get(box.id);
      held.delete(box.id);
      const lost = lostReason(box, state);
      if (!lost) {
        this.nodes.remember(state!);
        await this.lifecycle.applyNodeState(state!);
        kept++;
        continue;
      }
      failed++;
      await this.lifecycle.withLease(box.id, "reconcile", async () => {
        await api.destroyBox(box.id, { afterCrash: true }).catch((err) => this.log.error({ sailboxId: box.id, err: String(err) }, "cleanup of a lost sailbox failed"));
        await this.lifecycle.setStatus(box.id, "failed", { reason: lost });
      });
      this.log.warn({ sailboxId: box.id, reason: lost }, "sailbox marked failed");
    }
    for (const id of held.keys()) {
      removed++;
      await api.destroyBox(id, { afterCrash: true }).catch((err) => this.log.error({ sailboxId: id, err: String(err) }, "could not remove a sailbox this control plane does not know"));
      this.log.warn({ sailboxId: id }, "removed a sailbox from its node that is not live in the store");
    }
    return { kept, failed, removed };
  }
}

/** Why a live box is lost, or undefined when its node holds it. */
function lostReason(box: SailboxRow, state: NodeBoxState | undefined): string | undefined {
  if (box.status === "creating") return "the daemon stopped while it was being created";
  if (!state) return "its container was missing when the daemon started";
  if (state.status === "failed") return state.failureReason ?? "its node lost it";
  return undefined;
}
