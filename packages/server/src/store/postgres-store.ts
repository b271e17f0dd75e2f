import pg from "pg";
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
  type OrgHoldings,
  type StoredListener,
  type StoredOrg,
} from "./rows.js";
import {
  hashToken,
  NameTakenError,
  newId,
  newToken,
  StoreError,
  StoreUnavailableError,
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

export interface PostgresStoreOptions {
  /** Connections in the pool: at most this many statements in flight at once. @default 10 */
  poolSize?: number;
  /**
   * Deadline of every statement, waits for row locks included: the server cancels it
   * (statement_timeout), and a transaction left idle that long loses its session and its locks.
   * @default 5000
   */
  statementTimeoutMs?: number;
  /** Deadline to open a connection, and to wait for a free one in the pool. @default 5000 */
  connectTimeoutMs?: number;
  /** Deadline of `open()`'s migrations, the wait for another process's migrations included. @default 300000 */
  migrationTimeoutMs?: number;
}

const DEFAULTS: Required<PostgresStoreOptions> = { poolSize: 10, statementTimeoutMs: 5_000, connectTimeoutMs: 5_000, migrationTimeoutMs: 300_000 };
/**
 * The client's own deadline is the server's plus this: the server cancels first and says why;
 * the client gives up alone only when no answer comes at all (a dead server or a cut network).
 */
const CLIENT_SLACK_MS = 1_000;

/** Advisory lock keys (classid, objid) of Sail in its database: one for migrations, one for public TCP ports. */
const SAIL_LOCKS = 0x5a11;
const MIGRATION_LOCK = 1;
const PUBLIC_PORTS_LOCK = 2;

/** The database's clock in epoch ms: every holder judges a lease by one clock, whatever its own says. */
const NOW_MS = "(EXTRACT(EPOCH FROM now()) * 1000)::bigint";

/**
 * SQLSTATEs that say "not now" rather than "no": the statement's deadline (57014), the session's
 * idle-in-transaction deadline (25P03), the server shutting down or starting (57P0x), too many
 * connections (53300), a lock timeout (55P03), the connection exceptions (class 08), and a write
 * reaching a server in recovery (25006, read_only_sql_transaction): during a failover a session
 * can land on a standby, or on an old primary Patroni demoted before the proxy's health check
 * marked it down; a write succeeds once it reaches the new primary.
 */
const UNAVAILABLE_STATES = new Set(["57014", "25P03", "57P01", "57P02", "57P03", "53300", "55P03", "25006"]);

/** int8 (COUNT, SUM of integers, epoch ms, sequence numbers) as a number: all stay below 2^53. */
const types = new pg.TypeOverrides();
types.setTypeParser(pg.types.builtins.INT8, Number);

/**
 * The server store: PostgreSQL through a pool of node-postgres connections, for control planes
 * in more than one process. Every method is one statement or one transaction, and the database
 * does the concurrency control (READ COMMITTED):
 * - `insertSailbox` locks the org's row (FOR NO KEY UPDATE), so creates in one org queue and each
 *   counts what the one before it committed; the live-name unique index is the second wall.
 * - public TCP ports, unique across orgs, are chosen under a transaction-level advisory lock.
 * - leases are conditional UPDATEs judged by the database's clock (`now()`).
 */
export class PostgresStore implements Store {
  private readonly pool: pg.Pool;
  private readonly options: Required<PostgresStoreOptions>;

  /** Opens no connection yet; `open()` (or `PostgresStore.connect`) migrates. */
  constructor(
    private readonly url: string,
    options: PostgresStoreOptions = {},
  ) {
    if (!/^postgres(ql)?:\/\//.test(url)) throw new TypeError(`a PostgreSQL store takes a postgres:// URL (postgres://user:password@host:5432/database), got ${JSON.stringify(url)}`);
    this.options = { ...DEFAULTS, ...options };
    const { poolSize, statementTimeoutMs, connectTimeoutMs } = this.options;
    if (!Number.isInteger(poolSize) || poolSize < 1) throw new TypeError(`poolSize must be a whole number of connections, at least 1, got ${poolSize}`);
    this.pool = new pg.Pool({
      ...this.connectionConfig(statementTimeoutMs),
      max: poolSize,
      // a session stalled inside a transaction (a paused process) would hold its org's lock: end it
      idle_in_transaction_session_timeout: statementTimeoutMs,
      connectionTimeoutMillis: connectTimeoutMs,
    });
    // a pooled connection that breaks while idle (a server restart) is dropped by the pool and
    // reopened on next use; without a listener its error would end the process
    this.pool.on("error", () => {});
  }

  /** A store on `url`, migrated to the latest schema. */
  static async connect(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
    const store = new PostgresStore(url, options);
    try {
      await store.open();
    } catch (err) {
      await store.close();
      throw err;
    }
    return store;
  }

  /** Applies pending migrations (once, when several processes open at once). */
  async open(): Promise<this> {
    await this.migrate();
    return this;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  private connectionConfig(statementTimeoutMs: number): pg.ClientConfig {
    return {
      connectionString: this.url,
      statement_timeout: statementTimeoutMs,
      query_timeout: statementTimeoutMs + CLIENT_SLACK_MS,
      connectionTimeoutMillis: this.options.connectTimeoutMs,
      keepAlive: true,
      application_name: "sail",
      types,
    };
  }

  /**
   * Under a session advisory lock on a connection of its own, so a second control plane that
   * starts at the same moment waits and then finds nothing to do; each migration commits in its
   * own transaction with its number (PostgreSQL's DDL is transactional).
   */
  private async migrate(): Promise<void> {
    const client = new pg.Client(this.connectionConfig(this.options.migrationTimeoutMs));
    client.on("error", () => {}); // surfaces through the query that fails
    await unavailableOnFailure(() => client.connect());
    try {
      await client.query("SELECT pg_advisory_lock($1, $2)", [SAIL_LOCKS, MIGRATION_LOCK]);
      await client.query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)");
      const { rows } = await client.query<{ applied: number }>("SELECT COALESCE(MAX(version), 0) AS applied FROM schema_migrations");
      for (let version = rows[0]!.applied + 1; version <= MIGRATIONS.length; version++) {
        await client.query("BEGIN");
        try {
          await client.query(migrationSql(MIGRATIONS[version - 1]!, "postgres"));
          await client.query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", [version, now()]);
          await client.query("COMMIT");
        } catch (err) {
          await client.query("ROLLBACK").catch(() => {});
          throw new StoreError(`migration ${version} failed: ${(err as Error).message}`, { cause: err });
        }
      }
    } catch (err) {
      throw unavailable(err);
    } finally {
      // the session's end releases the advisory lock too
      await client.end().catch(() => {});
    }
  }

  /** One statement on a pooled connection. */
  private async query<R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
    return unavailableOnFailure(() => this.pool.query<R>(text, values));
  }

  private async row<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<R | undefined> {
    return (await this.query<R>(text, values)).rows[0];
  }

  private async rows<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<R[]> {
    return (await this.query<R>(text, values)).rows;
  }

  /**
   * `work` in one transaction on one connection. A connection whose state is unknown (a client
   * deadline, a broken socket) is destroyed rather than returned to the pool; closing it rolls
   * the transaction back on the server. So is one the server answered "not now": it may lead to a
   * server that will not take writes again (a standby, an old primary a failover demoted), and
   * the pool's next connection goes where the database's address leads now. (A single
   * statement's connection is destroyed on any error by the pool itself: pg-pool's `query`.)
   */
  private async transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await unavailableOnFailure(() => this.pool.connect());
    let broken: Error | undefined;
    try {
      await client.query("BEGIN");
      const result = await work(client);
      await client.query("COMMIT");
      return result;
    } catch (err) {
      if (notNow(err)) broken = err as Error;
      else if (err instanceof pg.DatabaseError || err instanceof StoreError || err instanceof StoreUnavailableError)
        await client.query("ROLLBACK").catch((rollbackFailed: Error) => (broken = rollbackFailed));
      else broken = err as Error;
      throw unavailable(err);
    } finally {
      client.release(broken);
    }
  }

  // --- orgs and tokens ---

  async findOrgByName(name: string): Promise<OrgRow | undefined> {
    const row = await this.row<StoredOrg>("SELECT id, name, operator FROM orgs WHERE name = $1", [name]);
    return row && decodeOrg(row);
  }

  async ensureOrg(name: string, options: { operator?: boolean } = {}): Promise<OrgRow> {
    // two statements: the SELECT's snapshot is taken after the INSERT waited out a racing one
    await this.query("INSERT INTO orgs (id, name, operator, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING", [newId("org-"), name, options.operator ? 1 : 0, now()]);
    return (await this.findOrgByName(name))!;
  }

  async createToken(orgId: string, label: string): Promise<{ id: string; token: string }> {
    const token = newToken();
    const id = newId("tok-");
    await this.query("INSERT INTO tokens (id, org_id, sha256, label, created_at) VALUES ($1, $2, $3, $4, $5)", [id, orgId, hashToken(token), label, now()]);
    return { id, token };
  }

  async orgForToken(token: string): Promise<OrgRow | undefined> {
    return this.orgForTokenHash(hashToken(token));
  }

  async orgForTokenHash(sha256: string): Promise<OrgRow | undefined> {
    const row = await this.row<StoredOrg>("SELECT o.id, o.name, o.operator FROM tokens t JOIN orgs o ON o.id = t.org_id WHERE t.sha256 = $1 AND t.revoked_at IS NULL", [sha256]);
    return row && decodeOrg(row);
  }

  async listTokens(orgId: string): Promise<TokenRow[]> {
    return this.rows<TokenRow>(`SELECT ${TOKEN_COLUMNS} FROM tokens t JOIN orgs o ON o.id = t.org_id WHERE t.org_id = $1 ORDER BY t.created_at COLLATE "C", t.id COLLATE "C"`, [orgId]);
  }

  async getToken(id: string, orgId: string | undefined): Promise<TokenRow | undefined> {
    const row = await this.row<TokenRow & { orgId: string }>(`SELECT ${TOKEN_COLUMNS}, t.org_id AS "orgId" FROM tokens t JOIN orgs o ON o.id = t.org_id WHERE t.id = $1`, [id]);
    if (!row || (orgId !== undefined && row.orgId !== orgId)) return undefined;
    const { orgId: _, ...token } = row;
    return token;
  }

  async revokeToken(id: string): Promise<void> {
    await this.query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", [now(), id]);
  }

  // --- org limits and usage ---

  async orgLimits(orgId: string): Promise<OrgLimits> {
    return (await this.row<OrgLimits>(`SELECT ${LIMIT_COLUMNS} FROM orgs WHERE id = $1`, [orgId])) ?? NO_LIMITS;
  }

  async setOrgLimits(orgId: string, limits: Partial<OrgLimits>): Promise<void> {
    const columns: Record<keyof OrgLimits, string> = { sailboxes: "sailbox_limit", cpu: "cpu_limit", memoryMiB: "memory_limit_mib", tcpEndpoints: "tcp_limit" };
    const set = (Object.keys(limits) as Array<keyof OrgLimits>).filter((key) => limits[key] !== undefined);
    if (!set.length) return;
    await this.query(`UPDATE orgs SET ${set.map((key, i) => `${columns[key]} = $${i + 2}`).join(", ")} WHERE id = $1`, [orgId, ...set.map((key) => limits[key] ?? null)]);
  }

  async orgUsage(orgId: string): Promise<{ sailboxes: number; cpu: number; memoryMiB: number }> {
    return (await this.row<{ sailboxes: number; cpu: number; memoryMiB: number }>(
      `SELECT COUNT(*) AS sailboxes, COALESCE(SUM(cpu), 0) AS cpu, COALESCE(SUM(memory_mib), 0) AS "memoryMiB" FROM sailboxes WHERE live = 1 AND org_id = $1`,
      [orgId],
    ))!;
  }

  async countLiveTcpListeners(orgId: string): Promise<number> {
    return (await this.row<{ n: number }>(`SELECT ${TCP_IN_USE} AS n`, [orgId]))!.n;
  }

  // --- apps ---

  async findApp(orgId: string, name: string): Promise<AppRow | undefined> {
    return this.row<AppRow>(`SELECT ${APP_COLUMNS} FROM apps WHERE org_id = $1 AND name = $2`, [orgId, name]);
  }

  async getApp(orgId: string, id: string): Promise<AppRow | undefined> {
    return this.row<AppRow>(`SELECT ${APP_COLUMNS} FROM apps WHERE org_id = $1 AND id = $2`, [orgId, id]);
  }

  async mintApp(orgId: string, name: string): Promise<AppRow> {
    await this.query("INSERT INTO apps (id, org_id, name, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (org_id, name) DO NOTHING", [newId("app-"), orgId, name, now()]);
    return (await this.findApp(orgId, name))!;
  }

  async listApps(orgId: string): Promise<AppRow[]> {
    return this.rows<AppRow>(`SELECT ${APP_COLUMNS} FROM apps WHERE org_id = $1 ORDER BY name COLLATE "C"`, [orgId]);
  }

  // --- sailboxes ---

  async insertSailbox(box: NewSailbox, rules: InsertRules): Promise<SailboxRow> {
    const tcpPorts = (box.ports ?? []).filter((p) => p.protocol === "tcp").length;
    try {
      return await this.transaction(async (client) => {
        // Creates in one org queue on its row. NO KEY UPDATE is enough to queue them and lets
        // inserts that only reference the org (tokens, apps) through.
        const limits = (await client.query<OrgLimits>(`SELECT ${LIMIT_COLUMNS} FROM orgs WHERE id = $1 FOR NO KEY UPDATE`, [box.orgId])).rows[0] ?? NO_LIMITS;
        // A statement of its own: READ COMMITTED takes each statement's snapshot when it starts,
        // so this one, begun after the lock was granted, sees every create that held it before.
        const held = (await client.query<OrgHoldings & { nameTaken: boolean }>(HOLDINGS, [box.orgId, box.appId, box.name])).rows[0]!;
        if (held.nameTaken) throw new NameTakenError(box.name!);
        const refusal = orgCapRefusal(box, tcpPorts, limits, held, rules.tcpEndpointsDefault);
        if (refusal) throw refusal;
        const publicPorts = tcpPorts && rules.tcp ? await allocateTcpPorts(client, tcpPorts, rules.tcp) : [];
        return insertRows(client, box, publicPorts);
      });
    } catch (err) {
      // the unique index is the second wall (a row written around this method)
      if (err instanceof pg.DatabaseError && err.code === "23505" && err.constraint === "sailboxes_live_name") throw new NameTakenError(box.name!);
      throw err;
    }
  }

  async getSailbox(id: string): Promise<SailboxRow | undefined> {
    return this.row<SailboxRow>(`SELECT ${SAILBOX_COLUMNS} FROM sailboxes WHERE id = $1`, [id]);
  }

  async listSailboxes(filter: { orgId: string; appId?: string; name?: string; liveOnly?: boolean }): Promise<SailboxRow[]> {
    const values: unknown[] = [filter.orgId];
    const where = ["org_id = $1"];
    if (filter.appId) where.push(`app_id = $${values.push(filter.appId)}`);
    if (filter.name) where.push(`name = $${values.push(filter.name)}`);
    if (filter.liveOnly) where.push("live = 1");
    return this.rows<SailboxRow>(`SELECT ${SAILBOX_COLUMNS} FROM sailboxes WHERE ${where.join(" AND ")} ORDER BY created_at COLLATE "C" DESC, id COLLATE "C"`, values);
  }

  async idleCandidates(): Promise<SailboxRow[]> {
    return this.rows<SailboxRow>(`SELECT ${SAILBOX_COLUMNS} FROM sailboxes WHERE status = 'running' AND idle_timeout IS NOT NULL`, []);
  }

  async liveSailboxes(): Promise<SailboxRow[]> {
    return this.rows<SailboxRow>(`SELECT ${SAILBOX_COLUMNS} FROM sailboxes WHERE live = 1`, []);
  }

  async countLiveByStatus(): Promise<Record<string, number>> {
    const rows = await this.rows<{ status: string; n: number }>("SELECT status, COUNT(*) AS n FROM sailboxes WHERE live = 1 GROUP BY status", []);
    return Object.fromEntries(rows.map((r) => [r.status, r.n]));
  }

  async setStatus(id: string, status: SailboxStatus, failureReason: string | null = null): Promise<void> {
    const ended = status === "terminated" || status === "failed";
    await this.query(
      `UPDATE sailboxes SET status = $2, failure_reason = COALESCE($3, failure_reason), live = $4,
         terminated_at = CASE WHEN $4 = 0 THEN $5 ELSE terminated_at END WHERE id = $1`,
      [id, status, failureReason, ended ? 0 : 1, now()],
    );
  }

  async applyNodeState(id: string, state: { status: SailboxStatus; seq: number; failureReason?: string | null }): Promise<boolean> {
    const ended = state.status === "terminated" || state.status === "failed";
    const kept = await this.query(
      `UPDATE sailboxes SET status = $2, node_seq = $3, failure_reason = COALESCE($4, failure_reason), live = $5,
         terminated_at = CASE WHEN $5 = 0 THEN $6 ELSE terminated_at END
       WHERE id = $1 AND live = 1 AND status <> 'creating' AND node_seq < $3`,
      [id, state.status, state.seq, state.failureReason ?? null, ended ? 0 : 1, now()],
    );
    return kept.rowCount === 1;
  }

  async setNetworkPolicy(id: string, policy: string): Promise<void> {
    await this.query("UPDATE sailboxes SET network_policy = $2 WHERE id = $1", [id, policy]);
  }

  async setDiskInodes(id: string, inodes: number): Promise<void> {
    await this.query("UPDATE sailboxes SET disk_inodes = $2 WHERE id = $1", [id, inodes]);
  }

  async deleteSailbox(id: string): Promise<void> {
    await this.transaction(async (client) => {
      for (const table of ["idempotent_creates", "execs", "listeners"]) await client.query(`DELETE FROM ${table} WHERE sailbox_id = $1`, [id]);
      await client.query("DELETE FROM sailboxes WHERE id = $1", [id]);
    });
  }

  // --- leases: one UPDATE each; a racing holder waits on the row, then its WHERE is judged again
  // on the row the first one wrote. lease_until is BIGINT: a fractional ttlMs is rounded up ---

  async takeLease(sailboxId: string, holder: string, ttlMs: number): Promise<boolean> {
    const taken = await this.query(
      `UPDATE sailboxes SET lease_holder = $2, lease_until = ${NOW_MS} + $3
       WHERE id = $1 AND (lease_holder IS NULL OR lease_holder = $2 OR lease_until < ${NOW_MS})`,
      [sailboxId, holder, Math.ceil(ttlMs)],
    );
    return taken.rowCount === 1;
  }

  async renewLease(sailboxId: string, holder: string, ttlMs: number): Promise<boolean> {
    const renewed = await this.query(`UPDATE sailboxes SET lease_until = ${NOW_MS} + $3 WHERE id = $1 AND lease_holder = $2`, [sailboxId, holder, Math.ceil(ttlMs)]);
    return renewed.rowCount === 1;
  }

  async releaseLease(sailboxId: string, holder: string): Promise<void> {
    await this.query("UPDATE sailboxes SET lease_holder = NULL, lease_until = NULL WHERE id = $1 AND lease_holder = $2", [sailboxId, holder]);
  }

  // --- nodes ---

  async heartbeatNode(node: { id: string; url: string; info: string }, leaseMs: number | null): Promise<{ node: NodeRow; wasLost: boolean }> {
    return this.transaction(async (client) => {
      // the node's row locked (or the insert racing for it), so a sweeper's declaration and this beat are ordered
      const before = (await client.query<{ lostAt: string | null }>(`SELECT lost_at AS "lostAt" FROM nodes WHERE id = $1 FOR UPDATE`, [node.id])).rows[0];
      const until = leaseMs === null ? null : `${NOW_MS} + ${Math.round(leaseMs)}`;
      await client.query(
        `INSERT INTO nodes AS n (id, url, info, generation, lease_until, draining, lost_at, joined_at) VALUES ($1, $2, $3, 1, ${until ?? "NULL"}, 0, NULL, $4)
         ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, info = EXCLUDED.info, lease_until = EXCLUDED.lease_until,
           generation = n.generation + (CASE WHEN n.lost_at IS NULL THEN 0 ELSE 1 END), lost_at = NULL`,
        [node.id, node.url, node.info, now()],
      );
      const row = (await client.query<NodeRow & { draining: number }>(`SELECT ${NODE_COLUMNS} FROM nodes n WHERE n.id = $1`, [node.id])).rows[0]!;
      return { node: decodeNode(row), wasLost: before?.lostAt != null };
    });
  }

  async getNode(id: string): Promise<NodeRow | undefined> {
    const row = await this.row<NodeRow & { draining: number }>(`SELECT ${NODE_COLUMNS} FROM nodes n WHERE n.id = $1`, [id]);
    return row && decodeNode(row);
  }

  async listNodes(): Promise<NodeUsageRow[]> {
    const rows = await this.rows<NodeUsageRow & { draining: number }>(
      `SELECT ${NODE_COLUMNS}, COALESCE(b.boxes, 0) AS boxes, COALESCE(b.cpu, 0) AS cpu, COALESCE(b.memory, 0) AS "memoryMiB", ${NOW_MS} AS "nowMs" FROM nodes n ${NODE_USAGE_JOIN} ORDER BY n.id`,
      [],
    );
    return rows.map(decodeNode);
  }

  async setNodeDraining(id: string, draining: boolean): Promise<boolean> {
    return ((await this.query("UPDATE nodes SET draining = $1 WHERE id = $2", [draining ? 1 : 0, id])).rowCount ?? 0) === 1;
  }

  async declareLapsedNodesLost(graceMs: number): Promise<string[]> {
    // a second sweeper's UPDATE waits on the row and then finds lost_at set: each node is declared once
    const rows = await this.rows<{ id: string }>(`UPDATE nodes SET lost_at = $1 WHERE lost_at IS NULL AND lease_until IS NOT NULL AND lease_until + $2 < ${NOW_MS} RETURNING id`, [
      now(),
      Math.round(graceMs),
    ]);
    return rows.map((r) => r.id);
  }

  async extendNodeLeases(leaseMs: number): Promise<void> {
    await this.query(`UPDATE nodes SET lease_until = GREATEST(lease_until, ${NOW_MS} + $1) WHERE lost_at IS NULL AND lease_until IS NOT NULL`, [Math.round(leaseMs)]);
  }

  async liveSailboxesOn(nodeId: string): Promise<SailboxRow[]> {
    return this.rows<SailboxRow>(`SELECT ${SAILBOX_COLUMNS} FROM sailboxes WHERE live = 1 AND node_id = $1`, [nodeId]);
  }

  // --- idempotent creates ---

  async findIdempotentCreate(orgId: string, key: string): Promise<{ requestSha256: string; sailboxId: string } | undefined> {
    return this.row<{ requestSha256: string; sailboxId: string }>(`SELECT request_sha256 AS "requestSha256", sailbox_id AS "sailboxId" FROM idempotent_creates WHERE org_id = $1 AND key = $2`, [
      orgId,
      key,
    ]);
  }

  async rememberIdempotentCreate(orgId: string, key: string, requestSha256: string, sailboxId: string): Promise<void> {
    await this.query(
      `INSERT INTO idempotent_creates (org_id, key, request_sha256, sailbox_id, created_at) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (org_id, key) DO UPDATE SET request_sha256 = excluded.request_sha256, sailbox_id = excluded.sailbox_id, created_at = excluded.created_at`,
      [orgId, key, requestSha256, sailboxId, now()],
    );
  }

  async forgetIdempotentCreates(before: string): Promise<number> {
    return (await this.query("DELETE FROM idempotent_creates WHERE created_at < $1", [before])).rowCount ?? 0;
  }

  // --- listeners ---

  async listListeners(sailboxId: string): Promise<ListenerRow[]> {
    const rows = await this.rows<StoredListener<ListenerRow>>(`SELECT ${LISTENER_COLUMNS} FROM listeners l WHERE l.sailbox_id = $1 ORDER BY l.port`, [sailboxId]);
    return rows.map(decodeListener);
  }

  async listListenersOf(sailboxIds: string[]): Promise<Map<string, ListenerRow[]>> {
    const rows = await this.rows<StoredListener<ListenerRow>>(`SELECT ${LISTENER_COLUMNS} FROM listeners l WHERE l.sailbox_id = ANY($1) ORDER BY l.sailbox_id, l.port`, [sailboxIds]);
    return bySailbox(sailboxIds, rows.map(decodeListener));
  }

  async liveListeners(): Promise<Array<ListenerRow & { status: SailboxStatus }>> {
    const rows = await this.rows<StoredListener<ListenerRow & { status: SailboxStatus }>>(
      `SELECT ${LISTENER_COLUMNS}, s.status FROM listeners l JOIN sailboxes s ON s.id = l.sailbox_id WHERE s.live = 1 ORDER BY l.sailbox_id COLLATE "C", l.port`,
      [],
    );
    return rows.map(decodeListener);
  }

  // --- execs ---

  async insertExec(exec: Omit<ExecRow, "startedAt">): Promise<ExecRow> {
    const row = { ...exec, startedAt: now() };
    await this.query("INSERT INTO execs (id, sailbox_id, cmd, background, started_at) VALUES ($1, $2, $3, $4, $5)", [row.id, row.sailboxId, row.cmd, row.background ? 1 : 0, row.startedAt]);
    return row;
  }

  async getExec(sailboxId: string, id: string): Promise<ExecRow | undefined> {
    const row = await this.row<Omit<ExecRow, "background"> & { background: number }>(
      `SELECT id, sailbox_id AS "sailboxId", cmd, background, started_at AS "startedAt" FROM execs WHERE sailbox_id = $1 AND id = $2`,
      [sailboxId, id],
    );
    return row && { ...row, background: row.background === 1 };
  }

  async listBackgroundExecs(sailboxId: string, limit = 100): Promise<ExecRow[]> {
    const rows = await this.rows<Omit<ExecRow, "background">>(
      `SELECT id, sailbox_id AS "sailboxId", cmd, started_at AS "startedAt" FROM execs WHERE sailbox_id = $1 AND background = 1
       ORDER BY started_at COLLATE "C" DESC, id COLLATE "C" DESC LIMIT $2`,
      [sailboxId, limit],
    );
    return rows.map((row) => ({ ...row, background: true }));
  }
}

/** An org's live raw-TCP endpoints ($1: the org). */
const TCP_IN_USE = "(SELECT COUNT(*) FROM listeners l JOIN sailboxes s ON s.id = l.sailbox_id WHERE s.live = 1 AND s.org_id = $1 AND l.protocol = 'tcp')";

/** What insertSailbox checks, in one round trip ($1 org, $2 app, $3 name or null). */
const HOLDINGS = `SELECT
  ($3::text IS NOT NULL AND EXISTS (SELECT 1 FROM sailboxes WHERE app_id = $2 AND name = $3 AND live = 1)) AS "nameTaken",
  COUNT(*) AS sailboxes, COALESCE(SUM(cpu), 0) AS cpu, COALESCE(SUM(memory_mib), 0) AS "memoryMiB",
  ${TCP_IN_USE} AS "tcpEndpoints"
  FROM sailboxes WHERE live = 1 AND org_id = $1`;

/**
 * The lowest free public ports. They are unique across orgs, whose creates do not queue on one
 * row, so the choice is made under a transaction-level advisory lock (held to COMMIT) and read in
 * a statement begun after it was granted. The alternative, a unique index with retries, cannot
 * be written here: "live" is the box's, the port its listener's, and an index spans one table.
 *
 * The `count` lowest free ports lie among the first (ports in use + count) of the range, so only
 * that many candidates are generated. A listener's box is looked up by its primary key (a
 * subquery the planner keeps as such): joined instead, tables whose statistics lag a burst of
 * creates were planned as a nested loop over both, measured at 50 ms with 500 live boxes
 * instead of 3.
 */
async function allocateTcpPorts(client: pg.PoolClient, count: number, range: TcpPortRange): Promise<number[]> {
  await client.query("SELECT pg_advisory_xact_lock($1, $2)", [SAIL_LOCKS, PUBLIC_PORTS_LOCK]);
  const { rows } = await client.query<{ port: number }>(
    `WITH used AS (
       SELECT l.public_port AS port FROM listeners l
       WHERE l.public_port BETWEEN $1 AND $2 AND (SELECT s.live FROM sailboxes s WHERE s.id = l.sailbox_id) = 1)
     SELECT candidate AS port FROM generate_series($1::int, LEAST($2::int, $1::int + (SELECT COUNT(*) FROM used)::int + $3::int - 1)) AS candidate
     WHERE candidate NOT IN (SELECT port FROM used) ORDER BY candidate LIMIT $3`,
    [range.firstPort, range.lastPort, count],
  );
  if (rows.length < count) throw new TcpPortsExhaustedError();
  return rows.map((r) => r.port);
}

/** The box in `creating` and its listeners (TCP ones get `publicPorts` in order). */
async function insertRows(client: pg.PoolClient, box: NewSailbox, publicPorts: number[]): Promise<SailboxRow> {
  const { rows } = await client.query<SailboxRow>(
    `INSERT INTO sailboxes (${NEW_SAILBOX_COLUMNS}, status, live) VALUES (${NEW_SAILBOX_PLACEHOLDERS}, 'creating', 1) RETURNING ${SAILBOX_COLUMNS}`,
    newSailboxValues(box),
  );
  const ports = box.ports ?? [];
  if (ports.length) {
    let next = 0;
    const publicPort = ports.map((p) => (p.protocol === "tcp" ? (publicPorts[next++] ?? null) : null));
    const flag = (on: boolean | undefined) => (on ? 1 : 0);
    await client.query(
      `INSERT INTO listeners (sailbox_id, port, protocol, cidr_allowlist, allow_public, public_port, h2c, proxy_protocol)
       SELECT $1::text, * FROM unnest($2::int[], $3::text[], $4::text[], $5::int[], $6::int[], $7::int[], $8::int[])`,
      [
        box.id,
        ports.map((p) => p.port),
        ports.map((p) => p.protocol),
        ports.map((p) => JSON.stringify(p.cidrAllowlist ?? [])),
        ports.map((p) => flag(p.allowPublic)),
        publicPort,
        ports.map((p) => flag(p.h2c)),
        ports.map((p) => flag(p.proxyProtocol)),
      ],
    );
  }
  return rows[0]!;
}

/** $1, $2, … for NEW_SAILBOX_COLUMNS, so a new column cannot leave them behind. */
const NEW_SAILBOX_PLACEHOLDERS = NEW_SAILBOX_COLUMNS.split(",")
  .map((_, i) => `$${i + 1}`)
  .join(", ");

/** The server's answer "not now" (UNAVAILABLE_STATES, or a connection exception). */
function notNow(err: unknown): boolean {
  const state = err instanceof pg.DatabaseError ? (err.code ?? "") : "";
  return UNAVAILABLE_STATES.has(state) || state.startsWith("08");
}

/** A driver error that means "the database is away or too slow" becomes StoreUnavailableError. */
function unavailable(err: unknown): unknown {
  if (err instanceof StoreError || err instanceof StoreUnavailableError) return err;
  if (err instanceof pg.DatabaseError) return notNow(err) ? new StoreUnavailableError(err.message, { cause: err }) : err;
  // a bug of ours, not the database's absence
  if (err instanceof TypeError || err instanceof RangeError || err instanceof SyntaxError) return err;
  // not the server's answer: a refused or broken connection, a connect or read deadline
  return new StoreUnavailableError((err as Error).message, { cause: err });
}

async function unavailableOnFailure<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw unavailable(err);
  }
}
