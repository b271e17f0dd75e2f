import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { CounterDelta } from "./gateway/counters.js";

/**
 * The daemon's Prometheus metrics. The data paths count in plain numbers (TCP workers send
 * theirs over IPC each second; HAProxy's frontend statistics and the slow path are read at
 * scrape time) and are folded in here; the rest is observed where it happens.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly connections = new Counter({ name: "sail_gateway_connections_total", help: "Client connections accepted by the gateway", labelNames: ["protocol"], registers: [this.registry] });
  private readonly requests = new Counter({ name: "sail_gateway_requests_total", help: "HTTP requests forwarded to a box", registers: [this.registry] });
  private readonly tunnels = new Counter({ name: "sail_gateway_tunnels_total", help: "WebSocket (Upgrade) tunnels opened", registers: [this.registry] });
  private readonly bytes = new Counter({
    name: "sail_gateway_bytes_total",
    help: "Bytes through the gateway: in = from clients, out = to clients",
    labelNames: ["protocol", "direction"],
    registers: [this.registry],
  });
  private readonly refusals = new Counter({
    name: "sail_gateway_refusals_total",
    help: "Connections or requests the gateway refused or answered itself, by reason (cidr, paused, unreachable, or the error code of the answer)",
    labelNames: ["protocol", "reason"],
    registers: [this.registry],
  });
  readonly wakes = new Counter({ name: "sail_wakes_total", help: "Sailboxes woken from sleep by traffic or an API call", registers: [this.registry] });
  readonly wakeSeconds = new Histogram({
    name: "sail_wake_seconds",
    help: "Time to wake a sleeping sailbox (thaw, store, route push to every data path)",
    buckets: [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly workerRss = new Gauge({ name: "sail_gateway_worker_rss_bytes", help: "Resident memory of each data-path process (haproxy, tcp-N)", labelNames: ["worker"], registers: [this.registry] });
  readonly tcpOpen = new Gauge({ name: "sail_tcp_connections_open", help: "Raw-TCP connections being piped now, per TCP worker", labelNames: ["worker"], registers: [this.registry] });
  readonly dnsQueries = new Counter({
    name: "sail_dns_queries_total",
    help: "Queries boxes sent to Sail's resolver, by result (forwarded, nxdomain and refused by policy, empty for AAAA, servfail, malformed, notimp for opcodes other than QUERY, dropped past the in-flight or send-queue bound, limited past the box's answer rate)",
    labelNames: ["result"],
    registers: [this.registry],
  });
  private readonly outboundBytes = new Counter({ name: "sail_outbound_bytes_total", help: "Bytes a box sent beyond the host", labelNames: ["sailbox"], registers: [this.registry] });
  private readonly outboundRefused = new Counter({
    name: "sail_outbound_refused_total",
    help: "Packets of outbound connections a box was refused (its policy, private ranges, other boxes, the operator's bounds; not those to the host)",
    labelNames: ["sailbox"],
    registers: [this.registry],
  });
  private readonly outboundSeen = new Map<string, { bytesOut: number; refusedPackets: number }>();
  readonly fenced = new Gauge({ name: "sail_node_fenced", help: "1 while this node serves no routes because its lease with the control plane lapsed", registers: [this.registry] });
  readonly sailboxes = new Gauge({ name: "sail_sailboxes", help: "Live sailboxes by status", labelNames: ["status"], registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "sail_daemon_" });
  }

  /** The firewall's per-box totals, folded in as increments; a box that is gone leaves the series. */
  absorbOutbound(totals: ReadonlyMap<string, { bytesOut: number; refusedPackets: number }>): void {
    for (const [sailbox, now] of totals) {
      const before = this.outboundSeen.get(sailbox) ?? { bytesOut: 0, refusedPackets: 0 };
      if (now.bytesOut > before.bytesOut) this.outboundBytes.inc({ sailbox }, now.bytesOut - before.bytesOut);
      if (now.refusedPackets > before.refusedPackets) this.outboundRefused.inc({ sailbox }, now.refusedPackets - before.refusedPackets);
      this.outboundSeen.set(sailbox, now);
    }
    for (const sailbox of [...this.outboundSeen.keys()]) {
      if (totals.has(sailbox)) continue;
      this.outboundSeen.delete(sailbox);
      this.outboundBytes.remove({ sailbox });
      this.outboundRefused.remove({ sailbox });
    }
  }

  absorb(protocol: "http" | "tcp", delta: CounterDelta): void {
    if (delta.connections) this.connections.inc({ protocol }, delta.connections);
    if (delta.requests) this.requests.inc(delta.requests);
    if (delta.tunnels) this.tunnels.inc(delta.tunnels);
    if (delta.bytesIn) this.bytes.inc({ protocol, direction: "in" }, delta.bytesIn);
    if (delta.bytesOut) this.bytes.inc({ protocol, direction: "out" }, delta.bytesOut);
    for (const [reason, n] of Object.entries(delta.refusals)) this.refusals.inc({ protocol, reason }, n);
  }
}
