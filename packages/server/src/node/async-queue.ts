/** How a queue's producer is slowed down while its consumer lags behind. */
export interface QueueFlow {
  /** Items held before the producer is paused. */
  highWater: number;
  pause(): void;
  resume(): void;
  /** The consumer stopped iterating before the end (a `break`, a thrown error). */
  abandoned?(): void;
}

/**
 * Items a producer pushes (stream events), read once by one consumer as an async iterable. Past
 * `highWater` held items the producer is paused until the consumer has taken half of them, so
 * a slow reader bounds what the node holds (the producer's kernel pipe then fills and the
 * guest's writes block, as with any pipe).
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiting: { resolve: (result: IteratorResult<T>) => void; reject: (err: unknown) => void } | undefined;
  private done = false;
  private error: unknown;
  private paused = false;
  private iterated = false;

  constructor(private readonly flow: QueueFlow) {}

  push(item: T): void {
    if (this.done) return;
    if (this.waiting) {
      const { resolve } = this.waiting;
      this.waiting = undefined;
      resolve({ value: item, done: false });
      return;
    }
    this.items.push(item);
    if (!this.paused && this.items.length >= this.flow.highWater) {
      this.paused = true;
      this.flow.pause();
    }
  }

  /** No more items: the consumer gets what is held, then the end. */
  end(): void {
    if (this.done) return;
    this.done = true;
    this.settleWaiting();
  }

  /** The producer failed: the consumer gets what is held, then `err`. */
  fail(err: unknown): void {
    if (this.done) return;
    this.done = true;
    this.error = err;
    this.settleWaiting();
  }

  private settleWaiting(): void {
    if (!this.waiting || this.items.length) return;
    const { resolve, reject } = this.waiting;
    this.waiting = undefined;
    if (this.error !== undefined) reject(this.error);
    else resolve({ value: undefined, done: true });
  }

  private next(): Promise<IteratorResult<T>> {
    if (this.items.length) {
      const value = this.items.shift()!;
      if (this.paused && this.items.length <= this.flow.highWater / 2) {
        this.paused = false;
        this.flow.resume();
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.done) return this.error !== undefined ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.iterated) throw new Error("this stream has one reader, and it has begun");
    this.iterated = true;
    return {
      next: () => this.next(),
      return: async () => {
        const wasDone = this.done;
        this.done = true;
        this.items.length = 0;
        if (!wasDone) this.flow.abandoned?.();
        return { value: undefined, done: true };
      },
    };
  }
}
