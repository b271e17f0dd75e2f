import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";
import type { NodeStore } from "./node-store.js";

/** Per box: connections open now, and when bytes last moved (ms since epoch). */
export type ActivityReport = Record<string, { open: number; lastActiveMs: number }>;

/**
 * Idle auto-sleep. A box with an idleTimeout sleeps once it has been idle that long: no
 * inbound connection open through the gateway, no bytes moved on one, no foreground exec
 * running and no API call on it. Long-lived connections count as activity (agent-sandbox
 * counts only request heads, a documented flaw). Decided on the node, from its own data paths:
 * the control plane hears the sleep as an event.
 */
export class IdleSleeper {
  /** Data-path activity by source (HAProxy, the slow path, each TCP worker). */
  private readonly reports = new Map<string, ActivityReport>();
  /** Foreground execs running per box. */
  private readonly execsOpen = new Map<string, number>();
  /** Last API activity or start per box (ms since epoch). */
  private readonly lastTouched = new Map<string, number>();

  constructor(
    private readonly store: Pick<NodeStore, "idleCandidates">,
    lifecycle: Lifecycle,
    private readonly sleepBox: (id: string, reason: string) => Promise<unknown>,
    private readonly log: Logger,
  ) {
    lifecycle.onTransition(({ box, to }) => {
      if (to === "running")
        this.touch(box.id); // a start or a wake counts as activity
      else if (to === "terminated" || to === "failed") this.forget(box.id);
    });
  }

  /** The data path's latest activity from one source; an empty report clears it (a worker died). */
  noteActivity(source: string, report: ActivityReport): void {
    this.reports.set(source, report);
  }

  /** An API call on the box: it is not idle. */
  touch(id: string): void {
    this.lastTouched.set(id, Date.now());
  }

  /** A foreground exec runs until `done` settles: the box is busy meanwhile. */
  execRunning(id: string, done: Promise<unknown>): void {
    this.execsOpen.set(id, (this.execsOpen.get(id) ?? 0) + 1);
    void done
      .catch(() => {})
      .finally(() => {
        this.execsOpen.set(id, (this.execsOpen.get(id) ?? 1) - 1);
        this.touch(id);
      });
  }

  /** Sleep every running box with an idleTimeout that has been idle that long. Called every second by the node agent. */
  async sleepIdleBoxes(now = Date.now()): Promise<string[]> {
    const slept: string[] = [];
    for (const box of this.store.idleCandidates()) {
      let open = this.execsOpen.get(box.id) ?? 0;
      let last = Math.max(this.lastTouched.get(box.id) ?? 0, Date.parse(box.createdAt));
      for (const report of this.reports.values()) {
        const entry = report[box.id];
        if (!entry) continue;
        open += entry.open;
        last = Math.max(last, entry.lastActiveMs);
      }
      if (open > 0 || now - last < box.idleTimeout! * 1000) continue;
      try {
        await this.sleepBox(box.id, `idle for ${box.idleTimeout} s`);
        slept.push(box.id);
      } catch (err) {
        this.log.warn({ sailboxId: box.id, err: String(err) }, "idle sleep failed");
      }
    }
    return slept;
  }

  private forget(id: string): void {
    this.lastTouched.delete(id);
    this.execsOpen.delete(id);
  }
}
