import { sailError } from "@sail/protocol";
import { sendJson } from "../http-util.js";
import type { Route } from "../route.js";
import type { ConsoleSessions } from "../console-sessions.js";

/** The local CA and the web console's login links (docs/api.md, "The web console"). */
export function consoleRoutes(tls: { caCert?: string }, sessions: ConsoleSessions | undefined): Route[] {
  return [
    {
      method: "GET",
      path: /^\/v1\/ca$/,
      handler: ({ res }) => {
        if (!tls.caCert) throw sailError("SAIL_ROUTE_NOT_FOUND", "This Sail serves a certificate it was given (--tls-cert): there is no local CA to trust");
        res.writeHead(200, { "content-type": "application/x-pem-file" });
        res.end(tls.caCert);
      },
    },
    {
      method: "POST",
      path: /^\/v1\/console\/login-links$/,
      fields: [],
      handler: ({ auth, res }) => {
        if (!sessions) throw sailError("SAIL_ROUTE_NOT_FOUND", "This daemon serves no console");
        if (!auth.bearer) throw sailError("SAIL_AUTH_MISSING", "A console login link is made with the API token (`sail console`), not from a console session");
        const link = sessions.createLoginLink(auth.bearer);
        sendJson(res, 201, { path: `/console/login?token=${link.token}`, expiresAt: link.expiresAt });
      },
    },
    {
      method: "POST",
      path: /^\/v1\/console\/logout$/,
      fields: [],
      handler: ({ auth, req, res }) => {
        sessions?.logout(auth.session);
        if (sessions) res.setHeader("set-cookie", sessions.clearingCookie(req));
        sendJson(res, 200, {});
      },
    },
  ];
}
