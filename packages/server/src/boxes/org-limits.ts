import { checkName, checkOrgLimits, sailError, type OrgLimitsInfo } from "@sail/protocol";
import type { OrgLimitReachedError, OrgRow, Store } from "../store/store.js";
import type { Logger } from "./logger.js";

type LimitStore = Pick<Store, "orgLimits" | "setOrgLimits" | "orgUsage" | "countLiveTcpListeners" | "findOrgByName">;

/**
 * The operator's caps on an org's live boxes: how many, how many cores and how much memory,
 * and its raw-TCP endpoints (the product page's 32 unless the operator set the org's own). A
 * tenant reads its own; only the operator's org sets them, so one tenant cannot take the host
 * from the others. The store checks them in the create's transaction (insertSailbox).
 */
export class OrgLimitsRoom {
  constructor(
    private readonly store: LimitStore,
    private readonly tcpDefault: number,
    private readonly log: Logger,
  ) {}

  async get(caller: OrgRow, orgName: string): Promise<OrgLimitsInfo> {
    return this.describe(await this.target(caller, orgName, "read"));
  }

  async set(caller: OrgRow, orgName: string, request: unknown): Promise<OrgLimitsInfo> {
    const limits = checkOrgLimits(request);
    const org = await this.target(caller, orgName, "set");
    await this.store.setOrgLimits(org.id, limits);
    this.log.info({ org: org.name, by: caller.name, limits }, "org limits changed");
    return this.describe(org);
  }

  private async target(caller: OrgRow, orgName: string, verb: "read" | "set"): Promise<OrgRow> {
    const name = checkName("org", orgName);
    if (verb === "set" && !caller.operator) throw sailError("SAIL_FORBIDDEN", `Only the operator's org sets org limits; your token belongs to org "${caller.name}"`, { org: name });
    if (name === caller.name) return caller;
    if (!caller.operator) throw sailError("SAIL_FORBIDDEN", `Only the operator's org may read another org's limits`, { org: name });
    const org = await this.store.findOrgByName(name);
    if (!org) throw sailError("SAIL_ORG_NOT_FOUND", `There is no org "${name}": an org is made with its first token (sail token create --org ${name})`, { org: name });
    return org;
  }

  private async describe(org: OrgRow): Promise<OrgLimitsInfo> {
    const [limits, usage, tcpEndpoints] = await Promise.all([this.store.orgLimits(org.id), this.store.orgUsage(org.id), this.store.countLiveTcpListeners(org.id)]);
    return { org: org.name, limits, effective: { tcpEndpoints: limits.tcpEndpoints ?? this.tcpDefault }, usage: { ...usage, tcpEndpoints } };
  }
}

/** The user's error for a cap the store refused a create on: the cap, the usage, the request, and what to do. */
export function orgLimitRefusal(org: OrgRow, err: OrgLimitReachedError): Error {
  const { limit, max, inUse, requested } = err;
  if (limit === "tcpEndpoints") {
    return sailError(
      "SAIL_TCP_LIMIT_EXCEEDED",
      `Your org holds ${inUse} of its ${max} raw-TCP endpoints; this sailbox asks for ${requested} more. Terminate sailboxes that no longer need public TCP endpoints, or ask the operator to raise the limit`,
      { limit: max, inUse, requested },
    );
  }
  const said =
    limit === "sailboxes"
      ? `may have ${max} live sailboxes at once and has ${inUse}`
      : limit === "cpu"
        ? `may use ${max} cores in live sailboxes; they use ${round(inUse)} and this one asks for ${requested}`
        : `may use ${max} MiB of memory in live sailboxes; they use ${inUse} MiB and this one asks for ${requested} MiB`;
  return sailError(
    "SAIL_ORG_LIMIT_EXCEEDED",
    `Org "${org.name}" ${said}. Terminate sailboxes you no longer need (sleeping and paused ones count), or ask the operator to raise the limit (sail org limit ${org.name})`,
    { org: org.name, limit, max, inUse: limit === "cpu" ? round(inUse) : inUse, requested },
  );
}

const round = (n: number) => Math.round(n * 1000) / 1000;
