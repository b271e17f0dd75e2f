import { randomInt } from "node:crypto";
import { sailError, type NodeSummary } from "@sail/protocol";
import type { NodeApi, NodeBoxState, NodeEvent, NodeEventSink, NodeInfo } from "../node-wire/node-api.js";
import type { NodeUsageRow, SailboxRow, Store } from "../store/store.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./logger.js";

export interface NodeLeaseSettings {
  /** A node's lease runs this long past its last heartbeat; the node fences itself when it could not renew it for as long. */
  leaseMs: number;
  /** After its lease lapsed, this long more before its boxes are failed: the node has fenced itself by then. */
  graceMs: number;
  /** How often this control plane looks for nodes whose lease lapsed. */
  sweepMs: number;
}

/**
 * 10 s lease, beaten every 5 s (one beat may be lost), 3 s grace, a sweep every 2 s: a node that
 * dies is declared lost 13–15 s after its last beat (issue 23's target is 15 s); one cut off
 * fences itself at 10 s, before that. Daytona marks a runner unresponsive after 60 s; boxes
 * that cannot be reached are failed sooner here because a user waits on them.
 */
export const NODE_LEASE_DEFAULTS: NodeLeaseSettings = { leaseMs: 10_000, graceMs: 3_000, sweepMs: 2_000 };

/** Among this many nodes with room, picked at random, the one with the most free slots takes a box ("power of two choices"). */
const PLACEMENT_CHOICES = 2;

/** A node this control plane can reach, and who it said it is. */
export interface AttachedNode {
  api: NodeApi & { close?(): Promise<void> };
  info: NodeInfo;
  /** Where its wire is ("" for the node in this process). */
  url: string;
  /** This process heard its heartbeat (and reconciled it); false for a node known from the store only. */
  heard: boolean;
}

/**
 * The nodes the control plane drives, and what each last said of its boxes. Nodes join with a
 * heartbeat that renews their lease in the store; each box lives on the node placement chose
 * (`sailboxes.node_id`) for its life. A node whose lease lapsed past the grace is declared lost
 * by whichever control plane sweeps first, and its live boxes become failed with a reason
 * naming it. Node events arrive here (in one process by a call, from another over HTTP): every
 * box state is kept in memory for the views (wakes, TCP binds) and handed to the lifecycle,
 * which keeps the newest in the store.
 */
export class Nodes implements NodeEventSink {
  private readonly attached = new Map<string, AttachedNode>();
  private readonly states = new Map<string, NodeBoxState>();
  private readonly wokenListeners: Array<(seconds: number) => void> = [];
  private sweeper: NodeJS.Timeout | undefined;
  /** When this process last swept (Date.now()); undefined before its first sweep. */
  private sweptAt: number | undefined;

  constructor(
    private readonly store: Store,
    private readonly lifecycle: Lifecycle,
    private readonly log: Logger,
    /** A client of a node's wire at `url` (a node that joined another control-plane process). */
    private readonly dial: (url: string) => NodeApi & { close?(): Promise<void> },
    readonly lease: NodeLeaseSettings = NODE_LEASE_DEFAULTS,
  ) {}

  /** The node in this process: it never lapses (it lives and dies with the control plane). */
  async attachLocal(api: NodeApi, info: NodeInfo): Promise<void> {
    await this.store.heartbeatNode({ id: info.nodeId, url: "", info: JSON.stringify(info) }, null);
    this.attached.set(info.nodeId, { api, info, url: "", heard: true });
    this.log.info({ nodeId: info.nodeId, maxBoxes: info.maxBoxes }, "node attached");
  }

  /**
   * A node's registration or heartbeat: its lease renewed. True when this control plane must
   * reconcile it first (it is new here, moved, or is back after it was declared lost: its boxes
   * failed meanwhile, and reconcile removes them from it before it routes again).
   */
  async heartbeat(url: string, info: NodeInfo): Promise<boolean> {
    const { node, wasLost } = await this.store.heartbeatNode({ id: info.nodeId, url, info: JSON.stringify(info) }, this.lease.leaseMs);
    const known = this.attached.get(info.nodeId);
    if (known && known.url === url && !wasLost && known.heard) {
      known.info = info;
      return false;
    }
    if (known && known.url !== url) void known.api.close?.();
    this.attached.set(info.nodeId, { api: known && known.url === url ? known.api : this.dial(url), info, url, heard: true });
    this.log.info({ nodeId: info.nodeId, url, generation: node.generation, wasLost }, wasLost ? "a lost node joined again" : "node attached");
    return true;
  }

  /**
   * Every node the store knows that is not lost, ready to be dialled: a control plane that starts
   * (or a second one) drives boxes on nodes that beat to another, and each node it later hears
   * from is reconciled on that first heartbeat as before.
   */
  async loadKnown(): Promise<void> {
    for (const row of await this.store.listNodes()) {
      if (row.lostAt || !row.url || this.attached.has(row.id)) continue;
      this.attached.set(row.id, { api: this.dial(row.url), info: JSON.parse(row.info) as NodeInfo, url: row.url, heard: false });
    }
  }

  /** A node attached to this process (undefined: none has joined it). */
  get(nodeId: string): AttachedNode | undefined {
    return this.attached.get(nodeId);
  }

  /** Every node attached to this process. */
  all(): AttachedNode[] {
    return [...this.attached.values()];
  }

  /** Some node (the first attached): what any node can answer (its architecture, a policy check), or SAIL_NODE_UNAVAILABLE saying none has joined. */
  some(): AttachedNode {
    const first = this.attached.values().next();
    if (first.done) throw sailError("SAIL_NODE_UNAVAILABLE", "No node agent has joined this control plane yet: start one with sail up --role node --control URL", {});
    return first.value;
  }

  /**
   * The node that runs `box`. A box from before nodes were recorded runs on the node of this
   * process. A node another control plane heard from is dialled at the address the store has.
   */
  async of(box: Pick<SailboxRow, "id" | "nodeId">): Promise<AttachedNode> {
    if (box.nodeId === null) return this.some();
    const known = this.attached.get(box.nodeId);
    if (known) return known;
    const row = await this.store.getNode(box.nodeId);
    if (!row || !row.url) throw unavailable(box.id, box.nodeId, "it has not joined this control plane");
    if (row.lostAt) throw unavailable(box.id, box.nodeId, `it was declared lost at ${row.lostAt}`);
    const node: AttachedNode = { api: this.dial(row.url), info: JSON.parse(row.info) as NodeInfo, url: row.url, heard: false };
    this.attached.set(row.id, node);
    return node;
  }

  /**
   * Where a new box goes: among live nodes (lease held, not draining, not lost) with a free
   * slot, `PLACEMENT_CHOICES` picked at random, the one with the most free slots. SAIL_NODE_UNAVAILABLE
   * when no node has room, saying why each was passed over.
   */
  async place(): Promise<AttachedNode> {
    const rows = await this.store.listNodes();
    const passed: string[] = [];
    const candidates: Array<{ node: AttachedNode; free: number }> = [];
    for (const row of rows) {
      const why = ineligible(row);
      if (why) {
        passed.push(`${row.id} ${why}`);
        continue;
      }
      const node = this.attached.get(row.id) ?? (await this.of({ id: "(new)", nodeId: row.id }).catch(() => undefined));
      if (!node) {
        passed.push(`${row.id} cannot be reached`);
        continue;
      }
      const free = node.info.maxBoxes - row.boxes;
      if (free <= 0) passed.push(`${row.id} is full (${row.boxes} of ${node.info.maxBoxes} boxes)`);
      else candidates.push({ node, free });
    }
    if (!candidates.length) {
      if (!rows.length) return this.some();
      throw sailError("SAIL_NODE_UNAVAILABLE", `No node can take a new sailbox: ${passed.join("; ")}`, { nodes: passed });
    }
    let best: { node: AttachedNode; free: number } | undefined;
    const choices = Math.min(PLACEMENT_CHOICES, candidates.length);
    for (let i = 0; i < choices; i++) {
      const pick = candidates.splice(randomInt(candidates.length), 1)[0]!;
      if (!best || pick.free > best.free) best = pick;
    }
    return best!.node;
  }

  /** Every node the store knows, as `sail node ls` shows it. */
  async list(): Promise<NodeSummary[]> {
    return (await this.store.listNodes()).map((row) => {
      const info = JSON.parse(row.info) as NodeInfo;
      return {
        nodeId: row.id,
        url: row.url,
        state: row.lostAt ? "lost" : row.draining ? "draining" : "active",
        generation: row.generation,
        leaseAgeMs: row.leaseUntil === null ? null : Math.max(0, row.nowMs - (row.leaseUntil - this.lease.leaseMs)),
        boxes: row.boxes,
        maxBoxes: info.maxBoxes,
        cpu: row.cpu,
        memoryMiB: row.memoryMiB,
        hostArch: info.hostArch,
      };
    });
  }

  /** No new boxes on the node (true), or take them again; its boxes stay. */
  async drain(nodeId: string, draining: boolean): Promise<void> {
    if (!(await this.store.setNodeDraining(nodeId, draining))) throw sailError("SAIL_NODE_NOT_FOUND", `No node ${nodeId}: sail node ls lists them`, { nodeId });
    this.log.info({ nodeId, draining }, draining ? "node draining: no new sailboxes go to it" : "node takes new sailboxes again");
  }

  /** Look for lapsed nodes every `sweepMs` until `stop()`. */
  start(): void {
    this.sweeper ??= setInterval(() => void this.sweep().catch((err) => this.log.error({ err: String(err) }, "could not look for lost nodes")), this.lease.sweepMs);
  }

  async stop(): Promise<void> {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    await Promise.all(this.all().map((node) => node.api.close?.()));
  }

  /**
   * Declare lost the nodes whose lease lapsed past the grace (each by one control plane), and
   * fail their live boxes with a reason naming the node: their public ports are free again, and
   * the node (fenced since its lease lapsed) removes them if it ever joins again.
   */
  async sweep(): Promise<Array<{ nodeId: string; failed: string[] }>> {
    // A lease that lapsed while this control plane could not hear anyone (it was starting, or
    // stalled, or the store was away: a PostgreSQL failover takes 10-30 s) says nothing about the
    // node: every node gets a whole lease from now to beat again before any is declared lost.
    const now = Date.now();
    const blind = this.sweptAt === undefined || now - this.sweptAt > 2 * this.lease.sweepMs + 1_000;
    if (blind) {
      await this.store.extendNodeLeases(this.lease.leaseMs);
      if (this.sweptAt !== undefined) this.log.warn({ awayMs: now - this.sweptAt }, "the node sweep could not run for a while: every node's lease is extended before any is declared lost");
      this.sweptAt = now;
      return [];
    }
    const declared = await this.store.declareLapsedNodesLost(this.lease.graceMs);
    this.sweptAt = now;
    const results: Array<{ nodeId: string; failed: string[] }> = [];
    for (const nodeId of declared) {
      const node = this.attached.get(nodeId);
      this.attached.delete(nodeId);
      void node?.api.close?.();
      const failed: string[] = [];
      const reason = `its node ${nodeId} was lost (no heartbeat for ${Math.round((this.lease.leaseMs + this.lease.graceMs) / 1000)} s)`;
      for (const box of await this.store.liveSailboxesOn(nodeId)) {
        // no lease: whoever held one was waiting on the node that is gone
        await this.lifecycle.setStatus(box.id, "failed", { reason }).catch((err) => this.log.error({ sailboxId: box.id, err: String(err) }, "could not fail a sailbox of a lost node"));
        this.states.delete(box.id);
        failed.push(box.id);
      }
      this.log.warn({ nodeId, failed }, "node lost: its sailboxes failed");
      results.push({ nodeId, failed });
    }
    return results;
  }

  /** What the node said last of a box (undefined: nothing since this control plane started). */
  state(id: string): NodeBoxState | undefined {
    return this.states.get(id);
  }

  /** Keep a state the node answered with (a create's, a sleep's): the newest per box wins. */
  remember(state: NodeBoxState): void {
    const known = this.states.get(state.sailboxId);
    if (!known || known.seq <= state.seq) this.states.set(state.sailboxId, state);
  }

  forget(id: string): void {
    this.states.delete(id);
  }

  /** Called with the seconds each wake from sleep took on the node (metrics). */
  onWoken(listener: (seconds: number) => void): void {
    this.wokenListeners.push(listener);
  }

  async deliver(events: NodeEvent[]): Promise<void> {
    for (const event of events) {
      if (event.type === "woken") {
        for (const listener of this.wokenListeners) listener(event.seconds);
        continue;
      }
      this.remember(event.state);
      await this.lifecycle.applyNodeState(event.state);
    }
  }
}

/** Why a node takes no new box, or undefined. */
function ineligible(row: NodeUsageRow): string | undefined {
  if (row.lostAt) return "was lost";
  if (row.draining) return "is draining";
  if (row.leaseUntil !== null && row.leaseUntil < row.nowMs) return `missed its heartbeats for ${Math.round((row.nowMs - row.leaseUntil) / 1000)} s past its lease`;
  return undefined;
}

function unavailable(sailboxId: string, nodeId: string, why: string): Error {
  return sailError("SAIL_NODE_UNAVAILABLE", `The node ${nodeId} of sailbox ${sailboxId} cannot be reached: ${why}`, { sailboxId, nodeId });
}
