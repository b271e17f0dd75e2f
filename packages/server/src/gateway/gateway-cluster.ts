import cluster, { type Worker } from "node:cluster";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import type { ActivityReport } from "../boxes/idle.js";
import type { HttpRoute, RouteChange, RouteSubscriber } from "../boxes/routes.js";
import type { CounterDelta } from "./counters.js";
import type { FromWorker, ToWorker } from "./gateway-worker.js";
import type { HttpGatewayOptions } from "./http-gateway.js";

/** What the gateway needs from `boxes`: the routes as they change, wakes, and where to report activity. */
export interface IngressSource {
  subscribe(subscriber: RouteSubscriber): void;
  wakeOnIngress(sailboxId: string): Promise<string | undefined>;
  noteActivity(source: string, report: ActivityReport): void;
}

interface Logger {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/**
 * The gateway as N worker processes sharing one listening socket (cluster, with the
 * kernel spreading accepts: SCHED_NONE). It follows the HTTP routes as versioned changes,
 * passes each change to every worker (a new worker gets the whole table), and tells them
 * which boxes' connections to drop.
 */
export class GatewayCluster implements RouteSubscriber {
  private readonly workers = new Set<Worker>();
  /** The HTTP routes by hostname label, as the latest change left them. */
  private readonly table = new Map<string, HttpRoute>();
  private version = 0;
  private closing = false;
  private readonly applied = new Map<Worker, number>();
  private waiters: Array<{ version: number; resolve: () => void }> = [];

  constructor(
    private readonly source: IngressSource,
    private readonly options: HttpGatewayOptions & { workers: number; logLevel: string },
    private readonly log: Logger,
    /** Each worker's counters since its last report, and its resident memory (metrics). */
    private readonly onWorkerReport?: (workerId: number, counters: CounterDelta, rss: number) => void,
  ) {}

  async start(): Promise<void> {
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    cluster.setupPrimary({ exec: fileURLToPath(new URL("./gateway-worker.js", import.meta.url)), args: [] });
    await waitForFreePort(this.options.host, this.options.port);
    this.source.subscribe(this);
    await Promise.all(Array.from({ length: this.options.workers }, () => this.fork()));
  }

  apply(change: RouteChange): void {
    if (change.reset) this.table.clear();
    for (const label of change.http.remove) this.table.delete(label);
    for (const [label, route] of change.http.set) this.table.set(label, route);
    this.version = change.version;
    this.broadcast({ type: "routes", version: change.version, reset: change.reset, set: change.http.set, remove: change.http.remove });
  }

  dropConnections(sailboxId: string): void {
    this.broadcast({ type: "drop", sailboxId });
  }

  /** Resolves once every worker routes by the latest table (listener.wait() waits for it). */
  synced(): Promise<void> {
    const version = this.version;
    if ([...this.workers].every((w) => (this.applied.get(w) ?? -1) >= version)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ version, resolve }));
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(
      [...this.workers].map((worker) => new Promise<void>((resolve) => {
        worker.once("exit", () => resolve());
        worker.kill();
      })),
    );
  }

  private fork(): Promise<void> {
    const worker = cluster.fork();
    this.workers.add(worker);
    const { workers: _n, logLevel, ...options } = this.options;
    return new Promise((resolve, reject) => {
      worker.on("message", (message: FromWorker) => {
        if (message.type === "activity") {
          this.source.noteActivity(`gateway-worker-${worker.id}`, message.report);
          this.onWorkerReport?.(worker.id, message.counters, message.rss);
        } else if (message.type === "wake") {
          // the route table already says "running" when the worker hears back (wake waits for sync)
          void this.source.wakeOnIngress(message.sailboxId).then(
            (status) => worker.isConnected() && worker.send({ type: "woken", requestId: message.requestId, status } satisfies ToWorker),
            (err) => {
              this.log.error({ sailboxId: message.sailboxId, err: String(err) }, "wake on ingress failed");
              if (worker.isConnected()) worker.send({ type: "woken", requestId: message.requestId, status: "failed" } satisfies ToWorker);
            },
          );
        } else if (message.type === "ready") {
          worker.send({ type: "start", options, logLevel } satisfies ToWorker);
        } else if (message.type === "listening") {
          worker.send({ type: "routes", version: this.version, reset: true, set: [...this.table], remove: [] } satisfies ToWorker);
          resolve();
        } else if (message.type === "routes-applied") {
          this.applied.set(worker, message.version);
          this.releaseWaiters();
        } else if (message.type === "failed") {
          reject(new Error(`the HTTPS gateway could not listen on ${options.host}:${options.port}: ${message.message}`));
        }
      });
      let listening = false;
      worker.on("message", (message: FromWorker) => {
        if (message.type === "listening") listening = true;
      });
      worker.once("exit", (code, signal) => {
        this.workers.delete(worker);
        this.applied.delete(worker);
        this.source.noteActivity(`gateway-worker-${worker.id}`, {}); // its connections died with it
        this.releaseWaiters();
        if (this.closing) return;
        if (!listening) return reject(new Error(`a gateway worker exited (${code ?? signal}) before it listened on ${options.host}:${options.port}`));
        this.log.error({ workerPid: worker.process.pid, code, signal }, "gateway worker died; starting another");
        void this.fork().catch((err) => this.log.error({ err: String(err) }, "gateway worker restart failed"));
      });
    });
  }

  private broadcast(message: ToWorker): void {
    for (const worker of this.workers) if (worker.isConnected()) worker.send(message);
  }

  private releaseWaiters(): void {
    const floor = Math.min(...[...this.workers].map((w) => this.applied.get(w) ?? -1));
    const ready = this.waiters.filter((w) => w.version <= floor || this.workers.size === 0);
    this.waiters = this.waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }
}

/**
 * A daemon that was just killed may leave workers holding the port for a moment: wait (up to
 * 3 s) until it can be bound, so the workers listen once. A port another program holds is
 * reported then, with the address, instead of a worker dying over and over.
 */
async function waitForFreePort(host: string, port: number): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const probe = createServer();
    const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      probe.once("error", resolve).listen(port, host, () => probe.close(() => resolve(undefined)));
    });
    if (!error) return;
    if (error.code !== "EADDRINUSE" || attempt >= 30) throw new Error(`the HTTPS gateway could not listen on ${host}:${port}: ${error.message}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
