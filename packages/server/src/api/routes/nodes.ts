import { sailError } from "@sail/protocol";
import type { Boxes } from "../../boxes/boxes.js";
import type { OrgRow } from "../../boxes/boxes.js";
import { sendJson } from "../http-util.js";
import type { Route } from "../route.js";

/** The nodes (docs/api.md, "Nodes"): the operator's view of the machines, and draining one. */
export function nodeRoutes(boxes: Pick<Boxes, "nodes">): Route[] {
  return [
    {
      method: "GET",
      path: /^\/v1\/nodes$/,
      handler: async ({ org, res }) => {
        operatorOnly(org, "list the nodes");
        sendJson(res, 200, { nodes: await boxes.nodes.list() });
      },
    },
    {
      method: "PUT",
      path: /^\/v1\/nodes\/([^/]+)\/draining$/,
      fields: ["draining"],
      handler: async ({ org, params, body, res }) => {
        operatorOnly(org, "drain a node");
        const draining = (body as { draining?: unknown }).draining;
        if (typeof draining !== "boolean") throw sailError("SAIL_INVALID_ARGUMENT", "draining must be true (no new sailboxes on the node) or false", { field: "draining" });
        await boxes.nodes.drain(params[0]!, draining);
        const node = (await boxes.nodes.list()).find((n) => n.nodeId === params[0]);
        sendJson(res, 200, node);
      },
    },
  ];
}

function operatorOnly(org: OrgRow, what: string): void {
  if (!org.operator) throw sailError("SAIL_FORBIDDEN", `Only the operator's org may ${what}; your token belongs to org "${org.name}"`, { org: org.name });
}
