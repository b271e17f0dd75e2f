/**
 * The control plane's side of the node → control direction: a node registers (its wire URL and
 * who it is) and sends its events, and an edge polls the route feed (GET routes), under
 * /node/v1 on the control plane's API listener, with the node credential rather than a user's token.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { sailError } from "@sail/protocol";
import type { EdgeRoutes, NodeEvent, NodeEventSink, NodeInfo, RegisterAnswer } from "./node-api.js";
import { checkWireRequest, readWireJson, sendWireError, sendWireJson, WIRE_PREFIX } from "./wire.js";

export class NodeEndpoint {
  constructor(
    private readonly credential: string,
    /** A node (re)joined at `url`: attach it, then reconcile what it holds. */
    private readonly onRegister: (url: string, info: NodeInfo) => Promise<void>,
    private readonly sink: NodeEventSink,
    /** How long the node's lease lasts past this heartbeat (the node fences itself when it could not renew it for as long). */
    private readonly leaseMs: number,
    /** The route feed's long poll (boxes/route-feed.ts): the map once it differs from `after`, or after `waitMs`. */
    private readonly routes?: (after: string | undefined, waitMs: number, signal: AbortSignal) => Promise<EdgeRoutes>,
  ) {}

  handles(pathname: string): boolean {
    return pathname.startsWith(`${WIRE_PREFIX}/`);
  }

  async serve(req: IncomingMessage, res: ServerResponse, pathname: string): Promise<void> {
    try {
      checkWireRequest(req, this.credential);
      if (req.method === "GET" && pathname === `${WIRE_PREFIX}/routes` && this.routes) return await this.serveRoutes(req, res);
      if (req.method !== "POST") throw sailError("SAIL_ROUTE_NOT_FOUND", `No node wire route ${req.method} ${pathname}`);
      const body = await readWireJson(req);
      if (pathname === `${WIRE_PREFIX}/register`) {
        const { url, info } = body as { url: string; info: NodeInfo };
        if (typeof url !== "string" || !/^https?:\/\//.test(url) || !info || typeof info.nodeId !== "string") throw sailError("SAIL_INVALID_ARGUMENT", "register needs { url, info }");
        await this.onRegister(url.replace(/\/$/, ""), info);
        return sendWireJson(res, 200, { leaseMs: this.leaseMs } satisfies RegisterAnswer);
      }
      if (pathname === `${WIRE_PREFIX}/events`) {
        await this.sink.deliver(((body as { events?: NodeEvent[] }).events ?? []) as NodeEvent[]);
        return sendWireJson(res, 200, {});
      }
      throw sailError("SAIL_ROUTE_NOT_FOUND", `No node wire route ${req.method} ${pathname}`);
    } catch (err) {
      sendWireError(res, err, `${req.method} ${pathname}`);
    }
  }

  /** GET routes?after=<version>&waitMs=<n>: held until the map changes, the wait ends or the edge hangs up. */
  private async serveRoutes(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const query = new URL(req.url ?? "/", "http://control").searchParams;
    const waitMs = Number(query.get("waitMs") ?? 0);
    if (!Number.isInteger(waitMs) || waitMs < 0) throw sailError("SAIL_INVALID_ARGUMENT", "waitMs must be a whole number of milliseconds", { field: "waitMs" });
    const gone = new AbortController();
    res.once("close", () => gone.abort());
    const routes = await this.routes!(query.get("after") ?? undefined, waitMs, gone.signal);
    if (!res.destroyed) sendWireJson(res, 200, routes);
  }
}
