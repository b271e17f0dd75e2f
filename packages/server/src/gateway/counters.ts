import type { Socket } from "node:net";
import type { ActivityMeter } from "./activity.js";

/** What a data path counts between two reads: plain numbers, so gateway workers can send them over IPC. */
export interface CounterDelta {
  connections: number;
  requests: number;
  tunnels: number;
  bytesIn: number;
  bytesOut: number;
  /** Answers the gateway gave itself, or connections it closed, by reason (an error code or "cidr"...). */
  refusals: Record<string, number>;
}

/** Counters of one data path (a gateway worker, or the TCP gateway); `take()` returns and resets them. */
export class GatewayCounters {
  private delta: CounterDelta = GatewayCounters.empty();

  static empty(): CounterDelta {
    return { connections: 0, requests: 0, tunnels: 0, bytesIn: 0, bytesOut: 0, refusals: {} };
  }

  add(key: Exclude<keyof CounterDelta, "refusals">, n = 1): void {
    this.delta[key] += n;
  }

  refuse(reason: string): void {
    this.delta.refusals[reason] = (this.delta.refusals[reason] ?? 0) + 1;
  }

  take(): CounterDelta {
    const taken = this.delta;
    this.delta = GatewayCounters.empty();
    return taken;
  }
}

/** Count the bytes of a client <-> upstream pipe: activity (idle auto-sleep) and metrics. */
export function meterPipe(client: Socket, upstream: Socket, sailboxId: string, activity: ActivityMeter, counters: GatewayCounters): void {
  client.on("data", (chunk: Buffer) => {
    activity.bytes(sailboxId);
    counters.add("bytesIn", chunk.length);
  });
  upstream.on("data", (chunk: Buffer) => {
    activity.bytes(sailboxId);
    counters.add("bytesOut", chunk.length);
  });
}
