import {
  checkIdleTimeout,
  checkDisk,
  checkName,
  checkResources,
  checkSshPublicKey,
  normalizeCidr,
  normalizeIngressPorts,
  sailError,
  SailError,
  SSH_PORT,
  type CreateSailboxRequest,
  type IngressPortSpec,
  type NetworkInfo,
  type SailboxInfo,
} from "@sail/protocol";
import type { NodeBoxSpec } from "../node-wire/node-api.js";
import { NameTakenError, newId, OrgLimitReachedError, TcpPortsExhaustedError, type NewSailbox, type OrgRow, type SailboxRow, type Store, type TcpPortRange } from "../store/store.js";

import type { ImagePlan, Images, ProgressSink } from "./images.js";
import { listenerSpec } from "./listeners.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";
import type { AttachedNode, Nodes } from "./nodes.js";
import { orgLimitRefusal } from "./org-limits.js";
import type { OutboundPolicies } from "./outbound.js";

export interface BoxDefaults {
  cpu: number;
  memoryMiB: number;
  /** The disk of a box whose create does not say (MiB). */
  diskMiB: number;
  hostCpus: number;
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

export interface RunOptions {
  /** Aborted when nobody waits for the box any more. */
  signal?: AbortSignal;
  onProgress?: ProgressSink;
  /** When the caller's request began (progress counts from it). */
  startedAt?: number;
  /** Insert only after this settles: an abandoned create of the same key, still being undone. */
  notBefore?: Promise<unknown>;
}

/**
 * Creating a box: every rule is checked (`plan`) and its image is ready on the node before
 * anything exists; then the store row (name, the org's caps, raw-TCP endpoints and public
 * ports in one transaction), then the node starts it; `creating → running` last. A refused,
 * failed or abandoned create leaves nothing behind, in the store or on the node.
 */
export class BoxCreator {
  constructor(
    private readonly store: Store,
    private readonly lifecycle: Lifecycle,
    private readonly nodes: Nodes,
    private readonly images: Images,
    private readonly defaults: BoxDefaults,
    private readonly tcp: TcpSettings,
    private readonly outbound: Pick<OutboundPolicies, "check">,
    private readonly describe: (box: SailboxRow) => Promise<SailboxInfo>,
    private readonly log: Logger,
  ) {}

  async create(org: OrgRow, request: CreateSailboxRequest, options: RunOptions = {}): Promise<SailboxInfo> {
    return this.run(await this.plan(org, request), options);
  }

  /** Every rule of the request, checked before anything exists: a refusal creates nothing. */
  async plan(org: OrgRow, request: CreateSailboxRequest): Promise<CreatePlan> {
    const app = await this.store.getApp(org.id, request.appId);
    if (!app) throw sailError("SAIL_APP_NOT_FOUND", `No app with id ${request.appId}`, { appId: request.appId });
    const name = request.name === undefined || request.name === null ? null : checkName("sailbox", request.name);
    const image = this.images.check(request.image);
    checkResources(request.cpu, request.memoryMiB, this.defaults.hostCpus);
    checkDisk(request.diskMiB);
    const idleTimeout = checkIdleTimeout(request.idleTimeout) ?? null;
    const ports = normalizeIngressPorts(request.ingressPorts).map(withCanonicalCidrs);
    // the shape here, then what only the box's node can judge (what this host never lets boxes reach)
    const network = await this.nodes.some().api.checkNetwork(this.outbound.check(request));
    const sshKey = request.ssh === undefined || request.ssh === null ? undefined : checkSshPublicKey((request.ssh as { publicKey?: unknown }).publicKey, "ssh.publicKey");
    // ssh publishes 22 as raw TCP, unless the user did so already (e.g. with a cidrAllowlist)
    if (sshKey && !ports.some((p) => p.port === SSH_PORT)) ports.push({ port: SSH_PORT, protocol: "tcp", cidrAllowlist: [], allowPublic: false });
    const cpu = request.cpu ?? this.defaults.cpu;
    const memoryMiB = request.memoryMiB ?? this.defaults.memoryMiB;
    const diskMiB = request.diskMiB ?? this.defaults.diskMiB;
    return { org, app: { id: app.id, name: app.name }, name, image, cpu, memoryMiB, diskMiB, ports, idleTimeout, network, sshKey };
  }

  /**
   * Make the planned box. The image comes first, before any row exists: a caller that goes
   * away (`signal`) during a build leaves nothing (the build goes on and is cached). Gone
   * later, its box is removed again before this rejects with `CreateAbandonedError`.
   */
  async run(plan: CreatePlan, { signal, onProgress, startedAt = Date.now(), notBefore }: RunOptions = {}): Promise<SailboxInfo> {
    // the box lives on this node for its life: its image is built there
    const node = await this.nodes.place();
    await this.images.prepare(plan.image, onProgress, startedAt, node);
    await notBefore;
    if (signal?.aborted) throw new CreateAbandonedError("the caller went away before its box was made");

    const { org, app, name, image, network, sshKey } = plan;
    const id = newId("sb-");
    const box = await this.insert(
      {
        id,
        appId: app.id,
        orgId: org.id,
        name,
        imageName: "debian",
        imageArch: image.arch,
        imagePackages: image.aptPackages.join(" "),
        imageEmulated: image.arch === node.info.hostArch ? 0 : 1,
        cpu: plan.cpu,
        memoryMiB: plan.memoryMiB,
        diskMiB: plan.diskMiB,
        nodeId: node.info.nodeId,
        ports: plan.ports,
        idleTimeout: plan.idleTimeout,
        networkPolicy: JSON.stringify(network),
      },
      org,
      app.name,
    );
    onProgress?.({ phase: "starting", image: image.name, sailboxId: id, elapsedMs: Date.now() - startedAt });
    const listeners = await this.store.listListeners(id);
    const spec: NodeBoxSpec = {
      id,
      hostname: name ?? id,
      image: { arch: image.arch, aptPackages: image.aptPackages },
      cpu: box.cpu,
      memoryMiB: box.memoryMiB,
      diskMiB: plan.diskMiB,
      idleTimeout: box.idleTimeout,
      network,
      listeners: listeners.map(listenerSpec),
      ...(sshKey ? { sshPublicKey: sshKey } : {}),
    };
    let running: SailboxRow;
    try {
      running = await this.lifecycle.withLease(id, "the create", async () => {
        const state = await node.api.createBox(spec, { signal });
        this.nodes.remember(state);
        if (state.diskInodes !== undefined) await this.store.setDiskInodes(id, state.diskInodes);
        return this.lifecycle.setStatus(id, "running", { action: "start" });
      });
    } catch (err) {
      // the node removed what it made; the row goes too: the box never existed
      await this.store.deleteSailbox(id);
      this.nodes.forget(id);
      if (signal?.aborted) throw new CreateAbandonedError("the caller went away while its box started");
      this.log.error({ sailboxId: id, err: String(err) }, "sailbox create failed");
      if (isTypedRefusal(err)) throw err;
      // the node's own start failure names the box and the runtime's reason already
      if (err instanceof SailError && err.code === "SAIL_RUNTIME_FAILED") throw err;
      throw sailError("SAIL_RUNTIME_FAILED", `Could not start sailbox ${name ?? id}: ${(err as Error).message}`, { sailboxId: id });
    }
    if (signal?.aborted) {
      await this.undo(id, node);
      throw new CreateAbandonedError("the caller went away as its box came up");
    }
    this.log.info({ sailboxId: id, app: app.name, name }, "sailbox running");
    return this.describe(running);
  }

  /** A box nobody will hear of: removed from its node, then forgotten like a failed create. */
  private async undo(id: string, node: AttachedNode): Promise<void> {
    await node.api.destroyBox(id);
    await this.store.deleteSailbox(id);
    this.nodes.forget(id);
  }

  /** The row in `creating`, with its public TCP ports: the store checks name, caps and ports in the insert's transaction. */
  private async insert(box: NewSailbox, org: OrgRow, appName: string): Promise<SailboxRow> {
    try {
      return await this.store.insertSailbox(box, { tcp: this.tcp, tcpEndpointsDefault: this.tcp.defaultLimitPerOrg });
    } catch (err) {
      if (err instanceof OrgLimitReachedError) throw orgLimitRefusal(org, err);
      if (err instanceof TcpPortsExhaustedError) {
        throw sailError("SAIL_LIMIT_EXCEEDED", `Every public TCP port of this Sail host (${this.tcp.firstPort}-${this.tcp.lastPort}) is in use`, {});
      }
      if (err instanceof NameTakenError) {
        throw sailError("SAIL_NAME_TAKEN", `App "${appName}" already has a live sailbox named "${box.name}": terminate it or pick another name`, { app: appName, name: box.name });
      }
      throw err;
    }
  }
}

/** A refusal the node gave with its own code (its policy check, its slots): the user's to read as it is. */
function isTypedRefusal(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" && code.startsWith("SAIL_") && code !== "SAIL_RUNTIME_FAILED" && code !== "SAIL_INTERNAL";
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

export type { SailboxRow };
