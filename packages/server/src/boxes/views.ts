import { isLive, type Architecture, type SailboxInfo } from "@sail/protocol";
import type { OrgRow, SailboxRow, Store } from "../store/store.js";
import { listenerInfo, type PublicAddresses } from "./endpoints.js";
import type { Lifecycle } from "./lifecycle.js";
import { networkPolicyOf } from "./outbound.js";
import type { TcpBinds } from "./tcp-binds.js";

/** What the API shows of sailboxes: SailboxInfo, with its published endpoints and wake count. */
export class SailboxViews {
  /** Wakes from sleep per box since the daemon started (a shared resume counts once). */
  private readonly wakes = new Map<string, number>();

  constructor(
    private readonly store: Store,
    private readonly lifecycle: Lifecycle,
    private readonly hostArch: Architecture,
    private readonly addresses: PublicAddresses,
    private readonly binds?: TcpBinds,
  ) {
    lifecycle.onTransition(({ box, from, to }) => {
      if (from === "sleeping" && to === "running") this.wakes.set(box.id, (this.wakes.get(box.id) ?? 0) + 1);
      if (!isLive(to)) this.wakes.delete(box.id);
    });
  }

  get(org: OrgRow, id: string): SailboxInfo {
    return this.describe(this.lifecycle.owned(org, id));
  }

  list(org: OrgRow, filter: { appId?: string; name?: string; liveOnly?: boolean }): SailboxInfo[] {
    return this.store.listSailboxes({ orgId: org.id, ...filter }).map((box) => this.describe(box));
  }

  describe(box: SailboxRow): SailboxInfo {
    return {
      id: box.id,
      appId: box.appId,
      name: box.name,
      status: box.status,
      image: { name: "debian", arch: box.imageArch, aptPackages: box.imagePackages ? box.imagePackages.split(" ") : [], emulated: box.imageArch !== this.hostArch },
      cpu: box.cpu,
      memoryMiB: box.memoryMiB,
      diskMiB: box.diskMiB,
      diskInodes: box.diskInodes,
      idleTimeout: box.idleTimeout,
      wakes: this.wakes.get(box.id) ?? 0,
      createdAt: box.createdAt,
      // an ended box publishes nothing: its public ports may belong to another box now
      listeners: isLive(box.status) ? this.store.listListeners(box.id).map((l) => listenerInfo(l, this.addresses, this.binds)) : [],
      network: networkPolicyOf(box),
      ...(box.failureReason ? { failureReason: box.failureReason } : {}),
    };
  }
}
