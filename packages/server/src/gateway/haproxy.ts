import { chmodSync, chownSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ActivityReport } from "../node/idle.js";
import type { RouteChange, RouteSubscriber } from "../node/routes.js";
import type { CounterDelta } from "./counters.js";
import { errorFile, gatewayPaths, HAPROXY_ERRORS, haproxyConfig, returnBodies, type HaproxySettings } from "./haproxy-config.js";
import { HaproxyProcess } from "./haproxy-process.js";
import { RouteMapSync } from "./haproxy-routes.js";
import { SessionDrops } from "./haproxy-sessions.js";
import { HaproxyStats, type HttpListenerTraffic } from "./haproxy-stats.js";
import { RuntimeApi } from "./runtime-api.js";
import type { TlsMaterial } from "./tls.js";
import type { Logger } from "../logger.js";
export type { Logger };

/**
 * The HTTPS data path: HAProxy (Debian's 2.6), run and supervised by the daemon. It terminates
 * TLS (session tickets, ALPN h2), routes by Host through routes.map and forwards to running
 * boxes. Four parts, one runtime API: the process (HaproxyProcess: started as its own user,
 * restarted with the current map if it dies), the routes (RouteMapSync: kept current without a
 * reload), the session drops (SessionDrops: when a box stops running) and the counters
 * (HaproxyStats: per-listener activity from a stick table, frontend statistics, Prometheus).
 */
export class HaproxyGateway implements RouteSubscriber {
  private readonly process: HaproxyProcess;
  private readonly routeMap: RouteMapSync;
  private readonly sessions: SessionDrops;
  private readonly stats: HaproxyStats;

  constructor(
    private readonly settings: HaproxySettings & { domain: string; tls: TlsMaterial; runtimeApiTimeoutMs?: number },
    log: Logger,
    onActivity: (report: ActivityReport) => void,
  ) {
    const paths = gatewayPaths(settings.dir);
    const api = new RuntimeApi(paths.admin, settings.runtimeApiTimeoutMs);
    this.process = new HaproxyProcess(settings, paths, api, log, () => this.routeMap.loadedFromFile());
    this.routeMap = new RouteMapSync(settings.domain, paths.routes, api, this.process, log);
    this.sessions = new SessionDrops(api, log);
    this.stats = new HaproxyStats(api, paths.metrics, this.process, onActivity);
  }

  /** Write the config, certificate and map; start HAProxy; resolve once it answers on its admin socket. */
  async start(): Promise<void> {
    writeGatewayFiles(this.settings);
    this.routeMap.writeFile();
    await this.process.start();
    this.stats.start();
  }

  /** Follow a route change (see RouteMapSync): routes.map at once, the running HAProxy in order. */
  apply(change: RouteChange): void {
    if (change.reset) this.stats.forget(this.routeMap.hosts());
    this.routeMap.apply(change);
  }

  /**
   * Close every HAProxy session to this box's guest (the slow path and TCP close theirs), and
   * every idle guest connection HAProxy keeps for reuse: with `http-reuse always` any client's
   * first request may take one, and a guest whose keep-alive timer ran out while it was frozen
   * would close it under the first request after the wake (a 502, and a POST that is lost).
   */
  dropConnections(sailboxId: string): void {
    const addresses = this.routeMap.guestAddresses(sailboxId);
    if (!addresses.size || !this.process.running) return;
    this.sessions.drop(sailboxId, addresses);
  }

  /**
   * Resolves once HAProxy routes by every change applied so far — its answers checked, or its
   * map replaced, or a new HAProxy started from routes.map — and holds no connection to a box
   * that stopped running.
   */
  async synced(): Promise<void> {
    await this.routeMap.pushed();
    await Promise.all([this.process.ready(), this.sessions.settled()]);
  }

  /** Counters since the last call (connections, requests, bytes), from HAProxy's frontend statistics. */
  takeCounters(): Promise<CounterDelta> {
    return this.stats.takeCounters();
  }

  /** HAProxy's own Prometheus metrics (haproxy_*), to append to Sail's. */
  prometheusText(): Promise<string> {
    return this.stats.prometheusText();
  }

  /** HAProxy's resident memory, for the metrics. */
  rssBytes(): number | undefined {
    return this.process.rssBytes();
  }

  get pid(): number | undefined {
    return this.process.pid;
  }

  async close(): Promise<void> {
    this.stats.stop();
    await this.process.close();
  }

  /** An HTTP listener's totals since HAProxy started (or the entry's hour of disuse ended): open connections, requests, bytes. */
  listenerTraffic(host: string): HttpListenerTraffic | undefined {
    return this.stats.listenerTraffic(host);
  }
}

/**
 * What HAProxy reads in `settings.dir`: the config, the certificate with its key, the error
 * pages. HAProxy's user creates its sockets there and reads the certificate; nobody else may look.
 */
export function writeGatewayFiles(settings: HaproxySettings & { tls: TlsMaterial }): void {
  const paths = gatewayPaths(settings.dir);
  mkdirSync(settings.dir, { recursive: true });
  const group = settings.user ? systemIds(settings.user)?.gid : undefined;
  chmodSync(settings.dir, 0o770);
  writeFileSync(paths.pem, `${settings.tls.cert.trim()}\n${settings.tls.key.trim()}\n`, { mode: 0o640 });
  chmodSync(paths.pem, 0o640); // the mode above applies only to a new file
  if (group !== undefined) {
    chownSync(settings.dir, 0, group);
    chownSync(paths.pem, 0, group);
  }
  for (const [status, code, text] of HAPROXY_ERRORS) writeFileSync(join(settings.dir, `${status}.http`), errorFile(status, code, text));
  for (const [file, body] of returnBodies()) writeFileSync(join(settings.dir, file), body);
  writeFileSync(paths.config, haproxyConfig(settings));
}

/** uid and gid of a system user, from /etc/passwd. */
function systemIds(user: string): { uid: number; gid: number } | undefined {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${user}:`));
  const [, , uid, gid] = line?.split(":") ?? [];
  return uid && gid ? { uid: Number(uid), gid: Number(gid) } : undefined;
}
