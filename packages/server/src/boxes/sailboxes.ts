import {
  ARCHITECTURES,
  checkExec,
  checkAptPackages,
  checkName,
  checkIdleTimeout,
  checkResources,
  checkSshPublicKey,
  httpLabel,
  SSH_PORT,
  normalizeIngressPorts,
  sailError,
  type AppInfo,
  type Architecture,
  type BackgroundExecInfo,
  type CreateSailboxRequest,
  type ExecRequest,
  type ListenerInfo,
  type SailboxInfo,
  type SailboxStatus,
} from "@sail/protocol";
import { EmulationUnavailableError, ImageBuildError, type ImageProgress, type Runtime, type RunningExec } from "../runtime/runtime.js";
import { normalizeCidr } from "./cidr.js";
import { installSshdScript, START_SSHD_SCRIPT } from "./sshd.js";
import { NameTakenError, TcpLimitError, TcpPortsExhaustedError, newId, type TcpSettings, type AppRow, type ListenerRow, type OrgRow, type SailboxRow, type Store } from "../store/store.js";

export interface BoxDefaults {
  cpu: number;
  memoryMiB: number;
  pidsLimit: number;
  hostCpus: number;
  maxBoxes: number;
}

/** Where published ports are reachable from outside. */
export interface IngressSettings {
  /** HTTP listeners are `https://<label>.<domain>[:port]`. */
  domain: string;
  /** The port in public URLs (omitted when 443). */
  publicHttpsPort: number;
  /** The host TCP endpoints advertise. */
  publicHost: string;
  tcp: TcpSettings;
}

/** What the gateway needs to serve one raw-TCP listener. */
export interface TcpRoute {
  sailboxId: string;
  port: number;
  guestAddress: string;
  publicPort: number;
  cidrAllowlist: string[];
  status: SailboxStatus;
}

/** What the gateway needs to forward to one HTTP listener. */
export interface HttpRoute {
  sailboxId: string;
  port: number;
  guestAddress: string;
  /** Changes whenever the box's processes may have changed (a new start or wake): upstream sockets are keyed by it. */
  generation: string;
  /** running: forward; sleeping: wake, then forward; paused: refuse (503 / close). */
  status: SailboxStatus;
}

/** Per box: connections open now, and when bytes last moved (ms since epoch). */
export type ActivityReport = Record<string, { open: number; lastActiveMs: number }>;

export interface IngressHandlers {
  /** The set of routes changed: reload `httpRoutes()`. */
  routesChanged(): void;
  /** Close every proxied connection of this box (it sleeps, pauses or ends). */
  dropConnections(sailboxId: string): void;
  /** Resolves once the data path routes by the latest routes. */
  synced(): Promise<void>;
}

/** How often `listener.wait()` probes the guest port. */
const LISTENER_PROBE_INTERVAL_MS = 100;
/** The longest a single wait may hold an API request. */
export const LISTENER_WAIT_MAX_MS = 10 * 60_000;

interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/**
 * The domain: apps, the Sailbox state machine and its rules. Talks to the store
 * and the runtime only through their interfaces; never SQL, shells or sockets.
 */
export class Sailboxes {
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly wokenListeners: Array<(seconds: number) => void> = [];
  private readonly ingressHandlers: IngressHandlers[] = [];
  /** Data-path activity by source (each gateway worker, the TCP gateway): open connections and last bytes, per box. */
  private readonly activityReports = new Map<string, ActivityReport>();
  /** Wakes from sleep per box since the daemon started (shared resumes count once). */
  private readonly wakeCounts = new Map<string, number>();
  /** Foreground execs running per box: they count as activity. */
  private readonly execsOpen = new Map<string, number>();
  /** Last API activity or wake per box (ms since epoch). */
  private readonly lastTouched = new Map<string, number>();
  /** Resumes in flight, so concurrent arrivals share one. */
  private readonly waking = new Map<string, Promise<void>>();

  constructor(
    private readonly store: Store,
    private readonly runtime: Runtime,
    private readonly defaults: BoxDefaults,
    private readonly ingress: IngressSettings,
    private readonly log: Logger,
  ) {}

  /** The gateway's subscription: routes to (re)load, boxes whose connections must go. */
  onIngressChange(handlers: IngressHandlers): void {
    this.ingressHandlers.push(handlers);
  }

  // --- apps ---

  findApp(org: OrgRow, name: string): AppInfo {
    checkName("app", name);
    const app = this.store.findApp(org.id, name);
    if (!app) throw sailError("SAIL_APP_NOT_FOUND", `No app named "${name}": create it with App.find({ name: "${name}", mintIfMissing: true }) or \`sail box create --app ${name}\``, { app: name });
    return appInfo(app);
  }

  mintApp(org: OrgRow, name: string): AppInfo {
    checkName("app", name);
    return appInfo(this.store.mintApp(org.id, name));
  }

  listApps(org: OrgRow): AppInfo[] {
    return this.store.listApps(org.id).map(appInfo);
  }

  // --- sailboxes ---

  /** Create and start a box. A refused or failed create leaves nothing behind. */
  async create(org: OrgRow, request: CreateSailboxRequest): Promise<SailboxInfo> {
    const app = this.store.getApp(org.id, request.appId);
    if (!app) throw sailError("SAIL_APP_NOT_FOUND", `No app with id ${request.appId}`, { appId: request.appId });
    const name = request.name === undefined || request.name === null ? null : checkName("sailbox", request.name);
    const arch = this.checkImage(request.image);
    const aptPackages = checkAptPackages(request.image?.aptPackages);
    checkResources(request.cpu, request.memoryMiB, this.defaults.hostCpus);
    const idleTimeout = checkIdleTimeout(request.idleTimeout);
    const ports = normalizeIngressPorts(request.ingressPorts).map((p) => {
      if (p.protocol !== "tcp") return p;
      const cidrAllowlist = (p.cidrAllowlist ?? []).map((cidr) => {
        const normalized = normalizeCidr(cidr);
        if (!normalized) {
          throw sailError("SAIL_CIDR_INVALID", `cidrAllowlist of port ${p.port} has ${JSON.stringify(cidr)}, which is not an IPv4 or IPv6 CIDR (e.g. "203.0.113.0/24", "2001:db8::/32" or a bare address)`, { port: p.port, cidr });
        }
        return normalized;
      });
      return { ...p, cidrAllowlist };
    });
    const sshKey = request.ssh === undefined || request.ssh === null ? undefined : checkSshPublicKey((request.ssh as { publicKey?: unknown }).publicKey, "ssh.publicKey");
    // ssh publishes 22 as raw TCP, unless the user did so already (e.g. with a cidrAllowlist)
    if (sshKey && !ports.some((p) => p.port === SSH_PORT)) ports.push({ port: SSH_PORT, protocol: "tcp", cidrAllowlist: [], allowPublic: false });

    await this.prepareImage(arch, aptPackages);

    const id = newId("sb-");
    let row: SailboxRow;
    try {
      row = this.store.insertSailbox(
        { id, appId: app.id, orgId: org.id, name, imageName: "debian", imageArch: arch, imagePackages: aptPackages.join(" "), cpu: request.cpu ?? this.defaults.cpu, memoryMiB: request.memoryMiB ?? this.defaults.memoryMiB, ports, idleTimeout },
        this.defaults.maxBoxes,
        this.ingress.tcp,
      );
    } catch (err) {
      if (err instanceof TcpLimitError) {
        throw sailError(
          "SAIL_TCP_LIMIT_EXCEEDED",
          `Your org holds ${err.inUse} of its ${err.limit} raw-TCP endpoints; this sailbox asks for ${err.requested} more. Terminate sailboxes that no longer need public TCP endpoints, or ask the operator to raise the limit`,
          { limit: err.limit, inUse: err.inUse, requested: err.requested },
        );
      }
      if (err instanceof TcpPortsExhaustedError) {
        throw sailError("SAIL_LIMIT_EXCEEDED", `Every public TCP port of this Sail host (${this.ingress.tcp.firstPort}-${this.ingress.tcp.lastPort}) is in use`, {});
      }
      if (err instanceof NameTakenError) {
        throw sailError("SAIL_NAME_TAKEN", `App "${app.name}" already has a live sailbox named "${name}": terminate it or pick another name`, { app: app.name, name });
      }
      if (err instanceof RangeError) throw sailError("SAIL_LIMIT_EXCEEDED", `This Sail host runs at most ${this.defaults.maxBoxes} sailboxes (its box subnet is full): terminate some first`, { limit: this.defaults.maxBoxes });
      throw err;
    }

    return this.withLock(id, async () => {
      try {
        await this.runtime.create({ id, hostname: name ?? id, arch, aptPackages, cpu: row.cpu, memoryMiB: row.memoryMiB, pidsLimit: this.defaults.pidsLimit, netSlot: row.netSlot });
        if (sshKey) await this.runScript(id, installSshdScript(sshKey), "set up sshd").catch(async (err) => {
          await this.runtime.destroy(id);
          throw err;
        });
      } catch (err) {
        this.store.deleteSailbox(id);
        this.log.error({ sailboxId: id, err: String(err) }, "sailbox create failed");
        throw sailError("SAIL_RUNTIME_FAILED", `Could not start sailbox ${name ?? id}: ${(err as Error).message}`, { sailboxId: id });
      }
      this.setStatus(id, "running");
      this.log.info({ sailboxId: id, app: app.name, name }, "sailbox running");
      return this.info(this.store.getSailbox(id)!);
    });
  }

  /**
   * Before anything is created: a foreign architecture the host cannot emulate, or a package
   * set apt cannot install, refuses the create. The first create of each image waits for its
   * build (logged as it goes); later ones find it cached.
   */
  private async prepareImage(arch: Architecture, aptPackages: string[]): Promise<void> {
    const foreign = arch !== this.runtime.hostArch;
    if (!foreign && !aptPackages.length) return;
    const started = Date.now();
    let lastLog = 0;
    const onProgress = (progress: ImageProgress) => {
      if (Date.now() - lastLog < 2000 && !progress.done) return;
      lastLog = Date.now();
      this.log.info({ arch, aptPackages, ...progress }, "building image");
    };
    const image = `Image.debian${foreign ? `_${arch}` : ""}${aptPackages.length ? `.aptInstall(${aptPackages.map((p) => JSON.stringify(p)).join(", ")})` : ""}`;
    try {
      if (aptPackages.length) await this.runtime.preparePackageImage(arch, aptPackages, onProgress);
      else await this.runtime.prepareImage(arch, onProgress);
    } catch (err) {
      if (err instanceof EmulationUnavailableError) {
        throw sailError("SAIL_IMAGE_ARCH_UNSUPPORTED", `${image} needs ${arch} emulation on this ${this.runtime.hostArch} host, which is not available: ${err.message}. Or use Image.debian (the host's architecture)`, { field: "image", requested: arch, host: this.runtime.hostArch });
      }
      if (err instanceof ImageBuildError) throw sailError("SAIL_IMAGE_BUILD_FAILED", `Could not build ${image}: ${err.message}`, { field: "image.aptPackages", aptPackages });
      throw err;
    }
    if (Date.now() - started > 1000) this.log.info({ arch, aptPackages, ms: Date.now() - started }, "image ready");
  }

  private checkImage(image: CreateSailboxRequest["image"]): Architecture {
    if (!image || typeof image !== "object" || image.name !== "debian") {
      throw sailError("SAIL_IMAGE_UNKNOWN", `Unknown image ${JSON.stringify(image)}: the available image is Image.debian (Debian 12)`, { field: "image" });
    }
    const unknown = Object.keys(image).filter((key) => !["name", "arch", "aptPackages"].includes(key));
    if (unknown.length) throw sailError("SAIL_UNKNOWN_FIELD", `image has unknown field ${JSON.stringify(unknown[0])}: an image has name, arch and aptPackages`, { field: `image.${unknown[0]}` });
    if (image.arch === undefined) return this.runtime.hostArch;
    if (!ARCHITECTURES.includes(image.arch)) {
      throw sailError("SAIL_IMAGE_UNKNOWN", `Unknown architecture ${JSON.stringify(image.arch)}: use ${ARCHITECTURES.join(" or ")}`, { field: "image" });
    }
    return image.arch;
  }

  get(org: OrgRow, id: string): SailboxInfo {
    return this.info(this.row(org, id));
  }

  list(org: OrgRow, filter: { appId?: string; name?: string; liveOnly?: boolean }): SailboxInfo[] {
    return this.store.listSailboxes({ orgId: org.id, ...filter }).map((row) => this.info(row));
  }

  /** Stop the box and release everything. Idempotent: terminating twice is fine. */
  async terminate(org: OrgRow, id: string): Promise<SailboxInfo> {
    this.row(org, id);
    return this.withLock(id, async () => {
      const row = this.store.getSailbox(id)!;
      if (row.status !== "terminated") {
        await this.runtime.destroy(id);
        this.setStatus(id, row.status === "failed" ? "failed" : "terminated");
        this.log.info({ sailboxId: id }, "sailbox terminated");
      }
      return this.info(this.store.getSailbox(id)!);
    });
  }

  // --- sleep, pause, wake ---

  /**
   * Sleep: new connections now wait (routes say "sleeping"), open ones are closed, then the
   * box is frozen. Memory stays resident (the cgroup freezer; no CRIU on this kernel).
   */
  async sleep(org: OrgRow, id: string): Promise<SailboxInfo> {
    this.row(org, id);
    return this.sleepBox(id);
  }

  private sleepBox(id: string, reason = "asked"): Promise<SailboxInfo> {
    return this.withLock(id, async () => {
      const row = this.store.getSailbox(id)!;
      if (row.status === "sleeping") return this.info(row);
      if (row.status !== "running") throw sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${id} is ${row.status}: only a running sailbox can sleep`, { sailboxId: id, status: row.status });
      this.setStatus(id, "sleeping");
      await this.ingressSynced();
      await this.runtime.freeze(id);
      this.log.info({ sailboxId: id, reason }, "sailbox sleeping");
      return this.info(this.store.getSailbox(id)!);
    });
  }

  /** Pause: frozen like sleep, but inbound traffic is refused instead of waking it. */
  async pause(org: OrgRow, id: string): Promise<SailboxInfo> {
    this.row(org, id);
    return this.withLock(id, async () => {
      const row = this.store.getSailbox(id)!;
      if (row.status === "paused") return this.info(row);
      if (row.status !== "running" && row.status !== "sleeping") throw sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${id} is ${row.status}: only a running or sleeping sailbox can pause`, { sailboxId: id, status: row.status });
      this.setStatus(id, "paused");
      await this.ingressSynced();
      if (row.status === "running") await this.runtime.freeze(id);
      this.log.info({ sailboxId: id }, "sailbox paused");
      return this.info(this.store.getSailbox(id)!);
    });
  }

  /** Bring a sleeping or paused box back. */
  async resume(org: OrgRow, id: string): Promise<SailboxInfo> {
    this.row(org, id);
    await this.thaw(id);
    const row = this.store.getSailbox(id)!;
    if (row.status !== "running") throw sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${id} is ${row.status}: it cannot be resumed`, { sailboxId: id, status: row.status });
    return this.info(row);
  }

  /**
   * The gateway's wake: a sleeping box is resumed (concurrent arrivals share one resume);
   * a paused one stays paused. Resolves to the status traffic should see.
   */
  async wakeOnIngress(sailboxId: string): Promise<SailboxStatus | undefined> {
    const row = this.store.getSailbox(sailboxId);
    if (row?.status === "sleeping") await this.thaw(sailboxId, true);
    return this.store.getSailbox(sailboxId)?.status;
  }

  private thaw(id: string, onlySleeping = false): Promise<void> {
    const pending = this.waking.get(id);
    if (pending) return pending;
    const waking = this.withLock(id, async () => {
      const row = this.store.getSailbox(id)!;
      if (row.status !== "sleeping" && (onlySleeping || row.status !== "paused")) return;
      const started = process.hrtime.bigint();
      await this.runtime.thaw(id);
      if (row.status === "sleeping") this.wakeCounts.set(id, (this.wakeCounts.get(id) ?? 0) + 1);
      this.setStatus(id, "running");
      await this.ingressSynced();
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (row.status === "sleeping") for (const listener of this.wokenListeners) listener(seconds);
      this.log.info({ sailboxId: id, from: row.status, thawMs: seconds * 1e3 }, "sailbox woke");
    }).finally(() => this.waking.delete(id));
    this.waking.set(id, waking);
    return waking;
  }

  /** Called with the seconds each wake from sleep took, routes pushed included (metrics). */
  onWoken(listener: (seconds: number) => void): void {
    this.wokenListeners.push(listener);
  }

  /** Live sailboxes per status, for every org (metrics). */
  countByStatus(): Record<string, number> {
    return this.store.countLiveByStatus();
  }

  // --- idle auto-sleep ---

  /** The data path's latest activity from one source; an empty report clears it (a worker died). */
  noteActivity(source: string, report: ActivityReport): void {
    this.activityReports.set(source, report);
  }

  /**
   * Sleep every running box with an idleTimeout that is idle: no inbound connection open,
   * no bytes moved and no API call for that long. Called every second by the daemon.
   */
  async sleepIdleBoxes(now = Date.now()): Promise<string[]> {
    const slept: string[] = [];
    for (const row of this.store.idleCandidates()) {
      let open = this.execsOpen.get(row.id) ?? 0;
      let last = Math.max(this.lastTouched.get(row.id) ?? 0, Date.parse(row.createdAt));
      for (const report of this.activityReports.values()) {
        const entry = report[row.id];
        if (!entry) continue;
        open += entry.open;
        last = Math.max(last, entry.lastActiveMs);
      }
      if (open > 0 || now - last < row.idleTimeout! * 1000) continue;
      try {
        await this.sleepBox(row.id, `idle for ${row.idleTimeout} s`);
        slept.push(row.id);
      } catch (err) {
        this.log.warn({ sailboxId: row.id, err: String(err) }, "idle sleep failed");
      }
    }
    return slept;
  }

  private touch(id: string): void {
    this.lastTouched.set(id, Date.now());
  }

  private ingressSynced(): Promise<unknown> {
    return Promise.all(this.ingressHandlers.map((h) => h.synced()));
  }

  // --- exec ---

  /** Start a foreground command; the caller streams its output. */
  async exec(org: OrgRow, id: string, request: ExecRequest): Promise<RunningExec> {
    checkExec(request);
    const row = await this.runningRow(org, id);
    this.store.insertExec({ id: newId("ex-"), sailboxId: row.id, cmd: request.cmd, background: false });
    const running = this.runtime.exec(row.id, request);
    this.execsOpen.set(row.id, (this.execsOpen.get(row.id) ?? 0) + 1);
    void running.exit.catch(() => {}).finally(() => {
      this.execsOpen.set(row.id, (this.execsOpen.get(row.id) ?? 1) - 1);
      this.touch(row.id);
    });
    return running;
  }

  /** Start a background command; resolves once it runs, its output goes to a log. */
  async execBackground(org: OrgRow, id: string, request: ExecRequest): Promise<BackgroundExecInfo> {
    checkExec(request);
    const row = await this.runningRow(org, id);
    const exec = this.store.insertExec({ id: newId("ex-"), sailboxId: row.id, cmd: request.cmd, background: true });
    try {
      await this.runtime.execDetached(row.id, exec.id, request);
    } catch (err) {
      throw sailError("SAIL_RUNTIME_FAILED", `Could not start \`${request.cmd}\` in sailbox ${row.id}: ${(err as Error).message}`, { sailboxId: row.id });
    }
    return { execId: exec.id, sailboxId: row.id, cmd: exec.cmd, startedAt: exec.startedAt };
  }

  /** Where a background exec's output is; the API streams the file. */
  execLogPath(org: OrgRow, id: string, execId: string): string {
    const row = this.row(org, id);
    const exec = this.store.getExec(row.id, execId);
    if (!exec || !exec.background) throw sailError("SAIL_EXEC_NOT_FOUND", `Sailbox ${id} has no background exec ${execId}`, { sailboxId: id, execId });
    if (row.status === "terminated" || row.status === "failed") {
      throw sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${id} is ${row.status}: its logs went with it`, { sailboxId: id, status: row.status });
    }
    return this.runtime.execLogPath(row.id, exec.id);
  }

  // --- daemon start ---

  /** Make the store and the runtime agree after a daemon start: live boxes whose container is gone are failed and cleaned. */
  async reconcile(): Promise<{ kept: number; failed: number }> {
    let kept = 0;
    let failed = 0;
    for (const row of this.store.liveSailboxes()) {
      const state = await this.runtime.state(row.id);
      const lost = row.status === "creating" ? "the daemon stopped while it was being created" : state === "missing" || state === "stopped" ? `its container was ${state} when the daemon started` : undefined;
      if (!lost) {
        kept++;
        continue;
      }
      failed++;
      await this.runtime.destroy(row.id).catch((err) => this.log.error({ sailboxId: row.id, err: String(err) }, "cleanup of a lost sailbox failed"));
      this.setStatus(row.id, "failed", lost);
      this.log.warn({ sailboxId: row.id, reason: lost }, "sailbox marked failed");
    }
    return { kept, failed };
  }

  /** Start the box's sshd if it is not running (idempotent: never two daemons). */
  async startSshd(org: OrgRow, id: string): Promise<void> {
    const row = await this.runningRow(org, id);
    try {
      await this.runScript(row.id, START_SSHD_SCRIPT, "start sshd");
    } catch (err) {
      throw sailError("SAIL_RUNTIME_FAILED", `Could not start sshd in sailbox ${id}: ${(err as Error).message}`, { sailboxId: id });
    }
  }

  /** Run a shell script in the box; throw with its output when it fails. */
  private async runScript(id: string, script: string, what: string): Promise<void> {
    const run = this.runtime.exec(id, { cmd: script, cwd: "/" });
    let output = "";
    run.stdout.on("data", (d: Buffer) => (output += d));
    run.stderr.on("data", (d: Buffer) => (output += d));
    const code = await run.exit;
    if (code !== 0) throw new Error(`${what} exited ${code}: ${output.trim().slice(-500)}`);
  }

  // --- listeners ---

  /** The published ports of a live box; a terminated or failed one has none (its public ports may belong to another box now). */
  listeners(org: OrgRow, id: string): ListenerInfo[] {
    const row = this.row(org, id);
    if (row.status === "terminated" || row.status === "failed") return [];
    return this.store.listListeners(row.id).map((l) => this.listenerInfo(l));
  }

  /**
   * Resolve once a process in the box accepts connections on `port` at the box's
   * address (so the route is live), or fail after `timeoutMs` saying why: nothing
   * listening, or listening on loopback only.
   */
  async waitListener(org: OrgRow, id: string, port: number, timeoutMs: number): Promise<ListenerInfo> {
    const row = this.row(org, id);
    const listeners = this.store.listListeners(row.id);
    const listener = listeners.find((l) => l.port === port);
    if (!listener) {
      const published = listeners.map((l) => l.port);
      throw sailError("SAIL_LISTENER_NOT_FOUND", `Sailbox ${id} does not publish port ${port}${published.length ? ` (it publishes ${published.join(", ")})` : " (it publishes no ports)"}: pass it in ingressPorts when you create the sailbox`, { sailboxId: id, port });
    }
    const deadline = Date.now() + Math.min(Math.max(timeoutMs, 0), LISTENER_WAIT_MAX_MS);
    if (row.status === "sleeping") await this.thaw(row.id, true);
    for (;;) {
      this.touch(row.id); // waiting for a listener is activity: the box must not fall asleep meanwhile
      const current = this.store.getSailbox(row.id)!;
      if (current.status !== "running") {
        throw sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${id} is ${current.status}: its port ${port} cannot become ready`, { sailboxId: id, port, status: current.status });
      }
      if (await this.runtime.probePort(current.netSlot, port)) {
        await Promise.all(this.ingressHandlers.map((h) => h.synced()));
        return this.listenerInfo(listener);
      }
      if (Date.now() >= deadline) break;
      await new Promise((resolve) => setTimeout(resolve, Math.min(LISTENER_PROBE_INTERVAL_MS, Math.max(0, deadline - Date.now()))));
    }
    const addresses = await this.runtime.listeningAddresses(row.id, port).catch(() => []);
    const loopbackOnly = addresses.length > 0 && addresses.every((a) => a === "127.0.0.1" || a === "::1" || a.startsWith("127."));
    const seconds = Math.round(timeoutMs / 100) / 10;
    const message = loopbackOnly
      ? `Port ${port} of sailbox ${id} did not become reachable within ${seconds} s: the process listens on ${addresses.join(" and ")} only, which the gateway cannot reach; bind it to 0.0.0.0 (e.g. \`--bind 0.0.0.0\`)`
      : `No process listens on port ${port} in sailbox ${id} after ${seconds} s: start your server on 0.0.0.0:${port} (e.g. sb.exec("…", { background: true })), then wait again`;
    throw sailError("SAIL_LISTENER_TIMEOUT", message, { sailboxId: id, port, loopbackOnly });
  }

  /** Every HTTP route of a live box, by hostname label (the gateway's table). */
  httpRoutes(): Array<[string, HttpRoute]> {
    return this.store.liveListeners("http").map((l) => [
      httpLabel(l.sailboxId, l.port),
      { sailboxId: l.sailboxId, port: l.port, guestAddress: this.runtime.network(l.netSlot).guestAddress, generation: `${l.sailboxId}:${l.createdAt}`, status: l.status },
    ]);
  }

  /** Every raw-TCP listener of a live box (the TCP gateway binds one public port each). */
  tcpRoutes(): TcpRoute[] {
    return this.store.liveListeners("tcp").map((l) => ({
      sailboxId: l.sailboxId,
      port: l.port,
      guestAddress: this.runtime.network(l.netSlot).guestAddress,
      publicPort: l.publicPort!,
      cidrAllowlist: l.cidrAllowlist,
      status: l.status,
    }));
  }

  private listenerInfo(l: ListenerRow): ListenerInfo {
    if (l.protocol === "tcp") {
      return { sailboxId: l.sailboxId, port: l.port, protocol: "tcp", endpoint: { host: this.ingress.publicHost, port: l.publicPort! }, cidrAllowlist: l.cidrAllowlist, allowPublic: l.allowPublic };
    }
    const host = `${httpLabel(l.sailboxId, l.port)}.${this.ingress.domain}`;
    const portSuffix = this.ingress.publicHttpsPort === 443 ? "" : `:${this.ingress.publicHttpsPort}`;
    return { sailboxId: l.sailboxId, port: l.port, protocol: "http", endpoint: { url: `https://${host}${portSuffix}`, host, port: this.ingress.publicHttpsPort } };
  }

  private setStatus(id: string, status: SailboxStatus, reason?: string): void {
    this.store.setStatus(id, status, reason ?? null);
    if (status === "running") this.touch(id); // a wake counts as activity
    else if (status === "terminated" || status === "failed") this.lastTouched.delete(id);
    for (const handlers of this.ingressHandlers) {
      handlers.routesChanged();
      if (status !== "running" && status !== "creating") handlers.dropConnections(id);
    }
  }

  // --- helpers ---

  private row(org: OrgRow, id: string): SailboxRow {
    const row = this.store.getSailbox(id);
    // another org's box is reported exactly like a box that does not exist
    if (!row || row.orgId !== org.id) throw sailError("SAIL_SAILBOX_NOT_FOUND", `No sailbox ${id}`, { sailboxId: id });
    return row;
  }

  private async runningRow(org: OrgRow, id: string): Promise<SailboxRow> {
    let row = this.row(org, id);
    this.touch(row.id);
    if (row.status === "sleeping") {
      await this.thaw(id, true); // an API call that needs the guest wakes it
      row = this.row(org, id);
    }
    if (row.status === "paused") throw sailError("SAIL_SAILBOX_PAUSED", `Sailbox ${id} is paused: call resume() first`, { sailboxId: id });
    if (row.status !== "running") {
      throw sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${id} is ${row.status}${row.failureReason ? ` (${row.failureReason})` : ""}: create a new one`, { sailboxId: id, status: row.status });
    }
    return row;
  }

  private info(row: SailboxRow): SailboxInfo {
    return {
      id: row.id,
      appId: row.appId,
      name: row.name,
      status: row.status,
      image: { name: "debian", arch: row.imageArch, aptPackages: row.imagePackages ? row.imagePackages.split(" ") : [], emulated: row.imageArch !== this.runtime.hostArch },
      cpu: row.cpu,
      memoryMiB: row.memoryMiB,
      idleTimeout: row.idleTimeout,
      wakes: this.wakeCounts.get(row.id) ?? 0,
      createdAt: row.createdAt,
      ...(row.failureReason ? { failureReason: row.failureReason } : {}),
    };
  }

  /** One operation at a time per box (create, terminate; later sleep and wake). */
  private async withLock<T>(id: string, work: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(work);
    this.locks.set(id, next);
    try {
      return await next;
    } finally {
      if (this.locks.get(id) === next) this.locks.delete(id);
    }
  }
}

const appInfo = (app: AppRow): AppInfo => ({ id: app.id, name: app.name, createdAt: app.createdAt });
