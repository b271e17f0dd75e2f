import {
  checkDisk,
  checkIdleTimeout,
  checkName,
  checkResources,
  checkSshPublicKey,
  normalizeIngressPorts,
  sailError,
  SSH_PORT,
  type CreateSailboxRequest,
  type IngressPortSpec,
  type NetworkInfo,
  type SailboxInfo,
} from "@sail/protocol";
import type { Runtime } from "../runtime/runtime.js";
import { NameTakenError, NetSlotsExhaustedError, newId, TcpPortsExhaustedError, type OrgRow, type SailboxRow, type Store, type TcpPortRange } from "../store/store.js";
import { normalizeCidr } from "./cidr.js";
import { runScript } from "./execs.js";
import type { ImagePlan, Images, ProgressSink } from "./images.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";
import { rulesOf, type Outbound } from "./outbound.js";
import { installSshdScript } from "./sshd.js";
import { checkOrgCapacity } from "./org-limits.js";
import { checkTcpQuota } from "./tcp-quota.js";

/**
 * A start: the container (`crun run`, up to 60 s), its network and firewall (seconds), sshd
 * when asked for (an exec). Images are built before, outside the lock.
 */
const CREATE_DEADLINE_MS = 120_000;

export interface BoxDefaults {
  cpu: number;
  memoryMiB: number;
  /** The disk of a box whose create does not say (MiB). */
  diskMiB: number;
  pidsLimit: number;
  hostCpus: number;
  maxBoxes: number;
}

export interface TcpSettings extends TcpPortRange {
  /** Raw-TCP endpoints an org may hold at once, unless the store has the org's own limit. */
  defaultLimitPerOrg: number;
}

/** A create whose every rule was checked: what `run` makes. */
export interface CreatePlan {
  org: OrgRow;
  app: { id: string; name: string };
  name: string | null;
  image: ImagePlan;
  cpu: number;
  memoryMiB: number;
  diskMiB: number;
  ports: IngressPortSpec[];
  idleTimeout: number | null;
  network: NetworkInfo;
  sshKey: string | undefined;
}

/** The caller of a create went away before it ended (`signal`): nothing of it is left. */
export class CreateAbandonedError extends Error {}

/**
 * Creating a box: every rule is checked (`plan`) and every image is ready before anything
 * exists; then the store row (name, address, public ports in one transaction), the runtime,
 * sshd; `creating → running` last. A refused, failed or abandoned create leaves nothing behind.
 */
export class BoxCreator {
  constructor(
    private readonly store: Store,
    private readonly lifecycle: Lifecycle,
    private readonly runtime: Runtime,
    private readonly images: Images,
    private readonly defaults: BoxDefaults,
    private readonly tcp: TcpSettings,
    private readonly outbound: Pick<Outbound, "check" | "install">,
    private readonly describe: (box: NonNullable<ReturnType<Store["getSailbox"]>>) => SailboxInfo,
    private readonly log: Logger,
  ) {}

  async create(org: OrgRow, request: CreateSailboxRequest, options: RunOptions = {}): Promise<SailboxInfo> {
    return this.run(this.plan(org, request), options);
  }

  /** Every rule of the request, checked at once (no await): a refusal creates nothing. */
  plan(org: OrgRow, request: CreateSailboxRequest): CreatePlan {
    const app = this.store.getApp(org.id, request.appId);
    if (!app) throw sailError("SAIL_APP_NOT_FOUND", `No app with id ${request.appId}`, { appId: request.appId });
    const name = request.name === undefined || request.name === null ? null : checkName("sailbox", request.name);
    const image = this.images.check(request.image);
    checkResources(request.cpu, request.memoryMiB, this.defaults.hostCpus);
    checkDisk(request.diskMiB);
    const diskMiB = request.diskMiB ?? this.defaults.diskMiB;
    const idleTimeout = checkIdleTimeout(request.idleTimeout) ?? null;
    const ports = normalizeIngressPorts(request.ingressPorts).map(withCanonicalCidrs);
    const network = this.outbound.check(request);
    const sshKey = request.ssh === undefined || request.ssh === null ? undefined : checkSshPublicKey((request.ssh as { publicKey?: unknown }).publicKey, "ssh.publicKey");
    // ssh publishes 22 as raw TCP, unless the user did so already (e.g. with a cidrAllowlist)
    if (sshKey && !ports.some((p) => p.port === SSH_PORT)) ports.push({ port: SSH_PORT, protocol: "tcp", cidrAllowlist: [], allowPublic: false });
    const cpu = request.cpu ?? this.defaults.cpu;
    const memoryMiB = request.memoryMiB ?? this.defaults.memoryMiB;
    return { org, app: { id: app.id, name: app.name }, name, image, cpu, memoryMiB, diskMiB, ports, idleTimeout, network, sshKey };
  }

  /**
   * Make the planned box. The image comes first, before any row exists: a caller that goes
   * away (`signal`) during a build leaves nothing (the build goes on and is cached). Gone
   * later, its box is removed again before this rejects with `CreateAbandonedError`.
   */
  async run(plan: CreatePlan, { signal, onProgress, startedAt = Date.now(), notBefore }: RunOptions = {}): Promise<SailboxInfo> {
    await this.images.prepare(plan.image, onProgress, startedAt);
    await notBefore;
    if (signal?.aborted) throw new CreateAbandonedError("the caller went away before its box was made");

    const { org, app, name, image, network, sshKey } = plan;
    const id = newId("sb-");
    const box = this.insert(
      org,
      {
        id,
        appId: app.id,
        orgId: org.id,
        name,
        imageName: "debian",
        imageArch: image.arch,
        imagePackages: image.aptPackages.join(" "),
        cpu: plan.cpu,
        memoryMiB: plan.memoryMiB,
        diskMiB: plan.diskMiB,
        ports: plan.ports,
        idleTimeout: plan.idleTimeout,
        networkPolicy: JSON.stringify(network),
      },
      app.name,
    );
    onProgress?.({ phase: "starting", image: image.name, sailboxId: id, elapsedMs: Date.now() - startedAt });
    let running: SailboxRow;
    try {
      running = await this.lifecycle.transition(id, "running", {
        action: "start",
        deadlineMs: CREATE_DEADLINE_MS,
        before: async (_box, stepSignal) => {
          const created = await this.runtime.create(
            {
              id,
              hostname: name ?? id,
              arch: image.arch,
              aptPackages: image.aptPackages,
              cpu: box.cpu,
              memoryMiB: box.memoryMiB,
              diskMiB: plan.diskMiB,
              pidsLimit: this.defaults.pidsLimit,
              netSlot: box.netSlot,
              outbound: rulesOf(network),
            },
            stepSignal,
          );
          this.store.setDiskInodes(id, created.diskInodes);
          try {
            await this.outbound.install(id, network, { rulesInPlace: true });
            if (sshKey) await runScript(this.runtime, id, installSshdScript(sshKey), "set up sshd");
            if (signal?.aborted) throw new CreateAbandonedError("the caller went away while its box started");
          } catch (err) {
            await this.runtime.destroy(id, { signal: stepSignal });
            throw err;
          }
        },
      });
    } catch (err) {
      // the runtime removed what it made; a start stopped at its deadline may still be undoing it
      await this.runtime.destroy(id).catch((cleanup) => this.log.error({ sailboxId: id, err: String(cleanup) }, "cleanup of a failed create failed"));
      this.store.deleteSailbox(id); // the box never existed
      if (err instanceof CreateAbandonedError) throw err;
      this.log.error({ sailboxId: id, err: String(err) }, "sailbox create failed");
      throw sailError("SAIL_RUNTIME_FAILED", `Could not start sailbox ${name ?? id}: ${(err as Error).message}`, { sailboxId: id });
    }
    if (signal?.aborted) {
      await this.undo(id);
      throw new CreateAbandonedError("the caller went away as its box came up");
    }
    this.log.info({ sailboxId: id, app: app.name, name }, "sailbox running");
    return this.describe(running);
  }

  /** A box nobody will hear of: ended like a terminate, then forgotten like a failed create. */
  private async undo(id: string): Promise<void> {
    await this.lifecycle.transition(id, "terminated", { action: "terminate", before: () => this.runtime.destroy(id) });
    this.store.deleteSailbox(id);
  }

  /**
   * The row in `creating`, with its address and public TCP ports. The org's caps, the quota check and the
   * insert run in one synchronous stretch (no await between them) in the one daemon that owns
   * the data dir, so two creates cannot both take the last endpoint.
   */
  private insert(org: OrgRow, box: Parameters<Store["insertSailbox"]>[0], appName: string) {
    const tcpPorts = (box.ports ?? []).filter((p) => p.protocol === "tcp").length;
    checkOrgCapacity(this.store, org, box);
    checkTcpQuota(this.store, org, tcpPorts, this.tcp.defaultLimitPerOrg);
    try {
      return this.store.insertSailbox(box, this.defaults.maxBoxes, this.tcp);
    } catch (err) {
      if (err instanceof TcpPortsExhaustedError) {
        throw sailError("SAIL_LIMIT_EXCEEDED", `Every public TCP port of this Sail host (${this.tcp.firstPort}-${this.tcp.lastPort}) is in use`, {});
      }
      if (err instanceof NameTakenError) {
        throw sailError("SAIL_NAME_TAKEN", `App "${appName}" already has a live sailbox named "${box.name}": terminate it or pick another name`, { app: appName, name: box.name });
      }
      if (err instanceof NetSlotsExhaustedError) {
        throw sailError("SAIL_LIMIT_EXCEEDED", `This Sail host runs at most ${err.slots} sailboxes (its box subnet is full): terminate some first`, { limit: err.slots });
      }
      throw err;
    }
  }
}

export interface RunOptions {
  /** Aborted when nobody waits for the box any more. */
  signal?: AbortSignal;
  onProgress?: ProgressSink;
  /** When the caller's request began (progress counts from it). */
  startedAt?: number;
  /** Insert only after this settles: an abandoned create of the same key, still being undone. */
  notBefore?: Promise<unknown>;
}

/** TCP allowlists in canonical form (a bare address becomes /32 or /128); a bad entry refuses the create. */
function withCanonicalCidrs(p: IngressPortSpec): IngressPortSpec {
  if (p.protocol !== "tcp") return p;
  const cidrAllowlist = (p.cidrAllowlist ?? []).map((cidr) => {
    const normalized = normalizeCidr(cidr);
    if (!normalized) {
      throw sailError(
        "SAIL_CIDR_INVALID",
        `cidrAllowlist of port ${p.port} has ${JSON.stringify(cidr)}, which is not an IPv4 or IPv6 CIDR (e.g. "203.0.113.0/24", "2001:db8::/32" or a bare address)`,
        { port: p.port, cidr },
      );
    }
    return normalized;
  });
  return { ...p, cidrAllowlist };
}
