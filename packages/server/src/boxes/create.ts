import {
  ARCHITECTURES,
  checkAptPackages,
  checkDisk,
  checkIdleTimeout,
  checkName,
  checkResources,
  checkSshPublicKey,
  normalizeIngressPorts,
  sailError,
  SSH_PORT,
  type Architecture,
  type CreateSailboxRequest,
  type IngressPortSpec,
  type SailboxInfo,
} from "@sail/protocol";
import { EmulationUnavailableError, ImageBuildError, type ImageProgress, type Runtime } from "../runtime/runtime.js";
import { NameTakenError, NetSlotsExhaustedError, newId, TcpPortsExhaustedError, type OrgRow, type Store, type TcpPortRange } from "../store/store.js";
import { normalizeCidr } from "./cidr.js";
import { runScript } from "./execs.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";
import { rulesOf, type Outbound } from "./outbound.js";
import { installSshdScript } from "./sshd.js";
import { checkTcpQuota } from "./tcp-quota.js";

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

/**
 * Creating a box: every rule is checked and every image is ready before anything exists;
 * then the store row (name, address, public ports in one transaction), the runtime, sshd;
 * `creating → running` last. A refused or failed create leaves nothing behind.
 */
export class BoxCreator {
  constructor(
    private readonly store: Store,
    private readonly lifecycle: Lifecycle,
    private readonly runtime: Runtime,
    private readonly defaults: BoxDefaults,
    private readonly tcp: TcpSettings,
    private readonly outbound: Pick<Outbound, "check" | "install">,
    private readonly describe: (box: NonNullable<ReturnType<Store["getSailbox"]>>) => SailboxInfo,
    private readonly log: Logger,
  ) {}

  async create(org: OrgRow, request: CreateSailboxRequest): Promise<SailboxInfo> {
    const app = this.store.getApp(org.id, request.appId);
    if (!app) throw sailError("SAIL_APP_NOT_FOUND", `No app with id ${request.appId}`, { appId: request.appId });
    const name = request.name === undefined || request.name === null ? null : checkName("sailbox", request.name);
    const arch = this.checkImage(request.image);
    const aptPackages = checkAptPackages(request.image?.aptPackages);
    checkResources(request.cpu, request.memoryMiB, this.defaults.hostCpus);
    checkDisk(request.diskMiB);
    const diskMiB = request.diskMiB ?? this.defaults.diskMiB;
    const idleTimeout = checkIdleTimeout(request.idleTimeout);
    const ports = normalizeIngressPorts(request.ingressPorts).map(withCanonicalCidrs);
    const network = this.outbound.check(request);
    const sshKey = request.ssh === undefined || request.ssh === null ? undefined : checkSshPublicKey((request.ssh as { publicKey?: unknown }).publicKey, "ssh.publicKey");
    // ssh publishes 22 as raw TCP, unless the user did so already (e.g. with a cidrAllowlist)
    if (sshKey && !ports.some((p) => p.port === SSH_PORT)) ports.push({ port: SSH_PORT, protocol: "tcp", cidrAllowlist: [], allowPublic: false });

    await this.prepareImage(arch, aptPackages);

    const id = newId("sb-");
    const box = this.insert(
      org,
      {
        id,
        appId: app.id,
        orgId: org.id,
        name,
        imageName: "debian",
        imageArch: arch,
        imagePackages: aptPackages.join(" "),
        cpu: request.cpu ?? this.defaults.cpu,
        memoryMiB: request.memoryMiB ?? this.defaults.memoryMiB,
        diskMiB,
        ports,
        idleTimeout,
        networkPolicy: JSON.stringify(network),
      },
      app.name,
    );
    try {
      const running = await this.lifecycle.transition(id, "running", {
        before: async () => {
          const created = await this.runtime.create({
            id,
            hostname: name ?? id,
            arch,
            aptPackages,
            cpu: box.cpu,
            memoryMiB: box.memoryMiB,
            diskMiB,
            pidsLimit: this.defaults.pidsLimit,
            netSlot: box.netSlot,
            outbound: rulesOf(network),
          });
          this.store.setDiskInodes(id, created.diskInodes);
          try {
            await this.outbound.install(id, network, { rulesInPlace: true });
            if (sshKey) await runScript(this.runtime, id, installSshdScript(sshKey), "set up sshd");
          } catch (err) {
            await this.runtime.destroy(id);
            throw err;
          }
        },
      });
      this.log.info({ sailboxId: id, app: app.name, name }, "sailbox running");
      return this.describe(running);
    } catch (err) {
      this.store.deleteSailbox(id); // the runtime removed what it made: the box never existed
      this.log.error({ sailboxId: id, err: String(err) }, "sailbox create failed");
      throw sailError("SAIL_RUNTIME_FAILED", `Could not start sailbox ${name ?? id}: ${(err as Error).message}`, { sailboxId: id });
    }
  }

  /**
   * The row in `creating`, with its address and public TCP ports. The quota check and the
   * insert run in one synchronous stretch (no await between them) in the one daemon that owns
   * the data dir, so two creates cannot both take the last endpoint.
   */
  private insert(org: OrgRow, box: Parameters<Store["insertSailbox"]>[0], appName: string) {
    const tcpPorts = (box.ports ?? []).filter((p) => p.protocol === "tcp").length;
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
        throw sailError(
          "SAIL_IMAGE_ARCH_UNSUPPORTED",
          `${image} needs ${arch} emulation on this ${this.runtime.hostArch} host, which is not available: ${err.message}. Or use Image.debian (the host's architecture)`,
          { field: "image", requested: arch, host: this.runtime.hostArch },
        );
      }
      if (err instanceof ImageBuildError) throw sailError("SAIL_IMAGE_BUILD_FAILED", `Could not build ${image}: ${err.message}`, { field: "image.aptPackages", aptPackages });
      throw err;
    }
    if (Date.now() - started > 1000) this.log.info({ arch, aptPackages, ms: Date.now() - started }, "image ready");
  }
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
