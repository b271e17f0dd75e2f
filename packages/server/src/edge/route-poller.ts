import { Agent, request } from "undici";
import { errorFromWire } from "@sail/protocol";
import type { Logger } from "../logger.js";
import type { EdgeRoutes } from "../node-wire/node-api.js";
import { WIRE_PREFIX, wireHeaders } from "../node-wire/wire.js";

/** How long the control plane may hold a poll (it bounds this itself, at MAX_WAIT_MS). */
export const POLL_WAIT_MS = 25_000;
/** Past the held poll, this long for the answer to arrive before the poll counts as failed. */
const POLL_SLACK_MS = 10_000;
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 5_000;

/**
 * The edge's side of the route feed: a long poll (`after` the version it serves) that hands
 * each new map to `apply`, in order. On an error (control plane away, HAProxy refusing a map)
 * it backs off and asks again; meanwhile the edge serves its last map. A map that failed to
 * apply is asked for again, since `after` moves only once one applied.
 */
export class RoutePoller {
  private readonly dispatcher = new Agent({ keepAliveTimeout: 60_000, connect: { timeout: 5_000 } });
  private readonly stop = new AbortController();
  private loop: Promise<void> | undefined;
  private applied: string | undefined;

  constructor(
    private readonly controlUrl: string,
    private readonly credential: string,
    private readonly apply: (routes: EdgeRoutes) => Promise<void>,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.loop ??= this.run();
  }

  async close(): Promise<void> {
    this.stop.abort();
    await this.loop;
    await this.dispatcher.close();
  }

  private async run(): Promise<void> {
    let backoffMs = BACKOFF_FIRST_MS;
    while (!this.stop.signal.aborted) {
      try {
        const routes = await this.poll();
        if (routes.version !== this.applied) {
          await this.apply(routes);
          this.applied = routes.version;
        }
        backoffMs = BACKOFF_FIRST_MS;
      } catch (err) {
        if (this.stop.signal.aborted) return;
        this.log.warn({ err: String((err as Error).message ?? err), retryInMs: backoffMs, serving: this.applied }, "edge: could not follow the route feed; serving the last map");
        await new Promise((resolve) => setTimeout(resolve, backoffMs));
        backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
      }
    }
  }

  private async poll(): Promise<EdgeRoutes> {
    const query = new URLSearchParams({ waitMs: String(this.applied ? POLL_WAIT_MS : 0), ...(this.applied ? { after: this.applied } : {}) });
    const answer = await request(`${this.controlUrl.replace(/\/$/, "")}${WIRE_PREFIX}/routes?${query}`, {
      method: "GET",
      dispatcher: this.dispatcher,
      headers: wireHeaders(this.credential),
      signal: AbortSignal.any([this.stop.signal, AbortSignal.timeout(POLL_WAIT_MS + POLL_SLACK_MS)]),
      headersTimeout: POLL_WAIT_MS + POLL_SLACK_MS,
      bodyTimeout: POLL_SLACK_MS,
    });
    const text = await answer.body.text();
    if (answer.statusCode >= 400) throw errorFromWire(safeJson(text), answer.statusCode);
    const routes = JSON.parse(text) as EdgeRoutes;
    if (typeof routes.version !== "string" || !Array.isArray(routes.nodes) || !Array.isArray(routes.http) || !Array.isArray(routes.tcp))
      throw new Error("the route feed answered something that is not a route map");
    return routes;
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
