import { SailError, sailError, type SailboxStatus } from "@sail/protocol";
import { FreezeError, type Runtime } from "../runtime/runtime.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";
import type { NodeBoxRow } from "./node-store.js";

/**
 * Sleep, pause, resume and wake. Sleep marks the box sleeping (new connections now wait and
 * its open ones are dropped, through the routes), waits for the data paths to know, then
 * freezes it; the next inbound connection or API call that needs the guest thaws it. Pause
 * freezes it too, but traffic does not wake it. Memory stays resident: the cgroup freezer
 * (this kernel has no working CRIU). Wake on ingress and idle sleep happen here on the node
 * alone (the box's lock), so traffic never waits for the control plane or its store.
 */
export class Power {
  private readonly wokenListeners: Array<(id: string, seconds: number) => void> = [];

  constructor(
    private readonly lifecycle: Lifecycle,
    private readonly runtime: Pick<Runtime, "freeze" | "thaw">,
    private readonly routesSynced: () => Promise<void>,
    private readonly log: Logger,
  ) {}

  /** Sleep a running box (idle auto-sleep calls this too); a sleeping one stays as it is. */
  async sleep(id: string, reason: string): Promise<NodeBoxRow> {
    try {
      return await this.lifecycle.transition(id, "sleeping", {
        action: "sleep",
        after: async (_box, _from, signal) => {
          await this.routesSynced();
          await this.runtime.freeze(id, signal);
          this.log.info({ sailboxId: id, reason }, "sailbox sleeping");
        },
      });
    } catch (err) {
      throw await this.unfrozen(id, "sleep", err);
    }
  }

  async pause(id: string): Promise<NodeBoxRow> {
    try {
      return await this.lifecycle.transition(id, "paused", {
        action: "pause",
        after: async (_box, from, signal) => {
          await this.routesSynced();
          if (from === "running") await this.runtime.freeze(id, signal); // a sleeping box is frozen already
          this.log.info({ sailboxId: id }, "sailbox paused");
        },
      });
    } catch (err) {
      throw await this.unfrozen(id, "pause", err);
    }
  }

  /**
   * A sleep or pause whose freeze failed or passed its deadline: the freezer thawed the box
   * again, so it is running, and says so (routes, idle tracking: an idle box is tried again
   * after its idleTimeout). Returns the error to throw, naming the box.
   */
  private async unfrozen(id: string, action: "sleep" | "pause", err: unknown): Promise<unknown> {
    if (!(err instanceof FreezeError) && !(err instanceof SailError && err.code === "SAIL_RUNTIME_TIMEOUT")) return err;
    this.log.error({ sailboxId: id, action, err: String(err) }, "sailbox could not be frozen; it runs again");
    const status = this.lifecycle.current(id)?.status;
    if (status === "sleeping" || status === "paused") {
      await this.lifecycle
        .transition(id, "running", { action: `undo ${action}`, before: (_box, signal) => this.runtime.thaw(id, signal), reason: `could not ${action}` })
        .catch((undo) => this.log.error({ sailboxId: id, err: String(undo) }, `could not undo the failed ${action}`));
    }
    if (err instanceof SailError) return err;
    return sailError("SAIL_RUNTIME_FAILED", `Sailbox ${id} could not ${action}: ${(err as Error).message}. It is running again; try again later`, { sailboxId: id });
  }

  /** Bring a sleeping or paused box back (a running one is left as it is). */
  resume(id: string): Promise<NodeBoxRow> {
    return this.thaw(id, "resume");
  }

  /**
   * The gateway's wake: a sleeping box is resumed (concurrent arrivals share one resume: the
   * lock makes the others find it running); a paused one stays paused. Resolves to the status
   * traffic should see.
   */
  async wakeOnIngress(id: string): Promise<SailboxStatus | undefined> {
    const box = this.lifecycle.current(id);
    if (box?.status === "sleeping") await this.thaw(id, "wake").catch((err) => this.log.error({ sailboxId: id, err: String(err) }, "wake on ingress failed"));
    return this.lifecycle.current(id)?.status;
  }

  /**
   * For an API call that needs the guest (exec, sshd, listener waits): a sleeping box is woken,
   * a paused one refused with SAIL_SAILBOX_PAUSED, a failed one with a conflict.
   */
  async awake(id: string): Promise<NodeBoxRow> {
    let box = this.lifecycle.get(id);
    if (box.status === "sleeping") {
      box = await this.thaw(id, "wake").catch((err) => {
        this.log.error({ sailboxId: id, err: String(err) }, "wake for an API call failed");
        return this.lifecycle.get(id);
      });
    }
    if (box.status === "paused") throw sailError("SAIL_SAILBOX_PAUSED", `Sailbox ${id} is paused: call resume() first`, { sailboxId: id });
    if (box.status !== "running") {
      throw sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${id} is ${box.status}${box.failureReason ? ` (${box.failureReason})` : ""}: create a new one`, { sailboxId: id, status: box.status });
    }
    return box;
  }

  /** Called with the box and the seconds each wake from sleep took, routes pushed included (metrics, events). */
  onWoken(listener: (id: string, seconds: number) => void): void {
    this.wokenListeners.push(listener);
  }

  /** sleeping | paused → running: thaw first, then the routes say running, then wait until the data paths know. */
  private async thaw(id: string, action: "wake" | "resume"): Promise<NodeBoxRow> {
    const started = process.hrtime.bigint();
    let from: SailboxStatus | undefined;
    const box = await this.lifecycle.transition(id, "running", {
      action,
      before: async (box, signal) => {
        if (action === "wake" && box.status !== "sleeping") throw sailError("SAIL_SAILBOX_PAUSED", `Sailbox ${id} is ${box.status}: only resume() brings it back`, { sailboxId: id });
        from = box.status;
        await this.runtime.thaw(id, signal);
      },
      after: () => this.routesSynced(),
    });
    if (from === undefined) return box; // it was running already
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (from === "sleeping") for (const listener of this.wokenListeners) listener(id, seconds);
    this.log.info({ sailboxId: id, from, thawMs: seconds * 1e3 }, "sailbox woke");
    return box;
  }
}
