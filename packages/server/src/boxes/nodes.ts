import { sailError } from "@sail/protocol";
import type { NodeApi, NodeBoxState, NodeEvent, NodeEventSink, NodeInfo } from "../node-wire/node-api.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";

/**
 * The node the control plane drives (one for now: the daemon's own, or the one that joined),
 * and what it last said of each box. Its events arrive here (in one process by a call, from
 * another over HTTP): every box state is kept in memory for the views (wakes, TCP binds) and
 * handed to the lifecycle, which keeps the newest in the store.
 */
export class Nodes implements NodeEventSink {
  private current: { api: NodeApi; info: NodeInfo } | undefined;
  private readonly states = new Map<string, NodeBoxState>();
  private readonly wokenListeners: Array<(seconds: number) => void> = [];

  constructor(
    private readonly lifecycle: Lifecycle,
    private readonly log: Logger,
  ) {}

  /** The node joined (or the daemon's own started): boxes are placed on it from now on. */
  attach(api: NodeApi, info: NodeInfo): void {
    this.current = { api, info };
    this.log.info({ nodeId: info.nodeId, maxBoxes: info.maxBoxes }, "node attached");
  }

  get attached(): { api: NodeApi; info: NodeInfo } | undefined {
    return this.current;
  }

  /** The node, or SAIL_NODE_UNAVAILABLE saying that none has joined. */
  node(): { api: NodeApi; info: NodeInfo } {
    if (!this.current) throw sailError("SAIL_NODE_UNAVAILABLE", "No node agent has joined this control plane yet: start one with sail up --role node --control URL", {});
    return this.current;
  }

  /** What the node said last of a box (undefined: nothing since this control plane started). */
  state(id: string): NodeBoxState | undefined {
    return this.states.get(id);
  }

  /** Keep a state the node answered with (a create's, a sleep's): the newest per box wins. */
  remember(state: NodeBoxState): void {
    const known = this.states.get(state.sailboxId);
    if (!known || known.seq <= state.seq) this.states.set(state.sailboxId, state);
  }

  forget(id: string): void {
    this.states.delete(id);
  }

  /** Called with the seconds each wake from sleep took on the node (metrics). */
  onWoken(listener: (seconds: number) => void): void {
    this.wokenListeners.push(listener);
  }

  async deliver(events: NodeEvent[]): Promise<void> {
    for (const event of events) {
      if (event.type === "woken") {
        for (const listener of this.wokenListeners) listener(event.seconds);
        continue;
      }
      this.remember(event.state);
      await this.lifecycle.applyNodeState(event.state);
    }
  }
}
