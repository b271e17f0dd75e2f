/**
 * What both stores share beyond the interface: the column lists (quoted aliases, which SQLite
 * and PostgreSQL both keep in camelCase), the decoding of 0/1 flags and JSON text, and the
 * org-cap rule `insertSailbox` applies inside its transaction.
 */
import type { OrgLimits } from "@sail/protocol";
import { OrgLimitReachedError, type ListenerRow, type NewSailbox, type OrgRow } from "./store.js";

export const SAILBOX_COLUMNS = `id, app_id AS "appId", org_id AS "orgId", name, status, image_name AS "imageName",
  image_arch AS "imageArch", image_packages AS "imagePackages", image_emulated AS "imageEmulated", cpu, memory_mib AS "memoryMiB",
  disk_mib AS "diskMiB", disk_inodes AS "diskInodes", node_id AS "nodeId",
  idle_timeout AS "idleTimeout", network_policy AS "networkPolicy", failure_reason AS "failureReason", created_at AS "createdAt", terminated_at AS "terminatedAt"`;

export const TOKEN_COLUMNS = `t.id, o.name AS org, t.label, t.created_at AS "createdAt", t.revoked_at AS "revokedAt"`;

export const LISTENER_COLUMNS = `l.sailbox_id AS "sailboxId", l.port, l.protocol, l.cidr_allowlist AS "cidrAllowlist", l.allow_public AS "allowPublic",
  l.public_port AS "publicPort", l.h2c, l.proxy_protocol AS "proxyProtocol"`;

export const NODE_COLUMNS = `n.id, n.url, n.info, n.generation, n.lease_until AS "leaseUntil", n.draining, n.lost_at AS "lostAt", n.joined_at AS "joinedAt"`;

/** What each node's live boxes hold, to LEFT JOIN on n.id as b. */
export const NODE_USAGE_JOIN = `LEFT JOIN (SELECT node_id, COUNT(*) AS boxes, SUM(cpu) AS cpu, SUM(memory_mib) AS memory FROM sailboxes WHERE live = 1 GROUP BY node_id) b ON b.node_id = n.id`;

/** A node row as stored: draining as 0/1. */
export const decodeNode = <T extends { draining: number | boolean }>(row: T): T & { draining: boolean } => ({ ...row, draining: row.draining === 1 || row.draining === true });

export const APP_COLUMNS = `id, org_id AS "orgId", name, created_at AS "createdAt"`;

export const LIMIT_COLUMNS = `sailbox_limit AS sailboxes, cpu_limit AS cpu, memory_limit_mib AS "memoryMiB", tcp_limit AS "tcpEndpoints"`;

export const NO_LIMITS: OrgLimits = { sailboxes: null, cpu: null, memoryMiB: null, tcpEndpoints: null };

/** A box's outbound policy when the caller gives none. */
export const DEFAULT_NETWORK_POLICY = '{"outbound":"open","allowOut":[],"denyOut":[]}';

export const now = () => new Date().toISOString();

/** The columns a new box is inserted with, and `newSailboxValues` in their order. */
export const NEW_SAILBOX_COLUMNS = "id, app_id, org_id, name, image_name, image_arch, image_packages, image_emulated, cpu, memory_mib, disk_mib, node_id, idle_timeout, network_policy, created_at";
export const newSailboxValues = (box: NewSailbox) => [
  box.id,
  box.appId,
  box.orgId,
  box.name,
  box.imageName,
  box.imageArch,
  box.imagePackages,
  box.imageEmulated ?? null,
  box.cpu,
  box.memoryMiB,
  box.diskMiB,
  box.nodeId,
  box.idleTimeout ?? null,
  box.networkPolicy ?? DEFAULT_NETWORK_POLICY,
  now(),
];

/** An org row as stored: operator as 0/1. */
export type StoredOrg = Omit<OrgRow, "operator"> & { operator: number };
export const decodeOrg = (row: StoredOrg): OrgRow => ({ ...row, operator: row.operator === 1 });

/** A listener row as stored: the allowlist as JSON text, flags as 0/1. */
export type StoredListener<T extends ListenerRow> = Omit<T, "cidrAllowlist" | "allowPublic" | "h2c" | "proxyProtocol"> & {
  cidrAllowlist: string;
  allowPublic: number;
  h2c: number;
  proxyProtocol: number;
};
/** Listeners grouped by their sailbox: every asked id has an entry (none: an empty list). */
export function bySailbox(sailboxIds: string[], listeners: ListenerRow[]): Map<string, ListenerRow[]> {
  const grouped = new Map<string, ListenerRow[]>(sailboxIds.map((id) => [id, []]));
  for (const listener of listeners) grouped.get(listener.sailboxId)?.push(listener);
  return grouped;
}

export function decodeListener<T extends ListenerRow>(row: StoredListener<T>): T {
  return { ...row, cidrAllowlist: JSON.parse(row.cidrAllowlist) as string[], allowPublic: row.allowPublic === 1, h2c: row.h2c === 1, proxyProtocol: row.proxyProtocol === 1 } as T;
}

/** What an org holds, read inside insertSailbox's transaction. */
export interface OrgHoldings {
  sailboxes: number;
  cpu: number;
  memoryMiB: number;
  tcpEndpoints: number;
}

/**
 * The first cap `box` would pass (the operator's caps, then raw-TCP endpoints: the org's own limit,
 * else the default), or undefined. Both stores call it with what they read under their lock.
 */
export function orgCapRefusal(box: NewSailbox, tcpPorts: number, limits: OrgLimits, held: OrgHoldings, tcpDefault: number): OrgLimitReachedError | undefined {
  if (limits.sailboxes !== null && held.sailboxes + 1 > limits.sailboxes) return new OrgLimitReachedError("sailboxes", limits.sailboxes, held.sailboxes, 1);
  // cores are fractional: a sum of tenths must not miss a cap by a rounding error
  if (limits.cpu !== null && held.cpu + box.cpu > limits.cpu + 1e-9) return new OrgLimitReachedError("cpu", limits.cpu, held.cpu, box.cpu);
  if (limits.memoryMiB !== null && held.memoryMiB + box.memoryMiB > limits.memoryMiB) return new OrgLimitReachedError("memory", limits.memoryMiB, held.memoryMiB, box.memoryMiB);
  if (!tcpPorts) return undefined;
  const tcpLimit = limits.tcpEndpoints ?? tcpDefault;
  if (held.tcpEndpoints + tcpPorts > tcpLimit) return new OrgLimitReachedError("tcpEndpoints", tcpLimit, held.tcpEndpoints, tcpPorts);
  return undefined;
}
