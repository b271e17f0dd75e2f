import { performance } from "node:perf_hooks";

/**
 * A token bucket: `ratePerSecond` tokens a second, at most `burst` saved up. What a box may
 * cost the daemon per second (answers of its resolver, addresses its lookups open).
 */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    this.tokens = burst;
    this.at = nowMs();
  }

  /** Take `n` tokens: 0 if there were enough, else how many ms until there are (none taken). */
  take(n = 1): number {
    const now = this.nowMs();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.ratePerSecond) / 1000);
    this.at = now;
    if (this.tokens >= n) {
      this.tokens -= n;
      return 0;
    }
    return Math.ceil(((n - this.tokens) * 1000) / this.ratePerSecond);
  }
}
