import { NotFoundError, type IngressPortSpec, type IngressProtocol, type ListenerInfo, type TcpListenerState } from "@sail/protocol";
import type { SailClient } from "./client.js";

/**
 * A port to publish when you create a Sailbox. A bare number in `ingressPorts` is HTTP;
 * use this class for raw TCP, optionally restricted to source CIDRs.
 *
 * @example
 * ingressPorts: [3000, new IngressPort(5432, "tcp", { cidrAllowlist: ["203.0.113.0/24"] })]
 * @example
 * ingressPorts: [new IngressPort(50051, "http", { h2c: true })] // a gRPC server
 */
export interface IngressPortOptions {
  /** TCP only: source prefixes allowed to connect ("203.0.113.0/24", "198.51.100.7/32"); others are dropped before reaching the guest. @default any source */
  cidrAllowlist?: string[];
  /** TCP only: confirm a well-known unauthenticated port (PostgreSQL, Redis, …) may be reached from anywhere. */
  allowPublic?: boolean;
  /** HTTP only: speak cleartext HTTP/2 (h2c) to the server in the box, e.g. gRPC. Clients use h2 or HTTP/1.1 either way. @default false */
  h2c?: boolean;
  /** TCP only: send the server a PROXY protocol v2 header first, so it sees the client's address. @default false */
  proxyProtocol?: boolean;
}

export class IngressPort {
  readonly cidrAllowlist: string[] | undefined;
  readonly allowPublic: boolean | undefined;
  readonly h2c: boolean | undefined;
  readonly proxyProtocol: boolean | undefined;

  constructor(
    readonly port: number,
    readonly protocol: IngressProtocol = "http",
    options: IngressPortOptions = {},
  ) {
    this.cidrAllowlist = options.cidrAllowlist;
    this.allowPublic = options.allowPublic;
    this.h2c = options.h2c;
    this.proxyProtocol = options.proxyProtocol;
  }

  /** @internal */
  toSpec(): IngressPortSpec {
    return {
      port: this.port,
      protocol: this.protocol,
      ...(this.cidrAllowlist !== undefined ? { cidrAllowlist: this.cidrAllowlist } : {}),
      ...(this.allowPublic !== undefined ? { allowPublic: this.allowPublic } : {}),
      ...(this.h2c !== undefined ? { h2c: this.h2c } : {}),
      ...(this.proxyProtocol !== undefined ? { proxyProtocol: this.proxyProtocol } : {}),
    };
  }
}

/** Where an HTTP listener is reachable: `url` (https://…; use wss://… for WebSocket). */
export class HttpEndpoint {
  constructor(
    readonly url: string,
    readonly host: string,
    readonly port: number,
  ) {}
}

/** Where a raw-TCP listener is reachable: dial `host`:`port`. `url` is `tcp://host:port`. */
export class TcpEndpoint {
  readonly url: string;
  constructor(
    readonly host: string,
    readonly port: number,
  ) {
    this.url = `tcp://${host}:${port}`;
  }
}

/**
 * A published port of a Sailbox. `sb.listener(port)` gives a handle at once, with its
 * endpoint: the URL and the TCP port are fixed when the Sailbox is created, so an app can
 * configure callbacks before its server is up. `await listener.wait({ timeout })` resolves
 * when a process serves the port.
 *
 * @example
 * const listener = await sb.listener(3000).wait({ timeout: 60 });
 * console.log(listener.endpoint.url);
 */
export class Listener {
  readonly #client: SailClient;
  private info: ListenerInfo | undefined;

  /** @internal */
  constructor(
    client: SailClient,
    readonly sailboxId: string,
    readonly port: number,
    info?: ListenerInfo,
    /** @internal the ports the Sailbox publishes, for the error when this one is not among them */
    private readonly published: readonly number[] = [],
  ) {
    this.#client = client;
    this.info = info;
  }

  /** "http" or "tcp". */
  get protocol(): IngressProtocol {
    return this.known().protocol;
  }

  /** `HttpEndpoint` (with `url`) for HTTP, `TcpEndpoint` (with `host`, `port`) for TCP. */
  get endpoint(): HttpEndpoint & TcpEndpoint {
    const info = this.known();
    const e = info.endpoint;
    return (info.protocol === "http" ? new HttpEndpoint((e as { url: string }).url, e.host, e.port) : new TcpEndpoint(e.host, e.port)) as HttpEndpoint & TcpEndpoint;
  }

  /**
   * TCP: whether this Sail host holds the public port — `"bound"`, `"pending"`, or `"unbound"`
   * (another program holds it; Sail keeps retrying, `unbound` says why). HTTP listeners share
   * the gateway's port: always `"bound"`.
   */
  get state(): TcpListenerState {
    const info = this.known();
    return info.protocol === "tcp" ? info.state : "bound";
  }

  /** TCP, when `state` is `"unbound"`: the OS's `code` (e.g. `EADDRINUSE`), its `message`, and `since` when. */
  get unbound(): { code: string; message: string; since: string } | undefined {
    const info = this.known();
    return info.protocol === "tcp" ? info.unbound : undefined;
  }

  /**
   * Wait until a process in the Sailbox accepts connections on this port and the
   * public endpoint routes to it. Resolves to this listener; rejects with a
   * `TimeoutError` naming the box and port (and saying so when the process
   * listens on 127.0.0.1 only), or with `SAIL_LISTENER_UNBOUND` (an `InternalError`)
   * when this Sail host could not bind a TCP listener's public port. `timeout` is in seconds
   * (`timeoutMs` in milliseconds, if you prefer); `signal` cancels the wait with `AbortedError`.
   */
  async wait(options: { timeout?: number; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<this> {
    const timeoutMs = options.timeoutMs ?? Math.round((options.timeout ?? 60) * 1000);
    const path = `/v1/sailboxes/${this.sailboxId}/listeners/${this.port}?waitMs=${timeoutMs}`;
    this.info = await this.#client.request<ListenerInfo>("GET", path, undefined, { signal: options.signal, timeoutMs: timeoutMs + 30_000 });
    return this;
  }

  toJSON(): ListenerInfo | { sailboxId: string; port: number } {
    return this.info ?? { sailboxId: this.sailboxId, port: this.port };
  }

  private known(): ListenerInfo {
    if (!this.info) {
      const ports = this.published.length ? `it publishes ${this.published.join(", ")}` : "it publishes no ports";
      throw new NotFoundError("SAIL_LISTENER_NOT_FOUND", `Sailbox ${this.sailboxId} does not publish port ${this.port} (${ports}): pass it in ingressPorts when you create the sailbox`, {
        sailboxId: this.sailboxId,
        port: this.port,
      });
    }
    return this.info;
  }
}
