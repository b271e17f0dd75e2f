import {
  checkDisk,
  checkExec,
  checkName,
  checkResources,
  normalizeIngressPorts,
  normalizeNetworkPolicy,
  NotFoundError,
  type BackgroundExecInfo,
  type ExecRequest,
  type ListenerInfo,
  type NetworkInfo,
  type NetworkPolicyRequest,
  type SailboxInfo,
  type SailboxStatus,
} from "@sail/protocol";
import { App } from "./app.js";
import { SailClient, type CallOptions, type ProgressEvent } from "./client.js";
import { BackgroundProcess, ExecProcess } from "./exec.js";
import { Image } from "./image.js";
import { IngressPort, Listener } from "./listener.js";
import { printBuildProgress } from "./progress.js";
import { openPty, type PtyOptions, type PtySession } from "./pty.js";
import { resolveSshKey } from "./ssh.js";

export interface CreateSailboxOptions extends CallOptions {
  app: App;
  /** @default Image.debian */
  image?: Image;
  /** Unique among the app's live Sailboxes. */
  name?: string;
  /** CPU cores, fractions allowed. @default 1 */
  cpu?: number;
  /** Memory limit in MiB. @default 1024 */
  memory?: number;
  /**
   * Disk limit in MiB: what the box may write over its image, enforced by the kernel (its own
   * filesystem: a write past it fails with ENOSPC, and `df /` in the box shows it). Its inodes
   * (files and directories) follow from it. @default the daemon's `--box-disk` (10240)
   */
  disk?: number;
  /** Ports to publish: a bare number is HTTP (an https:// URL), `new IngressPort(port, "tcp", …)` is raw TCP. */
  ingressPorts?: Array<number | IngressPort>;
  /**
   * Install and start an SSH server with your public key for root, and publish port 22 as
   * raw TCP. `true` uses ~/.ssh/id_ed25519.pub (else ~/.ssh/id_rsa.pub); a string is a key
   * or a path to one. Restrict sources with `new IngressPort(22, "tcp", { cidrAllowlist })`.
   */
  ssh?: boolean | string;
  /**
   * Sleep by itself after this many seconds idle: no inbound HTTP, WebSocket, TCP or SSH
   * connection open, no bytes moved, no exec running and no API call on it. The next
   * connection wakes it as after sleep(). @default never
   */
  idleTimeout?: number;
  /**
   * Outbound network (IPv4, through the host; names through Sail's resolver). Open by default,
   * except private ranges, the host and other boxes, which no box reaches. At most one of
   * `blockNetwork`, `allowOut` and `denyOut`; entries are IPv4 addresses or CIDRs, domain names
   * (that name only) and `*.domain` (any name below it). Change it later with `setNetwork`.
   */
  blockNetwork?: boolean;
  /** Only these destinations; a name outside the list does not resolve. */
  allowOut?: string[];
  /** Every destination but these. */
  denyOut?: string[];
  /**
   * The create's progress: the first create of an image waits for its build (minutes for
   * another architecture under emulation). By default a build prints its steps to stderr;
   * `false` keeps quiet; a function gets every step and heartbeat instead.
   */
  onProgress?: ((event: ProgressEvent) => void) | false;
}

/** A new outbound policy for `setNetwork`: the same three options as at create; none of them means open. */
export type NetworkOptions = NetworkPolicyRequest;

export interface ExecOptions extends CallOptions {
  /** Working directory inside the Sailbox (absolute). @default "/root" */
  cwd?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Start the command and return at once; its output goes to a log. @default false */
  background?: boolean;
}

/**
 * An isolated Linux machine that runs untrusted code.
 *
 * @example
 * const sb = await Sailbox.create({ app, image: Image.debian, name: "web-demo" });
 * const { stdout } = await sb.exec("uname -a").output();
 * await sb.terminate();
 */
export class Sailbox {
  readonly #client: SailClient;

  private constructor(
    client: SailClient,
    private info: SailboxInfo,
  ) {
    this.#client = client;
  }

  private get client(): SailClient {
    return this.#client;
  }

  toJSON(): SailboxInfo {
    return this.info;
  }

  get id(): string {
    return this.info.id;
  }
  get name(): string | null {
    return this.info.name;
  }
  get appId(): string {
    return this.info.appId;
  }

  /**
   * Create a Sailbox and wait until it runs. A refused create creates nothing, and so does one
   * whose `signal` or `timeoutMs` ends it first. The create carries an Idempotency-Key: if its
   * answer is lost (a reset connection), the SDK asks again with the same key and gets the box
   * the daemon made, never a second one. No time limit unless `timeoutMs`: the daemon streams
   * progress (and a heartbeat) while an image builds.
   */
  static async create(options: CreateSailboxOptions): Promise<Sailbox> {
    if (!(options.app instanceof App)) throw new TypeError("Sailbox.create needs { app }: get one with App.find({ name, mintIfMissing: true })");
    if (options.name !== undefined) checkName("sailbox", options.name);
    checkResources(options.cpu, options.memory, Number.POSITIVE_INFINITY);
    checkDisk(options.disk);
    const ingressPorts = (options.ingressPorts ?? []).map((p) => (p instanceof IngressPort ? p.toSpec() : p));
    normalizeIngressPorts(ingressPorts); // fail fast; the server checks again
    const network = { blockNetwork: options.blockNetwork, allowOut: options.allowOut, denyOut: options.denyOut };
    normalizeNetworkPolicy(network);
    const ssh = options.ssh ? { publicKey: resolveSshKey(options.ssh) } : undefined;
    const client = options.app.client;
    const image = options.image ?? Image.debian;
    const body = {
      appId: options.app.id,
      name: options.name,
      image: image.ref,
      cpu: options.cpu,
      memoryMiB: options.memory,
      diskMiB: options.disk,
      ingressPorts: ingressPorts.length ? ingressPorts : undefined,
      ssh,
      idleTimeout: options.idleTimeout,
      ...network,
    };
    const onEvent = options.onProgress === false ? undefined : (options.onProgress ?? printBuildProgress());
    const info = await client.longCall<SailboxInfo>("/v1/sailboxes", body, "sailbox", { signal: options.signal, timeoutMs: options.timeoutMs, onEvent });
    return new Sailbox(client, info);
  }

  static async fromId(id: string, options: CallOptions & { client?: SailClient } = {}): Promise<Sailbox> {
    const client = options.client ?? SailClient.default();
    return new Sailbox(client, await client.request<SailboxInfo>("GET", `/v1/sailboxes/${encodeURIComponent(id)}`, undefined, options));
  }

  /** The live Sailbox called `name` in `app` (a `NotFoundError` if there is none). */
  static async fromName(app: App, name: string, options: CallOptions = {}): Promise<Sailbox> {
    checkName("sailbox", name);
    const query = `appId=${encodeURIComponent(app.id)}&name=${encodeURIComponent(name)}&live=true`;
    const { sailboxes } = await app.client.request<{ sailboxes: SailboxInfo[] }>("GET", `/v1/sailboxes?${query}`, undefined, options);
    const found = sailboxes[0];
    if (!found) {
      throw new NotFoundError("SAIL_SAILBOX_NOT_FOUND", `No live sailbox named "${name}" in app "${app.name}"`);
    }
    return new Sailbox(app.client, found);
  }

  /** The app's Sailboxes (terminated ones too, newest first), or all of the org's without `app`. */
  static async list(options: CallOptions & { app?: App; client?: SailClient } = {}): Promise<Sailbox[]> {
    const client = options.app?.client ?? options.client ?? SailClient.default();
    const query = options.app ? `?appId=${encodeURIComponent(options.app.id)}` : "";
    const { sailboxes } = await client.request<{ sailboxes: SailboxInfo[] }>("GET", `/v1/sailboxes${query}`, undefined, options);
    return sailboxes.map((info) => new Sailbox(client, info));
  }

  /** The current state, fetched from the daemon. */
  async status(options: CallOptions = {}): Promise<SailboxStatus> {
    this.info = await this.client.request<SailboxInfo>("GET", `/v1/sailboxes/${this.id}`, undefined, options);
    return this.info.status;
  }

  /** The last-known details (refreshed by `status()`). */
  describe(): Readonly<SailboxInfo> {
    return this.info;
  }

  /**
   * Run `cmd` with `/bin/sh -c` inside the Sailbox.
   * In the foreground, `wait()` resolves to the exit code; with `background: true`,
   * `wait()` resolves once it has started and `log()` returns its output.
   */
  exec(cmd: string, options: ExecOptions & { background: true }): BackgroundProcess;
  exec(cmd: string, options?: ExecOptions & { background?: false }): ExecProcess;
  exec(cmd: string, options: ExecOptions = {}): ExecProcess | BackgroundProcess {
    const request: ExecRequest = { cmd, cwd: options.cwd, env: options.env, background: options.background };
    const path = `/v1/sailboxes/${this.id}/exec`;
    if (options.background) {
      const started = Promise.resolve().then(() => {
        checkExec(request);
        return this.client.request<BackgroundExecInfo>("POST", path, request, { signal: options.signal, timeoutMs: options.timeoutMs });
      });
      return new BackgroundProcess(this.client, started);
    }
    const client = this.client;
    async function* events() {
      checkExec(request);
      yield* client.stream(path, request, { signal: options.signal, timeoutMs: options.timeoutMs });
    }
    return new ExecProcess(events());
  }

  /**
   * Run a command (default: the box's login shell) on a pseudo-terminal, like `docker exec -it`:
   * see `PtySession`. Wakes a sleeping box; a paused one ends the session with `SailboxPausedError`.
   *
   * @example
   * const pty = await sb.pty({ cols: 100, rows: 30 });
   * pty.write("stty size\r");
   */
  pty(options: PtyOptions & CallOptions = {}): Promise<PtySession> {
    return openPty(this.client, this.id, options);
  }

  /**
   * A handle on a published port. Its `endpoint` is known at once (fixed at create); `await
   * listener.wait({ timeout })` waits until a process serves it. A port the Sailbox does not
   * publish gives a handle whose `endpoint` and `wait()` raise `NotFoundError`.
   */
  listener(port: number): Listener {
    const listeners = this.info.listeners ?? [];
    const known = listeners.find((l) => l.port === port);
    return new Listener(
      this.client,
      this.id,
      port,
      known,
      listeners.map((l) => l.port),
    );
  }

  /** Every published port of the Sailbox, with protocol and endpoint known. */
  async listeners(options: CallOptions = {}): Promise<Listener[]> {
    const { listeners } = await this.client.request<{ listeners: ListenerInfo[] }>("GET", `/v1/sailboxes/${this.id}/listeners`, undefined, options);
    return listeners.map((info) => new Listener(this.client, this.id, info.port, info));
  }

  /**
   * Sleep: open connections are dropped and the box is frozen; the next inbound HTTP,
   * WebSocket or TCP connection (or an exec) wakes it. Memory stays resident.
   */
  async sleep(options: CallOptions = {}): Promise<void> {
    this.info = await this.client.request<SailboxInfo>("POST", `/v1/sailboxes/${this.id}/sleep`, {}, options);
  }

  /** Pause: frozen, keeps its state, and does not wake on traffic (HTTP gets 503, TCP is closed). */
  async pause(options: CallOptions = {}): Promise<void> {
    this.info = await this.client.request<SailboxInfo>("POST", `/v1/sailboxes/${this.id}/pause`, {}, options);
  }

  /** Bring a paused or sleeping box back. */
  async resume(options: CallOptions = {}): Promise<void> {
    this.info = await this.client.request<SailboxInfo>("POST", `/v1/sailboxes/${this.id}/resume`, {}, options);
  }

  /** Where the Sailbox may open connections (as of the last fetch; `status()` refreshes it). */
  get network(): Readonly<NetworkInfo> {
    return this.info.network;
  }

  /**
   * Replace the outbound policy of a running (or sleeping, or paused) Sailbox: new connections
   * follow it at once, and open connections it no longer allows are cut.
   *
   * @example
   * await sb.setNetwork({ allowOut: ["*.debian.org", "198.51.100.0/24"] });
   * await sb.setNetwork({ blockNetwork: true });
   * await sb.setNetwork({}); // open again
   */
  async setNetwork(options: NetworkOptions & CallOptions): Promise<NetworkInfo> {
    const body = { blockNetwork: options.blockNetwork, allowOut: options.allowOut, denyOut: options.denyOut };
    normalizeNetworkPolicy(body);
    this.info = await this.client.request<SailboxInfo>("PUT", `/v1/sailboxes/${this.id}/network`, body, { signal: options.signal, timeoutMs: options.timeoutMs });
    return this.info.network;
  }

  /** Start the box's SSH server if it is not running; does nothing if it is (idempotent). */
  async startSshd(options: CallOptions = {}): Promise<void> {
    await this.client.request("POST", `/v1/sailboxes/${this.id}/sshd`, {}, options);
  }

  /** Stop the Sailbox and release everything it holds. Idempotent. */
  async terminate(options: CallOptions = {}): Promise<void> {
    this.info = await this.client.request<SailboxInfo>("DELETE", `/v1/sailboxes/${this.id}`, undefined, options);
  }
}
