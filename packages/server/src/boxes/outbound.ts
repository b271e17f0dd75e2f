import { isLive, normalizeNetworkPolicy, sailError, type NetworkInfo, type NetworkPolicyRequest, type SailboxInfo } from "@sail/protocol";
import type { OrgRow, SailboxRow, Store } from "../store/store.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";
import type { Nodes } from "./nodes.js";

/**
 * A box's outbound policy as the control plane keeps it: the request's shape is checked here
 * (normalizeNetworkPolicy), the store keeps the policy, and the box's node enforces it — the
 * node also refuses what only it can judge (an allowOut naming what this host never lets boxes
 * reach: private ranges, cloud host endpoints, its own LAN), with SAIL_NETWORK_ENTRY_REFUSED.
 */
export class OutboundPolicies {
  constructor(
    private readonly store: Store,
    private readonly lifecycle: Lifecycle,
    private readonly nodes: Nodes,
    private readonly describe: (box: SailboxRow) => Promise<SailboxInfo>,
    private readonly log: Logger,
  ) {}

  /** A create's or a change's policy, in its canonical form (bad shapes are refused here). */
  check(request: NetworkPolicyRequest): NetworkInfo {
    return normalizeNetworkPolicy(request);
  }

  /** Replace a live box's policy: its node applies it at once (cutting connections it no longer allows), then the store keeps it. */
  async set(org: OrgRow, id: string, request: NetworkPolicyRequest): Promise<SailboxInfo> {
    const box = await this.lifecycle.owned(org, id);
    const policy = this.check(request);
    if (!isLive(box.status) || box.status === "creating") {
      throw sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${id} is ${box.status}: only a live sailbox has a network policy to change`, { sailboxId: id, status: box.status });
    }
    await this.lifecycle.withLease(id, "the network change", async () => {
      await (await this.nodes.of(box)).api.setNetwork(id, policy);
      await this.store.setNetworkPolicy(id, JSON.stringify(policy));
    });
    this.log.info({ sailboxId: id, outbound: policy.outbound }, "sailbox network policy changed");
    return this.describe(await this.lifecycle.owned(org, id));
  }
}

export function networkPolicyOf(box: SailboxRow): NetworkInfo {
  return JSON.parse(box.networkPolicy) as NetworkInfo;
}
