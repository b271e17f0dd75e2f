/**
 * The control plane's store, behind one async interface: SQLite (`SqliteStore`, embedded, the
 * default) and PostgreSQL (`PostgresStore`, `--store postgres://…`). Both run the same numbered
 * migrations (store/migrations.ts), hold the same constraints and throw the same typed errors;
 * every method is one statement or one transaction, and concurrency control is the
 * database's (transactions, row locks, unique indexes), never a Node mutex.
 */
import { createHash, randomBytes } from "node:crypto";
import { SailError, type Architecture, type IngressPortSpec, type OrgLimits, type SailboxStatus } from "@sail/protocol";

export interface OrgRow {
  id: string;
  name: string;
  /** The operator's org (the one `sail up` made): it may mint tokens for other orgs. */
  operator: boolean;
}
export interface TokenRow {
  id: string;
  org: string;
  label: string;
  createdAt: string;
  revokedAt: string | null;
}
export interface AppRow {
  id: string;
  orgId: string;
  name: string;
  createdAt: string;
}
export interface SailboxRow {
  id: string;
  appId: string;
  orgId: string;
  name: string | null;
  status: SailboxStatus;
  imageName: string;
  imageArch: Architecture;
  /** Debian packages on top of the base image: space-separated, sorted; "" for none. */
  imagePackages: string;
  /** 1 when its node runs the image under emulation (another architecture), 0 natively; null for a box made before Sail kept it. */
  imageEmulated: number | null;
  cpu: number;
  memoryMiB: number;
  /** Its disk limit; null for a box made before disk limits. */
  diskMiB: number | null;
  /** Inodes of its disk, known once its node made it; null before, or for a box made before disk limits. */
  diskInodes: number | null;
  /** The node that runs it (null until placed; one node: the daemon's own). */
  nodeId: string | null;
  idleTimeout: number | null;
  /** Its outbound policy, as JSON (NetworkInfo of @sail/protocol). */
  networkPolicy: string;
  failureReason: string | null;
  createdAt: string;
  terminatedAt: string | null;
}
/** A node that joined the control plane, as the store keeps it. */
export interface NodeRow {
  id: string;
  /** Where control planes dial its wire; "" for the node in the control plane's own process. */
  url: string;
  /** Its NodeInfo as it last registered (JSON). */
  info: string;
  /** 1 at its first join, one more each time it joins again after it was declared lost. */
  generation: number;
  /** Epoch ms its lease runs to, by the store's clock; null: it never lapses (the in-process node). */
  leaseUntil: number | null;
  /** Takes no new boxes; those it has stay until they end. */
  draining: boolean;
  /** When it was declared lost (its lease lapsed past the grace); null while it is not. */
  lostAt: string | null;
  joinedAt: string;
}
/** A node with what its live boxes hold, and the store's clock when read (what `leaseUntil` is compared with). */
export interface NodeUsageRow extends NodeRow {
  boxes: number;
  cpu: number;
  memoryMiB: number;
  nowMs: number;
}
export interface ExecRow {
  id: string;
  sailboxId: string;
  cmd: string;
  background: boolean;
  startedAt: string;
}
export type NewSailbox = Omit<SailboxRow, "status" | "failureReason" | "createdAt" | "terminatedAt" | "idleTimeout" | "networkPolicy" | "diskMiB" | "diskInodes" | "imageEmulated"> & {
  diskMiB: number;
  imageEmulated?: number | null;
  networkPolicy?: string;
  idleTimeout?: number | null;
  ports?: IngressPortSpec[];
};
export interface ListenerRow {
  sailboxId: string;
  port: number;
  protocol: "http" | "tcp";
  cidrAllowlist: string[];
  allowPublic: boolean;
  publicPort: number | null;
  h2c: boolean;
  proxyProtocol: boolean;
}

/** What the store refuses; `boxes` turns each into the user's error. */
export class StoreError extends Error {}
/** `insertSailbox`: the app already has a live sailbox of that name. */
export class NameTakenError extends StoreError {}
/** `insertSailbox`: the public TCP port range is exhausted. */
export class TcpPortsExhaustedError extends StoreError {}
/**
 * Any method: the database did not answer within its deadline, or could not be reached (a
 * server store: PostgreSQL down, failing over, or a lock held past the statement's deadline).
 * Nothing is known to have changed; the caller may retry (a create with its idempotency key).
 * The cause is the driver's error. Users see it as it is: SAIL_STORE_UNAVAILABLE (503).
 */
export class StoreUnavailableError extends SailError {
  override readonly name = "StoreUnavailableError";
  constructor(message: string, options: { cause: unknown }) {
    super("SAIL_STORE_UNAVAILABLE", `The control plane's database did not answer (${message}): nothing was changed that Sail knows of; try again`);
    this.cause = options.cause;
  }
}

/** The range public TCP ports are allocated from. */
export interface TcpPortRange {
  firstPort: number;
  lastPort: number;
}

/**
 * `insertSailbox`: the org would pass one of its caps (the operator's org limits, or its raw-TCP
 * endpoints: its own limit, else `tcpEndpointsDefault`), checked in the insert's transaction.
 */
export class OrgLimitReachedError extends StoreError {
  constructor(
    readonly limit: "sailboxes" | "cpu" | "memory" | "tcpEndpoints",
    readonly max: number,
    readonly inUse: number,
    readonly requested: number,
  ) {
    super(`the org holds ${inUse} of its ${max} ${limit} and asks for ${requested} more`);
  }
}

/** What `insertSailbox` checks in its transaction besides uniqueness. */
export interface InsertRules {
  /** Public TCP ports come from here, unique among live boxes (cluster-wide). */
  tcp?: TcpPortRange;
  /** The org's raw-TCP endpoints unless it has its own limit (orgs.tcp_limit). */
  tcpEndpointsDefault: number;
}

export const hashToken = (token: string) => createHash("sha256").update(token).digest("hex");

/** Random ids: `prefix` + 12 chars of [a-z0-9] (short enough for interface names). */
export function newId(prefix: string): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = randomBytes(12);
  let id = "";
  for (const b of bytes) id += alphabet[b % alphabet.length];
  return prefix + id;
}

/** A fresh API token: `sail_` and 32 url-safe characters. */
export const newToken = () => "sail_" + randomBytes(24).toString("base64url");

/** The store's interface: every method is one statement or one transaction. */
export interface Store {
  close(): Promise<void>;

  // orgs and tokens
  findOrgByName(name: string): Promise<OrgRow | undefined>;
  /** Find or create, race-free (orgs.name is unique). */
  ensureOrg(name: string, options?: { operator?: boolean }): Promise<OrgRow>;
  /** Mint a token for an org; only its hash is kept. Returns the plain token, once. */
  createToken(orgId: string, label: string): Promise<{ id: string; token: string }>;
  /** The org of a live (not revoked) token. Asked on every request, so a revoke takes effect at once. */
  orgForToken(token: string): Promise<OrgRow | undefined>;
  orgForTokenHash(sha256: string): Promise<OrgRow | undefined>;
  listTokens(orgId: string): Promise<TokenRow[]>;
  /** A token of `orgId` (any org when undefined). */
  getToken(id: string, orgId: string | undefined): Promise<TokenRow | undefined>;
  revokeToken(id: string): Promise<void>;

  // org limits and usage
  orgLimits(orgId: string): Promise<OrgLimits>;
  /** Change the given caps of one org; omitted fields stay, null clears one. */
  setOrgLimits(orgId: string, limits: Partial<OrgLimits>): Promise<void>;
  /** What the org's live sailboxes hold: their number, cores and MiB. */
  orgUsage(orgId: string): Promise<{ sailboxes: number; cpu: number; memoryMiB: number }>;
  countLiveTcpListeners(orgId: string): Promise<number>;

  // apps
  findApp(orgId: string, name: string): Promise<AppRow | undefined>;
  getApp(orgId: string, id: string): Promise<AppRow | undefined>;
  /** Find or create, race-free (unique per org). */
  mintApp(orgId: string, name: string): Promise<AppRow>;
  listApps(orgId: string): Promise<AppRow[]>;

  // sailboxes
  /**
   * Insert a sailbox in `creating`, in one transaction with its checks: a live box of the app
   * with that name (NameTakenError), the org's caps and raw-TCP endpoints (OrgLimitReachedError)
   * and free public TCP ports (TcpPortsExhaustedError).
   * Two creates racing for the last of anything: one wins, the other gets the error.
   */
  insertSailbox(box: NewSailbox, rules: InsertRules): Promise<SailboxRow>;
  getSailbox(id: string): Promise<SailboxRow | undefined>;
  listSailboxes(filter: { orgId: string; appId?: string; name?: string; liveOnly?: boolean }): Promise<SailboxRow[]>;
  /** Running sailboxes that sleep when idle. */
  idleCandidates(): Promise<SailboxRow[]>;
  /** Every sailbox that still holds resources, across orgs (reconcile). */
  liveSailboxes(): Promise<SailboxRow[]>;
  countLiveByStatus(): Promise<Record<string, number>>;
  setStatus(id: string, status: SailboxStatus, failureReason?: string | null): Promise<void>;
  /**
   * The node's word on a live box (its power state, or failed), kept only when `seq` is newer
   * than the last one kept (the node numbers its words per box) and the box is neither being
   * created nor ended: true when it was kept.
   */
  applyNodeState(id: string, state: { status: SailboxStatus; seq: number; failureReason?: string | null }): Promise<boolean>;
  setNetworkPolicy(id: string, policy: string): Promise<void>;
  /** The inodes its node's disk for the box has (known once it made it). */
  setDiskInodes(id: string, inodes: number): Promise<void>;
  /** Forget a sailbox whose create was refused or rolled back: it never existed. */
  deleteSailbox(id: string): Promise<void>;

  // box leases: one holder drives a box at a time, across processes
  /**
   * Take the box's lease for `holder` until now + `ttlMs`, if nobody else holds an unexpired
   * one (a holder that crashed loses it when it expires). True when taken (or renewed).
   */
  takeLease(sailboxId: string, holder: string, ttlMs: number): Promise<boolean>;
  /** Extend a lease `holder` holds; false when it lost it (expired and taken by another). */
  renewLease(sailboxId: string, holder: string, ttlMs: number): Promise<boolean>;
  releaseLease(sailboxId: string, holder: string): Promise<void>;

  // nodes: each holds a lease it renews with every heartbeat
  /**
   * A node joined or beat: its URL and info kept, its lease until now + `leaseMs` by the store's
   * clock (null: never lapses). A node that was lost comes back active as its next generation
   * (`wasLost`); its boxes stay failed.
   */
  heartbeatNode(node: { id: string; url: string; info: string }, leaseMs: number | null): Promise<{ node: NodeRow; wasLost: boolean }>;
  getNode(id: string): Promise<NodeRow | undefined>;
  /** Every node, with what its live boxes hold (placement, `sail node ls`). */
  listNodes(): Promise<NodeUsageRow[]>;
  /** Take no new boxes (true) or take them again; false when there is no such node. */
  setNodeDraining(id: string, draining: boolean): Promise<boolean>;
  /**
   * Declare lost every node whose lease ended more than `graceMs` ago: the ids this call
   * declared (among control planes sweeping at once, each node is declared by one).
   */
  declareLapsedNodesLost(graceMs: number): Promise<string[]>;
  /** Every node that is not lost holds its lease at least `leaseMs` from now (after the store or the control plane was away: see Nodes.sweep). */
  extendNodeLeases(leaseMs: number): Promise<void>;
  /** The live boxes of a node. */
  liveSailboxesOn(nodeId: string): Promise<SailboxRow[]>;

  // idempotent creates
  findIdempotentCreate(orgId: string, key: string): Promise<{ requestSha256: string; sailboxId: string } | undefined>;
  rememberIdempotentCreate(orgId: string, key: string, requestSha256: string, sailboxId: string): Promise<void>;
  /** Forget keys older than `before` (ISO time); returns how many. */
  forgetIdempotentCreates(before: string): Promise<number>;

  // listeners
  listListeners(sailboxId: string): Promise<ListenerRow[]>;
  /** The listeners of several sailboxes in one statement (a list of N boxes is not N round trips to PostgreSQL), by sailbox id. */
  listListenersOf(sailboxIds: string[]): Promise<Map<string, ListenerRow[]>>;
  /** Listeners of every live sailbox, with its status (the gateway's full route table). */
  liveListeners(): Promise<Array<ListenerRow & { status: SailboxStatus }>>;

  // execs
  insertExec(exec: Omit<ExecRow, "startedAt">): Promise<ExecRow>;
  getExec(sailboxId: string, id: string): Promise<ExecRow | undefined>;
  /** A box's background execs, newest first. */
  listBackgroundExecs(sailboxId: string, limit?: number): Promise<ExecRow[]>;
}
