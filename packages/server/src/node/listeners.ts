import { setTimeout as delay } from "node:timers/promises";
import { sailError } from "@sail/protocol";
import type { Runtime } from "../runtime/runtime.js";
import { PROXY_V2_LOCAL } from "../wire/proxy-protocol.js";
import type { IdleSleeper } from "./idle.js";
import type { Lifecycle } from "./lifecycle.js";
import type { NodeStore } from "./node-store.js";
import type { Power } from "./power.js";
import type { TcpBinds } from "./tcp-binds.js";

/** How often a listener wait probes the guest port. */
const LISTENER_PROBE_INTERVAL_MS = 100;
/** The longest a single wait may hold an API request. */
export const LISTENER_WAIT_MAX_MS = 10 * 60_000;

/** Waiting until a process in a box serves one of its published ports, and the node's data paths route to it. */
export class Listeners {
  constructor(
    private readonly store: Pick<NodeStore, "listListeners">,
    private readonly lifecycle: Lifecycle,
    private readonly power: Pick<Power, "awake">,
    private readonly idle: Pick<IdleSleeper, "touch">,
    private readonly runtime: Pick<Runtime, "probePort" | "listeningAddresses">,
    private readonly routesSynced: () => Promise<void>,
    private readonly binds: TcpBinds,
  ) {}

  /**
   * Resolve once a process in the box accepts connections on `port` at the box's address and
   * every data path routes to it, or fail after `timeoutMs` saying why: nothing listening, or
   * listening only where the gateway cannot reach (::1, another address), or — for raw TCP —
   * the host could not bind the public port (`SAIL_LISTENER_UNBOUND`, with the OS's reason;
   * the gateway keeps retrying it). A sleeping box is woken; a paused one refused.
   */
  async wait(id: string, port: number, timeoutMs: number): Promise<void> {
    const box = this.lifecycle.get(id);
    const listeners = this.store.listListeners(box.id);
    const listener = listeners.find((l) => l.port === port);
    if (!listener) {
      const published = listeners.map((l) => l.port);
      throw sailError(
        "SAIL_LISTENER_NOT_FOUND",
        `Sailbox ${id} does not publish port ${port}${published.length ? ` (it publishes ${published.join(", ")})` : " (it publishes no ports)"}: pass it in ingressPorts when you create the sailbox`,
        { sailboxId: id, port },
      );
    }
    const deadline = Date.now() + Math.min(Math.max(timeoutMs, 0), LISTENER_WAIT_MAX_MS);
    const bound = () => listener.protocol !== "tcp" || listener.publicPort === null || this.binds.of(listener.publicPort).state === "bound";
    for (;;) {
      this.idle.touch(box.id); // waiting for a listener is activity: the box must not fall asleep meanwhile
      await this.power.awake(id);
      if (await this.runtime.probePort(box.id, port, listener.proxyProtocol ? PROXY_V2_LOCAL : undefined)) {
        // the data paths follow the routes within the wait's own deadline
        const synced = await Promise.race([this.routesSynced().then(() => true), delay(Math.max(0, deadline - Date.now()), false, { ref: false })]);
        if (synced && bound()) return;
      }
      if (Date.now() >= deadline) break;
      await delay(Math.min(LISTENER_PROBE_INTERVAL_MS, Math.max(0, deadline - Date.now())));
    }
    if (!bound()) throw this.unbound(id, listener.port, listener.publicPort!);
    // the gateway reaches a server bound to 0.0.0.0, :: or 127.0.0.1 (connections from the host go to the box's loopback)
    const addresses = await this.runtime.listeningAddresses(box.id, port).catch(() => []);
    const reachable = (a: string) => a === "0.0.0.0" || a === "::" || a.startsWith("127.") || a.startsWith("::ffff:127.");
    const unreachableOnly = addresses.length > 0 && !addresses.some(reachable);
    const seconds = Math.round(timeoutMs / 100) / 10;
    const message = unreachableOnly
      ? `Port ${port} of sailbox ${id} did not become reachable within ${seconds} s: the process listens on ${addresses.join(" and ")} only, which the gateway cannot reach; bind it to 0.0.0.0 or 127.0.0.1 (e.g. \`--bind 0.0.0.0\`)`
      : `No process listens on port ${port} in sailbox ${id} after ${seconds} s: start your server on port ${port} (0.0.0.0 or 127.0.0.1; e.g. sb.exec("…", { background: true })), then wait again`;
    throw sailError("SAIL_LISTENER_TIMEOUT", message, { sailboxId: id, port, boundTo: addresses });
  }

  private unbound(id: string, port: number, publicPort: number): Error {
    const bind = this.binds.of(publicPort);
    const why = bind.unbound ? `${bind.unbound.code}: ${bind.unbound.message}, since ${bind.unbound.since}` : "it is still being bound";
    return sailError(
      "SAIL_LISTENER_UNBOUND",
      `Port ${port} of sailbox ${id} is not reachable: this Sail host could not bind its public TCP port ${publicPort} (${why}). Sail keeps retrying; if another program holds the port, stop it (the operator's job), then wait again`,
      { sailboxId: id, port, publicPort, reason: bind.unbound?.code ?? bind.state },
    );
  }
}
