/**
 * The resolver's thread (a worker_thread the daemon starts, resolver-thread.ts): it runs
 * `Resolver` with a copy of each box's name rules, so a query never waits for the daemon's
 * main thread and a box flooding its resolver competes with no API request. It asks the main
 * thread only to open the firewall for an allowed name's addresses (`answered`), and sends
 * the query counts for the metrics in batches.
 */
import { readlinkSync } from "node:fs";
import { getPriority, setPriority } from "node:os";
import { parentPort, workerData } from "node:worker_threads";
import { decideName, type NameRules } from "../node/outbound.js";
import { Resolver, type QueryResult, type ResolverPolicy, type ResolverSettings } from "./resolver.js";

/** Main thread → resolver thread. */
export type ToResolverWorker =
  | { type: "open"; id: string; host: string; guest: string; names: NameRules }
  | { type: "names"; id: string; names: NameRules }
  | { type: "close"; id: string }
  | { type: "answered"; seq: number; error?: string };

/** Resolver thread → main thread. */
export type FromResolverWorker =
  | { type: "answered"; seq: number; id: string; name: string; addresses: string[]; ttl: number }
  | { type: "counts"; counts: Partial<Record<QueryResult, number>> }
  | { type: "log"; level: "info" | "warn" | "error"; obj: object; msg: string };

export interface ResolverWorkerData {
  settings: ResolverSettings;
  /** Added to this thread's nice value (Linux schedules threads one by one). */
  niceIncrement: number;
  /** How long an allowed name's answer waits for the main thread to open the firewall before it becomes SERVFAIL. */
  answeredTimeoutMs: number;
}

/** Counts go to the main thread at most this often (a message per query would load it under a flood). */
const COUNTS_EVERY_MS = 250;

const port = parentPort!;
const { settings, answeredTimeoutMs, niceIncrement } = workerData as ResolverWorkerData;
lowerPriority(niceIncrement);
const send = (message: FromResolverWorker) => port.postMessage(message);
const names = new Map<string, NameRules>();
const waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
let seq = 0;

const policy: ResolverPolicy = {
  decide: (id, name) => decideName(names.get(id), name),
  answered: (id, name, addresses, ttl) =>
    new Promise<void>((resolve, reject) => {
      const n = ++seq;
      const timer = setTimeout(() => {
        waiting.delete(n);
        reject(new Error(`the daemon did not open the answer's addresses within ${answeredTimeoutMs} ms`));
      }, answeredTimeoutMs);
      waiting.set(n, {
        resolve: () => (clearTimeout(timer), resolve()),
        reject: (err) => (clearTimeout(timer), reject(err)),
      });
      send({ type: "answered", seq: n, id, name, addresses, ttl });
    }),
};

let counts: Partial<Record<QueryResult, number>> = {};
let countsTimer: NodeJS.Timeout | undefined;
const countQuery = (result: QueryResult) => {
  counts[result] = (counts[result] ?? 0) + 1;
  countsTimer ??= setTimeout(() => {
    send({ type: "counts", counts });
    counts = {};
    countsTimer = undefined;
  }, COUNTS_EVERY_MS);
};

const log = {
  info: (obj: object, msg: string) => send({ type: "log", level: "info", obj, msg }),
  warn: (obj: object, msg: string) => send({ type: "log", level: "warn", obj, msg }),
  error: (obj: object, msg: string) => send({ type: "log", level: "error", obj, msg }),
};
const resolver = new Resolver(policy, settings, log, countQuery);

port.on("message", (message: ToResolverWorker) => {
  if (message.type === "open") {
    names.set(message.id, message.names);
    void resolver.open(message.id, message.host, message.guest);
  } else if (message.type === "names") {
    if (names.has(message.id)) names.set(message.id, message.names);
  } else if (message.type === "close") {
    names.delete(message.id);
    resolver.close(message.id);
  } else {
    const waiter = waiting.get(message.seq);
    waiting.delete(message.seq);
    if (message.error === undefined) waiter?.resolve();
    else waiter?.reject(new Error(message.error));
  }
});

/**
 * Under CPU contention the API's thread goes first: a box flooding its resolver (UDP at line
 * rate costs this thread a callback per datagram, answered or dropped) then slows DNS, not
 * the API. On Linux a nice value is a thread's own; /proc/thread-self names this one.
 */
function lowerPriority(increment: number): void {
  try {
    const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
    setPriority(tid, Math.min(19, getPriority(tid) + increment));
  } catch {
    // not Linux, or not allowed: the thread keeps the daemon's priority
  }
}
