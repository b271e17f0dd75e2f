import { checkName, checkOrgLimits, sailError, type OrgLimitsInfo } from "@sail/protocol";
import type { OrgRow, Store } from "../store/store.js";
import type { Logger } from "./logger.js";

type LimitStore = Pick<Store, "orgLimits" | "setOrgLimits" | "orgUsage" | "countLiveTcpListeners" | "findOrgByName">;

/**
 * The operator's caps on an org's live boxes: how many, how many cores and how much memory
 * (and its raw-TCP endpoints, see tcp-quota.ts). A tenant reads its own; only the operator's
 * org sets them, so one tenant cannot take the host from the others.
 */
export class OrgLimitsRoom {
  constructor(
    private readonly store: LimitStore,
    private readonly tcpDefault: number,
    private readonly log: Logger,
  ) {}

  get(caller: OrgRow, orgName: string): OrgLimitsInfo {
    return this.describe(this.target(caller, orgName, "read"));
  }

  set(caller: OrgRow, orgName: string, request: unknown): OrgLimitsInfo {
    const limits = checkOrgLimits(request);
    const org = this.target(caller, orgName, "set");
    this.store.setOrgLimits(org.id, limits);
    this.log.info({ org: org.name, by: caller.name, limits }, "org limits changed");
    return this.describe(org);
  }

  private target(caller: OrgRow, orgName: string, verb: "read" | "set"): OrgRow {
    const name = checkName("org", orgName);
    if (verb === "set" && !caller.operator) throw sailError("SAIL_FORBIDDEN", `Only the operator's org sets org limits; your token belongs to org "${caller.name}"`, { org: name });
    if (name === caller.name) return caller;
    if (!caller.operator) throw sailError("SAIL_FORBIDDEN", `Only the operator's org may read another org's limits`, { org: name });
    const org = this.store.findOrgByName(name);
    if (!org) throw sailError("SAIL_ORG_NOT_FOUND", `There is no org "${name}": an org is made with its first token (sail token create --org ${name})`, { org: name });
    return org;
  }

  private describe(org: OrgRow): OrgLimitsInfo {
    const limits = this.store.orgLimits(org.id);
    return {
      org: org.name,
      limits,
      effective: { tcpEndpoints: limits.tcpEndpoints ?? this.tcpDefault },
      usage: { ...this.store.orgUsage(org.id), tcpEndpoints: this.store.countLiveTcpListeners(org.id) },
    };
  }
}

/**
 * Refuse a box that would take the org past one of its caps, naming the cap, the usage and
 * what the box asks for. Called in the same synchronous stretch as the insert (create.ts), so
 * two creates cannot both take the last of a cap.
 */
export function checkOrgCapacity(store: Pick<Store, "orgLimits" | "orgUsage">, org: OrgRow, box: { cpu: number; memoryMiB: number }): void {
  const limits = store.orgLimits(org.id);
  if (limits.sailboxes === null && limits.cpu === null && limits.memoryMiB === null) return;
  const usage = store.orgUsage(org.id);
  const fix = `Terminate sailboxes you no longer need (sleeping and paused ones count), or ask the operator to raise the limit (sail org limit ${org.name})`;
  const over = (limit: "sailboxes" | "cpu" | "memory", max: number, inUse: number, requested: number, said: string) =>
    sailError("SAIL_ORG_LIMIT_EXCEEDED", `Org "${org.name}" ${said}. ${fix}`, { org: org.name, limit, max, inUse, requested });
  if (limits.sailboxes !== null && usage.sailboxes + 1 > limits.sailboxes) {
    throw over("sailboxes", limits.sailboxes, usage.sailboxes, 1, `may have ${limits.sailboxes} live sailboxes at once and has ${usage.sailboxes}`);
  }
  if (limits.cpu !== null && usage.cpu + box.cpu > limits.cpu + 1e-9) {
    throw over("cpu", limits.cpu, round(usage.cpu), box.cpu, `may use ${limits.cpu} cores in live sailboxes; they use ${round(usage.cpu)} and this one asks for ${box.cpu}`);
  }
  if (limits.memoryMiB !== null && usage.memoryMiB + box.memoryMiB > limits.memoryMiB) {
    throw over(
      "memory",
      limits.memoryMiB,
      usage.memoryMiB,
      box.memoryMiB,
      `may use ${limits.memoryMiB} MiB of memory in live sailboxes; they use ${usage.memoryMiB} MiB and this one asks for ${box.memoryMiB} MiB`,
    );
  }
}

const round = (n: number) => Math.round(n * 1000) / 1000;
