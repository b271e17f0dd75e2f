/**
 * One raw-TCP worker process (forked by TcpCluster). It binds every public TCP port (shared
 * with the other workers through cluster), applies the ingress policy, asks the daemon to wake
 * boxes, and hands accepted connections to the native splice pump.
 */
import pino from "pino";
import type { ActivityReport } from "../node/idle.js";
import type { RouteSubscriber, TcpRoute } from "../node/routes.js";
import type { CounterDelta } from "./counters.js";
import { SplicePumps } from "./splice-pump.js";
import { TcpGateway } from "./tcp-gateway.js";

export type ToTcpWorker =
  | { type: "start"; host: string; wakeBudgetMs: number; logLevel: string; edgeFrom: string[] }
  | { type: "routes"; version: number; reset?: boolean; set: TcpRoute[]; remove: number[] }
  | { type: "drop"; sailboxId: string }
  | { type: "woken"; requestId: number; status: string | undefined };
export type FromTcpWorker =
  | { type: "ready" }
  | { type: "routes-applied"; version: number }
  | { type: "report"; activity: ActivityReport; counters: CounterDelta; open: number; rss: number }
  | { type: "bind-failed"; publicPort: number; code: string; message: string }
  | { type: "wake"; requestId: number; sailboxId: string };

const REPORT_MS = 1000;
const send = (message: FromTcpWorker) => process.send?.(message);
const wakes = new Map<number, (status: string | undefined) => void>();
let nextWake = 0;
let subscriber: RouteSubscriber | undefined;
let gateway: TcpGateway | undefined;
let pumps: SplicePumps | undefined;
let applying: Promise<void> = Promise.resolve();

/** Ask the daemon to wake a box; the answer comes back as "woken" (the gateway bounds the wait). */
function wakeOnIngress(sailboxId: string): Promise<string | undefined> {
  const requestId = nextWake++;
  return new Promise((resolve) => {
    wakes.set(requestId, resolve);
    send({ type: "wake", requestId, sailboxId });
  });
}

process.on("message", (message: ToTcpWorker) => {
  if (message.type === "start") {
    const log = pino({ level: message.logLevel, base: { service: "saild-tcp", pid: process.pid } }, pino.destination(2));
    const loaded = SplicePumps.load();
    pumps = loaded.pumps;
    if (!pumps) log.warn({ why: loaded.why }, "the native TCP pump is not available: raw TCP is piped by Node streams (slower)");
    gateway = new TcpGateway(
      { subscribe: (s) => (subscriber = s), wakeOnIngress },
      message.host,
      log,
      pumps,
      message.wakeBudgetMs,
      (publicPort, err) => {
        // the primary found the port free, then lost it before binding it for us. Node's cluster
        // cannot bind the same key again in this process (internal/cluster/child keeps the failed
        // handle and asserts on the next one): report, and let the primary start a fresh worker
        send({ type: "bind-failed", publicPort, code: err.code ?? "EUNKNOWN", message: err.message });
        log.error({ publicPort }, "a TCP worker whose shared bind failed exits; the primary starts another");
        setTimeout(() => process.exit(1), 100);
      },
      message.edgeFrom,
    );
    void gateway.start();
    setInterval(() => {
      if (!gateway) return;
      send({ type: "report", activity: gateway.activity.snapshot(), counters: gateway.counters.take(), open: pumps?.size ?? 0, rss: process.memoryUsage.rss() });
    }, REPORT_MS).unref();
  } else if (message.type === "routes") {
    const { version, reset, set, remove } = message;
    // in order, each acknowledged once the listeners are bound as it says
    applying = applying.then(async () => {
      subscriber?.apply({ version, reset, http: { set: [], remove: [] }, tcp: { set, remove } });
      await gateway?.synced();
      send({ type: "routes-applied", version });
    });
  } else if (message.type === "drop") {
    gateway?.dropConnections(message.sailboxId);
  } else if (message.type === "woken") {
    const resolve = wakes.get(message.requestId);
    wakes.delete(message.requestId);
    resolve?.(message.status);
  }
});

// messages sent before this module ran would be lost: say when we can take them
send({ type: "ready" });

// the daemon is gone (stopped or killed): so is its data path. Ctrl-C reaches the whole
// process group; the daemon decides when workers stop.
process.on("disconnect", () => process.exit(0));
process.on("SIGINT", () => {});
