import { checkName, checkOrgLimits, type OrgLimitsInfo, type SetOrgLimitsRequest } from "@sail/protocol";
import { SailClient } from "./client.js";

/**
 * An org's limits on its live boxes (how many, cores, memory, raw-TCP endpoints) and what it
 * uses now. Any org reads its own; the operator's org (the one `sail up` made) reads and sets
 * every org's. A create past a limit is refused with `SAIL_ORG_LIMIT_EXCEEDED`
 * (a `LimitExceededError`).
 *
 * @example
 * await Orgs.setLimits("acme", { sailboxes: 20, cpu: 8, memoryMiB: 16384 });
 * const { usage } = await Orgs.limits("acme");
 */
export class Orgs {
  static async limits(org: string, options: { client?: SailClient } = {}): Promise<OrgLimitsInfo> {
    const client = options.client ?? SailClient.default();
    return client.request<OrgLimitsInfo>("GET", `/v1/orgs/${encodeURIComponent(checkName("org", org))}/limits`);
  }

  /** Change the given limits (null removes one; omitted ones stay). Operator's org only. */
  static async setLimits(org: string, limits: SetOrgLimitsRequest, options: { client?: SailClient } = {}): Promise<OrgLimitsInfo> {
    const client = options.client ?? SailClient.default();
    return client.request<OrgLimitsInfo>("PUT", `/v1/orgs/${encodeURIComponent(checkName("org", org))}/limits`, checkOrgLimits(limits));
  }
}
