import type { NodeEvent, NodeEventSink } from "../node-wire/node-api.js";
import type { Logger } from "./logger.js";

export interface OutboxSettings {
  /** The first retry after a failed delivery; doubled after each failure up to `maxRetryMs`. */
  firstRetryMs: number;
  maxRetryMs: number;
  /** A delivery that takes longer counts as failed (and is tried again: the control plane ignores what it has heard). */
  deliverTimeoutMs: number;
  /** Events sent in one delivery at most. */
  batchMax: number;
  /** `woken` events kept while the control plane is away; past it the oldest go (each box's state is kept, newest only). */
  wokenMax: number;
}

/**
 * 250 ms doubling to 10 s: a control plane that restarts is heard from within a few seconds, and
 * one away for long costs a delivery attempt every 10 s. 30 s for a delivery: the control plane
 * writes a batch in one transaction (milliseconds), unless its store is failing over.
 */
export const OUTBOX_DEFAULTS: OutboxSettings = { firstRetryMs: 250, maxRetryMs: 10_000, deliverTimeoutMs: 30_000, batchMax: 500, wokenMax: 1000 };

/**
 * The node's events on their way to the control plane, in the order they happened, retried with
 * backoff while the control plane (or its store) is away. Bounded: only the newest state of a
 * box matters (the control plane keeps the highest `seq`), so a newer one replaces the older
 * still waiting, and moves to the end; `woken` events (metrics) are kept up to `wokenMax`.
 */
export class EventOutbox {
  /** Waiting events by key (`box <id>`, or `woken <n>`), in the order they are to be delivered. */
  private pending = new Map<string, NodeEvent>();
  private wokenCount = 0;
  private wokenSerial = 0;
  private delivering = false;
  private retryMs: number;
  private retryTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private closed = false;
  private readonly idleWaiters: Array<() => void> = [];

  constructor(
    private readonly sink: NodeEventSink,
    private readonly log: Logger,
    private readonly settings: OutboxSettings = OUTBOX_DEFAULTS,
  ) {
    this.retryMs = settings.firstRetryMs;
  }

  push(event: NodeEvent): void {
    if (this.closed) return;
    if (event.type === "box") {
      const key = `box ${event.state.sailboxId}`;
      this.pending.delete(key); // the newer state replaces it, and goes to the end
      this.pending.set(key, event);
    } else {
      this.pending.set(`woken ${this.wokenSerial++}`, event);
      if (++this.wokenCount > this.settings.wokenMax) this.dropOldestWoken();
    }
    if (!this.retryTimer) queueMicrotask(() => void this.deliver());
  }

  /** Resolves once nothing waits to be delivered (tests; a node that stops). */
  idle(): Promise<void> {
    if (!this.pending.size && !this.delivering) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * The control plane is reachable again (it came up, or heard the node's heartbeat): what waits
   * goes now, not when the backoff's timer fires, which may be seconds away.
   */
  retryNow(): void {
    if (this.closed || !this.retryTimer) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.retryMs = this.settings.firstRetryMs;
    void this.deliver();
  }

  /** Stop delivering (what waits is dropped: the control plane reconciles with `boxes()`). */
  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.wakeIdleWaiters();
  }

  /** How many events wait (metrics, tests). */
  get size(): number {
    return this.pending.size;
  }

  private dropOldestWoken(): void {
    for (const key of this.pending.keys()) {
      if (!key.startsWith("woken ")) continue;
      this.pending.delete(key);
      this.wokenCount--;
      return;
    }
  }

  private async deliver(): Promise<void> {
    if (this.delivering || this.closed || this.retryTimer) return;
    if (!this.pending.size) return this.wakeIdleWaiters();
    this.delivering = true;
    const batch = [...this.pending].slice(0, this.settings.batchMax);
    for (const [key] of batch) this.pending.delete(key);
    const woken = batch.filter(([key]) => key.startsWith("woken ")).length;
    this.wokenCount -= woken;
    try {
      await this.withDeadline(this.sink.deliver(batch.map(([, event]) => event)));
      if (this.failures) this.log.info({ failures: this.failures }, "events reach the control plane again");
      this.failures = 0;
      this.retryMs = this.settings.firstRetryMs;
    } catch (err) {
      if (this.failures++ === 0) this.log.warn({ err: String(err), waiting: batch.length + this.pending.size }, "could not deliver events to the control plane; retrying");
      this.requeue(batch);
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        void this.deliver();
      }, this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, this.settings.maxRetryMs);
    } finally {
      this.delivering = false;
    }
    if (!this.retryTimer) void this.deliver();
  }

  /** A batch that was not heard goes back before what came since, but a box's newer state still wins. */
  private requeue(batch: Array<[string, NodeEvent]>): void {
    const kept = batch.filter(([key]) => !this.pending.has(key));
    this.pending = new Map([...kept, ...this.pending]);
    this.wokenCount += kept.filter(([key]) => key.startsWith("woken ")).length;
    while (this.wokenCount > this.settings.wokenMax) this.dropOldestWoken();
  }

  private withDeadline(delivery: Promise<void>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the control plane did not take the events within ${this.settings.deliverTimeoutMs} ms`)), this.settings.deliverTimeoutMs);
    });
    delivery.catch(() => {});
    return Promise.race([delivery, timeout]).finally(() => clearTimeout(timer));
  }

  private wakeIdleWaiters(): void {
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}
