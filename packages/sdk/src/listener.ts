import type { IngressPortSpec, IngressProtocol, ListenerInfo } from "@sail/protocol";
import type { SailClient } from "./client.js";

/**
 * A port to publish when you create a Sailbox. A bare number in `ingressPorts` is HTTP;
 * use this class for raw TCP, optionally restricted to source CIDRs.
 *
 * @example
 * ingressPorts: [3000, new IngressPort(5432, "tcp", { cidrAllowlist: ["203.0.113.0/24"] })]
 */
export class IngressPort {
  readonly cidrAllowlist: string[] | undefined;
  readonly allowPublic: boolean | undefined;

  constructor(
    readonly port: number,
    readonly protocol: IngressProtocol = "http",
    options: { cidrAllowlist?: string[]; allowPublic?: boolean } = {},
  ) {
    this.cidrAllowlist = options.cidrAllowlist;
    this.allowPublic = options.allowPublic;
  }

  /** @internal */
  toSpec(): IngressPortSpec {
    return {
      port: this.port,
      protocol: this.protocol,
      ...(this.cidrAllowlist !== undefined ? { cidrAllowlist: this.cidrAllowlist } : {}),
      ...(this.allowPublic !== undefined ? { allowPublic: this.allowPublic } : {}),
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
 * A published port of a Sailbox. `sb.listener(port)` gives a handle at once;
 * `await listener.wait({ timeout })` resolves when a process serves the port.
 *
 * @example
 * const listener = await sb.listener(3000).wait({ timeout: 60 });
 * console.log(listener.endpoint.url);
 */
export class Listener {
  private info: ListenerInfo | undefined;

  /** @internal */
  constructor(
    private readonly client: SailClient,
    readonly sailboxId: string,
    readonly port: number,
    info?: ListenerInfo,
  ) {
    this.info = info;
  }

  /** "http" or "tcp" (known after `wait()`, or for listeners from `sb.listeners()`). */
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
   * Wait until a process in the Sailbox accepts connections on this port and the
   * public endpoint routes to it. Resolves to this listener; rejects with a
   * `TimeoutError` naming the box and port (and saying so when the process
   * listens on 127.0.0.1 only).
   */
  async wait(options: { timeout?: number; signal?: AbortSignal } = {}): Promise<this> {
    const timeoutMs = Math.round((options.timeout ?? 60) * 1000);
    this.info = await this.client.request<ListenerInfo>(
      "GET",
      `/v1/sailboxes/${this.sailboxId}/listeners/${this.port}?waitMs=${timeoutMs}`,
      undefined,
      options.signal,
      timeoutMs + 30_000,
    );
    return this;
  }

  private known(): ListenerInfo {
    if (!this.info) throw new Error(`listener ${this.port} of sailbox ${this.sailboxId}: call \`await listener.wait()\` before reading its endpoint`);
    return this.info;
  }
}
