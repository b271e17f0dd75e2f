import {
  ARCHITECTURES,
  checkExec,
  checkName,
  checkResources,
  sailError,
  type AppInfo,
  type Architecture,
  type BackgroundExecInfo,
  type CreateSailboxRequest,
  type ExecRequest,
  type SailboxInfo,
} from "@sail/protocol";
import type { Runtime, RunningExec } from "../runtime/runtime.js";
import { NameTakenError, newId, type AppRow, type OrgRow, type SailboxRow, type Store } from "../store/store.js";

export interface BoxDefaults {
  cpu: number;
  memoryMiB: number;
  pidsLimit: number;
  hostCpus: number;
  maxBoxes: number;
}

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

  constructor(
    private readonly store: Store,
    private readonly runtime: Runtime,
    private readonly defaults: BoxDefaults,
    private readonly log: Logger,
  ) {}

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
    checkResources(request.cpu, request.memoryMiB, this.defaults.hostCpus);

    const id = newId("sb-");
    let row: SailboxRow;
    try {
      row = this.store.insertSailbox(
        { id, appId: app.id, orgId: org.id, name, imageName: "debian", imageArch: arch, cpu: request.cpu ?? this.defaults.cpu, memoryMiB: request.memoryMiB ?? this.defaults.memoryMiB },
        this.defaults.maxBoxes,
      );
    } catch (err) {
      if (err instanceof NameTakenError) {
        throw sailError("SAIL_NAME_TAKEN", `App "${app.name}" already has a live sailbox named "${name}": terminate it or pick another name`, { app: app.name, name });
      }
      if (err instanceof RangeError) throw sailError("SAIL_LIMIT_EXCEEDED", `This Sail host runs at most ${this.defaults.maxBoxes} sailboxes (its box subnet is full): terminate some first`, { limit: this.defaults.maxBoxes });
      throw err;
    }

    return this.withLock(id, async () => {
      try {
        await this.runtime.create({ id, hostname: name ?? id, arch, cpu: row.cpu, memoryMiB: row.memoryMiB, pidsLimit: this.defaults.pidsLimit, netSlot: row.netSlot });
      } catch (err) {
        this.store.deleteSailbox(id);
        this.log.error({ sailboxId: id, err: String(err) }, "sailbox create failed");
        throw sailError("SAIL_RUNTIME_FAILED", `Could not start sailbox ${name ?? id}: ${(err as Error).message}`, { sailboxId: id });
      }
      this.store.setStatus(id, "running");
      this.log.info({ sailboxId: id, app: app.name, name }, "sailbox running");
      return this.info(this.store.getSailbox(id)!);
    });
  }

  private checkImage(image: CreateSailboxRequest["image"]): Architecture {
    if (!image || typeof image !== "object" || image.name !== "debian") {
      throw sailError("SAIL_IMAGE_UNKNOWN", `Unknown image ${JSON.stringify(image)}: the available image is Image.debian (Debian 12)`, { field: "image" });
    }
    if (image.arch === undefined) return this.runtime.hostArch;
    if (!ARCHITECTURES.includes(image.arch)) {
      throw sailError("SAIL_IMAGE_UNKNOWN", `Unknown architecture ${JSON.stringify(image.arch)}: use ${ARCHITECTURES.join(" or ")}`, { field: "image" });
    }
    if (image.arch !== this.runtime.hostArch) {
      throw sailError(
        "SAIL_IMAGE_ARCH_UNSUPPORTED",
        `Image debian_${image.arch} is for ${image.arch}, but this Sail host runs ${this.runtime.hostArch}: use Image.debian (the host's architecture) or Image.debian_${this.runtime.hostArch}`,
        { field: "image", requested: image.arch, host: this.runtime.hostArch },
      );
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
        if (row.status !== "failed") this.store.setStatus(id, "terminated");
        this.log.info({ sailboxId: id }, "sailbox terminated");
      }
      return this.info(this.store.getSailbox(id)!);
    });
  }

  // --- exec ---

  /** Start a foreground command; the caller streams its output. */
  async exec(org: OrgRow, id: string, request: ExecRequest): Promise<RunningExec> {
    checkExec(request);
    const row = await this.runningRow(org, id);
    this.store.insertExec({ id: newId("ex-"), sailboxId: row.id, cmd: request.cmd, background: false });
    return this.runtime.exec(row.id, request);
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
    if (!row.status || row.status === "terminated" || row.status === "failed") {
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
      this.store.setStatus(row.id, "failed", lost);
      this.log.warn({ sailboxId: row.id, reason: lost }, "sailbox marked failed");
    }
    return { kept, failed };
  }

  // --- helpers ---

  private row(org: OrgRow, id: string): SailboxRow {
    const row = this.store.getSailbox(id);
    // another org's box is reported exactly like a box that does not exist
    if (!row || row.orgId !== org.id) throw sailError("SAIL_SAILBOX_NOT_FOUND", `No sailbox ${id}`, { sailboxId: id });
    return row;
  }

  private async runningRow(org: OrgRow, id: string): Promise<SailboxRow> {
    const row = this.row(org, id);
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
      image: { name: "debian", arch: row.imageArch },
      cpu: row.cpu,
      memoryMiB: row.memoryMiB,
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
