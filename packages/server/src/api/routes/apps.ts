import type { Boxes } from "../../boxes/boxes.js";
import { sendJson } from "../http-util.js";
import type { Route } from "../route.js";

/** Apps (docs/api.md, "Apps"). */
export function appRoutes(boxes: Pick<Boxes, "apps">): Route[] {
  return [
    { method: "GET", path: /^\/v1\/apps$/, handler: async ({ org, res }) => sendJson(res, 200, { apps: await boxes.apps.list(org) }) },
    { method: "GET", path: /^\/v1\/apps\/([^/]+)$/, handler: async ({ org, params, res }) => sendJson(res, 200, await boxes.apps.find(org, params[0]!)) },
    { method: "PUT", path: /^\/v1\/apps\/([^/]+)$/, fields: [], handler: async ({ org, params, res }) => sendJson(res, 200, await boxes.apps.mint(org, params[0]!)) },
  ];
}
