import cluster, { type Worker } from "node:cluster";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import type { ActivityReport } from "../node/idle.js";
import type { RouteChange, RouteSubscriber, TcpRoute } from "../node/routes.js";
import type { TcpBind } from "../node/tcp-binds.js";
import type { CounterDelta } from "./counters.js";
import type { FromTcpWorker, ToTcpWorker } from "./tcp-worker.js";
import type { Logger } from "../logger.js";

/** What the TCP data path needs from `boxes`: the routes as they change, wakes, and where to report activity. */
export interface TcpIngressSource {
  subscribe(subscriber: RouteSubscriber): void;
  wakeOnIngress(sailboxId: string): Promise<string | undefined>;
  noteActivity(source: string, report: ActivityReport): void;
  /** Whether the host holds a public port (undefined: no longer served). */
  noteTcpBind(publicPort: number, bind: TcpBind | undefined): void;
}

/** Retrying a port another program holds: from 250 ms, doubling up to 5 s (one bind attempt each: cheap). */
const BIND_RETRY_FIRST_MS = 250;
const BIND_RETRY_MAX_MS = 5000;

interface PortState {
  bind: TcpBind;
  attempts: number;
  retryMs: number;
  timer?: NodeJS.Timeout;
}

export interface TcpClusterOptions {
  host: string;
  workers: number;
  wakeBudgetMs: number;
  logLevel: string;
  /** Edges' source ranges: their connections start with a PROXY v2 header naming the client. */
  edgeFrom?: string[];
}

/**
 * Raw TCP in N worker processes sharing each public port (cluster, the kernel spreading
 * accepts). Separate processes because each connection costs two descriptors where it is
 * pumped, and a process may hold 20,000 here: 10,000 connections need more than one. The
 * primary passes every route change to every worker (a new worker gets the whole table),
 * relays wakes, and tells workers which boxes' connections to drop.
 *
 * A port is offered to the workers only once the primary could bind it itself: Node's cluster
 * cannot retry a failed shared bind in a worker (it keeps the failed handle), so the primary
 * tries, reports each port's state (bound, or unbound with the OS's reason) to `boxes`, and
 * retries an unbound port with backoff until it binds or its route goes.
 */
export class TcpCluster implements RouteSubscriber {
  private readonly workers = new Set<Worker>();
  private readonly table = new Map<number, TcpRoute>();
  private version = 0;
  private closing = false;
  private readonly applied = new Map<Worker, number>();
  private waiters: Array<{ version: number; resolve: () => void }> = [];
  /** Per public port of the table: whether it is bound, and its retry. */
  private readonly ports = new Map<number, PortState>();
  /** Changes for the workers, in order (a new port is tried first); never rejects. */
  private forwarding: Promise<void> = Promise.resolve();
  /** The last version the workers were sent. */
  private sentVersion = 0;

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
    this.forwarding = this.forwarding.then(() => this.forward(change)).catch((err) => this.log.error({ err: String(err) }, "TCP route change failed"));
  }

  /** Try the change's new ports, then send the workers the change with the ports that bound. */
  private async forward(change: RouteChange): Promise<void> {
    for (const port of [...this.ports.keys()]) if (!this.table.has(port)) this.forget(port);
    const set: TcpRoute[] = [];
    for (const route of change.tcp.set) {
      if (this.table.get(route.publicPort) !== route) continue; // a later change replaced it: that one says
      if (await this.bindable(route)) set.push(route);
    }
    this.sentVersion = change.version;
    this.broadcast({ type: "routes", version: change.version, reset: change.reset, set, remove: change.tcp.remove });
  }

  /** Whether the port is ours to offer: already bound, or free now (tried once); an unbound one waits for its retry. */
  private async bindable(route: TcpRoute): Promise<boolean> {
    const known = this.ports.get(route.publicPort);
    if (known) return known.bind.state === "bound";
    const state: PortState = { bind: { state: "pending" }, attempts: 0, retryMs: BIND_RETRY_FIRST_MS };
    this.ports.set(route.publicPort, state);
    this.source.noteTcpBind(route.publicPort, state.bind);
    return this.tryBind(route, state);
  }

  /**
   * Bind the port here, exclusively, and release it at once: if that works the workers' shared
   * bind (moments later) will too. If not, the port is unbound with the OS's reason, logged once,
   * and tried again after a backoff.
   */
  private async tryBind(route: TcpRoute, state: PortState): Promise<boolean> {
    state.attempts++;
    const error = await probeBind(this.options.host, route.publicPort);
    if (this.ports.get(route.publicPort) !== state) return false; // its route went meanwhile
    if (!error) {
      if (state.bind.state === "unbound") this.log.info({ sailboxId: route.sailboxId, port: route.port, publicPort: route.publicPort, attempts: state.attempts }, "TCP listener bound after all");
      state.bind = { state: "bound" };
      this.source.noteTcpBind(route.publicPort, state.bind);
      return true;
    }
    this.markUnbound(route, state, error.code ?? "EUNKNOWN", error.message);
    return false;
  }

  private markUnbound(route: TcpRoute, state: PortState, code: string, message: string): void {
    if (state.bind.state !== "unbound") {
      this.log.error({ sailboxId: route.sailboxId, port: route.port, publicPort: route.publicPort, code, err: message }, "could not bind TCP listener; retrying");
      state.bind = { state: "unbound", unbound: { code, message, since: new Date().toISOString() } };
      this.source.noteTcpBind(route.publicPort, state.bind);
    }
    clearTimeout(state.timer);
    state.timer = setTimeout(() => {
      this.forwarding = this.forwarding.then(() => this.retry(route.publicPort, state)).catch((err) => this.log.error({ err: String(err) }, "TCP bind retry failed"));
    }, state.retryMs);
    state.timer.unref();
    state.retryMs = Math.min(state.retryMs * 2, BIND_RETRY_MAX_MS);
  }

  /** A retry that binds offers the port to the workers (as part of the version they have). */
  private async retry(publicPort: number, state: PortState): Promise<void> {
    const route = this.table.get(publicPort);
    if (!route || this.ports.get(publicPort) !== state) return;
    if (await this.tryBind(route, state)) this.broadcast({ type: "routes", version: this.sentVersion, set: [route], remove: [] });
  }

  /** A worker could not bind a port the primary had found free (someone took it in between). */
  private lostBind(publicPort: number, code: string, message: string): void {
    const route = this.table.get(publicPort);
    const state = this.ports.get(publicPort);
    if (!route || !state) return;
    state.bind = { state: "pending" }; // so markUnbound logs and reports it
    this.markUnbound(route, state, code, message);
    this.broadcast({ type: "routes", version: this.sentVersion, set: [], remove: [publicPort] });
  }

  private forget(publicPort: number): void {
    clearTimeout(this.ports.get(publicPort)?.timer);
    this.ports.delete(publicPort);
    this.source.noteTcpBind(publicPort, undefined);
  }

  dropConnections(sailboxId: string): void {
    this.broadcast({ type: "drop", sailboxId });
  }

  /**
   * Resolves once every worker listens as the latest routes say (listener.wait() waits for it);
   * a port the host could not bind is reported unbound instead (`noteTcpBind`).
   */
  async synced(): Promise<void> {
    const version = this.version;
    await this.forwarding;
    if ([...this.workers].every((w) => (this.applied.get(w) ?? -1) >= version)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ version, resolve }));
  }

  /** Worker process ids (tests count their threads). */
  get pids(): number[] {
    return [...this.workers].map((w) => w.process.pid!).filter(Boolean);
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const state of this.ports.values()) clearTimeout(state.timer);
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
          worker.send({
            type: "start",
            host: this.options.host,
            wakeBudgetMs: this.options.wakeBudgetMs,
            logLevel: this.options.logLevel,
            edgeFrom: this.options.edgeFrom ?? [],
          } satisfies ToTcpWorker);
          const bound = [...this.table.values()].filter((r) => this.ports.get(r.publicPort)?.bind.state === "bound");
          worker.send({ type: "routes", version: this.sentVersion, reset: true, set: bound, remove: [] } satisfies ToTcpWorker);
        } else if (message.type === "routes-applied") {
          this.applied.set(worker, message.version);
          this.releaseWaiters();
          if (!started) {
            started = true;
            resolve();
          }
        } else if (message.type === "bind-failed") {
          this.lostBind(message.publicPort, message.code, message.message);
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

/** Bind `host`:`port` exclusively (not through the cluster) and release it: undefined when it could be bound. */
function probeBind(host: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", (err: NodeJS.ErrnoException) => resolve(err));
    probe.listen({ port, host, exclusive: true }, () => probe.close(() => resolve(undefined)));
  });
}
