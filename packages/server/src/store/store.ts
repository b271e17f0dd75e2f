import { createHash, randomBytes } from "node:crypto";
import Database from "better-sqlite3";
import type { Architecture, IngressPortSpec, OrgLimits, SailboxStatus } from "@sail/protocol";
import { MIGRATIONS } from "./migrations.js";

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
  cpu: number;
  memoryMiB: number;
  /** Its disk limit; null for a box made before disk limits. */
  diskMiB: number | null;
  /** Inodes of its disk, known once the runtime made it; null before, or for a box made before disk limits. */
  diskInodes: number | null;
  netSlot: number;
  idleTimeout: number | null;
  /** Its outbound policy, as JSON (NetworkInfo of @sail/protocol). */
  networkPolicy: string;
  failureReason: string | null;
  createdAt: string;
  terminatedAt: string | null;
}
export interface ExecRow {
  id: string;
  sailboxId: string;
  cmd: string;
  background: boolean;
  startedAt: string;
}
export type NewSailbox = Omit<SailboxRow, "status" | "netSlot" | "failureReason" | "createdAt" | "terminatedAt" | "idleTimeout" | "networkPolicy" | "diskMiB" | "diskInodes"> & {
  diskMiB: number;
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
/** `insertSailbox`: every network slot of the box subnet is held by a live sailbox. */
export class NetSlotsExhaustedError extends StoreError {
  constructor(readonly slots: number) {
    super(`all ${slots} sailbox network slots are in use`);
  }
}
/** `insertSailbox`: the public TCP port range is exhausted. */
export class TcpPortsExhaustedError extends StoreError {}

/** The range public TCP ports are allocated from. */
export interface TcpPortRange {
  firstPort: number;
  lastPort: number;
}

const SAILBOX_COLUMNS = `id, app_id AS appId, org_id AS orgId, name, status, image_name AS imageName,
  image_arch AS imageArch, image_packages AS imagePackages, cpu, memory_mib AS memoryMiB,
  disk_mib AS diskMiB, disk_inodes AS diskInodes, net_slot AS netSlot,
  idle_timeout AS idleTimeout, network_policy AS networkPolicy, failure_reason AS failureReason, created_at AS createdAt, terminated_at AS terminatedAt`;

const now = () => new Date().toISOString();

/** An org row as SQLite returns it: operator as 0/1. */
type StoredOrg = Omit<OrgRow, "operator"> & { operator: number };
const decodeOrg = (row: StoredOrg): OrgRow => ({ ...row, operator: row.operator === 1 });
const TOKEN_COLUMNS = "t.id, o.name AS org, t.label, t.created_at AS createdAt, t.revoked_at AS revokedAt";

/** A listener row as SQLite returns it: the allowlist as JSON text, flags as 0/1. */
type StoredListener<T extends ListenerRow> = Omit<T, "cidrAllowlist" | "allowPublic" | "h2c" | "proxyProtocol"> & { cidrAllowlist: string; allowPublic: number; h2c: number; proxyProtocol: number };
function decodeListener<T extends ListenerRow>(row: StoredListener<T>): T {
  return { ...row, cidrAllowlist: JSON.parse(row.cidrAllowlist) as string[], allowPublic: row.allowPublic === 1, h2c: row.h2c === 1, proxyProtocol: row.proxyProtocol === 1 } as T;
}
const LISTENER_COLUMNS = `l.sailbox_id AS sailboxId, l.port, l.protocol, l.cidr_allowlist AS cidrAllowlist, l.allow_public AS allowPublic,
  l.public_port AS publicPort, l.h2c, l.proxy_protocol AS proxyProtocol`;
export const hashToken = (token: string) => createHash("sha256").update(token).digest("hex");
/** Random ids: `prefix` + 12 chars of [a-z0-9] (short enough for interface names). */
export function newId(prefix: string): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = randomBytes(12);
  let id = "";
  for (const b of bytes) id += alphabet[b % alphabet.length];
  return prefix + id;
}

/** The only place with SQL. SQLite in WAL mode; every method is one statement or one transaction. */
export class Store {
  private readonly db: Database.Database;

  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.pragma("foreign_keys = ON");
    this.db.pragma("busy_timeout = 5000");
    this.migrate();
  }

  close(): void {
    this.db.close();
  }

  private migrate(): void {
    const applied = this.db.pragma("user_version", { simple: true }) as number;
    MIGRATIONS.slice(applied).forEach((sql, i) => {
      this.db.transaction(() => {
        this.db.exec(sql);
        this.db.pragma(`user_version = ${applied + i + 1}`);
      })();
    });
  }

  // --- orgs and tokens ---

  findOrgByName(name: string): OrgRow | undefined {
    const row = this.db.prepare("SELECT id, name, operator FROM orgs WHERE name = ?").get(name) as StoredOrg | undefined;
    return row && decodeOrg(row);
  }

  createOrg(name: string, options: { operator?: boolean } = {}): OrgRow {
    const org = { id: newId("org-"), name, operator: options.operator ?? false };
    this.db.prepare("INSERT INTO orgs (id, name, operator, created_at) VALUES (?, ?, ?, ?)").run(org.id, name, org.operator ? 1 : 0, now());
    return org;
  }

  /** Mint a token for an org; only its hash is kept. Returns the plain token, once. */
  createToken(orgId: string, label: string): { id: string; token: string } {
    const token = "sail_" + randomBytes(24).toString("base64url");
    const id = newId("tok-");
    this.db.prepare("INSERT INTO tokens (id, org_id, sha256, label, created_at) VALUES (?, ?, ?, ?, ?)").run(id, orgId, hashToken(token), label, now());
    return { id, token };
  }

  /** The org of a live (not revoked) token. Asked on every request, so a revoke takes effect at once. */
  orgForToken(token: string): OrgRow | undefined {
    return this.orgForTokenHash(hashToken(token));
  }

  /** The same, given the token's SHA-256 (console sessions keep only that). */
  orgForTokenHash(sha256: string): OrgRow | undefined {
    const row = this.db.prepare("SELECT o.id, o.name, o.operator FROM tokens t JOIN orgs o ON o.id = t.org_id WHERE t.sha256 = ? AND t.revoked_at IS NULL").get(sha256) as StoredOrg | undefined;
    return row && decodeOrg(row);
  }

  listTokens(orgId: string): TokenRow[] {
    return this.db.prepare(`SELECT ${TOKEN_COLUMNS} FROM tokens t JOIN orgs o ON o.id = t.org_id WHERE t.org_id = ? ORDER BY t.created_at, t.id`).all(orgId) as TokenRow[];
  }

  /** A token of `orgId` (any org when undefined). */
  getToken(id: string, orgId: string | undefined): TokenRow | undefined {
    const row = this.db.prepare(`SELECT ${TOKEN_COLUMNS}, t.org_id AS orgId FROM tokens t JOIN orgs o ON o.id = t.org_id WHERE t.id = ?`).get(id) as (TokenRow & { orgId: string }) | undefined;
    if (!row || (orgId !== undefined && row.orgId !== orgId)) return undefined;
    const { orgId: _, ...token } = row;
    return token;
  }

  countLiveByStatus(): Record<string, number> {
    const rows = this.db.prepare("SELECT status, COUNT(*) AS n FROM sailboxes WHERE live = 1 GROUP BY status").all() as Array<{ status: string; n: number }>;
    return Object.fromEntries(rows.map((r) => [r.status, r.n]));
  }

  revokeToken(id: string): void {
    this.db.prepare("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL").run(now(), id);
  }

  // --- apps ---

  findApp(orgId: string, name: string): AppRow | undefined {
    return this.db.prepare("SELECT id, org_id AS orgId, name, created_at AS createdAt FROM apps WHERE org_id = ? AND name = ?").get(orgId, name) as AppRow | undefined;
  }

  getApp(orgId: string, id: string): AppRow | undefined {
    return this.db.prepare("SELECT id, org_id AS orgId, name, created_at AS createdAt FROM apps WHERE org_id = ? AND id = ?").get(orgId, id) as AppRow | undefined;
  }

  /** Find or create, race-free (UNIQUE(org_id, name)). */
  mintApp(orgId: string, name: string): AppRow {
    this.db.prepare("INSERT INTO apps (id, org_id, name, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (org_id, name) DO NOTHING").run(newId("app-"), orgId, name, now());
    return this.findApp(orgId, name)!;
  }

  listApps(orgId: string): AppRow[] {
    return this.db.prepare("SELECT id, org_id AS orgId, name, created_at AS createdAt FROM apps WHERE org_id = ? ORDER BY name").all(orgId) as AppRow[];
  }

  // --- sailboxes ---

  /**
   * Insert a sailbox in `creating` with the lowest free network slot, in one transaction,
   * so two creates can never share a name or an address.
   */
  insertSailbox(box: NewSailbox, maxSlots: number, tcp?: TcpPortRange): SailboxRow {
    return this.db.transaction(() => {
      const tcpPorts = (box.ports ?? []).filter((p) => p.protocol === "tcp");
      const publicPorts = tcpPorts.length && tcp ? this.allocateTcpPorts(tcpPorts.length, tcp) : [];
      if (box.name !== null) {
        const taken = this.db.prepare("SELECT 1 FROM sailboxes WHERE app_id = ? AND name = ? AND live = 1").get(box.appId, box.name);
        if (taken) throw new NameTakenError(box.name);
      }
      // the lowest slot no live sailbox holds: 0, or one past a held slot
      const { netSlot } = this.db
        .prepare(
          `SELECT MIN(slot) AS netSlot FROM (SELECT 0 AS slot UNION SELECT net_slot + 1 FROM sailboxes WHERE live = 1)
           WHERE slot NOT IN (SELECT net_slot FROM sailboxes WHERE live = 1)`,
        )
        .get() as { netSlot: number };
      if (netSlot >= maxSlots) throw new NetSlotsExhaustedError(maxSlots);
      this.db
        .prepare(
          `INSERT INTO sailboxes (id, app_id, org_id, name, status, live, image_name, image_arch, image_packages, cpu, memory_mib, disk_mib, net_slot, idle_timeout, network_policy, created_at)
           VALUES (?, ?, ?, ?, 'creating', 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          box.id,
          box.appId,
          box.orgId,
          box.name,
          box.imageName,
          box.imageArch,
          box.imagePackages,
          box.cpu,
          box.memoryMiB,
          box.diskMiB,
          netSlot,
          box.idleTimeout ?? null,
          box.networkPolicy ?? '{"outbound":"open","allowOut":[],"denyOut":[]}',
          now(),
        );
      const insertListener = this.db.prepare("INSERT INTO listeners (sailbox_id, port, protocol, cidr_allowlist, allow_public, public_port, h2c, proxy_protocol) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
      let next = 0;
      for (const p of box.ports ?? []) {
        const publicPort = p.protocol === "tcp" ? (publicPorts[next++] ?? null) : null;
        insertListener.run(box.id, p.port, p.protocol, JSON.stringify(p.cidrAllowlist ?? []), p.allowPublic ? 1 : 0, publicPort, p.h2c ? 1 : 0, p.proxyProtocol ? 1 : 0);
      }
      return this.getSailbox(box.id)!;
    })();
  }

  /** The lowest free public ports (inside insertSailbox's transaction). */
  private allocateTcpPorts(count: number, tcp: TcpPortRange): number[] {
    const used = new Set(
      (this.db.prepare("SELECT l.public_port AS p FROM listeners l JOIN sailboxes s ON s.id = l.sailbox_id WHERE s.live = 1 AND l.public_port IS NOT NULL").all() as Array<{ p: number }>).map(
        (r) => r.p,
      ),
    );
    const ports: number[] = [];
    for (let port = tcp.firstPort; port <= tcp.lastPort && ports.length < count; port++) if (!used.has(port)) ports.push(port);
    if (ports.length < count) throw new TcpPortsExhaustedError();
    return ports;
  }

  /** Raw-TCP listeners the org's live sailboxes hold. */
  countLiveTcpListeners(orgId: string): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM listeners l JOIN sailboxes s ON s.id = l.sailbox_id WHERE s.live = 1 AND s.org_id = ? AND l.protocol = 'tcp'").get(orgId) as { n: number }).n;
  }

  /** The org's own raw-TCP endpoint limit, or null for the daemon's default. */
  orgTcpLimit(orgId: string): number | null {
    return (this.db.prepare("SELECT tcp_limit AS l FROM orgs WHERE id = ?").get(orgId) as { l: number | null } | undefined)?.l ?? null;
  }

  /** Override the raw-TCP endpoint limit of one org (null: back to the daemon's default). */
  setOrgTcpLimit(orgId: string, limit: number | null): void {
    this.db.prepare("UPDATE orgs SET tcp_limit = ? WHERE id = ?").run(limit, orgId);
  }

  /** The operator's caps on one org (null: none). */
  orgLimits(orgId: string): OrgLimits {
    const row = this.db.prepare("SELECT sailbox_limit AS sailboxes, cpu_limit AS cpu, memory_limit_mib AS memoryMiB, tcp_limit AS tcpEndpoints FROM orgs WHERE id = ?").get(orgId) as
      OrgLimits | undefined;
    return row ?? { sailboxes: null, cpu: null, memoryMiB: null, tcpEndpoints: null };
  }

  /** Change the given caps of one org, in one statement; omitted fields stay. */
  setOrgLimits(orgId: string, limits: Partial<OrgLimits>): void {
    const columns: Record<keyof OrgLimits, string> = { sailboxes: "sailbox_limit", cpu: "cpu_limit", memoryMiB: "memory_limit_mib", tcpEndpoints: "tcp_limit" };
    const set = (Object.keys(limits) as Array<keyof OrgLimits>).filter((key) => limits[key] !== undefined);
    if (!set.length) return;
    this.db.prepare(`UPDATE orgs SET ${set.map((key) => `${columns[key]} = ?`).join(", ")} WHERE id = ?`).run(...set.map((key) => limits[key] ?? null), orgId);
  }

  /** What the org's live sailboxes hold: their number, cores and MiB. */
  orgUsage(orgId: string): { sailboxes: number; cpu: number; memoryMiB: number } {
    return this.db.prepare("SELECT COUNT(*) AS sailboxes, COALESCE(SUM(cpu), 0) AS cpu, COALESCE(SUM(memory_mib), 0) AS memoryMiB FROM sailboxes WHERE live = 1 AND org_id = ?").get(orgId) as {
      sailboxes: number;
      cpu: number;
      memoryMiB: number;
    };
  }

  getSailbox(id: string): SailboxRow | undefined {
    return this.db.prepare(`SELECT ${SAILBOX_COLUMNS} FROM sailboxes WHERE id = ?`).get(id) as SailboxRow | undefined;
  }

  listSailboxes(filter: { orgId: string; appId?: string; name?: string; liveOnly?: boolean }): SailboxRow[] {
    const where = ["org_id = @orgId"];
    if (filter.appId) where.push("app_id = @appId");
    if (filter.name) where.push("name = @name");
    if (filter.liveOnly) where.push("live = 1");
    return this.db
      .prepare(`SELECT ${SAILBOX_COLUMNS} FROM sailboxes WHERE ${where.join(" AND ")} ORDER BY created_at DESC, id`)
      .all({ orgId: filter.orgId, appId: filter.appId, name: filter.name }) as SailboxRow[];
  }

  /** Running sailboxes that sleep when idle. */
  idleCandidates(): SailboxRow[] {
    return this.db.prepare(`SELECT ${SAILBOX_COLUMNS} FROM sailboxes WHERE status = 'running' AND idle_timeout IS NOT NULL`).all() as SailboxRow[];
  }

  /** Every sailbox that still holds resources, across orgs (for reconcile at start). */
  liveSailboxes(): SailboxRow[] {
    return this.db.prepare(`SELECT ${SAILBOX_COLUMNS} FROM sailboxes WHERE live = 1`).all() as SailboxRow[];
  }

  setStatus(id: string, status: SailboxStatus, failureReason: string | null = null): void {
    const ended = status === "terminated" || status === "failed";
    this.db
      .prepare(
        `UPDATE sailboxes SET status = ?, failure_reason = COALESCE(?, failure_reason),
           live = ?, terminated_at = CASE WHEN ? THEN ? ELSE terminated_at END WHERE id = ?`,
      )
      .run(status, failureReason, ended ? 0 : 1, ended ? 1 : 0, now(), id);
  }

  setNetworkPolicy(id: string, policy: string): void {
    this.db.prepare("UPDATE sailboxes SET network_policy = ? WHERE id = ?").run(policy, id);
  }

  /** The inodes of a box's disk, once the runtime made the filesystem. */
  setDiskInodes(id: string, inodes: number): void {
    this.db.prepare("UPDATE sailboxes SET disk_inodes = ? WHERE id = ?").run(inodes, id);
  }

  /** Forget a sailbox whose create was refused or rolled back: it never existed. */
  deleteSailbox(id: string): void {
    this.db.transaction(() => {
      this.db.prepare("DELETE FROM execs WHERE sailbox_id = ?").run(id);
      this.db.prepare("DELETE FROM listeners WHERE sailbox_id = ?").run(id);
      this.db.prepare("DELETE FROM sailboxes WHERE id = ?").run(id);
    })();
  }

  // --- idempotent creates ---

  /** The box a create with this key answered with, and the hash of that create's body. */
  findIdempotentCreate(orgId: string, key: string): { requestSha256: string; sailboxId: string } | undefined {
    return this.db.prepare("SELECT request_sha256 AS requestSha256, sailbox_id AS sailboxId FROM idempotent_creates WHERE org_id = ? AND key = ?").get(orgId, key) as
      { requestSha256: string; sailboxId: string } | undefined;
  }

  rememberIdempotentCreate(orgId: string, key: string, requestSha256: string, sailboxId: string): void {
    this.db.prepare("INSERT OR REPLACE INTO idempotent_creates (org_id, key, request_sha256, sailbox_id, created_at) VALUES (?, ?, ?, ?, ?)").run(orgId, key, requestSha256, sailboxId, now());
  }

  /** Forget keys older than `before` (ISO time); returns how many. */
  forgetIdempotentCreates(before: string): number {
    return this.db.prepare("DELETE FROM idempotent_creates WHERE created_at < ?").run(before).changes;
  }

  // --- listeners ---

  listListeners(sailboxId: string): ListenerRow[] {
    const rows = this.db.prepare(`SELECT ${LISTENER_COLUMNS} FROM listeners l WHERE l.sailbox_id = ? ORDER BY l.port`).all(sailboxId) as Array<StoredListener<ListenerRow>>;
    return rows.map(decodeListener);
  }

  /** Listeners of every live sailbox, with its status (the gateway's full route table). */
  liveListeners(): Array<ListenerRow & { status: SailboxStatus }> {
    const rows = this.db
      .prepare(
        `SELECT ${LISTENER_COLUMNS}, s.status
         FROM listeners l JOIN sailboxes s ON s.id = l.sailbox_id WHERE s.live = 1 ORDER BY l.sailbox_id, l.port`,
      )
      .all() as Array<StoredListener<ListenerRow & { status: SailboxStatus }>>;
    return rows.map(decodeListener);
  }

  // --- execs ---

  insertExec(exec: Omit<ExecRow, "startedAt">): ExecRow {
    const row = { ...exec, startedAt: now() };
    this.db.prepare("INSERT INTO execs (id, sailbox_id, cmd, background, started_at) VALUES (?, ?, ?, ?, ?)").run(row.id, row.sailboxId, row.cmd, row.background ? 1 : 0, row.startedAt);
    return row;
  }

  getExec(sailboxId: string, id: string): ExecRow | undefined {
    const row = this.db.prepare("SELECT id, sailbox_id AS sailboxId, cmd, background, started_at AS startedAt FROM execs WHERE sailbox_id = ? AND id = ?").get(sailboxId, id) as
      (Omit<ExecRow, "background"> & { background: number }) | undefined;
    return row && { ...row, background: row.background === 1 };
  }

  /** A box's background execs, newest first (the console lists their logs). */
  listBackgroundExecs(sailboxId: string, limit = 100): ExecRow[] {
    const rows = this.db
      .prepare("SELECT id, sailbox_id AS sailboxId, cmd, started_at AS startedAt FROM execs WHERE sailbox_id = ? AND background = 1 ORDER BY started_at DESC, id DESC LIMIT ?")
      .all(sailboxId, limit) as Array<Omit<ExecRow, "background">>;
    return rows.map((row) => ({ ...row, background: true }));
  }
}
