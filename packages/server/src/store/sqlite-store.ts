import Database from "better-sqlite3";
import type { OrgLimits, SailboxStatus } from "@sail/protocol";
import { MIGRATIONS, migrationSql } from "./migrations.js";
import {
  bySailbox,
  APP_COLUMNS,
  decodeListener,
  decodeOrg,
  LIMIT_COLUMNS,
  LISTENER_COLUMNS,
  decodeNode,
  NODE_COLUMNS,
  NODE_USAGE_JOIN,
  NEW_SAILBOX_COLUMNS,
  newSailboxValues,
  NO_LIMITS,
  now,
  orgCapRefusal,
  SAILBOX_COLUMNS,
  TOKEN_COLUMNS,
  type StoredListener,
  type StoredOrg,
} from "./rows.js";
import {
  hashToken,
  NameTakenError,
  newId,
  newToken,
  TcpPortsExhaustedError,
  type AppRow,
  type ExecRow,
  type InsertRules,
  type ListenerRow,
  type NewSailbox,
  type NodeRow,
  type NodeUsageRow,
  type OrgRow,
  type SailboxRow,
  type Store,
  type TcpPortRange,
  type TokenRow,
} from "./store.js";

/**
 * The embedded store: SQLite in WAL mode (better-sqlite3, synchronous underneath). One process
 * owns the file, so each method runs to its end without yielding: a transaction here cannot
 * interleave with another, and the async interface costs a resolved promise per call.
 */
export class SqliteStore implements Store {
  private readonly db: Database.Database;

  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.pragma("foreign_keys = ON");
    this.db.pragma("busy_timeout = 5000");
    this.migrate();
  }

  async close(): Promise<void> {
    this.db.close();
  }

  /**
   * Each pending migration in its own IMMEDIATE transaction that reads the version again under
   * the write lock, so a second process opening the file at the same moment waits, then finds the
   * work done instead of running it twice. A migrated file (every start) takes no write lock.
   */
  private migrate(): void {
    const version = () => this.db.pragma("user_version", { simple: true }) as number;
    while (version() < MIGRATIONS.length) {
      this.immediate(() => {
        const applied = version();
        if (applied >= MIGRATIONS.length) return;
        this.db.exec(migrationSql(MIGRATIONS[applied]!, "sqlite"));
        this.db.pragma(`user_version = ${applied + 1}`);
      });
    }
  }

  // --- orgs and tokens ---

  async findOrgByName(name: string): Promise<OrgRow | undefined> {
    return this.orgByName(name);
  }

  private orgByName(name: string): OrgRow | undefined {
    const row = this.db.prepare("SELECT id, name, operator FROM orgs WHERE name = ?").get(name) as StoredOrg | undefined;
    return row && decodeOrg(row);
  }

  async ensureOrg(name: string, options: { operator?: boolean } = {}): Promise<OrgRow> {
    this.db.prepare("INSERT INTO orgs (id, name, operator, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING").run(newId("org-"), name, options.operator ? 1 : 0, now());
    return this.orgByName(name)!;
  }

  async createToken(orgId: string, label: string): Promise<{ id: string; token: string }> {
    const token = newToken();
    const id = newId("tok-");
    this.db.prepare("INSERT INTO tokens (id, org_id, sha256, label, created_at) VALUES (?, ?, ?, ?, ?)").run(id, orgId, hashToken(token), label, now());
    return { id, token };
  }

  async orgForToken(token: string): Promise<OrgRow | undefined> {
    return this.orgForTokenHash(hashToken(token));
  }

  async orgForTokenHash(sha256: string): Promise<OrgRow | undefined> {
    const row = this.db.prepare("SELECT o.id, o.name, o.operator FROM tokens t JOIN orgs o ON o.id = t.org_id WHERE t.sha256 = ? AND t.revoked_at IS NULL").get(sha256) as StoredOrg | undefined;
    return row && decodeOrg(row);
  }

  async listTokens(orgId: string): Promise<TokenRow[]> {
    return this.db.prepare(`SELECT ${TOKEN_COLUMNS} FROM tokens t JOIN orgs o ON o.id = t.org_id WHERE t.org_id = ? ORDER BY t.created_at, t.id`).all(orgId) as TokenRow[];
  }

  async getToken(id: string, orgId: string | undefined): Promise<TokenRow | undefined> {
    const row = this.db.prepare(`SELECT ${TOKEN_COLUMNS}, t.org_id AS orgId FROM tokens t JOIN orgs o ON o.id = t.org_id WHERE t.id = ?`).get(id) as (TokenRow & { orgId: string }) | undefined;
    if (!row || (orgId !== undefined && row.orgId !== orgId)) return undefined;
    const { orgId: _, ...token } = row;
    return token;
  }

  async revokeToken(id: string): Promise<void> {
    this.db.prepare("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL").run(now(), id);
  }

  // --- org limits and usage ---

  async orgLimits(orgId: string): Promise<OrgLimits> {
    return this.limitsOf(orgId);
  }

  private limitsOf(orgId: string): OrgLimits {
    return (this.db.prepare(`SELECT ${LIMIT_COLUMNS} FROM orgs WHERE id = ?`).get(orgId) as OrgLimits | undefined) ?? NO_LIMITS;
  }

  async setOrgLimits(orgId: string, limits: Partial<OrgLimits>): Promise<void> {
    const columns: Record<keyof OrgLimits, string> = { sailboxes: "sailbox_limit", cpu: "cpu_limit", memoryMiB: "memory_limit_mib", tcpEndpoints: "tcp_limit" };
    const set = (Object.keys(limits) as Array<keyof OrgLimits>).filter((key) => limits[key] !== undefined);
    if (!set.length) return;
    this.db.prepare(`UPDATE orgs SET ${set.map((key) => `${columns[key]} = ?`).join(", ")} WHERE id = ?`).run(...set.map((key) => limits[key] ?? null), orgId);
  }

  async orgUsage(orgId: string): Promise<{ sailboxes: number; cpu: number; memoryMiB: number }> {
    return this.usageOf(orgId);
  }

  private usageOf(orgId: string): { sailboxes: number; cpu: number; memoryMiB: number } {
    return this.db.prepare("SELECT COUNT(*) AS sailboxes, COALESCE(SUM(cpu), 0) AS cpu, COALESCE(SUM(memory_mib), 0) AS memoryMiB FROM sailboxes WHERE live = 1 AND org_id = ?").get(orgId) as {
      sailboxes: number;
      cpu: number;
      memoryMiB: number;
    };
  }

  async countLiveTcpListeners(orgId: string): Promise<number> {
    return this.tcpInUse(orgId);
  }

  private tcpInUse(orgId: string): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM listeners l JOIN sailboxes s ON s.id = l.sailbox_id WHERE s.live = 1 AND s.org_id = ? AND l.protocol = 'tcp'").get(orgId) as { n: number }).n;
  }

  // --- apps ---

  async findApp(orgId: string, name: string): Promise<AppRow | undefined> {
    return this.appByName(orgId, name);
  }

  private appByName(orgId: string, name: string): AppRow | undefined {
    return this.db.prepare(`SELECT ${APP_COLUMNS} FROM apps WHERE org_id = ? AND name = ?`).get(orgId, name) as AppRow | undefined;
  }

  async getApp(orgId: string, id: string): Promise<AppRow | undefined> {
    return this.db.prepare(`SELECT ${APP_COLUMNS} FROM apps WHERE org_id = ? AND id = ?`).get(orgId, id) as AppRow | undefined;
  }

  async mintApp(orgId: string, name: string): Promise<AppRow> {
    this.db.prepare("INSERT INTO apps (id, org_id, name, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (org_id, name) DO NOTHING").run(newId("app-"), orgId, name, now());
    return this.appByName(orgId, name)!;
  }

  async listApps(orgId: string): Promise<AppRow[]> {
    return this.db.prepare(`SELECT ${APP_COLUMNS} FROM apps WHERE org_id = ? ORDER BY name`).all(orgId) as AppRow[];
  }

  // --- sailboxes ---

  async insertSailbox(box: NewSailbox, rules: InsertRules): Promise<SailboxRow> {
    return this.immediate(() => {
      if (box.name !== null) {
        const taken = this.db.prepare("SELECT 1 FROM sailboxes WHERE app_id = ? AND name = ? AND live = 1").get(box.appId, box.name);
        if (taken) throw new NameTakenError(box.name);
      }
      const tcpPorts = (box.ports ?? []).filter((p) => p.protocol === "tcp").length;
      this.checkOrgCaps(box, tcpPorts, rules.tcpEndpointsDefault);
      const publicPorts = tcpPorts && rules.tcp ? this.allocateTcpPorts(tcpPorts, rules.tcp) : [];
      this.db
        .prepare(
          `INSERT INTO sailboxes (${NEW_SAILBOX_COLUMNS}, status, live) VALUES (${NEW_SAILBOX_COLUMNS.split(",")
            .map(() => "?")
            .join(", ")}, 'creating', 1)`,
        )
        .run(...newSailboxValues(box));
      const insertListener = this.db.prepare("INSERT INTO listeners (sailbox_id, port, protocol, cidr_allowlist, allow_public, public_port, h2c, proxy_protocol) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
      let next = 0;
      for (const p of box.ports ?? []) {
        const publicPort = p.protocol === "tcp" ? (publicPorts[next++] ?? null) : null;
        insertListener.run(box.id, p.port, p.protocol, JSON.stringify(p.cidrAllowlist ?? []), p.allowPublic ? 1 : 0, publicPort, p.h2c ? 1 : 0, p.proxyProtocol ? 1 : 0);
      }
      return this.sailbox(box.id)!;
    });
  }

  /**
   * A transaction that takes the write lock before its first read (BEGIN IMMEDIATE), so a second
   * connection to the file waits (busy_timeout) instead of checking a snapshot it can no longer
   * write on.
   */
  private immediate<T>(work: () => T): T {
    return this.db.transaction(work).immediate();
  }

  /** The org's caps and raw-TCP endpoints, inside insertSailbox's transaction. */
  private checkOrgCaps(box: NewSailbox, tcpPorts: number, tcpDefault: number): void {
    const refusal = orgCapRefusal(box, tcpPorts, this.limitsOf(box.orgId), { ...this.usageOf(box.orgId), tcpEndpoints: this.tcpInUse(box.orgId) }, tcpDefault);
    if (refusal) throw refusal;
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

  async getSailbox(id: string): Promise<SailboxRow | undefined> {
    return this.sailbox(id);
  }

  private sailbox(id: string): SailboxRow | undefined {
    return this.db.prepare(`SELECT ${SAILBOX_COLUMNS} FROM sailboxes WHERE id = ?`).get(id) as SailboxRow | undefined;
  }

  async listSailboxes(filter: { orgId: string; appId?: string; name?: string; liveOnly?: boolean }): Promise<SailboxRow[]> {
    const where = ["org_id = @orgId"];
    if (filter.appId) where.push("app_id = @appId");
    if (filter.name) where.push("name = @name");
    if (filter.liveOnly) where.push("live = 1");
    return this.db
      .prepare(`SELECT ${SAILBOX_COLUMNS} FROM sailboxes WHERE ${where.join(" AND ")} ORDER BY created_at DESC, id`)
      .all({ orgId: filter.orgId, appId: filter.appId, name: filter.name }) as SailboxRow[];
  }

  async idleCandidates(): Promise<SailboxRow[]> {
    return this.db.prepare(`SELECT ${SAILBOX_COLUMNS} FROM sailboxes WHERE status = 'running' AND idle_timeout IS NOT NULL`).all() as SailboxRow[];
  }

  async liveSailboxes(): Promise<SailboxRow[]> {
    return this.db.prepare(`SELECT ${SAILBOX_COLUMNS} FROM sailboxes WHERE live = 1`).all() as SailboxRow[];
  }

  async countLiveByStatus(): Promise<Record<string, number>> {
    const rows = this.db.prepare("SELECT status, COUNT(*) AS n FROM sailboxes WHERE live = 1 GROUP BY status").all() as Array<{ status: string; n: number }>;
    return Object.fromEntries(rows.map((r) => [r.status, r.n]));
  }

  async setStatus(id: string, status: SailboxStatus, failureReason: string | null = null): Promise<void> {
    const ended = status === "terminated" || status === "failed";
    this.db
      .prepare(
        `UPDATE sailboxes SET status = ?, failure_reason = COALESCE(?, failure_reason),
           live = ?, terminated_at = CASE WHEN ? THEN ? ELSE terminated_at END WHERE id = ?`,
      )
      .run(status, failureReason, ended ? 0 : 1, ended ? 1 : 0, now(), id);
  }

  async applyNodeState(id: string, state: { status: SailboxStatus; seq: number; failureReason?: string | null }): Promise<boolean> {
    const ended = state.status === "terminated" || state.status === "failed";
    const kept = this.db
      .prepare(
        `UPDATE sailboxes SET status = ?, node_seq = ?, failure_reason = COALESCE(?, failure_reason), live = ?, terminated_at = CASE WHEN ? THEN ? ELSE terminated_at END
         WHERE id = ? AND live = 1 AND status <> 'creating' AND node_seq < ?`,
      )
      .run(state.status, state.seq, state.failureReason ?? null, ended ? 0 : 1, ended ? 1 : 0, now(), id, state.seq);
    return kept.changes === 1;
  }

  async setNetworkPolicy(id: string, policy: string): Promise<void> {
    this.db.prepare("UPDATE sailboxes SET network_policy = ? WHERE id = ?").run(policy, id);
  }

  async setDiskInodes(id: string, inodes: number): Promise<void> {
    this.db.prepare("UPDATE sailboxes SET disk_inodes = ? WHERE id = ?").run(inodes, id);
  }

  async deleteSailbox(id: string): Promise<void> {
    this.db.transaction(() => {
      this.db.prepare("DELETE FROM idempotent_creates WHERE sailbox_id = ?").run(id);
      this.db.prepare("DELETE FROM execs WHERE sailbox_id = ?").run(id);
      this.db.prepare("DELETE FROM listeners WHERE sailbox_id = ?").run(id);
      this.db.prepare("DELETE FROM sailboxes WHERE id = ?").run(id);
    })();
  }

  // --- leases ---

  async takeLease(sailboxId: string, holder: string, ttlMs: number): Promise<boolean> {
    const at = Date.now();
    const taken = this.db
      .prepare("UPDATE sailboxes SET lease_holder = ?, lease_until = ? WHERE id = ? AND (lease_holder IS NULL OR lease_holder = ? OR lease_until < ?)")
      .run(holder, at + ttlMs, sailboxId, holder, at);
    return taken.changes === 1;
  }

  async renewLease(sailboxId: string, holder: string, ttlMs: number): Promise<boolean> {
    return this.db.prepare("UPDATE sailboxes SET lease_until = ? WHERE id = ? AND lease_holder = ?").run(Date.now() + ttlMs, sailboxId, holder).changes === 1;
  }

  async releaseLease(sailboxId: string, holder: string): Promise<void> {
    this.db.prepare("UPDATE sailboxes SET lease_holder = NULL, lease_until = NULL WHERE id = ? AND lease_holder = ?").run(sailboxId, holder);
  }

  // --- nodes ---

  async heartbeatNode(node: { id: string; url: string; info: string }, leaseMs: number | null): Promise<{ node: NodeRow; wasLost: boolean }> {
    return this.immediate(() => {
      const before = this.nodeRow(node.id);
      const until = leaseMs === null ? null : Date.now() + leaseMs;
      if (!before) {
        this.db.prepare("INSERT INTO nodes (id, url, info, generation, lease_until, draining, lost_at, joined_at) VALUES (?, ?, ?, 1, ?, 0, NULL, ?)").run(node.id, node.url, node.info, until, now());
      } else {
        this.db
          .prepare("UPDATE nodes SET url = ?, info = ?, lease_until = ?, generation = generation + (CASE WHEN lost_at IS NULL THEN 0 ELSE 1 END), lost_at = NULL WHERE id = ?")
          .run(node.url, node.info, until, node.id);
      }
      return { node: this.nodeRow(node.id)!, wasLost: before?.lostAt != null };
    });
  }

  async getNode(id: string): Promise<NodeRow | undefined> {
    return this.nodeRow(id);
  }

  private nodeRow(id: string): NodeRow | undefined {
    const row = this.db.prepare(`SELECT ${NODE_COLUMNS} FROM nodes n WHERE n.id = ?`).get(id) as (NodeRow & { draining: number }) | undefined;
    return row && decodeNode(row);
  }

  async listNodes(): Promise<NodeUsageRow[]> {
    const rows = this.db
      .prepare(`SELECT ${NODE_COLUMNS}, COALESCE(b.boxes, 0) AS boxes, COALESCE(b.cpu, 0) AS cpu, COALESCE(b.memory, 0) AS "memoryMiB", ? AS "nowMs" FROM nodes n ${NODE_USAGE_JOIN} ORDER BY n.id`)
      .all(Date.now()) as Array<NodeUsageRow & { draining: number }>;
    return rows.map(decodeNode);
  }

  async setNodeDraining(id: string, draining: boolean): Promise<boolean> {
    return this.db.prepare("UPDATE nodes SET draining = ? WHERE id = ?").run(draining ? 1 : 0, id).changes === 1;
  }

  async declareLapsedNodesLost(graceMs: number): Promise<string[]> {
    const rows = this.db.prepare("UPDATE nodes SET lost_at = ? WHERE lost_at IS NULL AND lease_until IS NOT NULL AND lease_until + ? < ? RETURNING id").all(now(), graceMs, Date.now()) as Array<{
      id: string;
    }>;
    return rows.map((r) => r.id);
  }

  async extendNodeLeases(leaseMs: number): Promise<void> {
    this.db.prepare("UPDATE nodes SET lease_until = MAX(lease_until, ?) WHERE lost_at IS NULL AND lease_until IS NOT NULL").run(Date.now() + leaseMs);
  }

  async liveSailboxesOn(nodeId: string): Promise<SailboxRow[]> {
    return this.db.prepare(`SELECT ${SAILBOX_COLUMNS} FROM sailboxes WHERE live = 1 AND node_id = ?`).all(nodeId) as SailboxRow[];
  }

  // --- idempotent creates ---

  async findIdempotentCreate(orgId: string, key: string): Promise<{ requestSha256: string; sailboxId: string } | undefined> {
    return this.db.prepare("SELECT request_sha256 AS requestSha256, sailbox_id AS sailboxId FROM idempotent_creates WHERE org_id = ? AND key = ?").get(orgId, key) as
      { requestSha256: string; sailboxId: string } | undefined;
  }

  async rememberIdempotentCreate(orgId: string, key: string, requestSha256: string, sailboxId: string): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO idempotent_creates (org_id, key, request_sha256, sailbox_id, created_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (org_id, key) DO UPDATE SET request_sha256 = excluded.request_sha256, sailbox_id = excluded.sailbox_id, created_at = excluded.created_at`,
      )
      .run(orgId, key, requestSha256, sailboxId, now());
  }

  async forgetIdempotentCreates(before: string): Promise<number> {
    return this.db.prepare("DELETE FROM idempotent_creates WHERE created_at < ?").run(before).changes;
  }

  // --- listeners ---

  async listListeners(sailboxId: string): Promise<ListenerRow[]> {
    const rows = this.db.prepare(`SELECT ${LISTENER_COLUMNS} FROM listeners l WHERE l.sailbox_id = ? ORDER BY l.port`).all(sailboxId) as Array<StoredListener<ListenerRow>>;
    return rows.map(decodeListener);
  }

  async listListenersOf(sailboxIds: string[]): Promise<Map<string, ListenerRow[]>> {
    const rows = this.db
      .prepare(`SELECT ${LISTENER_COLUMNS} FROM listeners l WHERE l.sailbox_id IN (SELECT value FROM json_each(?)) ORDER BY l.sailbox_id, l.port`)
      .all(JSON.stringify(sailboxIds)) as Array<StoredListener<ListenerRow>>;
    return bySailbox(sailboxIds, rows.map(decodeListener));
  }

  async liveListeners(): Promise<Array<ListenerRow & { status: SailboxStatus }>> {
    const rows = this.db
      .prepare(
        `SELECT ${LISTENER_COLUMNS}, s.status
         FROM listeners l JOIN sailboxes s ON s.id = l.sailbox_id WHERE s.live = 1 ORDER BY l.sailbox_id, l.port`,
      )
      .all() as Array<StoredListener<ListenerRow & { status: SailboxStatus }>>;
    return rows.map(decodeListener);
  }

  // --- execs ---

  async insertExec(exec: Omit<ExecRow, "startedAt">): Promise<ExecRow> {
    const row = { ...exec, startedAt: now() };
    this.db.prepare("INSERT INTO execs (id, sailbox_id, cmd, background, started_at) VALUES (?, ?, ?, ?, ?)").run(row.id, row.sailboxId, row.cmd, row.background ? 1 : 0, row.startedAt);
    return row;
  }

  async getExec(sailboxId: string, id: string): Promise<ExecRow | undefined> {
    const row = this.db.prepare("SELECT id, sailbox_id AS sailboxId, cmd, background, started_at AS startedAt FROM execs WHERE sailbox_id = ? AND id = ?").get(sailboxId, id) as
      (Omit<ExecRow, "background"> & { background: number }) | undefined;
    return row && { ...row, background: row.background === 1 };
  }

  async listBackgroundExecs(sailboxId: string, limit = 100): Promise<ExecRow[]> {
    const rows = this.db
      .prepare("SELECT id, sailbox_id AS sailboxId, cmd, started_at AS startedAt FROM execs WHERE sailbox_id = ? AND background = 1 ORDER BY started_at DESC, id DESC LIMIT ?")
      .all(sailboxId, limit) as Array<Omit<ExecRow, "background">>;
    return rows.map((row) => ({ ...row, background: true }));
  }
}
