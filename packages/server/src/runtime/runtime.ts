import type { Readable } from "node:stream";
import type { Architecture, Ipv4Range } from "@sail/protocol";
import type { RunningPty } from "./pty.js";

/** What the runtime needs to start one box; nothing about orgs, apps or URLs. */
export interface BoxSpec {
  id: string;
  hostname: string;
  arch: Architecture;
  cpu: number;
  memoryMiB: number;
  /** What the guest may write over its image (MiB): the size of its own filesystem, which holds its inodes too. */
  diskMiB: number;
  pidsLimit: number;
  /** Debian packages on top of the base image (sorted); the image must be prepared first. */
  aptPackages: readonly string[];
  /** Index of the box's /30 in the configured box subnet (allocated by the store, unique among live boxes). */
  netSlot: number;
  /** Its outbound rules, in place by the time create returns (set while the container starts). */
  outbound: OutboundRules;
}

/**
 * A box's outbound rules as the runtime enforces them (names are the resolver's business):
 * open, blocked, only `cidrs` (plus what its allowed names resolve to), or all but `cidrs`.
 */
export interface OutboundRules {
  mode: "open" | "blocked" | "allow" | "deny";
  cidrs: readonly string[];
}

export interface OutboundCounters {
  bytesOut: number;
  refusedPackets: number;
}

/** A destination a box was refused (each is reported once a minute at most). */
export interface OutboundRefusal {
  id: string;
  address: string;
  protocol: string;
  port: number;
}

/** Where the runtime reports what happens on its own. */
export type { Logger as RuntimeLogger } from "../logger.js";

/** What `create` made: the box's addresses, and the inodes its disk has (what `df -i` in it shows). */
export interface CreatedBox {
  network: BoxNetwork;
  diskInodes: number;
}

export interface BoxNetwork {
  /** The guest's veth address: where the gateway dials the box's ports. */
  guestAddress: string;
  /** The host side of the pair (the guest's default route). */
  hostAddress: string;
}

/** The runtime's view of a box. `missing` means the runtime knows nothing of it. */
export type RuntimeState = "running" | "paused" | "stopped" | "missing";

export interface ExecSpec {
  cmd: string;
  cwd?: string;
  env?: Record<string, string>;
}

/** A foreground command: its output as it is produced, and its exit code. */
export interface RunningExec {
  stdout: Readable;
  stderr: Readable;
  /** The exit code; 128+N when a signal N ended it. */
  exit: Promise<number>;
  kill(): void;
}

/** A command on a pseudo-terminal (`sail box exec -it`, the console's terminal). */
export interface PtySpec {
  /** Run with /bin/sh -c; undefined: the login shell of root in the box. */
  cmd?: string;
  cwd?: string;
  env?: Record<string, string>;
  cols: number;
  rows: number;
}

export type { RunningPty } from "./pty.js";

export interface ImageProgress {
  phase: string;
  detail?: string;
  done?: boolean;
}

/**
 * The boundary between Sail's domain and whatever runs boxes: the local crun driver
 * today; a microVM or a Kubernetes driver later.
 */
export interface Runtime {
  readonly hostArch: Architecture;
  /**
   * Build (or find cached) the base image of `arch`; reports progress while it builds;
   * concurrent calls share a build. Another architecture than the host's runs under
   * emulation: throws `EmulationUnavailableError` when the host cannot provide it.
   */
  prepareImage(arch: Architecture, onProgress?: (progress: ImageProgress) => void): Promise<void>;
  /**
   * Build (or find cached) the base image plus these Debian packages; concurrent calls for
   * one set share a build. Throws `ImageBuildError` with apt's reason when it cannot.
   */
  preparePackageImage(arch: Architecture, aptPackages: readonly string[], onProgress?: (progress: ImageProgress) => void): Promise<void>;
  /** Prepare the host (routes) before the first box; undone by `shutdown`. */
  start(): Promise<void>;
  shutdown(): Promise<void>;
  /** Start a box; on failure everything it created is removed before the error is thrown. */
  create(spec: BoxSpec, signal?: AbortSignal): Promise<CreatedBox>;
  /** The addresses of a box the runtime started (also after a daemon restart, once `state` was asked). */
  network(id: string): BoxNetwork;
  state(id: string): Promise<RuntimeState>;
  exec(id: string, spec: ExecSpec): RunningExec;
  /** Start a command on a pseudo-terminal opened inside the box; resolves once the terminal is ours. */
  execPty(id: string, spec: PtySpec): Promise<RunningPty>;
  /** Start a command that outlives the call; its stdout and stderr go to the exec's log (`DiskFullError` when the box's disk has no room for it). */
  execDetached(id: string, execId: string, spec: ExecSpec): Promise<void>;
  execLogPath(id: string, execId: string): string;
  /**
   * Whether a process in the box accepts connections on `port` at the box's address. `greeting`
   * is sent before the probe closes (a PROXY-protocol server expects a header even then).
   */
  probePort(id: string, port: number, greeting?: Buffer): Promise<boolean>;
  /** Addresses something in the box listens on for `port` (e.g. "127.0.0.1" when bound to loopback only). */
  listeningAddresses(id: string, port: number): Promise<string[]>;
  /**
   * Freeze every process of the box (cgroup freezer); memory stays resident. Bounded: a box that
   * cannot be frozen (a task that cannot stop) is thawed again and `FreezeError` thrown; so is
   * one whose `signal` aborts.
   */
  freeze(id: string, signal?: AbortSignal): Promise<void>;
  thaw(id: string, signal?: AbortSignal): Promise<void>;
  /**
   * Enforce a box's outbound rules (replacing the previous ones) on new connections;
   * `resolved` are addresses its allowed names answered with and their remaining seconds.
   */
  setOutbound(id: string, rules: OutboundRules, resolved?: ReadonlyArray<{ address: string; seconds: number }>): Promise<void>;
  /** Let a box with an allowlist reach addresses its resolver answered with for `seconds`: new ones, and ones it has whose time restarts. */
  allowResolved(id: string, addresses: { add: readonly string[]; renew: readonly string[] }, seconds: number): Promise<void>;
  /** End the box's open connections to destinations `keep` says no to; returns those destinations. */
  cutOutbound(id: string, keep: (address: string) => boolean): Promise<string[]>;
  /** Bytes out and refused packets per box. */
  outboundCounters(): Promise<Map<string, OutboundCounters>>;
  /** Destinations boxes were refused recently (each once a minute at most). */
  outboundRefusals(): Promise<OutboundRefusal[]>;
  /**
   * The networks the host is directly connected to that boxes are refused (its LAN), beyond the
   * never-reached ranges and less what the operator opened: as last seen, for they follow the
   * host's addresses and routes at run time.
   */
  connectedNetworks(): readonly Ipv4Range[];
  /**
   * Remove the container, netns, veth, mounts, cgroups and directories of a box. Idempotent.
   * Its directory and disk go to the trash and are removed in the background, so the call
   * takes as long for a box that wrote 400k files as for one that wrote none.
   * `afterCrash`: a previous daemon may have died mid-step, leaving its commands for this box
   * running (a `crun run` finishing the container): let them end first, or they recreate
   * what was just removed.
   */
  destroy(id: string, options?: { afterCrash?: boolean; signal?: AbortSignal }): Promise<void>;
}

/**
 * What a node agent needs of its runtime beyond `Runtime`: its capacity, the boxes it holds on
 * the host (to adopt or remove those its node.db does not know), the slot a box's addresses
 * were carved from, and whether a background exec still runs (a log followed to its end).
 */
export interface NodeRuntime extends Runtime {
  /** Boxes the box subnet has room for (its /30 network slots). */
  readonly maxBoxes: number;
  /** Every box this runtime holds anything of on the host (its directory: container, network, disk), running or not. */
  listBoxes(): Promise<string[]>;
  /** The network slot a box's addresses (its network.json) were carved from; undefined when it has none or they are not of this box subnet. */
  netSlotOf(id: string): number | undefined;
  /** Whether a background exec's process still runs in the box. */
  execRunning(id: string, execId: string): Promise<boolean>;
}

export { FreezeError } from "./freezer.js";

/** A package image that could not be built: the user's package list is the usual cause. */
export class ImageBuildError extends Error {}

/** The box's disk (bytes or inodes) is full: the kernel said ENOSPC or EDQUOT to something Sail writes into it. */
export class DiskFullError extends Error {}

/** This host cannot run another architecture's binaries; the message says why and how to fix it. */
export class EmulationUnavailableError extends Error {}
