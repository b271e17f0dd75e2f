import { sailError } from "@sail/protocol";
import type { OrgRow, Store } from "../store/store.js";

/**
 * The product page's rule: each org holds a limited number of raw-TCP endpoints at once (32
 * unless the operator set the org's own). Refused with the limit and the usage, and what to do.
 */
export function checkTcpQuota(store: Pick<Store, "orgTcpLimit" | "countLiveTcpListeners">, org: OrgRow, requested: number, defaultLimit: number): void {
  if (requested === 0) return;
  const limit = store.orgTcpLimit(org.id) ?? defaultLimit;
  const inUse = store.countLiveTcpListeners(org.id);
  if (inUse + requested <= limit) return;
  throw sailError(
    "SAIL_TCP_LIMIT_EXCEEDED",
    `Your org holds ${inUse} of its ${limit} raw-TCP endpoints; this sailbox asks for ${requested} more. Terminate sailboxes that no longer need public TCP endpoints, or ask the operator to raise the limit`,
    { limit, inUse, requested },
  );
}
