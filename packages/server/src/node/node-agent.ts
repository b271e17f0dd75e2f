import { httpLabel, isLive, type ExecRequest, type ListenerTraffic, type NetworkInfo, type PtyRequest, type SailboxStatus } from "@sail/protocol";
import type { CounterDelta } from "../gateway/counters.js";
import type { HaproxyGateway } from "../gateway/haproxy.js";
import type { SlowPath } from "../gateway/slow-path.js";
import { TrafficLedger } from "../gateway/traffic-ledger.js";
import { Metrics } from "../metrics.js";
import { NODE_WIRE_VERSION, type NodeApi, type NodeBoxSpec, type NodeBoxState, type NodeEventSink, type NodeExec, type NodeInfo, type NodePty } from "../node-wire/node-api.js";
import type { NodeRuntime } from "../runtime/runtime.js";
import { BoxCreator } from "./create.js";
import { Endings, type AdoptReport, type ExpectedBox } from "./endings.js";
import { EventOutbox, OUTBOX_DEFAULTS, type OutboxSettings } from "./events.js";
import { Execs } from "./execs.js";
import { IdleSleeper, type ActivityReport } from "./idle.js";
import { Images, type NodeImage, type NodeImageProgress } from "./images.js";
import { Lifecycle } from "./lifecycle.js";
import { Listeners } from "./listeners.js";
import type { Logger } from "./logger.js";
import type { NodeBoxRow, NodeStore } from "./node-store.js";
import { Outbound, type OutboundSettings } from "./outbound.js";
import { Power } from "./power.js";
import { RoutePublisher, type RouteSubscriber } from "./routes.js";
import { TcpBinds, type TcpBind } from "./tcp-binds.js";

export interface NodeAgentSettings {
  /** The node's id; by default the one node.db made at its first start. */
  nodeId?: string;
  /** Processes a box may hold. */
  pidsLimit: number;
  /** The disk of a box whose spec does not say (MiB). */
  diskMiB: number;
  /** The host's cores: a box may ask for at most these. */
  hostCpus: number;
  /** HTTP listeners' public hosts are `<port>-<id>.<domain>`: HAProxy keys its per-listener counters by them. */
  domain: string;
  /** What boxes may reach at all (`sail up --outbound*`) and the box subnet. */
  outbound: OutboundSettings;
  /** Delivery of events to the control plane (tests make retries quick). */
  events?: Partial<OutboxSettings>;
}

/** The HTTPS data path, once it runs: HAProxy and the slow path behind it. */
export interface HttpsDataPath {
  haproxy: Pick<HaproxyGateway, "listenerTraffic" | "takeCounters" | "rssBytes" | "prometheusText">;
  slowPath: Pick<SlowPath, "counters" | "activity">;
}

/** Idle sleep is decided every second (the data paths report activity about as often). */
const IDLE_CHECK_MS = 1000;
/** Refused outbound destinations are read from the firewall this often (runtime/egress.ts logs them to a set). */
const REFUSAL_LOG_MS = 5000;

/**
 * The node agent: everything the control plane asks of this host (`NodeApi`), the box state only
 * the host knows (node.db: network slots, power state), and the glue its data paths need (routes
 * from its own box table, wake on ingress, activity for idle sleep, TCP binds, counters). It
 * changes power state by itself — a wake on traffic, an idle sleep — and tells the control
 * plane each change as an event (`NodeEventSink`), in order, retried while it is away. It knows
 * no org or app: the control plane checks who owns a box before it calls.
 */
export class NodeAgent implements NodeApi {
  readonly lifecycle: Lifecycle;
  readonly routes: RoutePublisher;
  readonly tcpBinds = new TcpBinds();
  readonly power: Power;
  readonly idle: IdleSleeper;
  readonly outbound: Outbound;
  readonly images: Images;
  readonly metrics = new Metrics();
  /** Per-listener counters of the data paths (the console's traffic panel). */
  readonly trafficLedger: TrafficLedger;
  private readonly creator: BoxCreator;
  private readonly endings: Endings;
  private readonly execs: Execs;
  private readonly listeners: Listeners;
  private readonly outbox: EventOutbox;
  private readonly nodeId: string;
  private readonly domain: string;
  /** Wakes from sleep per box since the node started (a shared resume counts once). */
  private readonly wakes = new Map<string, number>();
  private https: HttpsDataPath | undefined;
  private readonly timers: NodeJS.Timeout[] = [];

  /**
   * What the data paths call (the gateway cluster, the slow path, the TCP gateway): follow the
   * routes, wake a sleeping box, report activity and which public TCP ports the host holds.
   */
  readonly ingress = {
    subscribe: (subscriber: RouteSubscriber) => this.routes.subscribe(subscriber),
    wakeOnIngress: (id: string) => this.power.wakeOnIngress(id),
    noteActivity: (source: string, report: ActivityReport) => {
      this.idle.noteActivity(source, report);
      if (source.startsWith("tcp-")) this.trafficLedger.noteTcpActivity(source, report);
    },
    noteTcpBind: (publicPort: number, bind: TcpBind | undefined) => this.noteTcpBind(publicPort, bind),
  };

  constructor(
    private readonly store: NodeStore,
    private readonly runtime: NodeRuntime,
    settings: NodeAgentSettings,
    sink: NodeEventSink,
    private readonly log: Logger,
  ) {
    this.nodeId = settings.nodeId ?? store.nodeId();
    this.lifecycle = new Lifecycle(store);
    // the wake count first: a box's event carries the count its wake made
    this.lifecycle.onTransition(({ box, from, to }) => {
      if (from === "sleeping" && to === "running") this.wakes.set(box.id, (this.wakes.get(box.id) ?? 0) + 1);
      if (!isLive(to)) this.wakes.delete(box.id);
    });
    this.outbox = new EventOutbox(sink, log, { ...OUTBOX_DEFAULTS, ...settings.events });
    this.lifecycle.onTransition(({ box, to }) => {
      if (to !== "terminated") this.outbox.push({ type: "box", state: this.stateOf(box) });
    });
    this.routes = new RoutePublisher(store, runtime, this.lifecycle);
    const routesSynced = () => this.routes.synced();
    this.outbound = new Outbound(store, this.lifecycle, runtime, settings.outbound, log);
    this.power = new Power(this.lifecycle, runtime, routesSynced, log);
    this.power.onWoken((id, seconds) => {
      this.metrics.wakes.inc();
      this.metrics.wakeSeconds.observe(seconds);
      this.outbox.push({ type: "woken", sailboxId: id, seconds });
    });
    this.idle = new IdleSleeper(store, this.lifecycle, (id, reason) => this.power.sleep(id, reason), log);
    this.images = new Images(runtime, log);
    this.creator = new BoxCreator(
      store,
      this.lifecycle,
      runtime,
      this.images,
      { pidsLimit: settings.pidsLimit, diskMiB: settings.diskMiB, hostCpus: settings.hostCpus, maxBoxes: runtime.maxBoxes },
      this.outbound,
      log,
    );
    this.endings = new Endings(store, this.lifecycle, runtime, this.creator, this.outbound, log);
    this.execs = new Execs(this.lifecycle, this.power, this.idle, runtime);
    this.listeners = new Listeners(store, this.lifecycle, this.power, this.idle, runtime, routesSynced, this.tcpBinds);
    this.trafficLedger = new TrafficLedger((host) => this.https?.haproxy.listenerTraffic(host));
    this.lifecycle.onTransition(({ box, to }) => (to === "terminated" || to === "failed") && this.trafficLedger.forget(box.id));
    this.domain = settings.domain;
  }

  /**
   * After the runtime started (its subnet fenced, its firewall table new) and the resolver
   * thread follows `outbound`: reconcile node.db with the runtime (lost boxes become failed,
   * each an event), every live box's outbound rules again, then idle sleep and refusal logs
   * every few seconds.
   */
  async start(): Promise<{ kept: number; failed: number; restored: number }> {
    const reconciled = await this.endings.reconcile();
    const restored = await this.outbound.restoreAll();
    this.timers.push(
      setInterval(() => this.checkIdle(), IDLE_CHECK_MS),
      setInterval(() => void this.outbound.logRefusals().catch((err) => this.log.error({ err: String(err) }, "could not read refused destinations")), REFUSAL_LOG_MS),
    );
    return { ...reconciled, restored };
  }

  /** Stop the timers and the event delivery. Boxes keep running. */
  async close(): Promise<void> {
    for (const timer of this.timers.splice(0)) clearInterval(timer);
    this.outbox.close();
  }

  /** The HTTPS data path runs: its counters and activity are read from now on. */
  attachHttps(https: HttpsDataPath): void {
    this.https = https;
  }

  /** A TCP worker's report (TcpCluster's `onWorkerReport`): its counters since the last, connections open, memory. */
  readonly tcpWorkerReport = (workerId: number, counters: CounterDelta, open: number, rss: number): void => {
    this.metrics.absorb("tcp", counters);
    this.trafficLedger.absorb(counters);
    this.metrics.tcpOpen.set({ worker: String(workerId) }, open);
    this.metrics.workerRss.set({ worker: `tcp-${workerId}` }, rss);
  };

  /** The resolver thread's query counts (ResolverThread's `onQueries`). */
  readonly dnsQueries = (result: string, count: number): void => {
    this.metrics.dnsQueries.inc({ result }, count);
  };

  /**
   * Stop serving (true) or serve again (false) every box's public routes: a node whose lease
   * lapsed can no longer vouch for its boxes (docs/architecture.md, "More than one machine").
   */
  fence(fenced: boolean): void {
    if (fenced === this.routes.isFenced) return;
    this.routes.fence(fenced);
    this.metrics.fenced.set(fenced ? 1 : 0);
    if (fenced) this.log.error({}, "fenced: the control plane has not heard this node for its whole lease; its sailboxes' routes are down until it does");
    else this.log.info({}, "the control plane hears this node again: routes are back");
  }

  get fenced(): boolean {
    return this.routes.isFenced;
  }

  /** The control plane is up, or heard this node: events waiting out a backoff go now. */
  controlPlaneReachable(): void {
    this.outbox.retryNow();
  }

  /** Resolves once every event so far reached the control plane (tests; a node that stops). */
  eventsDelivered(): Promise<void> {
    return this.outbox.idle();
  }

  // --- NodeApi ---

  async info(): Promise<NodeInfo> {
    return { nodeId: this.nodeId, version: NODE_WIRE_VERSION, hostArch: this.runtime.hostArch, maxBoxes: this.runtime.maxBoxes };
  }

  async prepareImage(image: NodeImage, options: { onProgress?: (progress: NodeImageProgress) => void; signal?: AbortSignal } = {}): Promise<void> {
    await this.images.prepare(image, options);
  }

  async createBox(spec: NodeBoxSpec, options: { signal?: AbortSignal } = {}): Promise<NodeBoxState> {
    return this.stateOf(await this.creator.create(spec, options));
  }

  async destroyBox(sailboxId: string, options: { afterCrash?: boolean; signal?: AbortSignal } = {}): Promise<void> {
    await this.endings.destroy(sailboxId, options);
  }

  async setPower(sailboxId: string, action: "sleep" | "pause" | "resume"): Promise<NodeBoxState> {
    this.lifecycle.get(sailboxId);
    const box = action === "sleep" ? await this.power.sleep(sailboxId, "asked") : action === "pause" ? await this.power.pause(sailboxId) : await this.power.resume(sailboxId);
    return this.stateOf(box);
  }

  async awake(sailboxId: string): Promise<NodeBoxState> {
    this.idle.touch(this.lifecycle.get(sailboxId).id);
    return this.stateOf(await this.power.awake(sailboxId));
  }

  async setNetwork(sailboxId: string, policy: NetworkInfo): Promise<void> {
    await this.outbound.set(sailboxId, policy);
  }

  exec(sailboxId: string, request: Omit<ExecRequest, "background">): Promise<NodeExec> {
    return this.execs.exec(sailboxId, request);
  }

  execBackground(sailboxId: string, execId: string, request: Omit<ExecRequest, "background">): Promise<void> {
    return this.execs.execBackground(sailboxId, execId, request);
  }

  execLog(sailboxId: string, execId: string, options: { follow?: boolean; signal?: AbortSignal } = {}): AsyncIterable<Uint8Array> {
    return this.execs.execLog(sailboxId, execId, options);
  }

  pty(sailboxId: string, request: PtyRequest): Promise<NodePty> {
    return this.execs.pty(sailboxId, request);
  }

  startSshd(sailboxId: string): Promise<void> {
    return this.execs.startSshd(sailboxId);
  }

  /** The node waits by its own listener table; the control plane's `listener` only names the port. */
  waitListener(sailboxId: string, listener: { port: number }, timeoutMs: number): Promise<void> {
    return this.listeners.wait(sailboxId, listener.port, timeoutMs);
  }

  async traffic(sailboxId: string): Promise<{ wakes: number; listeners: Array<Omit<ListenerTraffic, "protocol">> }> {
    const box = this.lifecycle.get(sailboxId);
    const listeners = box.status === "failed" ? [] : this.store.listListeners(box.id).map((l) => ({ ...l, endpoint: { host: `${httpLabel(l.sailboxId, l.port)}.${this.domain}` } }));
    return { wakes: this.wakes.get(box.id) ?? 0, listeners: this.trafficLedger.forListeners(listeners).map(({ protocol: _, ...rest }) => rest) };
  }

  async boxes(): Promise<NodeBoxState[]> {
    return this.store.listBoxes().map((box) => this.stateOf(box));
  }

  /** One box's state (the control plane's views: a TCP listener's bind state). */
  async box(sailboxId: string): Promise<NodeBoxState> {
    return this.stateOf(this.lifecycle.get(sailboxId));
  }

  /** The host-dependent checks of a policy (networks boxes never reach here), so a create can be refused before anything exists. */
  async checkNetwork(policy: NetworkInfo): Promise<NetworkInfo> {
    return this.outbound.checkInfo(policy);
  }

  /** The control plane's list of the live boxes it believes this node holds (endings.ts, `adopt`). */
  adopt(expected: readonly ExpectedBox[]): Promise<AdoptReport> {
    return this.endings.adopt(expected);
  }

  async metricsText(): Promise<string> {
    if (this.https) {
      this.metrics.absorb("http", await this.https.haproxy.takeCounters());
      this.takeSlowPathCounters();
      const rss = this.https.haproxy.rssBytes();
      if (rss !== undefined) this.metrics.workerRss.set({ worker: "haproxy" }, rss);
    }
    this.metrics.absorbOutbound(await this.outbound.counters());
    this.metrics.sailboxes.reset();
    for (const [status, n] of Object.entries(this.lifecycle.countByStatus())) this.metrics.sailboxes.set({ status }, n);
    // HAProxy's own exporter (haproxy_*) follows Sail's series
    return (await this.metrics.registry.metrics()) + (this.https ? await this.https.haproxy.prometheusText() : "");
  }

  // --- the rest ---

  /** A box as the node reports it. */
  private stateOf(box: NodeBoxRow): NodeBoxState {
    const listeners = box.status === "failed" ? [] : this.store.listListeners(box.id).filter((l) => l.protocol === "tcp" && l.publicPort !== null);
    return {
      sailboxId: box.id,
      status: box.status as SailboxStatus,
      seq: box.seq,
      ...(box.failureReason ? { failureReason: box.failureReason } : {}),
      wakes: this.wakes.get(box.id) ?? 0,
      ...(box.diskInodes !== null ? { diskInodes: box.diskInodes } : {}),
      listeners: listeners.map((l) => {
        const bind = this.tcpBinds.of(l.publicPort!);
        return { port: l.port, state: bind.state, ...(bind.unbound ? { unbound: bind.unbound } : {}) };
      }),
    };
  }

  /** The TCP data path's word on a public port; a change of its state is a change of its box, reported as one. */
  private noteTcpBind(publicPort: number, bind: TcpBind | undefined): void {
    const before = this.tcpBinds.of(publicPort);
    this.tcpBinds.note(publicPort, bind);
    const after = this.tcpBinds.of(publicPort);
    if (before.state === after.state && before.unbound?.code === after.unbound?.code) return;
    const id = this.store.boxOfPublicPort(publicPort);
    if (!id) return;
    this.store.bumpSeq(id);
    const box = this.store.getBox(id);
    if (box) this.outbox.push({ type: "box", state: this.stateOf(box) });
  }

  private takeSlowPathCounters(): void {
    if (!this.https) return;
    const counters = this.https.slowPath.counters.take();
    this.metrics.absorb("http", counters);
    this.trafficLedger.absorb(counters);
  }

  /** Every second: the slow path's activity and counters (HAProxy's and the TCP workers' arrive by themselves), then idle sleep. */
  private checkIdle(): void {
    if (this.https) this.ingress.noteActivity("slow-path", this.https.slowPath.activity.snapshot());
    this.takeSlowPathCounters();
    void this.idle.sleepIdleBoxes().catch((err) => this.log.error({ err: String(err) }, "idle check failed"));
  }
}
