/**
 * The boxes' resolver, run off the daemon's main thread: a worker_thread (resolver-worker.ts)
 * owns every box's DNS sockets, with a copy of each box's name rules, so a box flooding its
 * resolver costs the API nothing but the messages of `answered` (at most the box's answer
 * rate) and cannot grow the main thread's heap. The thread has a heap limit of its own; if it
 * dies, it is started again with every box.
 */
import { once } from "node:events";
import { Worker } from "node:worker_threads";
import type { NameRules, ResolverDirectory, ResolverSubscriber } from "../node/outbound.js";
import type { Logger } from "../node/logger.js";
import type { QueryResult, ResolverSettings } from "./resolver.js";
import type { FromResolverWorker, ResolverWorkerData, ToResolverWorker } from "./resolver-worker.js";

/**
 * The thread's V8 heap; what its sockets hold is bounded by the resolver itself (the whole
 * daemon grew 13 MB under test/e2e/attack-dns-flood.test.ts). Past the limit V8 ends the
 * thread, and it starts again.
 */
const RESOURCE_LIMITS = { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16 };
const RESTART_DELAY_MS = 1000;
/** The resolver thread runs this much nicer than the daemon: the API goes first when both want the CPU (resolver-worker.ts). */
const NICE_INCREMENT = 10;
/** A firewall change (`nft`) is bounded by the runtime; this only keeps a lost reply from holding a query forever. */
const ANSWERED_TIMEOUT_MS = 10_000;

export class ResolverThread implements ResolverSubscriber {
  private worker: Worker | undefined;
  /** Every box the thread should serve, to open them all again in a new thread. */
  private readonly boxes = new Map<string, { host: string; guest: string; names: NameRules }>();
  private stopped = false;
  private restartTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly directory: ResolverDirectory,
    private readonly settings: ResolverSettings,
    private readonly log: Logger,
    /** Queries by result, in batches (sail_dns_queries_total). */
    private readonly onQueries: (result: QueryResult, count: number) => void = () => {},
  ) {}

  /** Start the thread (resolves once it runs) and follow the directory's boxes. */
  async start(): Promise<void> {
    await this.spawn();
    this.directory.subscribe(this);
  }

  added(id: string, host: string, guest: string, names: NameRules): void {
    this.boxes.set(id, { host, guest, names });
    this.post({ type: "open", id, host, guest, names });
  }

  changed(id: string, names: NameRules): void {
    const box = this.boxes.get(id);
    if (!box) return;
    box.names = names;
    this.post({ type: "names", id, names });
  }

  removed(id: string): void {
    if (!this.boxes.delete(id)) return;
    this.post({ type: "close", id });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    await this.worker?.terminate();
    this.worker = undefined;
  }

  private async spawn(): Promise<void> {
    const workerData: ResolverWorkerData = { settings: this.settings, answeredTimeoutMs: ANSWERED_TIMEOUT_MS, niceIncrement: NICE_INCREMENT };
    const worker = new Worker(new URL("./resolver-worker.js", import.meta.url), { workerData, resourceLimits: RESOURCE_LIMITS, name: "sail-resolver" });
    this.worker = worker;
    worker.on("message", (message: FromResolverWorker) => this.onMessage(worker, message));
    worker.on("error", (err) => this.log.error({ err: String(err) }, "the resolver's thread failed"));
    worker.on("exit", (code) => {
      if (this.worker !== worker || this.stopped) return;
      this.worker = undefined;
      this.log.error({ code, boxes: this.boxes.size }, "the resolver's thread ended: starting it again");
      this.restartTimer = setTimeout(() => void this.spawn().catch((err) => this.log.error({ err: String(err) }, "could not start the resolver's thread")), RESTART_DELAY_MS);
    });
    for (const [id, box] of this.boxes) worker.postMessage({ type: "open", id, ...box } satisfies ToResolverWorker);
    await once(worker, "online");
  }

  private onMessage(worker: Worker, message: FromResolverWorker): void {
    if (message.type === "counts") {
      for (const [result, count] of Object.entries(message.counts)) this.onQueries(result as QueryResult, count);
    } else if (message.type === "log") {
      this.log[message.level](message.obj, message.msg);
    } else {
      const { seq, id, name, addresses, ttl } = message;
      void this.directory.answered(id, name, addresses, ttl).then(
        () => worker.postMessage({ type: "answered", seq } satisfies ToResolverWorker),
        (err: unknown) => worker.postMessage({ type: "answered", seq, error: String(err) } satisfies ToResolverWorker),
      );
    }
  }

  private post(message: ToResolverWorker): void {
    this.worker?.postMessage(message);
  }
}
