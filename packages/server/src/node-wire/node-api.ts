/**
 * The node boundary: everything the control plane asks of a node agent, and everything a node
 * tells the control plane. Only serialisable requests, events and byte streams cross it — no
 * host paths, no Node streams, no callbacks into the other side's objects — so the same
 * interface is a method call inside one `sail up` and HTTP/WebSocket between two processes
 * (node-wire/client.ts, node-wire/server.ts; wire version NODE_WIRE_VERSION).
 *
 * Who owns what (docs/architecture.md, "The node boundary"): the control plane owns a box's
 * existence (create, terminate, failed), its identity (org, app, name), quotas and public TCP
 * ports; the node owns what only the host knows: the box's network slot and addresses, its
 * container and disk, and its power state (running, sleeping, paused), which it changes itself
 * on traffic (wake) and idleness (sleep) and reports as events.
 */
import type { Architecture, BuildProgress, ExecRequest, ImageRef, IngressPortSpec, ListenerInfo, ListenerTraffic, NetworkInfo, PtyRequest, SailboxStatus } from "@sail/protocol";

/** Bumped on any change a node or control plane of the other version could misread. */
export const NODE_WIRE_VERSION = 1;

/** What a node needs to run one box: its spec, nothing about orgs or apps. */
export interface NodeBoxSpec {
  id: string;
  hostname: string;
  image: { arch: Architecture; aptPackages: string[] };
  cpu: number;
  memoryMiB: number;
  /** Its disk (bytes and, derived from it, inodes); undefined: the node's default. */
  diskMiB?: number;
  idleTimeout: number | null;
  network: NetworkInfo;
  /** Published ports; raw TCP ones carry the public port the control plane allocated. */
  listeners: NodeListenerSpec[];
  /** Install sshd with this key for root (port 22 is among the listeners then). */
  sshPublicKey?: string;
}

export type NodeListenerSpec = IngressPortSpec & { publicPort: number | null };

/** A node's word on one box: its power state and the sequence number of that word (newer wins). */
export interface NodeBoxState {
  sailboxId: string;
  /** creating while the node starts it; failed when the node lost it (its container vanished). */
  status: SailboxStatus;
  /** Increases with every change of this box on this node: the control plane keeps the newest. */
  seq: number;
  failureReason?: string;
  /** Wakes from sleep since the node started. */
  wakes: number;
  /** Inodes its disk has (what `df -i` in the box shows), once made. */
  diskInodes?: number;
  /** Raw-TCP listeners whose public port the node could not bind (`wait()` says why). */
  listeners: Array<Pick<Extract<ListenerInfo, { protocol: "tcp" }>, "port" | "state" | "unbound">>;
}

/**
 * What the node tells the control plane, in order, as they happen (retried until heard). A
 * create's creating → running is an event with the same `seq` as createBox's answer; a box's
 * removal and a failed create send none.
 */
export type NodeEvent = { type: "box"; state: NodeBoxState } | { type: "woken"; sailboxId: string; seconds: number };

/** A foreground command's output and end, as the node streams it (`data` is UTF-8 text, as the API sends it). */
export type NodeExecEvent = { stream: "stdout" | "stderr"; data: string } | { exitCode: number };

/** A running foreground command: its events until the exit code; `kill` ends it. */
export interface NodeExec {
  events: AsyncIterable<NodeExecEvent>;
  kill(): void;
}

/** A command on a pseudo-terminal in the box: bytes both ways, resize, and its exit. */
export interface NodePty {
  /** The program's output (the terminal's bytes, never interpreted). */
  output: AsyncIterable<Uint8Array>;
  write(bytes: Uint8Array): void;
  resize(cols: number, rows: number): void;
  /** The exit code; 128+N when signal N ended it. */
  exit: Promise<number>;
  /** Hang up (the program gets SIGHUP). */
  close(): void;
}

/** What the control plane asks a node. Every error a node refuses with is a SailError with its code. */
export interface NodeApi {
  /** Who the node is and what it can hold. */
  info(): Promise<NodeInfo>;

  /** Build (or find cached) an image; progress (`{ step, detail }`) while it builds. Refusals: SAIL_IMAGE_ARCH_UNSUPPORTED, SAIL_IMAGE_BUILD_FAILED. */
  prepareImage(
    image: Required<Pick<ImageRef, "arch" | "aptPackages">>,
    options?: { onProgress?: (progress: Omit<BuildProgress, "elapsedMs" | "phase" | "image">) => void; signal?: AbortSignal },
  ): Promise<void>;

  /**
   * Start a box from its spec (the image prepared first); resolves once it runs, with its
   * state. On failure nothing of it is left on the node. Safe to send again for the same id (a
   * create whose answer was lost): the node answers with the box it made. SAIL_NETWORK_ENTRY_REFUSED when its
   * policy names what this host never lets boxes reach; SAIL_LIMIT_EXCEEDED when the node has
   * no network slot left.
   */
  createBox(spec: NodeBoxSpec, options?: { signal?: AbortSignal }): Promise<NodeBoxState>;
  /** Remove everything of a box; idempotent. `afterCrash`: the node may have died mid-step. */
  destroyBox(sailboxId: string, options?: { afterCrash?: boolean; signal?: AbortSignal }): Promise<void>;

  /** sleep | pause | resume, as the API asks (resume of a running box: nothing). The new state. */
  setPower(sailboxId: string, action: "sleep" | "pause" | "resume"): Promise<NodeBoxState>;
  /**
   * For an API call that needs the guest (exec, sshd, listener waits): a sleeping box is woken;
   * a paused one is SAIL_SAILBOX_PAUSED; the call counts as activity (idle auto-sleep).
   */
  awake(sailboxId: string): Promise<NodeBoxState>;

  /** Replace the box's outbound policy (cutting open connections it no longer allows). */
  setNetwork(sailboxId: string, policy: NetworkInfo): Promise<void>;

  /** A foreground command (the box woken first). */
  exec(sailboxId: string, request: Omit<ExecRequest, "background">): Promise<NodeExec>;
  /** A command that outlives the call; its output goes to the exec's log on the node. */
  execBackground(sailboxId: string, execId: string, request: Omit<ExecRequest, "background">): Promise<void>;
  /** A background exec's log: what it wrote so far, then (with `follow`) what it writes until it ends. A refusal (no such exec) is thrown on the first read. */
  execLog(sailboxId: string, execId: string, options?: { follow?: boolean; signal?: AbortSignal }): AsyncIterable<Uint8Array>;
  /** A command on a pseudo-terminal (the box woken first). */
  pty(sailboxId: string, request: PtyRequest): Promise<NodePty>;
  /** Start the box's sshd if it does not run (idempotent). */
  startSshd(sailboxId: string): Promise<void>;

  /**
   * Resolve once a process in the box accepts on `port` and the node's data paths route to it,
   * or fail after `timeoutMs`: SAIL_LISTENER_TIMEOUT (saying where it listens, if anywhere) or
   * SAIL_LISTENER_UNBOUND. `proxyProtocol`: the guest expects a PROXY v2 header even on a probe.
   */
  waitListener(sailboxId: string, listener: { port: number; protocol: "http" | "tcp"; publicPort: number | null; proxyProtocol: boolean }, timeoutMs: number): Promise<void>;

  /** Per-listener counters of the node's data paths (the console's traffic panel). */
  traffic(sailboxId: string): Promise<{ wakes: number; listeners: Array<Omit<ListenerTraffic, "protocol">> }>;

  /** Every box the node holds, with its state (reconcile). */
  boxes(): Promise<NodeBoxState[]>;
  /** One box's state (SAIL_SAILBOX_NOT_FOUND when the node does not hold it). */
  box(sailboxId: string): Promise<NodeBoxState>;

  /**
   * Reconcile against what the control plane believes runs on this node: a listed box the host
   * runs but the node does not know yet (made before the node kept its own table) is taken
   * over; a listed box the host lost is recorded failed (an event says so); boxes and
   * directories nobody lists are removed. Listed `creating` boxes are left alone: call it with
   * no create in flight to this node.
   */
  adopt(expected: ReadonlyArray<{ spec: NodeBoxSpec; status: SailboxStatus }>): Promise<{ adopted: string[]; failed: string[]; removed: string[] }>;

  /** The host's checks of an outbound policy (what this host never lets boxes reach), before a create inserts anything. */
  checkNetwork(policy: NetworkInfo): Promise<NetworkInfo>;

  /** The node's own Prometheus series (its data paths, outbound, resolver, wakes). */
  metricsText(): Promise<string>;
}

/** A node as it introduces itself. */
export interface NodeInfo {
  nodeId: string;
  version: number;
  hostArch: Architecture;
  /** Boxes it can hold at once (its network slots). */
  maxBoxes: number;
  /** The CA its gateway's local certificate comes from (what `sail ca` prints), unless it serves a certificate it was given. */
  caCert?: string;
  /** Where an edge reaches its HTTPS gateway (host:port; TLS passes through, PROXY v2 first), if it says. */
  httpsAddress?: string;
  /** Where an edge reaches its raw-TCP ports (an address; each public port on it), if it says. */
  tcpAddress?: string;
}

/**
 * What the route feed answers an edge (GET /node/v1/routes on the control plane): which node
 * holds each public HTTPS host and raw-TCP port. `reset`: the whole map (replace what you
 * hold); this version always sends it.
 */
export interface EdgeRoutes {
  /** `<epoch>-<counter>`: send it back as `after` to wait for the next one. */
  version: string;
  reset: boolean;
  nodes: Array<{ nodeId: string; httpsAddress?: string; tcpAddress?: string }>;
  http: Array<{ host: string; nodeId: string }>;
  /** `allow`: the listener's CIDR allowlist (empty: any source). */
  tcp: Array<{ publicPort: number; nodeId: string; allow: string[] }>;
}

/** The control plane's answer to a node's registration (or heartbeat), once it reconciled the node if it had to. */
export interface RegisterAnswer {
  /** The node's lease runs this long from the heartbeat: a node that cannot renew it in that time fences itself. */
  leaseMs: number;
}

/** Where a node's events go: the control plane (in one process, a method; across, HTTP). */
export interface NodeEventSink {
  deliver(events: NodeEvent[]): Promise<void>;
}
