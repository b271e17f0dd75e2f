import { httpLabel, type SailboxStatus } from "@sail/protocol";
import type { Runtime } from "../runtime/runtime.js";
import type { Lifecycle, Transition } from "./lifecycle.js";
import type { NodeListenerRow, NodeStore } from "./node-store.js";

/** What the gateway needs to forward to one HTTP listener, found by its hostname label. */
export interface HttpRoute {
  sailboxId: string;
  port: number;
  guestAddress: string;
  /** running: forward; sleeping: wake, then forward; paused: refuse (503 / close). */
  status: SailboxStatus;
  /** Speak cleartext HTTP/2 to the guest (gRPC). */
  h2c: boolean;
}

/** What the gateway needs to serve one raw-TCP listener on its public port. */
export interface TcpRoute {
  sailboxId: string;
  port: number;
  guestAddress: string;
  publicPort: number;
  cidrAllowlist: string[];
  /** Send a PROXY protocol v2 header to the guest first. */
  proxyProtocol: boolean;
  status: SailboxStatus;
}

/**
 * One versioned change of the route tables. The first change a subscriber gets has
 * `reset: true` and holds every route; later ones hold what one transition changed.
 */
export interface RouteChange {
  version: number;
  reset?: boolean;
  http: { set: Array<[label: string, route: HttpRoute]>; remove: string[] };
  tcp: { set: TcpRoute[]; remove: number[] };
}

/** A data path that follows the routes: the HTTPS gateway, the TCP gateway. */
export interface RouteSubscriber {
  apply(change: RouteChange): void;
  /** Close every proxied connection of this box (it sleeps, pauses or ends). */
  dropConnections(sailboxId: string): void;
  /** Resolves once the data path routes by every change applied so far. */
  synced(): Promise<void>;
}

/**
 * Publishes the node's boxes' routes to its data paths as versioned changes, from the node's
 * own box table (node.db) and its lifecycle's transitions: a box's routes appear when it runs,
 * change with its status, go when it ends; its connections are dropped whenever it stops running.
 */
export class RoutePublisher {
  private readonly subscribers: RouteSubscriber[] = [];
  private version = 0;
  /** Per box: the listeners its routes were made from, to remove them once its row is gone. */
  private readonly published = new Map<string, NodeListenerRow[]>();
  private fenced = false;

  constructor(
    private readonly store: Pick<NodeStore, "liveListeners" | "listListeners">,
    private readonly runtime: Pick<Runtime, "network">,
    lifecycle: Lifecycle,
  ) {
    lifecycle.onTransition((t) => this.publish(t));
  }

  /** Follow the routes: the subscriber gets the whole table now, then every change. */
  subscribe(subscriber: RouteSubscriber): void {
    this.subscribers.push(subscriber);
    subscriber.apply(this.wholeTable());
  }

  /**
   * Fence (true): the node can no longer vouch for its boxes (its lease with the control plane
   * lapsed, so their boxes may be failed and their public ports handed to boxes elsewhere):
   * every route goes and every proxied connection is closed; the boxes themselves run on.
   * Unfence (false, once the control plane heard the node and reconciled it): the whole
   * table again. Changes while fenced are kept in node.db and come back with it.
   */
  fence(fenced: boolean): void {
    if (fenced === this.fenced) return;
    this.fenced = fenced;
    const change = fenced ? { version: ++this.version, reset: true, http: { set: [], remove: [] }, tcp: { set: [], remove: [] } } : this.wholeTable(++this.version);
    for (const subscriber of this.subscribers) {
      subscriber.apply(change);
      if (fenced) for (const id of this.published.keys()) subscriber.dropConnections(id);
    }
  }

  get isFenced(): boolean {
    return this.fenced;
  }

  /** Every route of the node's running, sleeping and paused boxes, as one reset (none while fenced). */
  private wholeTable(version = this.version): RouteChange {
    const http: RouteChange["http"]["set"] = [];
    const tcp: TcpRoute[] = [];
    for (const listener of this.store.liveListeners()) {
      if (listener.status === "creating") continue;
      this.remember(listener);
      if (!this.fenced) this.add(listener, listener.status, http, tcp);
    }
    return { version, reset: true, http: { set: http, remove: [] }, tcp: { set: tcp, remove: [] } };
  }

  /** Resolves once every data path routes by the latest change. */
  async synced(): Promise<void> {
    await Promise.all(this.subscribers.map((s) => s.synced()));
  }

  private publish({ box, from, to }: Transition): void {
    const ended = to === "terminated" || to === "failed";
    // a terminated box's row (and listeners) are gone from node.db: remove what was published of it
    const listeners = ended ? (this.published.get(box.id) ?? this.store.listListeners(box.id)) : this.store.listListeners(box.id);
    const change: RouteChange = { version: ++this.version, http: { set: [], remove: [] }, tcp: { set: [], remove: [] } };
    if (ended) this.published.delete(box.id);
    else this.published.set(box.id, listeners);
    for (const listener of listeners) {
      if (this.fenced) continue; // nothing is routed; unfencing publishes the whole table
      if (ended || to === "creating") {
        if (listener.protocol === "http") change.http.remove.push(httpLabel(box.id, listener.port));
        else if (listener.publicPort !== null) change.tcp.remove.push(listener.publicPort);
      } else {
        this.add(listener, to, change.http.set, change.tcp.set);
      }
    }
    for (const subscriber of this.subscribers) {
      subscriber.apply(change);
      if (from === "running" && to !== "running") subscriber.dropConnections(box.id);
    }
  }

  private remember(listener: NodeListenerRow): void {
    const known = this.published.get(listener.sailboxId) ?? [];
    if (!known.some((l) => l.port === listener.port)) this.published.set(listener.sailboxId, [...known, listener]);
  }

  private add(listener: NodeListenerRow, status: SailboxStatus, http: RouteChange["http"]["set"], tcp: TcpRoute[]): void {
    let guestAddress: string;
    try {
      guestAddress = this.runtime.network(listener.sailboxId).guestAddress;
    } catch {
      return; // the runtime lost the box's network: reconcile marks such a box failed
    }
    if (listener.protocol === "http") {
      http.push([httpLabel(listener.sailboxId, listener.port), { sailboxId: listener.sailboxId, port: listener.port, guestAddress, status, h2c: listener.h2c }]);
    } else if (listener.publicPort !== null) {
      tcp.push({
        sailboxId: listener.sailboxId,
        port: listener.port,
        guestAddress,
        publicPort: listener.publicPort,
        cidrAllowlist: listener.cidrAllowlist,
        proxyProtocol: listener.proxyProtocol,
        status,
      });
    }
  }
}
