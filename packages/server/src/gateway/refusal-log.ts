import type { Logger } from "../logger.js";

/** Lines per reason per second before the rest are only counted. */
const LINES_PER_SECOND = 10;

/**
 * Refusals are logged with the box, the port and the peer, but a flood of them (a 404 scan,
 * a blocked source retrying) must not fill the disk: past LINES_PER_SECOND lines per reason
 * in a second, refusals are counted and one line a second says how many were not logged.
 * The metrics count every refusal either way.
 */
export class RefusalLog {
  private windowStart = 0;
  private readonly lines = new Map<string, number>();
  private readonly suppressed = new Map<string, number>();

  constructor(
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  info(reason: string, fields: object, message: string): void {
    if (this.admit(reason)) this.log.info({ ...fields, reason }, message);
  }

  warn(reason: string, fields: object, message: string): void {
    if (this.admit(reason)) this.log.warn({ ...fields, reason }, message);
  }

  private admit(reason: string): boolean {
    const now = this.now();
    if (now - this.windowStart >= 1000) {
      for (const [key, count] of this.suppressed) this.log.warn({ reason: key, suppressed: count }, `${count} more refusals (${key}) in the last second were not logged`);
      this.suppressed.clear();
      this.lines.clear();
      this.windowStart = now;
    }
    const lines = (this.lines.get(reason) ?? 0) + 1;
    this.lines.set(reason, lines);
    if (lines <= LINES_PER_SECOND) return true;
    this.suppressed.set(reason, (this.suppressed.get(reason) ?? 0) + 1);
    return false;
  }
}
