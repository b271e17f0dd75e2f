import type { ListenerInfo, ListenerTraffic } from "@sail/protocol";
import type { ActivityReport } from "../node/idle.js";
import type { CounterDelta, ListenerDelta } from "./counters.js";
import type { HttpListenerTraffic } from "./haproxy-stats.js";

/**
 * Per-listener totals for the console's traffic panel, from the data paths' own counters:
 * HAProxy's stick table (HTTP requests, open connections, bytes), the slow path's refusals and the requests that woke a box,
 * and the TCP workers' connections, bytes and refusals. In memory: they start at zero with
 * the daemon, and clients turn them into rates.
 */
export class TrafficLedger {
  private readonly totals = new Map<string, ListenerDelta>();
  private readonly tcpActivity = new Map<string, ActivityReport>();

  constructor(private readonly httpTraffic: (host: string) => HttpListenerTraffic | undefined) {}

  /** A data path's counters since its last report (each delta is absorbed once). */
  absorb(delta: CounterDelta): void {
    for (const [key, d] of Object.entries(delta.listeners ?? {})) {
      const total = this.totals.get(key) ?? { connections: 0, requests: 0, tunnels: 0, bytesIn: 0, bytesOut: 0, refusals: {} };
      total.connections += d.connections;
      total.requests += d.requests;
      total.tunnels += d.tunnels;
      total.bytesIn += d.bytesIn;
      total.bytesOut += d.bytesOut;
      for (const [reason, n] of Object.entries(d.refusals)) total.refusals[reason] = (total.refusals[reason] ?? 0) + n;
      this.totals.set(key, total);
    }
  }

  /** A TCP worker's latest activity report: its open connections per box. */
  noteTcpActivity(source: string, report: ActivityReport): void {
    this.tcpActivity.set(source, report);
  }

  /** The totals of these listeners (an HTTP one's HAProxy counters are keyed by its public host). */
  forListeners(listeners: ReadonlyArray<Pick<ListenerInfo, "sailboxId" | "port" | "protocol"> & { endpoint: { host: string } }>): ListenerTraffic[] {
    return listeners.map((l) => {
      const own = this.totals.get(`${l.sailboxId}:${l.port}`);
      const refusals = { ...own?.refusals };
      if (l.protocol === "http") {
        const http = this.httpTraffic(l.endpoint.host);
        return {
          port: l.port,
          protocol: l.protocol,
          open: http?.open ?? 0,
          requests: (http?.requests ?? 0) + (own?.requests ?? 0),
          bytesIn: http?.bytesIn ?? 0,
          bytesOut: http?.bytesOut ?? 0,
          refusals,
        };
      }
      let open = 0;
      for (const report of this.tcpActivity.values()) open += report[l.sailboxId]?.open ?? 0;
      return { port: l.port, protocol: l.protocol, open, requests: own?.connections ?? 0, bytesIn: own?.bytesIn ?? 0, bytesOut: own?.bytesOut ?? 0, refusals };
    });
  }

  /** Forget a box's listeners once it ended. */
  forget(sailboxId: string): void {
    for (const key of this.totals.keys()) if (key.startsWith(`${sailboxId}:`)) this.totals.delete(key);
  }
}
