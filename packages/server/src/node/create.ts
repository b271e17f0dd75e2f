import { checkIdleTimeout, checkName, checkResources, checkSshPublicKey, normalizeCidr, sailError, SailError, type IngressPortSpec } from "@sail/protocol";
import type { NodeBoxSpec, NodeListenerSpec } from "../node-wire/node-api.js";
import type { Runtime } from "../runtime/runtime.js";

import { runScript } from "./execs.js";
import type { Images } from "./images.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";
import { BoxExistsError, NetSlotsExhaustedError, NetSlotTakenError, PublicPortTakenError, type NodeBoxRow, type NodeStore } from "./node-store.js";
import { rulesOf, type Outbound } from "./outbound.js";
import { installSshdScript } from "./sshd.js";

/**
 * A start: the container (`crun run`, up to 60 s), its network and firewall (seconds), sshd
 * when asked for (an exec). Images are built before, outside the lock.
 */
const CREATE_DEADLINE_MS = 120_000;

/** A box id names its directory, cgroup and interfaces (`sv` + 12 characters: IFNAMSIZ is 16 with the NUL): nothing but the ids the control plane makes. */
const BOX_ID = /^sb-[a-z0-9]{1,12}$/;

/** What the node decides about boxes itself: their limits on this host. */
export interface NodeBoxDefaults {
  pidsLimit: number;
  /** The disk of a box whose spec does not say (MiB): the node's `--box-disk`. */
  diskMiB: number;
  /** The host's cores: a box may ask for at most these. */
  hostCpus: number;
  /** Boxes the box subnet has room for. */
  maxBoxes: number;
}

/** The caller of a create went away before it ended (`signal`): nothing of it is left. */
export class CreateAbandonedError extends SailError {
  constructor(id: string, when: string) {
    super("SAIL_RUNTIME_FAILED", `Sailbox ${id} was not started: the caller went away ${when}`, { sailboxId: id });
  }
}

/** A box id as it crossed the wire, checked before it names anything on the host. */
export function checkBoxId(id: unknown): string {
  if (typeof id !== "string" || !BOX_ID.test(id)) throw sailError("SAIL_INVALID_ARGUMENT", `A sailbox id is sb- and up to 12 of [a-z0-9], not ${JSON.stringify(id)}`, { field: "id" });
  return id;
}

/**
 * Starting a box from its spec: the spec checked where it touches the host, the row in node.db
 * (its network slot), the runtime, its outbound rules, sshd; `creating → running` last. A
 * refused, failed or abandoned start leaves nothing behind on the node.
 */
export class BoxCreator {
  constructor(
    private readonly store: Pick<NodeStore, "insertBox" | "getBox" | "setDiskInodes">,
    private readonly lifecycle: Lifecycle,
    private readonly runtime: Pick<Runtime, "create" | "destroy" | "exec">,
    private readonly images: Pick<Images, "check">,
    private readonly defaults: NodeBoxDefaults,
    private readonly outbound: Pick<Outbound, "checkInfo" | "install">,
    private readonly log: Logger,
  ) {}

  /**
   * What a spec from the control plane must hold before the host acts on it: the control plane
   * checked the user's request; this checks what names, writes or parses something on this
   * host (ids, the hostname in /etc/hosts, the key in a shell script, CIDRs the gateway
   * matches) and what depends on this host (its cores, the networks boxes never reach here).
   */
  check(spec: NodeBoxSpec): NodeBoxSpec {
    checkBoxId(spec.id);
    checkName("sailbox", spec.hostname);
    const image = this.images.check(spec.image);
    checkResources(spec.cpu, spec.memoryMiB, this.defaults.hostCpus);
    if (typeof spec.cpu !== "number" || typeof spec.memoryMiB !== "number") throw sailError("SAIL_RESOURCES_INVALID", `Sailbox ${spec.id} needs its cpu and memoryMiB`, { field: "cpu" });
    if (spec.diskMiB !== undefined && (!Number.isInteger(spec.diskMiB) || spec.diskMiB < 1)) {
      throw sailError("SAIL_RESOURCES_INVALID", `diskMiB must be a whole number of MiB, got ${JSON.stringify(spec.diskMiB)}`, { field: "diskMiB" });
    }
    const idleTimeout = checkIdleTimeout(spec.idleTimeout) ?? null;
    const network = this.outbound.checkInfo(spec.network);
    const sshPublicKey = spec.sshPublicKey === undefined ? undefined : checkSshPublicKey(spec.sshPublicKey, "ssh.publicKey");
    if (!Array.isArray(spec.listeners)) throw sailError("SAIL_PORT_INVALID", `Sailbox ${spec.id}'s listeners must be a list`, { field: "listeners" });
    const listeners = spec.listeners.map((l) => withCanonicalCidrs(checkListener(l)));
    return { ...spec, image, idleTimeout, network, listeners, ...(sshPublicKey ? { sshPublicKey } : {}) };
  }

  /**
   * Start the box, or — a retry of a start this node has or had in hand — answer with that box
   * once its start ended. Rejects with SAIL_RUNTIME_FAILED naming the box when the runtime
   * could not start it, SAIL_LIMIT_EXCEEDED when the node has no network slot left, and
   * `CreateAbandonedError` when `signal` aborted before it ran (then it is removed again).
   */
  async create(given: NodeBoxSpec, { signal }: { signal?: AbortSignal } = {}): Promise<NodeBoxRow> {
    const spec = this.check(given);
    if (this.store.getBox(spec.id)) return this.again(spec);
    if (signal?.aborted) throw new CreateAbandonedError(spec.id, "before it started");
    const { id } = spec;
    const box = this.insert(spec);
    let running: NodeBoxRow;
    try {
      running = await this.lifecycle.transition(id, "running", {
        action: "start",
        deadlineMs: CREATE_DEADLINE_MS,
        before: async (_box, stepSignal) => {
          const created = await this.runtime.create(
            {
              id,
              hostname: spec.hostname,
              arch: spec.image.arch,
              aptPackages: spec.image.aptPackages,
              cpu: spec.cpu,
              memoryMiB: spec.memoryMiB,
              diskMiB: spec.diskMiB ?? this.defaults.diskMiB,
              pidsLimit: this.defaults.pidsLimit,
              netSlot: box.netSlot!,
              outbound: rulesOf(spec.network),
            },
            stepSignal,
          );
          this.store.setDiskInodes(id, created.diskInodes);
          try {
            await this.outbound.install(id, spec.network, { rulesInPlace: true });
            if (spec.sshPublicKey) await runScript(this.runtime, id, installSshdScript(spec.sshPublicKey), "set up sshd");
            if (signal?.aborted) throw new CreateAbandonedError(id, "while it started");
          } catch (err) {
            await this.runtime.destroy(id, { signal: stepSignal });
            throw err;
          }
        },
      });
    } catch (err) {
      // the runtime removed what it made; a start stopped at its deadline may still be undoing it
      await this.runtime.destroy(id).catch((cleanup) => this.log.error({ sailboxId: id, err: String(cleanup) }, "cleanup of a failed create failed"));
      await this.lifecycle.remove(id); // the box never existed
      if (err instanceof CreateAbandonedError) throw err;
      this.log.error({ sailboxId: id, err: String(err) }, "sailbox create failed");
      throw sailError("SAIL_RUNTIME_FAILED", `Could not start sailbox ${spec.hostname}: ${(err as Error).message}`, { sailboxId: id });
    }
    if (signal?.aborted) {
      await this.lifecycle.transition(id, "terminated", { action: "terminate", before: () => this.runtime.destroy(id) });
      throw new CreateAbandonedError(id, "as it came up");
    }
    this.log.info({ sailboxId: id, hostname: spec.hostname }, "sailbox running");
    return running;
  }

  /** A start of a box the node has: once whatever holds its lock ended, the box as it is then. */
  private async again(spec: NodeBoxSpec): Promise<NodeBoxRow> {
    await this.lifecycle.withLock(spec.id, async () => {}, { what: "a start again" });
    const box = this.store.getBox(spec.id);
    if (!box) throw sailError("SAIL_RUNTIME_FAILED", `Could not start sailbox ${spec.hostname}: its start on this node failed; create it again`, { sailboxId: spec.id });
    if (box.status === "failed") {
      throw sailError("SAIL_SAILBOX_NOT_RUNNING", `Sailbox ${box.id} is failed${box.failureReason ? ` (${box.failureReason})` : ""}: create a new one`, { sailboxId: box.id, status: box.status });
    }
    return box;
  }

  /** The row in `creating`, with the lowest free network slot. */
  private insert(spec: NodeBoxSpec): NodeBoxRow {
    try {
      return this.store.insertBox(spec, { maxSlots: this.defaults.maxBoxes });
    } catch (err) {
      if (err instanceof NetSlotsExhaustedError) {
        throw sailError("SAIL_LIMIT_EXCEEDED", `This Sail host runs at most ${err.slots} sailboxes (its box subnet is full): terminate some first`, { limit: err.slots });
      }
      if (err instanceof PublicPortTakenError || err instanceof NetSlotTakenError || err instanceof BoxExistsError) {
        throw sailError("SAIL_RUNTIME_FAILED", `Could not start sailbox ${spec.hostname} on this node: ${err.message}`, { sailboxId: spec.id });
      }
      throw err;
    }
  }
}

/** A listener as it crossed the wire: a port, a protocol, and for raw TCP its public port (or none yet). */
function checkListener(l: NodeListenerSpec): NodeListenerSpec {
  const port = (n: unknown) => Number.isInteger(n) && (n as number) >= 1 && (n as number) <= 65535;
  if (!l || !port(l.port) || (l.protocol !== "http" && l.protocol !== "tcp") || (l.publicPort !== null && !port(l.publicPort)) || (l.protocol === "http" && l.publicPort !== null)) {
    throw sailError("SAIL_PORT_INVALID", `A listener is a port (1-65535), http or tcp, and for tcp its public port or null; got ${JSON.stringify(l)}`, { field: "listeners" });
  }
  return l;
}

/** TCP allowlists in canonical form (a bare address becomes /32 or /128); a bad entry refuses the create. */
function withCanonicalCidrs<T extends IngressPortSpec>(p: T): T {
  if (p.protocol !== "tcp") return p;
  const cidrAllowlist = (p.cidrAllowlist ?? []).map((cidr) => {
    const normalized = typeof cidr === "string" ? normalizeCidr(cidr) : undefined;
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
