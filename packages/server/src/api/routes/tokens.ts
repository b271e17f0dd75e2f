import { sailError, type CreateTokenRequest } from "@sail/protocol";
import type { Boxes } from "../../boxes/boxes.js";
import { sendJson } from "../http-util.js";
import type { Route } from "../route.js";

/** API tokens and org limits (docs/api.md, "Tokens and orgs"). */
export function tokenRoutes(boxes: Pick<Boxes, "tokens" | "orgLimits">): Route[] {
  return [
    { method: "GET", path: /^\/v1\/whoami$/, handler: ({ org, res }) => sendJson(res, 200, { org: org.name }) },
    { method: "GET", path: /^\/v1\/tokens$/, handler: async ({ org, query, res }) => sendJson(res, 200, { tokens: await boxes.tokens.list(org, query.get("org") ?? undefined) }) },
    {
      method: "POST",
      path: /^\/v1\/tokens$/,
      fields: ["label", "org"],
      handler: async ({ org, auth, body, res }) => {
        // a session is the console's 12-hour login: a token made from it would outlive it, its
        // token's revocation and a stolen cookie's theft (issue 26)
        if (!auth.bearer) throw sailError("SAIL_SESSION_FORBIDDEN", "A console session cannot create API tokens: use `sail token create` with the API token");
        sendJson(res, 201, await boxes.tokens.create(org, body as CreateTokenRequest));
      },
    },
    { method: "DELETE", path: /^\/v1\/tokens\/([^/]+)$/, handler: async ({ org, params, res }) => sendJson(res, 200, await boxes.tokens.revoke(org, params[0]!)) },
    { method: "GET", path: /^\/v1\/orgs\/([^/]+)\/limits$/, handler: async ({ org, params, res }) => sendJson(res, 200, await boxes.orgLimits.get(org, params[0]!)) },
    {
      method: "PUT",
      path: /^\/v1\/orgs\/([^/]+)\/limits$/,
      fields: ["sailboxes", "cpu", "memoryMiB", "tcpEndpoints"],
      handler: async ({ org, params, body, res }) => sendJson(res, 200, await boxes.orgLimits.set(org, params[0]!, body)),
    },
  ];
}
