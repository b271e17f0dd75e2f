/**
 * One gateway worker process (forked by GatewayCluster). Workers share the HTTPS
 * listening socket and the kernel spreads connections over them, so the data path
 * uses every core while the daemon keeps the control plane.
 */
import pino from "pino";
import type { ActivityReport } from "../boxes/idle.js";
import type { HttpRoute } from "../boxes/routes.js";
import type { CounterDelta } from "./counters.js";
import { HttpGateway, type HttpGatewayOptions } from "./http-gateway.js";

export type ToWorker =
  | { type: "start"; options: HttpGatewayOptions; logLevel: string }
  | { type: "routes"; version: number; reset?: boolean; set: Array<[string, HttpRoute]>; remove: string[] }
  | { type: "drop"; sailboxId: string }
  | { type: "woken"; requestId: number; status: string | undefined };
export type FromWorker =
  | { type: "activity"; report: ActivityReport; counters: CounterDelta; rss: number }
  | { type: "wake"; requestId: number; sailboxId: string } | { type: "ready" } | { type: "listening" } | { type: "routes-applied"; version: number } | { type: "failed"; message: string };

const send = (message: FromWorker) => process.send?.(message);
const table = new Map<string, HttpRoute>();
let gateway: HttpGateway | undefined;
/** How long a request is held while its box wakes before it gets a 503 with Retry-After. */
const WAKE_BUDGET_MS = 30_000;
const ACTIVITY_REPORT_MS = 1000;
const wakes = new Map<number, (status: string | undefined) => void>();
let nextWake = 0;

/** Ask the daemon to wake a box; the answer comes back as "woken". */
function wake(sailboxId: string): Promise<string | undefined> {
  const requestId = nextWake++;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      wakes.delete(requestId);
      resolve(undefined);
    }, WAKE_BUDGET_MS);
    wakes.set(requestId, (status) => {
      clearTimeout(timer);
      resolve(status);
    });
    send({ type: "wake", requestId, sailboxId });
  });
}

process.on("message", async (message: ToWorker) => {
  if (message.type === "start") {
    const log = pino({ level: message.logLevel, base: { service: "saild-gateway", pid: process.pid } }, pino.destination(2));
    gateway = new HttpGateway({ resolveHttpRoute: (label) => table.get(label), wake }, message.options, log);
    gateway.routesChanged(table);
    // the primary waited for the port to be free (a killed daemon's workers may hold it for a moment)
    try {
      await gateway.listen();
    } catch (err) {
      send({ type: "failed", message: (err as Error).message });
      process.exit(1);
    }
    send({ type: "listening" });
    // what is open and moving, once a second, for idle auto-sleep
    const started = gateway;
    setInterval(() => {
      const { activity, counters } = started.takeReport();
      send({ type: "activity", report: activity, counters, rss: process.memoryUsage.rss() });
    }, ACTIVITY_REPORT_MS).unref();
  } else if (message.type === "routes") {
    if (message.reset) table.clear();
    for (const label of message.remove) table.delete(label);
    for (const [label, route] of message.set) table.set(label, route);
    gateway?.routesChanged(table);
    send({ type: "routes-applied", version: message.version });
  } else if (message.type === "drop") {
    gateway?.dropBox(message.sailboxId);
  } else if (message.type === "woken") {
    const resolve = wakes.get(message.requestId);
    wakes.delete(message.requestId);
    resolve?.(message.status);
  }
});

// messages sent before this module ran would be lost: say when we can take them
send({ type: "ready" });

// the daemon is gone (stopped or killed): so is its data path. Ctrl-C reaches the
// whole process group; the daemon decides when workers stop.
process.on("disconnect", () => process.exit(0));
process.on("SIGINT", () => {});
