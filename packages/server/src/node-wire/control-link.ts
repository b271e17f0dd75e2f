/**
 * The node agent's side of the node → control direction: it registers with the control plane
 * (and again whenever the control plane restarts or forgets it) and delivers its events. A
 * delivery that fails throws: the node keeps the events and tries again (node/events).
 */
import { Agent, request } from "undici";
import { errorFromWire } from "@sail/protocol";
import type { NodeEvent, NodeEventSink, NodeInfo, RegisterAnswer } from "./node-api.js";
import { WIRE_PREFIX, wireHeaders } from "./wire.js";

const CALL_MS = 10_000;

export class ControlLink implements NodeEventSink {
  private readonly dispatcher = new Agent({ keepAliveTimeout: 30_000, connect: { timeout: 5_000 } });

  constructor(
    /** The control plane's API URL. */
    private readonly controlUrl: string,
    private readonly credential: string,
  ) {}

  /** Tell the control plane where this node's wire listens and who it is. */
  async register(url: string, info: NodeInfo): Promise<RegisterAnswer> {
    const answer = (await this.post("/register", { url, info })) as Partial<RegisterAnswer> | undefined;
    if (typeof answer?.leaseMs !== "number" || !(answer.leaseMs > 0)) throw new Error(`the control plane at ${this.controlUrl} answered the registration without a lease`);
    return { leaseMs: answer.leaseMs };
  }

  async deliver(events: NodeEvent[]): Promise<void> {
    await this.post("/events", { events });
  }

  close(): Promise<void> {
    return this.dispatcher.close();
  }

  private async post(path: string, body: unknown): Promise<unknown> {
    let answer;
    try {
      answer = await request(`${this.controlUrl.replace(/\/$/, "")}${WIRE_PREFIX}${path}`, {
        method: "POST",
        dispatcher: this.dispatcher,
        headers: { ...wireHeaders(this.credential), "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(CALL_MS),
        headersTimeout: CALL_MS,
        bodyTimeout: CALL_MS,
      });
    } catch (err) {
      throw new Error(`the control plane at ${this.controlUrl} did not answer ${path}: ${(err as Error).message}`);
    }
    const text = await answer.body.text();
    if (answer.statusCode >= 400) throw errorFromWire(safeJson(text), answer.statusCode);
    return safeJson(text);
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
