import type { SailboxInfo } from "@sail/protocol";
import type { Runtime } from "../runtime/runtime.js";
import type { OrgRow, SailboxRow, Store } from "../store/store.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";

/**
 * Removing a box: `crun delete` (30 s at most: it kills and waits for every process), unmounts,
 * `ip` and `nft` calls (seconds each).
 */
const DESTROY_DEADLINE_MS = 60_000;
/** After a crash the runtime first lets the dead daemon's commands for the box end (runtime/strays.ts). */
const STRAY_WAIT_MS = 10_000;

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
      await this.lifecycle.withLock(id, (signal) => this.runtime.destroy(id, { signal }), { deadlineMs: DESTROY_DEADLINE_MS, what: "removing its leftovers" });
      return this.describe(this.lifecycle.owned(org, id));
    }
    // a step stuck on this box (a freeze, a thaw) gives way at once rather than at its deadline
    if (box.status !== "creating" && this.lifecycle.preempt(id, "it is being terminated")) this.log.warn({ sailboxId: id }, "terminate stopped the step in progress");
    const ended = await this.lifecycle.transition(id, "terminated", {
      action: "terminate",
      before: (_box, signal) => this.runtime.destroy(id, { signal }),
      deadlineMs: DESTROY_DEADLINE_MS,
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
        before: (_box, signal) =>
          this.runtime.destroy(box.id, { afterCrash: true, signal }).catch((err) => this.log.error({ sailboxId: box.id, err: String(err) }, "cleanup of a lost sailbox failed")),
        deadlineMs: DESTROY_DEADLINE_MS + STRAY_WAIT_MS,
      });
      this.log.warn({ sailboxId: box.id, reason: lost }, "sailbox marked failed");
    }
    return { kept, failed };
  }
}
