import type { Socket } from "node:net";
import type { ActivityMeter } from "./activity.js";

/** What a data path counts between two reads: plain numbers, so TCP workers can send them over IPC. */
export interface CounterDelta {
  connections: number;
  requests: number;
  tunnels: number;
  bytesIn: number;
  bytesOut: number;
  /** Answers the gateway gave itself, or connections it closed, by reason (an error code or "cidr"...). */
  refusals: Record<string, number>;
  /** The same per listener (`<sailboxId>:<port>`), for the console's traffic panel; only listeners that saw something. */
  listeners?: Record<string, ListenerDelta>;
}

export type ListenerDelta = Omit<CounterDelta, "listeners">;

/** Which listener a count belongs to. */
export interface ListenerRef {
  sailboxId: string;
  port: number;
}

/** Counters of one data path (the slow path, or a TCP worker's gateway); `take()` returns and resets them. */
export class GatewayCounters {
  private delta: CounterDelta = GatewayCounters.empty();

  static empty(): CounterDelta {
    return { connections: 0, requests: 0, tunnels: 0, bytesIn: 0, bytesOut: 0, refusals: {} };
  }

  add(key: Exclude<keyof CounterDelta, "refusals" | "listeners">, n = 1, listener?: ListenerRef): void {
    this.delta[key] += n;
    if (listener) this.of(listener)[key] += n;
  }

  refuse(reason: string, listener?: ListenerRef): void {
    this.delta.refusals[reason] = (this.delta.refusals[reason] ?? 0) + 1;
    if (listener) {
      const refusals = this.of(listener).refusals;
      refusals[reason] = (refusals[reason] ?? 0) + 1;
    }
  }

  private of({ sailboxId, port }: ListenerRef): ListenerDelta {
    const listeners = (this.delta.listeners ??= {});
    return (listeners[`${sailboxId}:${port}`] ??= { connections: 0, requests: 0, tunnels: 0, bytesIn: 0, bytesOut: 0, refusals: {} });
  }

  take(): CounterDelta {
    const taken = this.delta;
    this.delta = GatewayCounters.empty();
    return taken;
  }
}

/** Count the bytes of a client <-> upstream pipe: activity (idle auto-sleep) and metrics. */
export function meterPipe(client: Socket, upstream: Socket, sailboxId: string, activity: ActivityMeter, counters: GatewayCounters, listener?: ListenerRef): void {
  client.on("data", (chunk: Buffer) => {
    activity.bytes(sailboxId);
    counters.add("bytesIn", chunk.length, listener);
  });
  upstream.on("data", (chunk: Buffer) => {
    activity.bytes(sailboxId);
    counters.add("bytesOut", chunk.length, listener);
  });
}
