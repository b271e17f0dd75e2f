import cluster, { type Worker } from "node:cluster";
import { fileURLToPath } from "node:url";
import type { ActivityReport } from "../boxes/idle.js";
import type { RouteChange, RouteSubscriber, TcpRoute } from "../boxes/routes.js";
import type { CounterDelta } from "./counters.js";
import type { FromTcpWorker, ToTcpWorker } from "./tcp-worker.js";

/** What the TCP data path needs from `boxes`: the routes as they change, wakes, and where to report activity. */
export interface TcpIngressSource {
  subscribe(subscriber: RouteSubscriber): void;
  wakeOnIngress(sailboxId: string): Promise<string | undefined>;
  noteActivity(source: string, report: ActivityReport): void;
}

interface Logger {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface TcpClusterOptions {
  host: string;
  workers: number;
  wakeBudgetMs: number;
  logLevel: string;
}

/**
 * Raw TCP in N worker processes sharing each public port (cluster, the kernel spreading
 * accepts). Separate processes because each connection costs two descriptors where it is
 * pumped, and a process may hold 20,000 here: 10,000 connections need more than one. The
 * primary passes every route change to every worker (a new worker gets the whole table),
 * relays wakes, and tells workers which boxes' connections to drop.
 */
export class TcpCluster implements RouteSubscriber {
  private readonly workers = new Set<Worker>();
  private readonly table = new Map<number, TcpRoute>();
  private version = 0;
  private closing = false;
  private readonly applied = new Map<Worker, number>();
  private waiters: Array<{ version: number; resolve: () => void }> = [];

  constructor(
    private readonly source: TcpIngressSource,
    private readonly options: TcpClusterOptions,
    private readonly log: Logger,
    /** Each worker's counters since its last report, connections piped now, and resident memory (metrics). */
    private readonly onWorkerReport?: (workerId: number, counters: CounterDelta, open: number, rss: number) => void,
  ) {}

  async start(): Promise<void> {
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    cluster.setupPrimary({ exec: fileURLToPath(new URL("./tcp-worker.js", import.meta.url)), args: [] });
    this.source.subscribe(this);
    await Promise.all(Array.from({ length: this.options.workers }, () => this.fork()));
  }

  apply(change: RouteChange): void {
    if (change.reset) this.table.clear();
    for (const port of change.tcp.remove) this.table.delete(port);
    for (const route of change.tcp.set) this.table.set(route.publicPort, route);
    this.version = change.version;
    this.broadcast({ type: "routes", version: change.version, reset: change.reset, set: change.tcp.set, remove: change.tcp.remove });
  }

  dropConnections(sailboxId: string): void {
    this.broadcast({ type: "drop", sailboxId });
  }

  /** Resolves once every worker listens as the latest routes say (listener.wait() waits for it). */
  synced(): Promise<void> {
    const version = this.version;
    if ([...this.workers].every((w) => (this.applied.get(w) ?? -1) >= version)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ version, resolve }));
  }

  /** Worker process ids (tests count their threads). */
  get pids(): number[] {
    return [...this.workers].map((w) => w.process.pid!).filter(Boolean);
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(
      [...this.workers].map(
        (worker) =>
          new Promise<void>((resolve) => {
            worker.once("exit", () => resolve());
            worker.kill();
          }),
      ),
    );
  }

  private fork(): Promise<void> {
    const worker = cluster.fork();
    this.workers.add(worker);
    return new Promise((resolve, reject) => {
      let started = false;
      worker.on("message", (message: FromTcpWorker) => {
        if (message.type === "ready") {
          worker.send({ type: "start", host: this.options.host, wakeBudgetMs: this.options.wakeBudgetMs, logLevel: this.options.logLevel } satisfies ToTcpWorker);
          worker.send({ type: "routes", version: this.version, reset: true, set: [...this.table.values()], remove: [] } satisfies ToTcpWorker);
        } else if (message.type === "routes-applied") {
          this.applied.set(worker, message.version);
          this.releaseWaiters();
          if (!started) {
            started = true;
            resolve();
          }
        } else if (message.type === "report") {
          this.source.noteActivity(`tcp-worker-${worker.id}`, message.activity);
          this.onWorkerReport?.(worker.id, message.counters, message.open, message.rss);
        } else if (message.type === "wake") {
          void this.source.wakeOnIngress(message.sailboxId).then(
            (status) => worker.isConnected() && worker.send({ type: "woken", requestId: message.requestId, status } satisfies ToTcpWorker),
            (err) => {
              this.log.error({ sailboxId: message.sailboxId, err: String(err) }, "wake on ingress failed");
              if (worker.isConnected()) worker.send({ type: "woken", requestId: message.requestId, status: "failed" } satisfies ToTcpWorker);
            },
          );
        }
      });
      worker.once("exit", (code, signal) => {
        this.workers.delete(worker);
        this.applied.delete(worker);
        this.source.noteActivity(`tcp-worker-${worker.id}`, {}); // its connections died with it
        this.releaseWaiters();
        if (this.closing) return;
        if (!started) return reject(new Error(`a TCP worker exited (${code ?? signal}) while starting`));
        this.log.error({ workerPid: worker.process.pid, code, signal }, "TCP worker died; starting another");
        void this.fork().catch((err) => this.log.error({ err: String(err) }, "TCP worker restart failed"));
      });
    });
  }

  private broadcast(message: ToTcpWorker): void {
    for (const worker of this.workers) if (worker.isConnected()) worker.send(message);
  }

  private releaseWaiters(): void {
    const floor = Math.min(...[...this.workers].map((w) => this.applied.get(w) ?? -1));
    const ready = this.waiters.filter((w) => w.version <= floor || this.workers.size === 0);
    this.waiters = this.waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }
}
