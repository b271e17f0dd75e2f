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
  /**
   * Runs holding the lock, before the status changes; if it throws or passes the deadline, the
   * status does not change (e.g. thaw before "running"). `signal` aborts at the deadline (and when
   * terminate preempts the step): pass it to the runtime, whose commands are then killed.
   */
  before?: (box: SailboxRow, signal: AbortSignal) => Promise<void>;
  /** Runs holding the lock, once the store has the new status and subscribers heard it (e.g. freeze after "sleeping"); the status stays changed if it fails. */
  after?: (box: SailboxRow, from: SailboxStatus, signal: AbortSignal) => Promise<void>;
  /** Why (kept with a failure, logged). */
  reason?: string;
  /** What the user asked for, for the refusal's message ("sleep", "resume"). */
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
 * The lifecycle core: the only place a box's status changes. `transition(id, to)` takes the
 * box's lock, checks SAILBOX_TRANSITIONS (@sail/protocol), writes the store and tells the
 * subscribers (routes, connection drops, idle tracking, wake counts), in that order. One
 * operation per box at a time, so concurrent wakes of a sleeping box share one resume: the
 * second finds it running.
 */
export class Lifecycle {
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Per box: aborts the work holding its lock now (terminate preempts it). */
  private readonly holders = new Map<string, AbortController>();
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
   * The steps are bounded by `deadlineMs`: past it the lock is released with a
   * `SAIL_RUNTIME_TIMEOUT` naming the box and the step, the step's signal aborts (its runtime
   * commands are killed), and the status is what the step had reached: unchanged when `before`
   * was stuck, the new one when `after` was (docs/architecture.md, "Steps past their deadline").
   */
  transition(id: string, to: SailboxStatus, steps: TransitionSteps = {}): Promise<SailboxRow> {
    const what = steps.action ?? `become ${to}`;
    return this.withLock(
      id,
      async (signal) => {
        const box = this.store.getSailbox(id);
        if (!box) throw sailError("SAIL_SAILBOX_NOT_FOUND", `No sailbox ${id}`, { sailboxId: id });
        if (box.status === to) return box;
        if (!canTransition(box.status, to)) throw refusal(box, to, steps.action);
        await steps.before?.(box, signal);
        signal.throwIfAborted(); // past the deadline the status must not change any more
        this.store.setStatus(id, to, steps.reason ?? null);
        const changed = this.store.getSailbox(id)!;
        for (const subscriber of this.subscribers) subscriber({ box: changed, from: box.status, to, reason: steps.reason });
        await steps.after?.(changed, box.status, signal);
        return changed;
      },
      { deadlineMs: steps.deadlineMs, what },
    );
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
