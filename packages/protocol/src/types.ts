/** Wire types of the `/v1` API. The API document is docs/api.md. */
import type { WireError } from "./errors.js";

/** Where a sailbox is in its life; the allowed changes are `SAILBOX_TRANSITIONS` (lifecycle.ts). */
export type SailboxStatus = "creating" | "running" | "sleeping" | "paused" | "terminated" | "failed";

export type Architecture = "amd64" | "arm64";

export interface AppInfo {
  id: string;
  name: string;
  createdAt: string;
}

/** An image reference. `arch` omitted means the daemon host's architecture. */
export interface ImageRef {
  name: "debian";
  arch?: Architecture;
  /** Debian packages installed on top of the base image (built once, then cached). */
  aptPackages?: string[];
}

export type IngressProtocol = "http" | "tcp";

/** One published port as the wire carries it; a bare number means HTTP. */
export interface IngressPortSpec {
  port: number;
  protocol: IngressProtocol;
  /** TCP only: source prefixes allowed to connect; empty means anyone. */
  cidrAllowlist?: string[];
  /** TCP only: confirm a well-known unauthenticated port may be public. */
  allowPublic?: boolean;
  /** HTTP only: speak cleartext HTTP/2 (h2c) to the guest, e.g. for a gRPC server. Clients use h2 or HTTP/1.1 either way. */
  h2c?: boolean;
  /** TCP only: send the guest a PROXY protocol v2 header first, so it sees the client's address. */
  proxyProtocol?: boolean;
}

/**
 * Where a box may open connections (IPv4, through the host; names through Sail's resolver).
 * At most one of the three; none means open. Entries are IPv4 addresses or CIDRs, domain
 * names (that name only) and `*.domain` (any name below it).
 */
export interface NetworkPolicyRequest {
  /** Nothing leaves the box, DNS included. */
  blockNetwork?: boolean;
  /** Only these destinations (a name outside the list does not resolve). */
  allowOut?: string[];
  /** Every destination but these. */
  denyOut?: string[];
}

/** A box's outbound policy as the API shows it; `open` still never reaches private ranges, the host or other boxes. */
export interface NetworkInfo {
  outbound: "open" | "blocked" | "allowlist" | "denylist";
  allowOut: string[];
  denyOut: string[];
}

export interface CreateSailboxRequest extends NetworkPolicyRequest {
  appId: string;
  ingressPorts?: Array<number | IngressPortSpec>;
  /** Sleep after this many seconds idle (no open or active inbound connection, no API activity). */
  idleTimeout?: number;
  /** Install sshd with this public key for root, and publish port 22 as raw TCP. */
  ssh?: { publicKey: string };
  name?: string;
  image: ImageRef;
  /** CPU cores (fractions allowed). */
  cpu?: number;
  memoryMiB?: number;
  /** What the box may write over its image, in MiB (its inodes follow from it); the daemon's default when absent. */
  diskMiB?: number;
}

/** The image a sailbox runs; `emulated` when its architecture is not the host's (qemu user mode). */
export type SailboxImage = Required<ImageRef> & { emulated: boolean };

export interface SailboxInfo {
  id: string;
  appId: string;
  name: string | null;
  status: SailboxStatus;
  image: SailboxImage;
  cpu: number;
  memoryMiB: number;
  /** Its disk limit in MiB (what `df /` in the box shows, less the filesystem's own bookkeeping); null: made before boxes had one. */
  diskMiB: number | null;
  /** Files and directories it may create (`df -i /` in the box); null: made before boxes had a disk limit. */
  diskInodes: number | null;
  /** How many times traffic or an API call woke it from sleep since the daemon started. */
  wakes: number;
  /** Seconds idle before it sleeps by itself; null: never. */
  idleTimeout: number | null;
  /** Its published ports and their public endpoints, known from create on; none once it ended. */
  listeners: ListenerInfo[];
  /** Where it may open connections. */
  network: NetworkInfo;
  createdAt: string;
  /** The node that runs it (a box lives on one node for its life); null: made before nodes were recorded. */
  node: string | null;
  /** Why a `failed` sailbox failed. */
  failureReason?: string;
}

/** A machine that runs sailboxes, as the control plane sees it (`GET /v1/nodes`, `sail node ls`). */
export interface NodeSummary {
  nodeId: string;
  /** Where control planes reach its wire; "" for the node in the control plane's own process. */
  url: string;
  /** active: takes new boxes; draining: keeps its boxes, takes no new ones; lost: its lease lapsed, its boxes failed. */
  state: "active" | "draining" | "lost";
  /** 1 at its first join, one more each time it joined again after it was lost. */
  generation: number;
  /** Milliseconds since its last heartbeat renewed its lease; null for the node in the control plane's own process. */
  leaseAgeMs: number | null;
  /** Its live sailboxes, and what they hold. */
  boxes: number;
  maxBoxes: number;
  cpu: number;
  memoryMiB: number;
  hostArch: Architecture;
}

export interface ExecRequest {
  cmd: string;
  cwd?: string;
  env?: Record<string, string>;
  background?: boolean;
}

/**
 * Whether the host holds a TCP listener's public port: `bound`; `pending` (being bound now);
 * `unbound` when the host could not bind it (`reason` says why, e.g. `EADDRINUSE`: another
 * program holds it) — the gateway keeps retrying, and `listener.wait()` fails with
 * `SAIL_LISTENER_UNBOUND` meanwhile.
 */
export type TcpListenerState = "bound" | "pending" | "unbound";

/** A published port: HTTP listeners have a URL, TCP listeners a host and port. */
export type ListenerInfo =
  | { sailboxId: string; port: number; protocol: "http"; endpoint: { url: string; host: string; port: number }; h2c: boolean }
  | {
      sailboxId: string;
      port: number;
      protocol: "tcp";
      endpoint: { host: string; port: number };
      cidrAllowlist: string[];
      allowPublic: boolean;
      proxyProtocol: boolean;
      state: TcpListenerState;
      /** Why it is unbound: the OS's error code and message, and since when (ISO 8601). */
      unbound?: { code: string; message: string; since: string };
    };

/** One line of the NDJSON stream a foreground exec answers with. */
export type ExecEvent = { stream: "stdout" | "stderr"; data: string } | { exitCode: number } | { error: { code: string; message: string; [detail: string]: unknown } };

/** The answer to starting a background exec. */
export interface BackgroundExecInfo {
  execId: string;
  sailboxId: string;
  cmd: string;
  startedAt: string;
}

/** What `sail up` writes so the SDK and CLI find the daemon without configuration. */
export interface ClientConfig {
  apiUrl: string;
  token: string;
}

/** An API token, without its secret (which is shown once, at creation). */
export interface TokenInfo {
  id: string;
  org: string;
  label: string;
  createdAt: string;
  revokedAt: string | null;
}

export interface CreatedToken extends TokenInfo {
  /** The bearer token itself: shown this once, only its hash is kept. */
  token: string;
}

/**
 * What an operator caps for one org, over its live boxes (sleeping and paused ones hold their
 * memory, so they count). null: no cap; for tcpEndpoints, the daemon's `--tcp-limit`.
 */
export interface OrgLimits {
  sailboxes: number | null;
  cpu: number | null;
  memoryMiB: number | null;
  tcpEndpoints: number | null;
}

/** An org's limits and what its live boxes use now (`GET /v1/orgs/{name}/limits`). */
export interface OrgLimitsInfo {
  org: string;
  limits: OrgLimits;
  /** tcpEndpoints as it applies: the org's own or the daemon's default. */
  effective: { tcpEndpoints: number };
  usage: { sailboxes: number; cpu: number; memoryMiB: number; tcpEndpoints: number };
}

/** `PUT /v1/orgs/{name}/limits`: the fields to change (null clears one); omitted ones stay. */
export type SetOrgLimitsRequest = Partial<OrgLimits>;

export interface CreateTokenRequest {
  label?: string;
  /** Another org (created if missing): only the operator's org may ask. */
  org?: string;
}

/** An image as the daemon has it built: `POST /v1/images` answers with it. */
export type ImageInfo = SailboxImage;

/**
 * One step of a create or an image build, streamed as a `{"progress": …}` line (docs/api.md,
 * "Streamed answers"): `image` while an image is built (or while the call waits for a build
 * another call started), `starting` while the box's container starts.
 */
export interface BuildProgress {
  phase: "image" | "starting";
  /** The image as the SDKs name it: "debian", "debian_arm64", "debian+postgresql". */
  image: string;
  /** The build's own step: "retrieving", "configuring (arm64, emulated)", "copying", "finishing", "ready". */
  step?: string;
  detail?: string;
  /** Milliseconds since the call began. */
  elapsedMs: number;
  /** `starting` only: the box being started (it is yours once the final `sailbox` line arrives). */
  sailboxId?: string;
}

/**
 * The lines of a streamed create (`Accept: application/x-ndjson`): progress, a heartbeat every
 * few seconds while nothing else is said, then exactly one `sailbox` or `error` line.
 * Clients ignore lines they do not know.
 */
export type CreateEvent = { progress: BuildProgress } | { heartbeat: { elapsedMs: number } } | { sailbox: SailboxInfo } | WireError;

/** The lines of a streamed image build: as a create's, ending with `image` or `error`. */
export type ImageBuildEvent = { progress: BuildProgress } | { heartbeat: { elapsedMs: number } } | { image: ImageInfo } | WireError;
