import type { SailboxInfo } from "@sail/protocol";
import type { Runtime } from "../runtime/runtime.js";
import type { OrgRow, SailboxRow, Store } from "../store/store.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";

/** The end of a box: on request (terminate), or when the runtime lost it (reconcile at start). */
export class Endings {
  constructor(
    private readonly store: Store,
    private readonly lifecycle: Lifecycle,
    private readonly runtime: Pick<Runtime, "destroy" | "state">,
    private readonly describe: (box: SailboxRow) => SailboxInfo,
    private readonly log: Logger,
  ) {}

  /** Stop the box and release everything it holds. Idempotent; a failed box's leftovers are removed and it stays failed. */
  async terminate(org: OrgRow, id: string): Promise<SailboxInfo> {
    const box = this.lifecycle.owned(org, id);
    if (box.status === "failed") {
      await this.lifecycle.withLock(id, () => this.runtime.destroy(id));
      return this.describe(this.lifecycle.owned(org, id));
    }
    const ended = await this.lifecycle.transition(id, "terminated", {
      action: "terminate",
      before: () => this.runtime.destroy(id),
    });
    this.log.info({ sailboxId: id }, "sailbox terminated");
    return this.describe(ended);
  }

  /** After a daemon start: live boxes whose container is gone (or that were being created) are failed and cleaned. */
  async reconcile(): Promise<{ kept: number; failed: number }> {
    let kept = 0;
    let failed = 0;
    for (const box of this.store.liveSailboxes()) {
      const state = await this.runtime.state(box.id);
      const lost =
        box.status === "creating" ? "the daemon stopped while it was being created" : state === "missing" || state === "stopped" ? `its container was ${state} when the daemon started` : undefined;
      if (!lost) {
        kept++;
        continue;
      }
      failed++;
      await this.lifecycle.transition(box.id, "failed", {
        reason: lost,
        before: () => this.runtime.destroy(box.id, { afterCrash: true }).catch((err) => this.log.error({ sailboxId: box.id, err: String(err) }, "cleanup of a lost sailbox failed")),
      });
      this.log.warn({ sailboxId: box.id, reason: lost }, "sailbox marked failed");
    }
    return { kept, failed };
  }
}
