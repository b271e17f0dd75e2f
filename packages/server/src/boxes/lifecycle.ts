import { randomBytes } from "node:crypto";
import { canTransition, sailError, SAILBOX_TRANSITIONS, type SailboxStatus } from "@sail/protocol";
import type { NodeBoxState } from "../node-wire/node-api.js";
import type { OrgRow, SailboxRow, Store } from "../store/store.js";
import type { Logger } from "./logger.js";

/** One status change, as subscribers hear it (after the store has it). */
export interface Transition {
  box: SailboxRow;
  from: SailboxStatus;
  to: SailboxStatus;
  reason?: string;
}

/**
 * How long a box's lease lasts before it must be renewed: a holder that crashed loses it this
 * long after its last renewal, and another control plane may then drive the box.
 */
export const LEASE_TTL_MS = 15_000;
const LEASE_RENEW_MS = 5_000;
/** While another holder has the lease, look again this often, and give up after this long. */
const LEASE_RETRY_MS = 50;
export const LEASE_WAIT_MS = 60_000;

/**
 * The control plane's lifecycle core: a box's status as the store keeps it, who may drive a
 * box (its lease in the store), and who hears of changes. The store is written before anyone
 * hears: a change is never announced that a restart would forget.
 *
 * Existence is decided here (creating → running on create, → terminated, → failed); power
 * (running ⇄ sleeping, paused) is the node's: it reports each change with a sequence number,
 * and `applyNodeState` keeps the newest (docs/architecture.md, "The node boundary").
 */
export class Lifecycle {
  /** This process, as lease holder: unique per start, so a restarted control plane waits out its old leases. */
  readonly holder = `cp-${process.pid}-${randomBytes(4).toString("hex")}`;
  /** Work on one box in this process waits its turn here, so only the first in line asks the store. */
  private readonly queues = new Map<string, Promise<unknown>>();
  private readonly subscribers: Array<(change: Transition) => void> = [];

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
  ) {}

  /** Hear every status change, in order, after the store has it. */
  onTransition(subscriber: (change: Transition) => void): void {
    this.subscribers.push(subscriber);
  }

  /** The box, if it belongs to `org`: another org's box is reported exactly like a missing one. */
  async owned(org: OrgRow, id: string): Promise<SailboxRow> {
    const box = await this.store.getSailbox(id);
    if (!box || box.orgId !== org.id) throw sailError("SAIL_SAILBOX_NOT_FOUND", `No sailbox ${id}`, { sailboxId: id });
    return box;
  }

  /** The box as the store has it now. */
  current(id: string): Promise<SailboxRow | undefined> {
    return this.store.getSailbox(id);
  }

  /**
   * Run `work` holding the box's lease, so no other control plane (and no other call in this
   * one) drives the box meanwhile. The lease is renewed while `work` runs; past LEASE_WAIT_MS
   * waiting for another holder the call fails with SAIL_SAILBOX_BUSY naming the box.
   */
  async withLease<T>(id: string, what: string, work: () => Promise<T>): Promise<T> {
    const previous = this.queues.get(id) ?? Promise.resolve();
    const mine = previous.catch(() => {}).then(() => this.leased(id, what, work));
    this.queues.set(id, mine);
    try {
      return await mine;
    } finally {
      if (this.queues.get(id) === mine) this.queues.delete(id);
    }
  }

  private async leased<T>(id: string, what: string, work: () => Promise<T>): Promise<T> {
    const giveUpAt = Date.now() + LEASE_WAIT_MS;
    while (!(await this.store.takeLease(id, this.holder, LEASE_TTL_MS))) {
      if (Date.now() >= giveUpAt) {
        throw sailError("SAIL_SAILBOX_BUSY", `Sailbox ${id} is being changed by another request (a create, terminate, sleep or resume still in progress): try ${what} again shortly`, {
          sailboxId: id,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, LEASE_RETRY_MS));
    }
    const renew = setInterval(() => {
      void this.store.renewLease(id, this.holder, LEASE_TTL_MS).then(
        (held) => held || this.log.error({ sailboxId: id, what }, "lost the sailbox's lease while working on it"),
        (err) => this.log.warn({ sailboxId: id, err: String(err) }, "could not renew the sailbox's lease"),
      );
    }, LEASE_RENEW_MS);
    try {
      return await work();
    } finally {
      clearInterval(renew);
      await this.store.releaseLease(id, this.holder).catch((err) => this.log.warn({ sailboxId: id, err: String(err) }, "could not release the sailbox's lease; it expires by itself"));
    }
  }

  /**
   * Move the box to `to` in the store (the caller holds its lease and did the work the change
   * stands for). Moving to the status it has is a no-op; a change the table forbids is a
   * `SAIL_SAILBOX_NOT_RUNNING` conflict naming the status and what would allow it.
   */
  async setStatus(id: string, to: SailboxStatus, options: { reason?: string; action?: string } = {}): Promise<SailboxRow> {
    const box = await this.store.getSailbox(id);
    if (!box) throw sailError("SAIL_SAILBOX_NOT_FOUND", `No sailbox ${id}`, { sailboxId: id });
    if (box.status === to) return box;
    if (!canTransition(box.status, to)) throw refusal(box, to, options.action);
    await this.store.setStatus(id, to, options.reason ?? null);
    return this.announce(box, to, options.reason);
  }

  /** Refuse now what the table would refuse (before asking a node to do it). */
  check(box: SailboxRow, to: SailboxStatus, action: string): void {
    if (box.status !== to && !canTransition(box.status, to)) throw refusal(box, to, action);
  }

  /** A node's word on a box (its power state, or that it lost the box): kept when newer than the last one. */
  async applyNodeState(state: NodeBoxState): Promise<SailboxRow | undefined> {
    const before = await this.store.getSailbox(state.sailboxId);
    if (!before) return undefined;
    const kept = await this.store.applyNodeState(state.sailboxId, { status: state.status, seq: state.seq, failureReason: state.failureReason ?? null });
    if (!kept || before.status === state.status) return kept ? before : undefined;
    return this.announce(before, state.status, state.failureReason);
  }

  private async announce(before: SailboxRow, to: SailboxStatus, reason?: string): Promise<SailboxRow> {
    const changed = (await this.store.getSailbox(before.id))!;
    for (const subscriber of this.subscribers) subscriber({ box: changed, from: before.status, to, reason });
    return changed;
  }

  /** Live sailboxes per status, for every org (metrics). */
  countByStatus(): Promise<Record<string, number>> {
    return this.store.countLiveByStatus();
  }
}

function refusal(box: SailboxRow, to: SailboxStatus, action = `become ${to}`): Error {
  const from = (Object.keys(SAILBOX_TRANSITIONS) as SailboxStatus[]).filter((s) => canTransition(s, to));
  const why = box.failureReason ? ` (${box.failureReason})` : "";
  const allowed = from.length ? `only a ${from.join(" or ")} sailbox can ${action}` : `no sailbox can ${action}`;
  return sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${box.id} is ${box.status}${why}: ${allowed}`, { sailboxId: box.id, status: box.status });
}
