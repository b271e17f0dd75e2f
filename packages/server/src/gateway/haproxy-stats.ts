import { request } from "node:http";
import { parseHttpLabel } from "@sail/protocol";
import type { ActivityReport } from "../node/idle.js";
import type { CounterDelta } from "./counters.js";
import type { HaproxyProcess } from "./haproxy-process.js";
import type { RuntimeApi } from "./runtime-api.js";

/** How often HAProxy's per-listener counters are read for idle auto-sleep. */
const ACTIVITY_POLL_MS = 1000;

/**
 * What HAProxy counts: per listener from its stick table (polled for idle auto-sleep and the
 * console's traffic panel), per frontend from `show stat` (Sail's metrics), and its own
 * Prometheus exporter.
 */
export class HaproxyStats {
  private activityTimer: NodeJS.Timeout | undefined;
  /** Per listener host, from the stick table's last read: what the console's traffic panel shows. */
  private listenerTotals = new Map<string, HttpListenerTraffic>();
  /** Last counters per Host, and per box when they last moved. */
  private readonly lastCounters = new Map<string, string>();
  private readonly lastActive = new Map<string, number>();
  private lastStats: Record<string, number> = {};

  constructor(
    private readonly api: RuntimeApi,
    private readonly metricsSocket: string,
    private readonly haproxy: Pick<HaproxyProcess, "running">,
    private readonly onActivity: (report: ActivityReport) => void,
  ) {}

  /** Poll the stick table every ACTIVITY_POLL_MS until `stop()`. */
  start(): void {
    this.activityTimer = setInterval(() => void this.pollActivity(), ACTIVITY_POLL_MS);
    this.activityTimer.unref();
  }

  stop(): void {
    clearInterval(this.activityTimer);
  }

  /** Forget these hosts' last counters (the routes were reset). */
  forget(hosts: Iterable<string>): void {
    for (const host of hosts) this.lastCounters.delete(host);
  }

  /** Counters since the last call (connections, requests, bytes), from HAProxy's frontend statistics. */
  async takeCounters(): Promise<CounterDelta> {
    const delta: CounterDelta = { connections: 0, requests: 0, tunnels: 0, bytesIn: 0, bytesOut: 0, refusals: {} };
    if (!this.haproxy.running) return delta;
    const stats = frontendStats(await this.api.run("show stat -1 1 -1").catch(() => ""), "https");
    const grew = (key: string) => {
      const now = stats[key] ?? 0;
      const before = this.lastStats[key] ?? 0;
      return now >= before ? now - before : now; // HAProxy restarted: its counters did too
    };
    delta.connections = grew("stot");
    delta.requests = grew("req_tot");
    delta.bytesIn = grew("bin");
    delta.bytesOut = grew("bout");
    this.lastStats = stats;
    return delta;
  }

  /** HAProxy's own Prometheus metrics (haproxy_*), to append to Sail's. */
  prometheusText(): Promise<string> {
    return new Promise((resolve) => {
      const req = request({ socketPath: this.metricsSocket, path: "/metrics" }, (res) => {
        let text = "";
        res
          .setEncoding("utf8")
          .on("data", (d: string) => (text += d))
          .on("end", () => resolve(text));
      });
      req.on("error", () => resolve(""));
      req.setTimeout(5000, () => req.destroy());
      req.end();
    });
  }

  /** An HTTP listener's totals since HAProxy started (or the entry's hour of disuse ended): open connections, requests, bytes. */
  listenerTraffic(host: string): HttpListenerTraffic | undefined {
    return this.listenerTotals.get(host.toLowerCase());
  }

  /** Per box: open connections (conn_cur) and when its counters last moved. */
  private async pollActivity(): Promise<void> {
    if (!this.haproxy.running) return;
    const table = await this.api.run("show table activity").catch(() => undefined);
    if (table === undefined) return;
    const now = Date.now();
    const report: ActivityReport = {};
    const totals = new Map<string, HttpListenerTraffic>();
    for (const entry of stickTableEntries(table)) {
      const [requests = 0, bytesIn = 0, bytesOut = 0] = entry.counters.split(",").map(Number);
      totals.set(entry.key, { open: entry.open, requests, bytesIn, bytesOut });
      const sailboxId = parseHttpLabel(entry.key.split(".")[0] ?? "")?.sailboxId;
      if (!sailboxId) continue;
      if (this.lastCounters.get(entry.key) !== entry.counters) {
        this.lastCounters.set(entry.key, entry.counters);
        this.lastActive.set(sailboxId, now);
      }
      const box = (report[sailboxId] ??= { open: 0, lastActiveMs: this.lastActive.get(sailboxId) ?? 0 });
      box.open += entry.open;
      if (entry.open > 0) box.lastActiveMs = now;
    }
    this.listenerTotals = totals;
    this.onActivity(report);
  }
}

export interface HttpListenerTraffic {
  open: number;
  requests: number;
  bytesIn: number;
  bytesOut: number;
}

/** `show table` lines: `0x..: key=<host> use=0 exp=… conn_cur=N http_req_cnt=N bytes_in_cnt=N bytes_out_cnt=N`. */
export function stickTableEntries(text: string): Array<{ key: string; open: number; counters: string }> {
  const entries = [];
  for (const line of text.split("\n")) {
    const key = / key=(\S+)/.exec(line)?.[1];
    if (!key) continue;
    const open = Number(/ conn_cur=(\d+)/.exec(line)?.[1] ?? 0);
    const counters = [...line.matchAll(/ (http_req_cnt|bytes_in_cnt|bytes_out_cnt)=(\d+)/g)].map((m) => m[2]).join(",");
    entries.push({ key, open, counters });
  }
  return entries;
}

/** One frontend's counters from `show stat` (CSV with a `# pxname,svname,…` header). */
export function frontendStats(csv: string, frontend: string): Record<string, number> {
  const lines = csv.split("\n");
  const header =
    lines
      .find((l) => l.startsWith("# "))
      ?.slice(2)
      .split(",") ?? [];
  const row = lines.find((l) => l.startsWith(`${frontend},FRONTEND,`))?.split(",") ?? [];
  return Object.fromEntries(header.map((name, i) => [name, Number(row[i] ?? 0) || 0]));
}
