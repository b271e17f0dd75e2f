import { randomBytes } from "node:crypto";
import Database from "better-sqlite3";
import type { Architecture, NetworkInfo, SailboxStatus } from "@sail/protocol";
import type { NodeBoxSpec } from "../node-wire/node-api.js";
import { NODE_MIGRATIONS } from "./node-migrations.js";

/** A box's status on a node: "terminated" is no status here, the box's row is removed. */
export type NodeBoxStatus = Exclude<SailboxStatus, "terminated">;

/** One box as its node keeps it: its spec, its network slot, its power state and the sequence number of that state. */
export interface NodeBoxRow {
  id: string;
  hostname: string;
  arch: Architecture;
  /** Debian packages on top of the base image, sorted. */
  aptPackages: string[];
  cpu: number;
  memoryMiB: number;
  diskMiB: number | null;
  /** Inodes its disk has, once made (null: a box made before disks, or not made yet). */
  diskInodes: number | null;
  idleTimeout: number | null;
  network: NetworkInfo;
  sshPublicKey: string | null;
  /** Index of its /30 in the box subnet; null only for a failed box adopted without one. */
  netSlot: number | null;
  status: NodeBoxStatus;
  failureReason: string | null;
  /** Bumped with every change the node reports (NodeBoxState.seq). */
  seq: number;
  createdAt: string;
}

export interface NodeListenerRow {
  sailboxId: string;
  port: number;
  protocol: "http" | "tcp";
  cidrAllowlist: string[];
  allowPublic: boolean;
  publicPort: number | null;
  h2c: boolean;
  proxyProtocol: boolean;
}

/** What the node store refuses; the node agent turns each into the caller's error. */
export class NodeStoreError extends Error {}
/** Every network slot of the box subnet is held by a box of this node. */
export class NetSlotsExhaustedError extends NodeStoreError {
  constructor(readonly slots: number) {
    super(`all ${slots} sailbox network slots are in use`);
  }
}
/** An adopted box's slot (read from its network.json) is held by another box of this node. */
export class NetSlotTakenError extends NodeStoreError {
  constructor(
    readonly slot: number,
    readonly holder: string,
  ) {
    super(`network slot ${slot} is held by sailbox ${holder}`);
  }
}
/** A raw-TCP listener's public port is held by another live box of this node. */
export class PublicPortTakenError extends NodeStoreError {
  constructor(
    readonly publicPort: number,
    readonly holder: string,
  ) {
    super(`public TCP port ${publicPort} is held by sailbox ${holder}`);
  }
}
/** A box of that id is on this node already. */
export class BoxExistsError extends NodeStoreError {}

const BOX_COLUMNS = `id, hostname, arch, apt_packages AS aptPackages, cpu, memory_mib AS memoryMiB, disk_mib AS diskMiB, disk_inodes AS diskInodes,
  idle_timeout AS idleTimeout, network_policy AS network, ssh_public_key AS sshPublicKey, net_slot AS netSlot, status,
  failure_reason AS failureReason, seq, created_at AS createdAt`;
const LISTENER_COLUMNS = `l.sailbox_id AS sailboxId, l.port, l.protocol, l.cidr_allowlist AS cidrAllowlist, l.allow_public AS allowPublic,
  l.public_port AS publicPort, l.h2c, l.proxy_protocol AS proxyProtocol`;
/** Boxes that hold a slot, a container and public ports: every one but a failed one. */
const HOLDS = "status <> 'failed'";

type StoredBox = Omit<NodeBoxRow, "aptPackages" | "network"> & { aptPackages: string; network: string };
const decodeBox = (row: StoredBox): NodeBoxRow => ({ ...row, aptPackages: row.aptPackages ? row.aptPackages.split(" ") : [], network: JSON.parse(row.network) as NetworkInfo });
type StoredListener<T extends NodeListenerRow> = Omit<T, "cidrAllowlist" | "allowPublic" | "h2c" | "proxyProtocol"> & {
  cidrAllowlist: string;
  allowPublic: number;
  h2c: number;
  proxyProtocol: number;
};
function decodeListener<T extends NodeListenerRow>(row: StoredListener<T>): T {
  return { ...row, cidrAllowlist: JSON.parse(row.cidrAllowlist) as string[], allowPublic: row.allowPublic === 1, h2c: row.h2c === 1, proxyProtocol: row.proxyProtocol === 1 } as T;
}

const now = () => new Date().toISOString();

/**
 * The node's own boxes, in `<data-dir>/node.db` (SQLite, WAL): what only the host knows — each
 * box's network slot and power state — and the spec the control plane sent (routes, idle
 * timeout, outbound policy). Synchronous: one process, the node agent, owns the file. It never
 * holds the control plane's data (orgs, apps, names), and the node never reads the control
 * plane's store.
 */
export class NodeStore {
  private readonly db: Database.Database;

  /** `path`: the node.db file, or ":memory:" (tests). */
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

  /** The applied migrations' number. */
  get version(): number {
    return this.db.pragma("user_version", { simple: true }) as number;
  }

  private migrate(): void {
    const applied = this.version;
    NODE_MIGRATIONS.slice(applied).forEach((migration, i) => {
      this.db.transaction(() => {
        this.db.exec(migration);
        this.db.pragma(`user_version = ${applied + i + 1}`);
      })();
    });
  }

  /** The node's id: made at its first start (`node-` and 12 random characters), kept from then on. */
  nodeId(): string {
    const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    const made = "node-" + [...randomBytes(12)].map((b) => alphabet[b % alphabet.length]).join("");
    this.db.prepare("INSERT INTO node (key, value) VALUES ('id', ?) ON CONFLICT (key) DO NOTHING").run(made);
    return (this.db.prepare("SELECT value FROM node WHERE key = 'id'").get() as { value: string }).value;
  }

  /**
   * Insert a box with its listeners, in one transaction: in `creating` with the lowest network
   * slot no other box holds (`maxSlots` is the box subnet's), or — a box adopted from before
   * the node kept its boxes — in the status and the slot given. Refuses a box that exists, a
   * slot that is taken or past the subnet, and a public TCP port another box holds.
   */
  insertBox(spec: NodeBoxSpec, options: { maxSlots: number; status?: NodeBoxStatus; netSlot?: number | null; failureReason?: string }): NodeBoxRow {
    const status = options.status ?? "creating";
    return this.db.transaction(() => {
      if (this.db.prepare("SELECT 1 FROM boxes WHERE id = ?").get(spec.id)) throw new BoxExistsError(`sailbox ${spec.id} is on this node already`);
      const netSlot = options.netSlot === undefined ? this.freeSlot(options.maxSlots) : options.netSlot;
      if (netSlot !== null && status !== "failed") {
        if (netSlot >= options.maxSlots) throw new NetSlotsExhaustedError(options.maxSlots);
        const holder = this.db.prepare(`SELECT id FROM boxes WHERE net_slot = ? AND ${HOLDS}`).get(netSlot) as { id: string } | undefined;
        if (holder) throw new NetSlotTakenError(netSlot, holder.id);
      }
      if (status !== "failed") this.checkPublicPorts(spec);
      this.db
        .prepare(
          `INSERT INTO boxes (id, hostname, arch, apt_packages, cpu, memory_mib, disk_mib, idle_timeout, network_policy, ssh_public_key, net_slot, status, failure_reason, seq, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)`,
        )
        .run(
          spec.id,
          spec.hostname,
          spec.image.arch,
          spec.image.aptPackages.join(" "),
          spec.cpu,
          spec.memoryMiB,
          spec.diskMiB ?? null,
          spec.idleTimeout,
          JSON.stringify(spec.network),
          spec.sshPublicKey ?? null,
          netSlot,
          status,
          options.failureReason ?? null,
          now(),
        );
      const insert = this.db.prepare("INSERT INTO listeners (sailbox_id, port, protocol, cidr_allowlist, allow_public, public_port, h2c, proxy_protocol) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
      for (const l of spec.listeners) {
        insert.run(spec.id, l.port, l.protocol, JSON.stringify(l.cidrAllowlist ?? []), l.allowPublic ? 1 : 0, l.publicPort, l.h2c ? 1 : 0, l.proxyProtocol ? 1 : 0);
      }
      return this.getBox(spec.id)!;
    })();
  }

  /** The lowest slot no box holds: 0, or one past a held slot. */
  private freeSlot(maxSlots: number): number {
    const { slot } = this.db
      .prepare(
        `SELECT MIN(slot) AS slot FROM (SELECT 0 AS slot UNION SELECT net_slot + 1 FROM boxes WHERE ${HOLDS} AND net_slot IS NOT NULL)
         WHERE slot NOT IN (SELECT net_slot FROM boxes WHERE ${HOLDS} AND net_slot IS NOT NULL)`,
      )
      .get() as { slot: number };
    if (slot >= maxSlots) throw new NetSlotsExhaustedError(maxSlots);
    return slot;
  }

  private checkPublicPorts(spec: NodeBoxSpec): void {
    const held = this.db.prepare(`SELECT l.sailbox_id AS id FROM listeners l JOIN boxes b ON b.id = l.sailbox_id WHERE l.public_port = ? AND b.${HOLDS}`);
    for (const l of spec.listeners) {
      if (l.publicPort === null) continue;
      const holder = held.get(l.publicPort) as { id: string } | undefined;
      if (holder) throw new PublicPortTakenError(l.publicPort, holder.id);
    }
  }

  getBox(id: string): NodeBoxRow | undefined {
    const row = this.db.prepare(`SELECT ${BOX_COLUMNS} FROM boxes WHERE id = ?`).get(id) as StoredBox | undefined;
    return row && decodeBox(row);
  }

  /** Every box of the node, failed ones included, oldest first. */
  listBoxes(): NodeBoxRow[] {
    return (this.db.prepare(`SELECT ${BOX_COLUMNS} FROM boxes ORDER BY created_at, id`).all() as StoredBox[]).map(decodeBox);
  }

  /** Running boxes that sleep when idle. */
  idleCandidates(): NodeBoxRow[] {
    return (this.db.prepare(`SELECT ${BOX_COLUMNS} FROM boxes WHERE status = 'running' AND idle_timeout IS NOT NULL`).all() as StoredBox[]).map(decodeBox);
  }

  /** Live boxes (not failed) per status (metrics). */
  countByStatus(): Record<string, number> {
    const rows = this.db.prepare(`SELECT status, COUNT(*) AS n FROM boxes WHERE ${HOLDS} GROUP BY status`).all() as Array<{ status: string; n: number }>;
    return Object.fromEntries(rows.map((r) => [r.status, r.n]));
  }

  /** A new status (and why, for a failure); the box's sequence number goes up. */
  setStatus(id: string, status: NodeBoxStatus, failureReason: string | null = null): void {
    this.db.prepare("UPDATE boxes SET status = ?, failure_reason = ?, seq = seq + 1 WHERE id = ?").run(status, failureReason, id);
  }

  /** Something the node reports of the box changed besides its status (a listener's bind): its sequence number goes up. */
  /** The inodes the runtime gave the box's disk. */
  setDiskInodes(id: string, inodes: number): void {
    this.db.prepare("UPDATE boxes SET disk_inodes = ? WHERE id = ?").run(inodes, id);
  }

  bumpSeq(id: string): void {
    this.db.prepare("UPDATE boxes SET seq = seq + 1 WHERE id = ?").run(id);
  }

  setNetworkPolicy(id: string, policy: NetworkInfo): void {
    this.db.prepare("UPDATE boxes SET network_policy = ? WHERE id = ?").run(JSON.stringify(policy), id);
  }

  /** The box is gone from the node (terminated, or a create that failed): its row and listeners. */
  deleteBox(id: string): void {
    this.db.prepare("DELETE FROM boxes WHERE id = ?").run(id);
  }

  listListeners(sailboxId: string): NodeListenerRow[] {
    return (this.db.prepare(`SELECT ${LISTENER_COLUMNS} FROM listeners l WHERE l.sailbox_id = ? ORDER BY l.port`).all(sailboxId) as Array<StoredListener<NodeListenerRow>>).map(decodeListener);
  }

  /** Listeners of every box but the failed ones, with its status (the data paths' full route table). */
  liveListeners(): Array<NodeListenerRow & { status: NodeBoxStatus }> {
    const rows = this.db.prepare(`SELECT ${LISTENER_COLUMNS}, b.status FROM listeners l JOIN boxes b ON b.id = l.sailbox_id WHERE b.${HOLDS} ORDER BY b.created_at, l.port`).all();
    return (rows as Array<StoredListener<NodeListenerRow & { status: NodeBoxStatus }>>).map(decodeListener);
  }

  /** The live box that publishes `publicPort`, if any. */
  boxOfPublicPort(publicPort: number): string | undefined {
    const row = this.db.prepare(`SELECT l.sailbox_id AS id FROM listeners l JOIN boxes b ON b.id = l.sailbox_id WHERE l.public_port = ? AND b.${HOLDS}`).get(publicPort) as { id: string } | undefined;
    return row?.id;
  }
}
