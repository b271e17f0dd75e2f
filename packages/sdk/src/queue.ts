/** A queue one producer fills and one `for await` drains (a second reader is an error: it would see only what is left). */
export class Queue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiting: (() => void) | undefined;
  private ended = false;
  private failure: unknown;
  private consumed = false;

  push(item: T): void {
    this.items.push(item);
    this.wake();
  }
  /** No more items; a `failure` is thrown to the reader once it has read the rest. Only the first end counts. */
  end(failure?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = failure;
    this.wake();
  }
  private wake(): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.();
  }
  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.consumed) throw new Error("this output stream was already read");
    this.consumed = true;
    for (;;) {
      if (this.items.length) {
        yield this.items.shift()!;
        continue;
      }
      if (this.ended) {
        if (this.failure) throw this.failure;
        return;
      }
      await new Promise<void>((resolve) => (this.waiting = resolve));
    }
  }
}
