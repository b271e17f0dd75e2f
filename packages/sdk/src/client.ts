import { errorFromWire, InternalError, TimeoutError, type ExecEvent } from "@sail/protocol";
import WebSocket from "ws";
import { resolveConnection, type ConnectionOptions } from "./config.js";

type Method = "GET" | "POST" | "PUT" | "DELETE";
const IDEMPOTENT: ReadonlySet<Method> = new Set(["GET", "PUT", "DELETE"]);
/** Retries for idempotent requests when the daemon is unreachable (it may be restarting). */
const RETRY_DELAYS_MS = [100, 300, 900];

/**
 * The SDK's one transport: auth → retry (idempotent methods only) → timeout.
 * Every App and Sailbox holds one; `SailClient.default()` reads the environment.
 */
export class SailClient {
  private static shared: SailClient | undefined;
  readonly apiUrl: string;
  /** A true private field: never enumerable, so no JSON.stringify or log line shows it. */
  readonly #token: string;
  private readonly requestTimeoutMs: number;

  constructor(options: ConnectionOptions = {}) {
    const { apiUrl, token } = resolveConnection(options);
    this.apiUrl = apiUrl;
    this.#token = token;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 60_000;
  }

  toJSON(): { apiUrl: string } {
    return { apiUrl: this.apiUrl };
  }

  /** The client built from `SAIL_API_URL` / `SAIL_TOKEN` or the config file, made once. */
  static default(): SailClient {
    SailClient.shared ??= new SailClient();
    return SailClient.shared;
  }

  /** A JSON request; a refusal becomes the typed error its `code` names. */
  async request<T>(method: Method, path: string, body?: unknown, signal?: AbortSignal, timeoutMs?: number): Promise<T> {
    const response = await this.send(method, path, body, signal, true, timeoutMs);
    const text = await response.text();
    const parsed = text ? safeJson(text) : undefined;
    if (!response.ok) throw errorFromWire(parsed, response.status);
    return parsed as T;
  }

  /** A plain-text answer (logs). */
  async text(path: string, signal?: AbortSignal): Promise<string> {
    const response = await this.send("GET", path, undefined, signal);
    const text = await response.text();
    if (!response.ok) throw errorFromWire(safeJson(text), response.status);
    return text;
  }

  /** A streamed NDJSON answer: yields one event per line as it arrives (no timeout: commands run as long as they run). */
  async *stream(path: string, body: unknown, signal?: AbortSignal): AsyncGenerator<ExecEvent> {
    const response = await this.send("POST", path, body, signal, false);
    if (!response.ok) throw errorFromWire(safeJson(await response.text()), response.status);
    if (!response.body) return;
    const decoder = new TextDecoder();
    let buffered = "";
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      buffered += decoder.decode(chunk, { stream: true });
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (line) yield JSON.parse(line) as ExecEvent;
      }
    }
  }

  /**
   * A WebSocket to the API, authenticated by the header (the token never goes in a URL).
   * `attach` runs as the socket opens, before any message can be emitted (one may arrive with
   * the upgrade's answer); a refused upgrade rejects with the typed error of its JSON body.
   */
  webSocket<T>(path: string, attach: (ws: WebSocket) => T): Promise<T> {
    const url = this.apiUrl.replace(/^http/, "ws") + path;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${this.#token}` }, perMessageDeflate: false, handshakeTimeout: this.requestTimeoutMs });
      ws.once("open", () => resolve(attach(ws)));
      ws.once("unexpected-response", (_req, res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (d: string) => (text += d.slice(0, 65536)));
        res.on("end", () => reject(errorFromWire(safeJson(text), res.statusCode ?? 500)));
        res.on("error", () => reject(errorFromWire(undefined, res.statusCode ?? 500)));
      });
      ws.once("error", (err) => reject(new InternalError("SAIL_UNAVAILABLE", `Cannot reach the Sail daemon at ${this.apiUrl} (${describeCause(err)}): is \`sail up\` running?`)));
    });
  }

  private async send(method: Method, path: string, body: unknown, signal?: AbortSignal, withTimeout = true, timeoutMs = this.requestTimeoutMs): Promise<Response> {
    const attempts = IDEMPOTENT.has(method) ? RETRY_DELAYS_MS.length + 1 : 1;
    for (let attempt = 0; ; attempt++) {
      const signals = [signal, withTimeout ? AbortSignal.timeout(timeoutMs) : undefined].filter((s): s is AbortSignal => !!s);
      try {
        return await fetch(this.apiUrl + path, {
          method,
          headers: {
            authorization: `Bearer ${this.#token}`,
            ...(body === undefined ? {} : { "content-type": "application/json" }),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: signals.length ? AbortSignal.any(signals) : undefined,
        });
      } catch (err) {
        if ((err as Error).name === "TimeoutError") {
          throw new TimeoutError("SAIL_TIMEOUT", `${method} ${path} got no answer from ${this.apiUrl} within ${timeoutMs} ms`);
        }
        if ((err as Error).name === "AbortError") throw err;
        if (attempt + 1 >= attempts) {
          throw new InternalError("SAIL_UNAVAILABLE", `Cannot reach the Sail daemon at ${this.apiUrl} (${describeCause(err)}): is \`sail up\` running?`);
        }
        await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS_MS[attempt]));
      }
    }
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function describeCause(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (err as Error).message;
}
