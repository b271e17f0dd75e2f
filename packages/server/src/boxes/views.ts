import { isLive, type Architecture, type SailboxInfo } from "@sail/protocol";
import type { ListenerRow, OrgRow, SailboxRow, Store } from "../store/store.js";
import { listenerInfo, type PublicAddresses } from "./endpoints.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Nodes } from "./nodes.js";
import { networkPolicyOf } from "./outbound.js";

/** What the API shows of sailboxes: SailboxInfo, with its published endpoints and what its node last said (wakes, TCP binds). */
export class SailboxViews {
  constructor(
    private readonly store: Store,
    private readonly lifecycle: Lifecycle,
    private readonly nodes: Nodes,
    private readonly hostArch: () => Architecture | undefined,
    private readonly addresses: PublicAddresses,
  ) {}

  async get(org: OrgRow, id: string): Promise<SailboxInfo> {
    return this.describe(await this.lifecycle.owned(org, id));
  }

  async list(org: OrgRow, filter: { appId?: string; name?: string; liveOnly?: boolean }): Promise<SailboxInfo[]> {
    const boxes = await this.store.listSailboxes({ orgId: org.id, ...filter });
    const listeners = await this.store.listListenersOf(boxes.filter((b) => isLive(b.status)).map((b) => b.id));
    return boxes.map((box) => this.view(box, listeners.get(box.id) ?? []));
  }

  /** What the store kept at create; for an older box, the attached node's word (false while none is attached). */
  private emulated(box: SailboxRow): boolean {
    if (box.imageEmulated !== null) return box.imageEmulated === 1;
    const hostArch = this.hostArch();
    return hostArch !== undefined && box.imageArch !== hostArch;
  }

  async describe(box: SailboxRow): Promise<SailboxInfo> {
    // an ended box publishes nothing: its public ports may belong to another box now
    return this.view(box, isLive(box.status) ? await this.store.listListeners(box.id) : []);
  }

  private view(box: SailboxRow, listeners: ListenerRow[]): SailboxInfo {
    const node = this.nodes.state(box.id);
    return {
      id: box.id,
      appId: box.appId,
      name: box.name,
      status: box.status,
      image: { name: "debian", arch: box.imageArch, aptPackages: box.imagePackages ? box.imagePackages.split(" ") : [], emulated: this.emulated(box) },
      cpu: box.cpu,
      memoryMiB: box.memoryMiB,
      diskMiB: box.diskMiB,
      diskInodes: box.diskInodes,
      idleTimeout: box.idleTimeout,
      wakes: node?.wakes ?? 0,
      createdAt: box.createdAt,
      node: box.nodeId,
      listeners: listeners.map((l) =>
        listenerInfo(
          l,
          this.addresses,
          node?.listeners.find((n) => n.port === l.port),
        ),
      ),
      network: networkPolicyOf(box),
      ...(box.failureReason ? { failureReason: box.failureReason } : {}),
    };
  }
}
