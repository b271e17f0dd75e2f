import { statusOf, type ErrorCode, type SailboxStatus } from "@sail/protocol";

/** What the policy needs to know of a route (HTTP or TCP). */
export interface IngressTarget {
  sailboxId: string;
  port: number;
  status: SailboxStatus;
}

/** A refusal, ready to be answered (HTTP) or logged with a closed connection (TCP). */
export interface IngressRefusal {
  action: "refuse";
  code: ErrorCode;
  /** The gateway's HTTP status for it (TCP just closes). */
  status: number;
  /** Counted and logged under this reason (the code, or "cidr" for an allowlist). */
  reason: string;
  message: string;
  sailboxId?: string;
  port?: number;
  /** Seconds a client should wait before it tries again (Retry-After). */
  retryAfterSeconds?: number;
}

export type IngressDecision = { action: "forward" } | { action: "wake" } | IngressRefusal;

/** How long a connection to a sleeping box is held while it wakes before it is refused. */
export const WAKE_BUDGET_MS = 30_000;

/**
 * The one ingress policy, for HTTP (the slow path) and raw TCP alike, in the order that
 * makes a refused source cost nothing: an unknown host first; a source outside the
 * allowlist before anything else touches the box (it must not wake it); a paused box is
 * refused (traffic does not wake it); a sleeping one is woken; a running one is forwarded to.
 */
export function decideIngress(target: IngressTarget | undefined, context: { host?: string; domain?: string; sourceAllowed?: boolean } = {}): IngressDecision {
  if (!target || target.status === "terminated" || target.status === "failed" || target.status === "creating") {
    const shape = context.domain ? ` (URLs look like https://<port>-<id>.${context.domain})` : "";
    return refuse("SAIL_ROUTE_UNKNOWN", "SAIL_ROUTE_UNKNOWN", `No sailbox listener at ${context.host || "(empty Host)"}: the sailbox was terminated, or the URL is wrong${shape}`, target);
  }
  if (context.sourceAllowed === false) {
    return refuse("SAIL_FORBIDDEN", "cidr", `The source is outside the cidrAllowlist of port ${target.port} of sailbox ${target.sailboxId}`, target);
  }
  if (target.status === "paused") {
    return refuse(
      "SAIL_SAILBOX_PAUSED",
      "SAIL_SAILBOX_PAUSED",
      `Sailbox ${target.sailboxId} is paused and does not wake on traffic: resume it with sb.resume() or \`sail box resume ${target.sailboxId}\``,
      target,
    );
  }
  if (target.status === "sleeping") return { action: "wake" };
  return { action: "forward" };
}

/** After a wake: forward if it runs now, else refuse as its status says (still sleeping past the budget: retry later). */
export function decideAfterWake(target: IngressTarget, statusNow: SailboxStatus | undefined): IngressDecision {
  if (statusNow === "running") return { action: "forward" };
  if (statusNow === undefined || statusNow === "sleeping") {
    return { ...refuse("SAIL_WAKE_TIMEOUT", "SAIL_WAKE_TIMEOUT", `Sailbox ${target.sailboxId} is waking up and did not finish in time: retry shortly`, target), retryAfterSeconds: 5 };
  }
  return decideIngress({ ...target, status: statusNow });
}

/** Nothing accepted the connection on the guest's port (after the gateway's retries). */
export function nothingListening(target: IngressTarget): IngressRefusal {
  return refuse(
    "SAIL_NOTHING_LISTENING",
    "SAIL_NOTHING_LISTENING",
    `No process listens on port ${target.port} in sailbox ${target.sailboxId}: start your server on port ${target.port} (0.0.0.0 or 127.0.0.1)`,
    target,
  );
}

function refuse(code: ErrorCode, reason: string, message: string, target: IngressTarget | undefined): IngressRefusal {
  return { action: "refuse", code, status: statusOf(code, "gateway"), reason, message, sailboxId: target?.sailboxId, port: target?.port };
}
