import { isLive, sailError, type ListenerInfo } from "@sail/protocol";
import type { NodeListenerSpec } from "../node-wire/node-api.js";
import type { ListenerRow, OrgRow, Store } from "../store/store.js";
import { listenerInfo, type PublicAddresses } from "./endpoints.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Nodes } from "./nodes.js";
import type { Power } from "./power.js";

/** The longest a single wait may hold an API request. */
export const LISTENER_WAIT_MAX_MS = 10 * 60_000;

/** Published ports: which a box has (the store), and waiting until a process serves one (its node). */
export class Listeners {
  constructor(
    private readonly store: Store,
    private readonly lifecycle: Lifecycle,
    private readonly power: Pick<Power, "awake">,
    private readonly nodes: Pick<Nodes, "of" | "state">,
    private readonly addresses: PublicAddresses,
  ) {}

  /** The published ports of a live box; a terminated or failed one has none (its public ports may belong to another box now). */
  async list(org: OrgRow, id: string): Promise<ListenerInfo[]> {
    const box = await this.lifecycle.owned(org, id);
    if (!isLive(box.status)) return [];
    const binds = this.nodes.state(box.id)?.listeners ?? [];
    return (await this.store.listListeners(box.id)).map((l) =>
      listenerInfo(
        l,
        this.addresses,
        binds.find((b) => b.port === l.port),
      ),
    );
  }

  /**
   * Resolve once a process in the box accepts connections on `port` and the node's data paths
   * route to it, or fail after `timeoutMs` saying why (the node's SAIL_LISTENER_TIMEOUT or
   * SAIL_LISTENER_UNBOUND). A sleeping box is woken; a paused one refused.
   */
  async wait(org: OrgRow, id: string, port: number, timeoutMs: number): Promise<ListenerInfo> {
    const box = await this.lifecycle.owned(org, id);
    const listeners = await this.store.listListeners(box.id);
    const listener = listeners.find((l) => l.port === port);
    if (!listener) {
      const published = listeners.map((l) => l.port);
      throw sailError(
        "SAIL_LISTENER_NOT_FOUND",
        `Sailbox ${id} does not publish port ${port}${published.length ? ` (it publishes ${published.join(", ")})` : " (it publishes no ports)"}: pass it in ingressPorts when you create the sailbox`,
        { sailboxId: id, port },
      );
    }
    await this.power.awake(org, id);
    const waitMs = Math.min(Math.max(timeoutMs, 0), LISTENER_WAIT_MAX_MS);
    await (await this.nodes.of(box)).api.waitListener(box.id, { port, protocol: listener.protocol, publicPort: listener.publicPort, proxyProtocol: listener.proxyProtocol }, waitMs);
    const bind = this.nodes.state(box.id)?.listeners.find((b) => b.port === port);
    return listenerInfo(listener, this.addresses, listener.protocol === "tcp" ? { state: "bound", ...(bind?.unbound ? {} : {}) } : undefined);
  }
}

/** A stored listener as its node needs it: the published port with its public TCP port. */
export function listenerSpec(l: ListenerRow): NodeListenerSpec {
  return { port: l.port, protocol: l.protocol, cidrAllowlist: l.cidrAllowlist, allowPublic: l.allowPublic, publicPort: l.publicPort, h2c: l.h2c, proxyProtocol: l.proxyProtocol };
}
