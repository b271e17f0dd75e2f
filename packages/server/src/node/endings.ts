import { isLive, type SailboxStatus } from "@sail/protocol";
import type { NodeBoxSpec } from "../node-wire/node-api.js";
import type { NodeRuntime, RuntimeState } from "../runtime/runtime.js";
import { checkBoxId, type BoxCreator } from "./create.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";
import { NodeStoreError, type NodeBoxRow, type NodeBoxStatus, type NodeStore } from "./node-store.js";
import type { Outbound } from "./outbound.js";

/**
 * Removing a box: `crun delete` (30 s at most: it kills and waits for every process), unmounts,
 * `ip` and `nft` calls (seconds each).
 */
const DESTROY_DEADLINE_MS = 60_000;
/** After a crash the runtime first lets the dead node's commands for the box end (runtime/strays.ts). */
const STRAY_WAIT_MS = 10_000;

/** A box the control plane believes this node holds, in the status it last heard. */
export interface ExpectedBox {
  spec: NodeBoxSpec;
  status: SailboxStatus;
}

/** What `adopt` did: boxes taken over, boxes found lost (now failed), boxes removed (nobody's). */
export interface AdoptReport {
  adopted: string[];
  failed: string[];
  removed: string[];
}

/**
 * The end of a box on this node: on request (destroy), when the runtime lost it (reconcile at
 * start), and the boxes the control plane does not know of (adopt).
 */
export class Endings {
  constructor(
    private readonly store: Pick<NodeStore, "getBox" | "listBoxes" | "insertBox">,
    private readonly lifecycle: Lifecycle,
    private readonly runtime: Pick<NodeRuntime, "destroy" | "state" | "freeze" | "thaw" | "listBoxes" | "netSlotOf" | "maxBoxes">,
    private readonly creator: Pick<BoxCreator, "check">,
    private readonly outbound: Pick<Outbound, "install">,
    private readonly log: Logger,
  ) {}

  /**
   * Stop the box and release everything it holds on the node; its row goes. Idempotent: a box
   * the node does not hold has its leftovers (if any) removed. A step stuck on the box (a
   * freeze, a thaw) gives way at once rather than at its deadline; a start in progress is
   * waited for. `afterCrash`: the node may have died mid-step.
   */
  async destroy(id: string, options: { afterCrash?: boolean; signal?: AbortSignal } = {}): Promise<void> {
    checkBoxId(id);
    const box = this.store.getBox(id);
    if (box && box.status !== "creating" && this.lifecycle.preempt(id, "it is being terminated")) this.log.warn({ sailboxId: id }, "terminate stopped the step in progress");
    await this.lifecycle.remove(id, (stepSignal) => this.runtime.destroy(id, { afterCrash: options.afterCrash, signal: options.signal ? AbortSignal.any([stepSignal, options.signal]) : stepSignal }), {
      deadlineMs: DESTROY_DEADLINE_MS + (options.afterCrash ? STRAY_WAIT_MS : 0),
      what: "terminate",
    });
    if (box) this.log.info({ sailboxId: id }, "sailbox terminated");
  }

  /**
   * After a node start: boxes whose container is gone (or that were being created) are failed
   * and cleaned; a box whose container the crash left in the other power state than node.db
   * says (a sleep stopped between the status and the freeze) is frozen or thawed to match.
   */
  async reconcile(): Promise<{ kept: number; failed: number }> {
    let kept = 0;
    let failed = 0;
    for (const box of this.store.listBoxes()) {
      if (box.status === "failed") continue;
      const state = await this.runtime.state(box.id);
      const lost =
        box.status === "creating" ? "the daemon stopped while it was being created" : state === "missing" || state === "stopped" ? `its container was ${state} when the daemon started` : undefined;
      if (!lost) {
        kept++;
        await this.matchPower(box, state);
        continue;
      }
      failed++;
      await this.fail(box.id, lost);
    }
    return { kept, failed };
  }

  /**
   * The control plane's word on which boxes this node holds (at its reconcile), for boxes made
   * before the node kept its own (the upgrade to node.db) and for those one side lost:
   * - a listed box node.db does not know, whose container and directory the host has, is
   *   taken over in the status the control plane last heard, with the slot its network.json
   *   says; one the host lost is recorded failed (and its leftovers removed);
   * - a box of node.db the control plane does not list is removed, as is any box directory on
   *   the host that neither knows.
   * A listed box in `creating` the node does not know is left alone (its create is on its way),
   * as is a box the node is creating or made after this call began: call it with no create in
   * flight to this node (at the control plane's start, or when the node joins).
   */
  async adopt(expected: readonly ExpectedBox[]): Promise<AdoptReport> {
    const began = new Date().toISOString();
    const report: AdoptReport = { adopted: [], failed: [], removed: [] };
    const listed = new Set(expected.map((e) => e.spec?.id));
    for (const { spec, status } of expected) {
      if (this.store.getBox(spec.id) || status === "creating" || !isLive(status)) continue;
      const outcome = await this.takeOver(spec, status as NodeBoxStatus);
      if (outcome) report[outcome].push(spec.id);
    }
    for (const box of this.store.listBoxes()) {
      if (listed.has(box.id) || box.status === "creating" || box.createdAt >= began) continue;
      await this.destroy(box.id, { afterCrash: true });
      report.removed.push(box.id);
    }
    for (const id of await this.runtime.listBoxes()) {
      if (listed.has(id) || this.store.getBox(id)) continue;
      await this.destroy(id, { afterCrash: true });
      report.removed.push(id);
    }
    if (report.adopted.length || report.failed.length || report.removed.length) this.log.info(report, "took over the control plane's word on this node's boxes");
    return report;
  }

  /** One box the control plane lists and node.db does not know. */
  private async takeOver(given: NodeBoxSpec, status: NodeBoxStatus): Promise<keyof AdoptReport | undefined> {
    let spec: NodeBoxSpec;
    try {
      spec = this.creator.check(given);
    } catch (err) {
      this.log.error({ sailboxId: given?.id, err: String(err) }, "the control plane lists a sailbox this node cannot take: its spec is refused");
      return undefined;
    }
    const state = await this.runtime.state(spec.id); // also reads back the addresses of a box older than network.json
    const netSlot = state === "missing" || state === "stopped" ? undefined : this.runtime.netSlotOf(spec.id);
    if (netSlot === undefined) {
      const why = state === "missing" || state === "stopped" ? `its container was ${state} when the node took it over` : "its addresses are not of this node's box subnet";
      await this.recordFailed(spec, why);
      return "failed";
    }
    let box: NodeBoxRow;
    try {
      box = this.store.insertBox(spec, { maxSlots: this.runtime.maxBoxes, status, netSlot });
    } catch (err) {
      if (!(err instanceof NodeStoreError)) throw err;
      await this.recordFailed(spec, `the node could not take it over: ${err.message}`);
      return "failed";
    }
    try {
      await this.outbound.install(box.id, box.network);
    } catch (err) {
      this.log.error({ sailboxId: box.id, err: String(err) }, "could not restore a sailbox's outbound rules: it has no way out");
    }
    this.lifecycle.adopted(box);
    await this.matchPower(box, state);
    this.log.info({ sailboxId: box.id, status, netSlot }, "sailbox taken over");
    return "adopted";
  }

  /** A box the host lost: in node.db as failed (the control plane hears it), its leftovers removed. */
  private async recordFailed(spec: NodeBoxSpec, reason: string): Promise<void> {
    const box = this.store.insertBox(spec, { maxSlots: this.runtime.maxBoxes, status: "failed", netSlot: null, failureReason: reason });
    this.lifecycle.adopted(box);
    await this.lifecycle
      .withLock(box.id, (signal) => this.runtime.destroy(box.id, { afterCrash: true, signal }), { deadlineMs: DESTROY_DEADLINE_MS + STRAY_WAIT_MS, what: "removing its leftovers" })
      .catch((err) => this.log.error({ sailboxId: box.id, err: String(err) }, "cleanup of a lost sailbox failed"));
    this.log.warn({ sailboxId: box.id, reason }, "sailbox marked failed");
  }

  private async fail(id: string, reason: string): Promise<void> {
    await this.lifecycle.transition(id, "failed", {
      reason,
      before: (_box, signal) => this.runtime.destroy(id, { afterCrash: true, signal }).catch((err) => this.log.error({ sailboxId: id, err: String(err) }, "cleanup of a lost sailbox failed")),
      deadlineMs: DESTROY_DEADLINE_MS + STRAY_WAIT_MS,
    });
    this.log.warn({ sailboxId: id, reason }, "sailbox marked failed");
  }

  /**
   * A crash between a status and its freeze (or thaw) leaves the container in the other state:
   * a box node.db has sleeping or paused is frozen again, a running one thawed. If the freeze
   * fails the freezer thawed it, and it is running.
   */
  private async matchPower(box: NodeBoxRow, state: RuntimeState): Promise<void> {
    const frozen = box.status === "sleeping" || box.status === "paused";
    try {
      if (frozen && state === "running") await this.lifecycle.withLock(box.id, (signal) => this.runtime.freeze(box.id, signal), { what: "freeze again" });
      else if (box.status === "running" && state === "paused") await this.lifecycle.withLock(box.id, (signal) => this.runtime.thaw(box.id, signal), { what: "thaw again" });
    } catch (err) {
      this.log.error({ sailboxId: box.id, status: box.status, runtime: state, err: String(err) }, "sailbox's power state differs from its container's");
      if (frozen) await this.lifecycle.transition(box.id, "running", { action: "undo sleep", reason: "could not freeze it again" }).catch(() => {});
    }
  }
}
