import { renameSync, writeFileSync } from "node:fs";
import { parseHttpLabel } from "@sail/protocol";
import type { HttpRoute, RouteChange } from "../node/routes.js";
import type { Logger } from "./haproxy.js";
import type { HaproxyProcess } from "./haproxy-process.js";
import type { RuntimeApi } from "./runtime-api.js";

/**
 * HAProxy's routes.map, kept as the daemon's routes say: each change is written to the file (a
 * restarted HAProxy loads it) and sent to the running HAProxy through the runtime API, each
 * answer checked. If HAProxy refuses any of it (its map is not what the daemon thinks), the
 * whole map is replaced atomically; if that fails too, HAProxy is restarted with the file.
 */
export class RouteMapSync {
  /** Host → map value (`ip:port[:h2]`) of running listeners: what routes.map holds. */
  private readonly map = new Map<string, string>();
  /** Every HTTP route by Host, whatever its status (to find a box's guest address when dropping). */
  private readonly routes = new Map<string, HttpRoute>();
  /** Route changes for HAProxy, in order; never rejects (a failure resynchronises or restarts). */
  private pushing: Promise<void> = Promise.resolve();
  /** Bumped at each write of routes.map; `loaded` is the write the running HAProxy started from. */
  private mapWrites = 0;
  private loaded = -1;

  constructor(
    private readonly domain: string,
    private readonly mapPath: string,
    private readonly api: RuntimeApi,
    private readonly haproxy: Pick<HaproxyProcess, "running" | "restart">,
    private readonly log: Logger,
  ) {}

  /** Follow a route change: into routes.map now, into the running HAProxy in order. */
  apply(change: RouteChange): void {
    if (change.reset) this.routes.clear();
    const commands: string[] = [];
    const before = new Map(this.map);
    if (change.reset) this.map.clear();
    for (const label of change.http.remove) {
      this.routes.delete(this.host(label));
      this.map.delete(this.host(label));
    }
    for (const [label, route] of change.http.set) {
      const host = this.host(label);
      this.routes.set(host, route);
      if (route.status === "running") this.map.set(host, `${route.guestAddress}:${route.port}${route.h2c ? ":h2" : ""}`);
      else this.map.delete(host);
    }
    for (const host of before.keys()) if (!this.map.has(host)) commands.push(`del map ${this.mapPath} ${host}`);
    for (const [host, value] of this.map) {
      const old = before.get(host);
      if (old === undefined) commands.push(`add map ${this.mapPath} ${host} ${value}`);
      else if (old !== value) commands.push(`set map ${this.mapPath} ${host} ${value}`);
    }
    if (!commands.length) return;
    const write = this.writeFile(); // a restarted HAProxy loads the routes as they are now
    const boxes = changedBoxes(change);
    this.pushing = this.pushing.then(() => this.push(commands, write, boxes));
  }

  /** Resolves once every change so far reached HAProxy (checked, resynchronised or by a restart). */
  pushed(): Promise<void> {
    return this.pushing;
  }

  /** The hosts routes.map holds now. */
  hosts(): string[] {
    return [...this.map.keys()];
  }

  /** The guest addresses of a box's HTTP routes, whatever their status. */
  guestAddresses(sailboxId: string): Set<string> {
    return new Set([...this.routes.values()].filter((r) => r.sailboxId === sailboxId).map((r) => r.guestAddress));
  }

  /** An HAProxy was just started: it reads routes.map as it is now. */
  loadedFromFile(): void {
    this.loaded = this.mapWrites;
  }

  /** Write routes.map atomically; returns which write this was. */
  writeFile(): number {
    const text = [...this.map].map(([host, value]) => `${host} ${value}\n`).join("");
    writeFileSync(`${this.mapPath}.tmp`, text);
    renameSync(`${this.mapPath}.tmp`, this.mapPath);
    return ++this.mapWrites;
  }

  private async push(commands: string[], write: number, sailboxIds: string[]): Promise<void> {
    // no HAProxy, or one started from this write or a later one: it has these routes from the file
    if (!this.haproxy.running || this.loaded >= write) return;
    try {
      await this.api.change(commands);
    } catch (err) {
      this.log.error({ sailboxIds, err: String(err) }, "HAProxy refused a route change; replacing its whole map");
      await this.resync(sailboxIds);
    }
  }

  /** Make HAProxy's map the daemon's, atomically; restart HAProxy (which loads routes.map) if even that fails. */
  private async resync(sailboxIds: string[]): Promise<void> {
    try {
      await this.api.replaceMap(this.mapPath, [...this.map]);
      this.log.warn({ sailboxIds, routes: this.map.size }, "HAProxy's routes resynchronised");
    } catch (err) {
      this.log.error({ sailboxIds, err: String(err) }, "could not resynchronise HAProxy's routes; restarting it");
      await this.haproxy.restart();
    }
  }

  private host(label: string): string {
    return `${label}.${this.domain}`;
  }
}

/** The boxes a route change is about (for logs). */
function changedBoxes(change: RouteChange): string[] {
  const ids = new Set(change.http.set.map(([, route]) => route.sailboxId));
  for (const label of change.http.remove) {
    const id = parseHttpLabel(label)?.sailboxId;
    if (id) ids.add(id);
  }
  return [...ids];
}
