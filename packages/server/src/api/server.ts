import { createServer, STATUS_CODES, type IncomingMessage, type Server } from "node:http";
import type { Duplex } from "node:stream";
import { sailError, SailError } from "@sail/protocol";
import type { Boxes, OrgRow } from "../boxes/boxes.js";
import type { Logger } from "../boxes/logger.js";
import { ConsoleAssets } from "./console-assets.js";
import type { ConsoleSessions } from "./console-sessions.js";
import type { NodeEndpoint } from "../node-wire/control-endpoint.js";
import { onlyFields, readJsonBody, sendError } from "./http-util.js";
import { PtySockets } from "./pty-socket.js";
import type { Route } from "./route.js";
import { appRoutes } from "./routes/apps.js";
import { consoleRoutes } from "./routes/console.js";
import { nodeRoutes } from "./routes/nodes.js";
import { sailboxRoutes } from "./routes/sailboxes.js";
import { tokenRoutes } from "./routes/tokens.js";

/** Who a token belongs to; the store answers it. */
export type Authenticate = (token: string) => Promise<OrgRow | undefined>;

/** The web console, served by the API's listener (docs/api.md, "The web console"). */
export interface ConsoleOptions {
  sessions: ConsoleSessions;
  /** packages/console/dist */
  assetsDir: string;
}

/**
 * The control-plane API under /v1 (docs/api.md): auth, request shape, error → status, and
 * each room's routes (api/routes/*.ts). Business rules stay in `boxes`.
 */
export function createApiServer(boxes: Boxes, authenticate: Authenticate, tls: { caCert?: string }, log: Logger, extras: { console?: ConsoleOptions; nodes?: NodeEndpoint } = {}): Server {
  const webConsole = extras.console;
  const consoleAssets = webConsole && new ConsoleAssets(webConsole.assetsDir, webConsole.sessions);
  const ptySockets = new PtySockets(boxes.execs, log);
  const routes: Route[] = [...consoleRoutes(tls, webConsole?.sessions), ...tokenRoutes(boxes), ...appRoutes(boxes), ...nodeRoutes(boxes), ...sailboxRoutes(boxes, log)];

  const server = createServer(async (req, res) => {
    try {
      // the request target is a path: never let "//host/..." be read as a URL with a host
      const url = new URL(`http://api${(req.url ?? "/").startsWith("/") ? req.url : "/"}`);
      if (consoleAssets && ConsoleAssets.handles(url.pathname)) return await consoleAssets.serve(req, res, url);
      // node agents (the node credential, not a user's token)
      if (extras.nodes?.handles(url.pathname)) return await extras.nodes.serve(req, res, url.pathname);
      const { org, auth } = await authenticateRequest(req, authenticate, webConsole?.sessions);
      for (const route of routes) {
        const match = route.path.exec(url.pathname);
        if (!match || req.method !== route.method) continue;
        const body = route.fields ? await readJsonBody(req) : {};
        if (route.fields) onlyFields(body, route.fields);
        await route.handler({ org, auth, params: match.slice(1).map(decodePathSegment), req, res, query: url.searchParams, body });
        return;
      }
      throw sailError("SAIL_ROUTE_NOT_FOUND", `No API route ${req.method} ${url.pathname}: see docs/api.md`);
    } catch (err) {
      if (err instanceof SailError) return sendError(res, err);
      log.error({ err: String((err as Error).stack ?? err), method: req.method, url: req.url }, "API request failed");
      sendError(res, sailError("SAIL_INTERNAL", `Sail failed on ${req.method} ${req.url}: ${(err as Error).message}`));
    }
  });

  // the PTY WebSocket: auth (and, with a session cookie, the Origin check) before the upgrade
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => socket.destroy());
    void (async () => {
      const url = new URL(`http://api${(req.url ?? "/").startsWith("/") ? req.url : "/"}`);
      const match = /^\/v1\/sailboxes\/([^/]+)\/pty$/.exec(url.pathname);
      const { org } = await authenticateRequest(req, authenticate, webConsole?.sessions, true);
      if (!match || req.method !== "GET") throw sailError("SAIL_ROUTE_NOT_FOUND", `No WebSocket route ${req.method} ${url.pathname}: see docs/api.md`);
      ptySockets.accept(req, socket, head, org, decodePathSegment(match[1]!), url.searchParams);
    })().catch((err) => {
      const error = err instanceof SailError ? err : sailError("SAIL_INTERNAL", `Sail failed on the upgrade of ${req.url}: ${(err as Error).message}`);
      refuseUpgrade(socket, error);
    });
  });
  // an idle kept-alive connection is the client's to close (undici after 4 s): a server that
  // closes first (Node's default 5 s) races the client's next request on it, which a client
  // whose event loop was busy for a few seconds then sees fail as a reset (UND_ERR_SOCKET)
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  return server;
}

/** A refused upgrade gets a real HTTP answer with the usual JSON error body, then the socket is closed (as websockets/ws does). */
function refuseUpgrade(socket: Duplex, err: SailError): void {
  const body = JSON.stringify(err.toWire());
  socket.end(
    `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? "Error"}\r\nconnection: close\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

function decodePathSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw sailError("SAIL_INVALID_ARGUMENT", `The path segment ${JSON.stringify(segment.slice(0, 80))} is not valid percent-encoding`);
  }
}

/**
 * The API token (`Authorization: Bearer`), or else the console's session cookie. A cookie is
 * sent by the browser on its own, so a cookie request that changes something (or opens a
 * WebSocket) must also come from the console's own origin.
 */
async function authenticateRequest(
  req: IncomingMessage,
  authenticate: Authenticate,
  sessions: ConsoleSessions | undefined,
  upgrade = false,
): Promise<{ org: OrgRow; auth: { bearer?: string; session?: string } }> {
  const header = req.headers.authorization;
  const token = header?.startsWith("Bearer ") ? header.slice(7).trim() : undefined;
  const session = header ? undefined : sessions?.sessionOf(req);
  if (session) return { org: await sessions!.authenticate(req, session, upgrade || (req.method !== "GET" && req.method !== "HEAD")), auth: { session } };
  if (!token)
    throw sailError(
      "SAIL_AUTH_MISSING",
      "Missing bearer token: send `Authorization: Bearer <token>` (the SDK reads SAIL_TOKEN or the config `sail up` wrote; the console: open the link `sail console` prints)",
    );
  const org = await authenticate(token);
  if (!org) throw sailError("SAIL_AUTH_INVALID", "The token is not valid (wrong or revoked): check SAIL_TOKEN or ~/.sail/config.json");
  return { org, auth: { bearer: token } };
}
