import type { NodeSummary } from "@sail/protocol";
import { SailClient } from "./client.js";

/**
 * The machines that run sailboxes (operator's org only). A box lives on the node placement
 * chose for its life (`SailboxInfo.node`); a draining node keeps its boxes and takes no new ones.
 *
 * @example
 * for (const node of await Nodes.list()) console.log(node.nodeId, node.state, node.boxes);
 * await Nodes.drain("node-3f2a");
 */
export class Nodes {
  static async list(options: { client?: SailClient } = {}): Promise<NodeSummary[]> {
    const client = options.client ?? SailClient.default();
    return (await client.request<{ nodes: NodeSummary[] }>("GET", "/v1/nodes")).nodes;
  }

  /** No new sailboxes on the node (`draining: false` takes them again); its boxes stay until they end. */
  static async drain(nodeId: string, options: { client?: SailClient; draining?: boolean } = {}): Promise<NodeSummary> {
    const client = options.client ?? SailClient.default();
    return client.request<NodeSummary>("PUT", `/v1/nodes/${encodeURIComponent(nodeId)}/draining`, { draining: options.draining ?? true });
  }
}
