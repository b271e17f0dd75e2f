import type { SailboxInfo } from "@sail/protocol";
import type { NodeBoxSpec, NodeBoxState } from "../node-wire/node-api.js";
import { networkPolicyOf } from "./outbound.js";
import { listenerSpec } from "./listeners.js";
import type { OrgRow, SailboxRow, Store } from "../store/store.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";
import type { AttachedNode, Nodes } from "./nodes.js";

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
      await (await this.nodes.of(box)).api.destroyBox(id);
      const now = await this.lifecycle.current(id);
      if (now?.status === "failed") return now;
      return this.lifecycle.setStatus(id, "terminated", { action: "terminate" });
    });
    this.nodes.forget(id);
    this.log.info({ sailboxId: id }, "sailbox terminated");
    return this.describe(ended);
  }

  /**
   * The node (re)joined: what the store says runs there against what the node holds. First the
   * node adopts the live boxes it runs but does not know yet (made before it kept its own table),
   * records as failed those it lost, and removes boxes nobody lists; then each live box takes the
   * node's word, and one the node does not hold — or one still `creating` (its create was cut
   * short) — is failed with the reason and its leftovers removed.
   */
  async reconcile(node: AttachedNode): Promise<{ kept: number; failed: number; removed: number }> {
    const { api, info } = node;
    // boxes from before nodes were recorded belong to the node in this process
    const live = (await this.store.liveSailboxes()).filter((box) => box.nodeId === info.nodeId || (box.nodeId === null && node.url === ""));
    const expected = await Promise.all(live.filter((box) => box.status !== "creating").map(async (box) => ({ spec: await this.specOf(box), status: box.status })));
    const adopted = await api.adopt(expected);
    if (adopted.adopted.length) this.log.info({ sailboxIds: adopted.adopted }, "the node took over sailboxes it runs");
    const held = new Map((await api.boxes()).map((state) => [state.sailboxId, state]));
    let kept = 0;
    let failed = 0;
    for (const box of live) {
      const state = held.get(box.id);
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
        const now = await this.lifecycle.current(box.id);
        if (now?.status !== "failed") await this.lifecycle.setStatus(box.id, "failed", { reason: lost });
      });
      this.log.warn({ sailboxId: box.id, reason: lost }, "sailbox marked failed");
    }
    return { kept, failed, removed: adopted.removed.length };
  }

  /** A live box's spec as its node needs it (what create sent). */
  private async specOf(box: SailboxRow): Promise<NodeBoxSpec> {
    const listeners = await this.store.listListeners(box.id);
    return {
      id: box.id,
      hostname: box.name ?? box.id,
      image: { arch: box.imageArch, aptPackages: box.imagePackages ? box.imagePackages.split(" ") : [] },
      cpu: box.cpu,
      memoryMiB: box.memoryMiB,
      ...(box.diskMiB !== null ? { diskMiB: box.diskMiB } : {}),
      idleTimeout: box.idleTimeout,
      network: networkPolicyOf(box),
      listeners: listeners.map(listenerSpec),
    };
  }
}

/** Why a live box is lost, or undefined when its node holds it. */
function lostReason(box: SailboxRow, state: NodeBoxState | undefined): string | undefined {
  if (box.status === "creating") return "the daemon stopped while it was being created";
  if (!state) return "its container was missing when the daemon started";
  if (state.status === "failed") return state.failureReason ?? "its node lost it";
  return undefined;
}
