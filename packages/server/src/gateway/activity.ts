import type { ActivityReport } from "../node/idle.js";

/** Forget a box's activity this long after its last byte (its idleTimeout is shorter). */
const KEEP_MS = 7 * 86_400_000;

/**
 * Per box: connections open now and when bytes last moved. The data path counts; the
 * daemon reads a snapshot every second to decide which boxes are idle.
 */
export class ActivityMeter {
  private readonly boxes = new Map<string, { open: number; lastActiveMs: number }>();

  open(sailboxId: string): void {
    const entry = this.entry(sailboxId);
    entry.open++;
    entry.lastActiveMs = Date.now();
  }

  close(sailboxId: string): void {
    const entry = this.entry(sailboxId);
    entry.open = Math.max(0, entry.open - 1);
    entry.lastActiveMs = Date.now();
  }

  /** Bytes moved on a long-lived connection (WebSocket, TCP, SSH): it is not idle. */
  bytes(sailboxId: string): void {
    this.entry(sailboxId).lastActiveMs = Date.now();
  }

  snapshot(now = Date.now()): ActivityReport {
    const report: ActivityReport = {};
    for (const [id, entry] of this.boxes) {
      if (entry.open === 0 && now - entry.lastActiveMs > KEEP_MS) this.boxes.delete(id);
      else report[id] = { ...entry };
    }
    return report;
  }

  private entry(sailboxId: string) {
    let entry = this.boxes.get(sailboxId);
    if (!entry) this.boxes.set(sailboxId, (entry = { open: 0, lastActiveMs: Date.now() }));
    return entry;
  }
}
