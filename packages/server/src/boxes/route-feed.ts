import { randomBytes } from "node:crypto";
import { httpLabel, type SailboxStatus } from "@sail/protocol";
import type { EdgeRoutes } from "../node-wire/node-api.js";
import type { Store } from "../store/store.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";

/** Statuses whose box has a route at the edge: sleep, wake and pause stay on the node (the node holds or refuses). */
const ROUTED: ReadonlySet<SailboxStatus> = new Set(["creating", "running", "sleeping", "paused"]);
/** The longest a poll is held: below common proxies' and load balancers' 60 s idle cut. */
export const MAX_WAIT_MS = 30_000;
/**
 * How often the feed reads the store again even without a transition heard here: another
 * control plane's creates (PostgreSQL, several processes), a failed create's row deleted
 * without a transition, a node that re-registered at a new address. A changed map is a new version.
 */
const REFRESH_MS = 10_000;

/** A node as the edge needs it: where its gateway takes TLS (host:port) and where its TCP ports are (host). */
export interface EdgeNode {
  nodeId: string;
  httpsAddress?: string;
  tcpAddress?: string;
}

/**
 * The route feed the edges poll (GET /node/v1/routes): which node holds each public HTTPS host
 * and each public TCP port, as versions `<epoch>-<counter>`. The epoch is random per process,
 * so an edge that polls another (or a restarted) control plane gets the whole map again.
 *
 * This first version answers a full snapshot every time (`reset: true`): at 500 boxes a node
 * a snapshot is ~100 bytes a route, and it is sent only when something changed (the poll is
 * held otherwise). Changes since `after` from a bounded log are the next step (docs/architecture.md, "The edge").
 *
 * Versions move on existence only (a box created, ended, moved off a lost node) and on the
 * nodes' addresses; sleep and wake never change an edge's map.
 */
export class RouteFeed {
  readonly epoch = randomBytes(6).toString("hex");
  private counter = 0;
  private snapshot: { key: string; routes: EdgeRoutes } | undefined;
  private building: Promise<EdgeRoutes> | undefined;
  /** The store changed since the snapshot: the next read rebuilds it. */
  private stale = true;
  private readonly waiters = new Set<() => void>();
  private closed = false;
  private readonly refresh: NodeJS.Timeout;

  constructor(
    private readonly store: Pick<Store, "liveSailboxes" | "liveListeners">,
    /** The nodes boxes may live on, and the one a box without a recorded node is on (one node today). */
    private readonly nodes: () => { all: EdgeNode[]; fallback?: string } | Promise<{ all: EdgeNode[]; fallback?: string }>,
    private readonly domain: string,
    lifecycle: Pick<Lifecycle, "onTransition"> | undefined,
    private readonly log: Logger,
    refreshMs = REFRESH_MS,
  ) {
    lifecycle?.onTransition(({ from, to }) => {
      if (ROUTED.has(from) !== ROUTED.has(to) || from === "creating") this.changed();
    });
    this.refresh = setInterval(() => this.changed(), refreshMs);
    this.refresh.unref();
  }

  get version(): string {
    return `${this.epoch}-${this.counter}`;
  }

  /** Something the map is made of may have changed (a transition, a node joined): rebuild it, and wake pollers if it differs. */
  changed(): void {
    this.stale = true;
    void this.current().catch((err) => this.log.warn({ err: String(err) }, "could not rebuild the edge route map"));
  }

  /**
   * The routes once they differ from `after` (at once when `after` is another version), or
   * the same version again after `waitMs` (bounded by MAX_WAIT_MS) or when `signal` aborts.
   */
  async poll(after: string | undefined, waitMs: number, signal?: AbortSignal): Promise<EdgeRoutes> {
    const now = await this.current();
    if (after !== now.version || waitMs <= 0 || this.closed) return now;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, Math.min(waitMs, MAX_WAIT_MS));
      this.waiters.add(done);
      signal?.addEventListener("abort", done, { once: true });
    });
    return this.current();
  }

  /** Stop: held polls answer now, and later ones are not held (the control plane is going away). */
  close(): void {
    this.closed = true;
    clearInterval(this.refresh);
    for (const wake of [...this.waiters]) wake();
  }

  /** The snapshot, rebuilt from the store when stale (one build at a time); a new version when it differs. */
  private async current(): Promise<EdgeRoutes> {
    if (!this.stale && this.snapshot) return this.snapshot.routes;
    if (this.building) return this.building;
    this.stale = false;
    this.building = this.build().finally(() => (this.building = undefined));
    return this.building;
  }

  private async build(): Promise<EdgeRoutes> {
    const map = await routeMap(this.store, await this.nodes(), this.domain);
    const key = JSON.stringify(map);
    if (this.snapshot?.key === key) return this.snapshot.routes;
    if (this.snapshot) this.counter++;
    this.snapshot = { key, routes: { version: this.version, reset: true, ...map } };
    for (const wake of [...this.waiters]) wake();
    return this.snapshot.routes;
  }
}

/** The whole map from the store: live boxes' HTTP hosts and TCP ports, each on its node (sorted, so equal maps compare equal). */
export async function routeMap(store: Pick<Store, "liveSailboxes" | "liveListeners">, nodes: { all: EdgeNode[]; fallback?: string }, domain: string): Promise<Omit<EdgeRoutes, "version" | "reset">> {
  const [boxes, listeners] = await Promise.all([store.liveSailboxes(), store.liveListeners()]);
  const nodeOf = new Map(boxes.filter((b) => ROUTED.has(b.status)).map((b) => [b.id, b.nodeId ?? nodes.fallback]));
  const http: EdgeRoutes["http"] = [];
  const tcp: EdgeRoutes["tcp"] = [];
  for (const listener of listeners) {
    const nodeId = nodeOf.get(listener.sailboxId);
    if (!nodeId) continue;
    if (listener.protocol === "http") http.push({ host: `${httpLabel(listener.sailboxId, listener.port)}.${domain}`, nodeId });
    else if (listener.publicPort !== null) tcp.push({ publicPort: listener.publicPort, nodeId, allow: [...listener.cidrAllowlist].sort() });
  }
  http.sort((a, b) => a.host.localeCompare(b.host));
  tcp.sort((a, b) => a.publicPort - b.publicPort);
  const nodeList = [...nodes.all]
    .sort((a, b) => a.nodeId.localeCompare(b.nodeId))
    .map((n) => ({ nodeId: n.nodeId, ...(n.httpsAddress ? { httpsAddress: n.httpsAddress } : {}), ...(n.tcpAddress ? { tcpAddress: n.tcpAddress } : {}) }));
  return { nodes: nodeList, http, tcp };
}
