import { canTransition, sailError, SAILBOX_TRANSITIONS, type SailboxStatus } from "@sail/protocol";
import type { NodeBoxRow, NodeBoxStatus, NodeStore } from "./node-store.js";

/** One status change, as subscribers hear it (after node.db has it). `to: "terminated"`: the box is gone from the node. */
export interface Transition {
  /** The box after the change (for "terminated", as it was last: its row is gone). */
  box: NodeBoxRow;
  from: NodeBoxStatus;
  to: SailboxStatus;
  reason?: string;
}

export interface TransitionSteps {
  /**
   * Runs holding the lock, before the status changes; if it throws or passes the deadline, the
   * status does not change (e.g. thaw before "running"). `signal` aborts at the deadline (and when
   * terminate preempts the step): pass it to the runtime, whose commands are then killed.
   */
  before?: (box: NodeBoxRow, signal: AbortSignal) => Promise<void>;
  /** Runs holding the lock, once node.db has the new status and subscribers heard it (e.g. freeze after "sleeping"); the status stays changed if it fails. */
  after?: (box: NodeBoxRow, from: NodeBoxStatus, signal: AbortSignal) => Promise<void>;
  /** Why (kept with a failure, logged). */
  reason?: string;
  /** What was asked for, for the refusal's message ("sleep", "resume"). */
  action?: string;
  /** The most `before` and `after` may take together; default `STEP_DEADLINE_MS`. */
  deadlineMs?: number;
}

/**
 * How long a transition's steps may hold a box's lock unless they say otherwise: a thaw takes
 * milliseconds, a freeze gives up by itself after ≈ 5 s (runtime/freezer.ts), pushing routes to
 * the data paths takes milliseconds. Past it the lock is released with `SAIL_RUNTIME_TIMEOUT`.
 */
export const STEP_DEADLINE_MS = 30_000;

/**
 * The node's lifecycle core: the only place a box's status on this node changes.
 * `transition(id, to)` takes the box's lock, checks SAILBOX_TRANSITIONS (@sail/protocol), writes
 * node.db and tells the subscribers (routes, connection drops, idle tracking, wake counts,
 * events to the control plane), in that order. One operation per box at a time, so concurrent
 * wakes of a sleeping box share one resume: the second finds it running. "terminated" removes
 * the box from node.db: the control plane keeps its history.
 */
export class Lifecycle {
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Per box: aborts the work holding its lock now (terminate preempts it). */
  private readonly holders = new Map<string, AbortController>();
  private readonly subscribers: Array<(change: Transition) => void> = [];

  constructor(private readonly store: NodeStore) {}

  /** Hear every status change, in order, after node.db has it. */
  onTransition(subscriber: (change: Transition) => void): void {
    this.subscribers.push(subscriber);
  }

  /** The box as node.db has it now. */
  current(id: string): NodeBoxRow | undefined {
    return this.store.getBox(id);
  }

  /** The box, or SAIL_SAILBOX_NOT_FOUND: the node does not hold it. */
  get(id: string): NodeBoxRow {
    const box = this.store.getBox(id);
    if (!box) throw sailError("SAIL_SAILBOX_NOT_FOUND", `No sailbox ${id}`, { sailboxId: id });
    return box;
  }

  /**
   * Move the box to `to`. Moving to the status it has is a no-op that returns it (sleep,
   * pause and resume are idempotent); a change the table forbids is a
   * `SAIL_SAILBOX_NOT_RUNNING` conflict that names the status and what would allow it.
   * The steps are bounded by `deadlineMs`: past it the lock is released with a
   * `SAIL_RUNTIME_TIMEOUT` naming the box and the step, the step's signal aborts (its runtime
   * commands are killed), and the status is what the step had reached: unchanged when `before`
   * was stuck, the new one when `after` was (docs/architecture.md, "Steps past their deadline").
   */
  transition(id: string, to: SailboxStatus, steps: TransitionSteps = {}): Promise<NodeBoxRow> {
    const what = steps.action ?? `become ${to}`;
    return this.withLock(
      id,
      async (signal) => {
        const box = this.get(id);
        if (box.status === to) return box;
        if (!canTransition(box.status, to)) throw refusal(box, to, steps.action);
        await steps.before?.(box, signal);
        signal.throwIfAborted(); // past the deadline the status must not change any more
        let changed: NodeBoxRow;
        if (to === "terminated") {
          this.store.deleteBox(id);
          changed = box;
        } else {
          this.store.setStatus(id, to, steps.reason ?? null);
          changed = this.store.getBox(id)!;
        }
        this.tell({ box: changed, from: box.status, to, reason: steps.reason });
        await steps.after?.(changed, box.status, signal);
        return changed;
      },
      { deadlineMs: steps.deadlineMs, what },
    );
  }

  /**
   * Remove the box from the node, whatever its status ("terminated" on the node is removal: a
   * create that failed or was given up, a failed box's leftovers, a terminate). `step` (the
   * runtime's destroy) runs holding the lock first, bounded like a transition's; if it fails,
   * the box stays as it was (a destroy is idempotent: remove again). Subscribers hear
   * `→ terminated`. A box the node does not hold: `step` still runs, on its leftovers.
   */
  remove(id: string, step: (signal: AbortSignal) => Promise<void> = async () => {}, options: { deadlineMs?: number; what?: string } = {}): Promise<NodeBoxRow | undefined> {
    return this.withLock(
      id,
      async (signal) => {
        const box = this.store.getBox(id);
        await step(signal);
        signal.throwIfAborted();
        if (!box) return undefined;
        this.store.deleteBox(id);
        this.tell({ box, from: box.status, to: "terminated" });
        return box;
      },
      { deadlineMs: options.deadlineMs, what: options.what ?? "its removal" },
    );
  }

  /**
   * A box the node took over (adopt: it runs from before the node kept its boxes): subscribers
   * hear it appear in its status, as if its create had just ended.
   */
  adopted(box: NodeBoxRow): void {
    this.tell({ box, from: "creating", to: box.status });
  }

  private tell(change: Transition): void {
    for (const subscriber of this.subscribers) subscriber(change);
  }

  /**
   * Run `work` holding the box's lock (for work that changes no status, e.g. removing a failed
   * box's leftovers), bounded like a transition's steps: past the deadline, or when `preempt`
   * is called, `signal` aborts and the lock is released at once with that reason, whether or
   * not `work` has noticed yet.
   */
  async withLock<T>(id: string, work: (signal: AbortSignal) => Promise<T>, options: { deadlineMs?: number; what?: string } = {}): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(() => this.bounded(id, work, options.deadlineMs ?? STEP_DEADLINE_MS, options.what ?? "its operation"));
    this.locks.set(id, next);
    try {
      return await next;
    } finally {
      if (this.locks.get(id) === next) this.locks.delete(id);
    }
  }

  /**
   * Abort whatever holds the box's lock now (terminate must never wait behind a stuck step);
   * returns whether something did.
   */
  preempt(id: string, why: string): boolean {
    const holder = this.holders.get(id);
    if (!holder) return false;
    holder.abort(sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${id}: ${why}`, { sailboxId: id }));
    return true;
  }

  private async bounded<T>(id: string, work: (signal: AbortSignal) => Promise<T>, deadlineMs: number, what: string): Promise<T> {
    const controller = new AbortController();
    this.holders.set(id, controller);
    const timer = setTimeout(() => {
      const seconds = Math.round(deadlineMs / 100) / 10;
      controller.abort(sailError("SAIL_RUNTIME_TIMEOUT", `Sailbox ${id}: ${what} did not finish within ${seconds} s; it was stopped`, { sailboxId: id, deadlineMs }));
    }, deadlineMs);
    const released = new Promise<never>((_, reject) => controller.signal.addEventListener("abort", () => reject(controller.signal.reason as Error), { once: true }));
    const running = work(controller.signal);
    running.catch(() => {}); // once released, what the stuck work ends with is nobody's answer
    try {
      return await Promise.race([running, released]);
    } finally {
      clearTimeout(timer);
      if (this.holders.get(id) === controller) this.holders.delete(id);
    }
  }

  /** Live boxes per status (metrics). */
  countByStatus(): Record<string, number> {
    return this.store.countByStatus();
  }
}

function refusal(box: NodeBoxRow, to: SailboxStatus, action = `become ${to}`): Error {
  const from = (Object.keys(SAILBOX_TRANSITIONS) as SailboxStatus[]).filter((s) => canTransition(s, to));
  const why = box.failureReason ? ` (${box.failureReason})` : "";
  const allowed = from.length ? `only a ${from.join(" or ")} sailbox can ${action}` : `no sailbox can ${action}`;
  return sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${box.id} is ${box.status}${why}: ${allowed}`, { sailboxId: box.id, status: box.status });
}
