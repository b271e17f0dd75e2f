import { canTransition, sailError, SAILBOX_TRANSITIONS, type SailboxStatus } from "@sail/protocol";
import type { OrgRow, SailboxRow, Store } from "../store/store.js";

/** One status change, as subscribers hear it (after the store has it). */
export interface Transition {
  box: SailboxRow;
  from: SailboxStatus;
  to: SailboxStatus;
  reason?: string;
}

export interface TransitionSteps {
  /** Runs holding the lock, before the status changes; if it throws, nothing changes (e.g. thaw before "running"). */
  before?: (box: SailboxRow) => Promise<void>;
  /** Runs holding the lock, once the store has the new status and subscribers heard it (e.g. freeze after "sleeping"). */
  after?: (box: SailboxRow, from: SailboxStatus) => Promise<void>;
  /** Why (kept with a failure, logged). */
  reason?: string;
  /** What the user asked for, for the refusal's message ("sleep", "resume"). */
  action?: string;
}

/**
 * The lifecycle core: the only place a box's status changes. `transition(id, to)` takes the
 * box's lock, checks SAILBOX_TRANSITIONS (@sail/protocol), writes the store and tells the
 * subscribers (routes, connection drops, idle tracking, wake counts), in that order. One
 * operation per box at a time, so concurrent wakes of a sleeping box share one resume: the
 * second finds it running.
 */
export class Lifecycle {
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly subscribers: Array<(change: Transition) => void> = [];

  constructor(private readonly store: Store) {}

  /** Hear every status change, in order, after the store has it. */
  onTransition(subscriber: (change: Transition) => void): void {
    this.subscribers.push(subscriber);
  }

  /** The box, if it belongs to `org`: another org's box is reported exactly like a missing one. */
  owned(org: OrgRow, id: string): SailboxRow {
    const box = this.store.getSailbox(id);
    if (!box || box.orgId !== org.id) throw sailError("SAIL_SAILBOX_NOT_FOUND", `No sailbox ${id}`, { sailboxId: id });
    return box;
  }

  /** The box as the store has it now. */
  current(id: string): SailboxRow | undefined {
    return this.store.getSailbox(id);
  }

  /**
   * Move the box to `to`. Moving to the status it has is a no-op that returns it (sleep,
   * pause, resume and terminate are idempotent); a change the table forbids is a
   * `SAIL_SAILBOX_NOT_RUNNING` conflict that names the status and what would allow it.
   */
  transition(id: string, to: SailboxStatus, steps: TransitionSteps = {}): Promise<SailboxRow> {
    return this.withLock(id, async () => {
      const box = this.store.getSailbox(id);
      if (!box) throw sailError("SAIL_SAILBOX_NOT_FOUND", `No sailbox ${id}`, { sailboxId: id });
      if (box.status === to) return box;
      if (!canTransition(box.status, to)) throw refusal(box, to, steps.action);
      await steps.before?.(box);
      this.store.setStatus(id, to, steps.reason ?? null);
      const changed = this.store.getSailbox(id)!;
      for (const subscriber of this.subscribers) subscriber({ box: changed, from: box.status, to, reason: steps.reason });
      await steps.after?.(changed, box.status);
      return changed;
    });
  }

  /** Run `work` holding the box's lock (for work that changes no status, e.g. removing a failed box's leftovers). */
  async withLock<T>(id: string, work: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(work);
    this.locks.set(id, next);
    try {
      return await next;
    } finally {
      if (this.locks.get(id) === next) this.locks.delete(id);
    }
  }

  /** Live sailboxes per status, for every org (metrics). */
  countByStatus(): Record<string, number> {
    return this.store.countLiveByStatus();
  }
}

function refusal(box: SailboxRow, to: SailboxStatus, action = `become ${to}`): Error {
  const from = (Object.keys(SAILBOX_TRANSITIONS) as SailboxStatus[]).filter((s) => canTransition(s, to));
  const why = box.failureReason ? ` (${box.failureReason})` : "";
  const allowed = from.length ? `only a ${from.join(" or ")} sailbox can ${action}` : `no sailbox can ${action}`;
  return sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${box.id} is ${box.status}${why}: ${allowed}`, { sailboxId: box.id, status: box.status });
}
