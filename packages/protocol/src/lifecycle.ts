/**
 * The Sailbox lifecycle: every status and every change allowed between them, in one table
 * the server enforces (boxes/lifecycle.ts), the SDKs can read and docs/api.md shows.
 */
import type { SailboxStatus } from "./types.js";

/**
 * From each status, the statuses a box may move to.
 * - creating → running once the runtime started it; a create that fails is removed, not kept.
 * - running ⇄ sleeping: sleep freezes it; inbound traffic or an API call that needs the guest wakes it.
 * - running | sleeping → paused: frozen, and traffic does not wake it; resume → running.
 * - → terminated from any live status; → failed when the runtime loses the box.
 */
export const SAILBOX_TRANSITIONS: Readonly<Record<SailboxStatus, readonly SailboxStatus[]>> = {
  creating: ["running", "failed"],
  running: ["sleeping", "paused", "terminated", "failed"],
  sleeping: ["running", "paused", "terminated", "failed"],
  paused: ["running", "terminated", "failed"],
  terminated: [],
  failed: [],
};

/** States in which a sailbox still holds resources (a name, an address, ports). */
export const LIVE_STATUSES: readonly SailboxStatus[] = ["creating", "running", "sleeping", "paused"];

export function canTransition(from: SailboxStatus, to: SailboxStatus): boolean {
  return SAILBOX_TRANSITIONS[from].includes(to);
}

export function isLive(status: SailboxStatus): boolean {
  return LIVE_STATUSES.includes(status);
}
