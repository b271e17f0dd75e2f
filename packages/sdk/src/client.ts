import { randomUUID } from "node:crypto";
import { AbortedError, errorFromWire, InternalError, SailError, TimeoutError, type BuildProgress, type ExecEvent } from "@sail/protocol";
import WebSocket from "ws";
import { resolveConnection, type ConnectionOptions } from "./config.js";

/** What every SDK call takes besides its own options. */
export interface CallOptions {
  /** Cancel the call: it rejects with `AbortedError` (a create cancelled before its answer leaves no box). */
  signal?: AbortSignal;
  /**
   * Give up after this many milliseconds with `TimeoutError`.
   * @default the client's `requestTimeoutMs` (60 s); none for a create or an image build, which stream progress while they work
   */
  timeoutMs?: number;
}

/** A line of a streamed create or build besides its answer: a step, or a heartbeat while nothing else happens. */
export type ProgressEvent = { progress: BuildProgress } | { heartbeat: { elapsedMs: number } };

type Method = "GET" | "POST" | "PUT" | "DELETE";
const IDEMPOTENT: ReadonlySet<Method> = new Set(["GET", "PUT", "DELETE"]);
/** Pauses before retrying a request whose answer never came (the daemon may be restarting). */
const RETRY_DELAYS_MS = [100, 300, 900];
/** A streamed answer silent this long (the daemon sends a heartbeat every 5 s) is a lost connection: retried. */
const STREAM_IDLE_MS = 60_000;

/** The request may not have reached the daemon, or its answer was lost: safe to send again where the request says so. */
class AnswerLost extends Error {}

/**
 * The SDK's one transport: auth → retry (idempotent requests, and creates by their
 * Idempotency-Key) → deadline and signal, each ending in a typed error.
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
  async request<T>(method: Method, path: string, body?: unknown, options: CallOptions = {}): Promise<T> {
    const deadline = new Deadline(options, this.requestTimeoutMs);
    return deadline.run(`${method} ${path}`, this.apiUrl, () =>
      this.withRetries(IDEMPOTENT.has(method), deadline.signal, async () => {
        const response = await this.fetch(method, path, body, deadline.signal);
        const text = await response.text();
        const parsed = text ? safeJson(text) : undefined;
        if (!response.ok) throw errorFromWire(parsed, response.status);
        return parsed as T;
      }),
    );
  }

  /** A plain-text answer (logs, the CA certificate). */
  async text(path: string, options: CallOptions = {}): Promise<string> {
    const deadline = new Deadline(options, this.requestTimeoutMs);
    return deadline.run(`GET ${path}`, this.apiUrl, () =>
      this.withRetries(true, deadline.signal, async () => {
        const response = await this.fetch("GET", path, undefined, deadline.signal);
        const text = await response.text();
        if (!response.ok) throw errorFromWire(safeJson(text), response.status);
        return text;
      }),
    );
  }

  /**
   * A create or an image build: the daemon answers at once and streams progress (`onEvent`),
   * with a heartbeat every 5 s, then the result (`finalKey`), so no timeout of the HTTP client
   * cuts a build of many minutes short. A lost answer (reset, or silent for a minute) is
   * retried with the same Idempotency-Key, which joins the call still in flight.
   */
  async longCall<T>(path: string, body: unknown, finalKey: string, options: CallOptions & { onEvent?: (event: ProgressEvent) => void; idempotencyKey?: string } = {}): Promise<T> {
    const deadline = new Deadline(options, undefined);
    const key = options.idempotencyKey ?? randomUUID();
    return deadline.run(`POST ${path}`, this.apiUrl, () =>
      this.withRetries(true, deadline.signal, async () => {
        const idle = new IdleWatch(STREAM_IDLE_MS);
        const signal = deadline.signal ? AbortSignal.any([deadline.signal, idle.signal]) : idle.signal;
        try {
          const response = await this.fetch("POST", path, body, signal, { accept: "application/x-ndjson", "idempotency-key": key });
          if (!response.ok) {
            const parsed = safeJson(await response.text());
            // a proxy's 502-504 carries no Sail error: the request may not have reached the daemon
            if (response.status >= 502 && response.status <= 504 && !(parsed as { error?: unknown } | undefined)?.error) throw new AnswerLost(`HTTP ${response.status}`);
            throw errorFromWire(parsed, response.status);
          }
          // a daemon from before streaming answers with the one JSON document
          if (!response.headers.get("content-type")?.includes("application/x-ndjson")) return (await response.json()) as T;
          for await (const line of ndjsonLines(response)) {
            idle.reset();
            const event = JSON.parse(line) as Record<string, unknown>;
            if (finalKey in event) return event[finalKey] as T;
            if ("error" in event) throw errorFromWire(event, 500);
            if ("progress" in event || "heartbeat" in event) options.onEvent?.(event as ProgressEvent);
          }
          throw new AnswerLost("the answer ended before its last line");
        } catch (err) {
          if (idle.signal.aborted && !deadline.signal?.aborted) throw new AnswerLost(`no line for ${STREAM_IDLE_MS / 1000} s`);
          throw err;
        } finally {
          idle.stop();
        }
      }),
    );
  }

  /** A streamed NDJSON answer: yields one event per line as it arrives (no timeout unless asked: commands run as long as they run). */
  async *stream(path: string, body: unknown, options: CallOptions = {}): AsyncGenerator<ExecEvent> {
    const deadline = new Deadline(options, undefined);
    const what = `POST ${path}`;
    const response = await deadline.run(what, this.apiUrl, () => this.withRetries(false, deadline.signal, () => this.fetch("POST", path, body, deadline.signal)));
    if (!response.ok) throw errorFromWire(safeJson(await response.text()), response.status);
    try {
      for await (const line of ndjsonLines(response)) yield JSON.parse(line) as ExecEvent;
    } catch (err) {
      throw deadline.typed(err, what, this.apiUrl);
    }
  }

  /**
   * A WebSocket to the API, authenticated by the header (the token never goes in a URL).
   * `attach` runs as the socket opens, before any message can be emitted (one may arrive with
   * the upgrade's answer); a refused upgrade rejects with the typed error of its JSON body.
   */
  webSocket<T>(path: string, attach: (ws: WebSocket) => T, options: CallOptions = {}): Promise<T> {
    const url = this.apiUrl.replace(/^http/, "ws") + path;
    const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
    return new Promise((resolve, reject) => {
      if (options.signal?.aborted) return reject(new AbortedError("SAIL_ABORTED", `GET ${path} was aborted by its signal`, {}));
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${this.#token}` }, perMessageDeflate: false, handshakeTimeout: timeoutMs });
      const onAbort = () => {
        ws.terminate();
        reject(new AbortedError("SAIL_ABORTED", `GET ${path} was aborted by its signal`, {}));
      };
      options.signal?.addEventListener("abort", onAbort, { once: true });
      ws.once("open", () => {
        options.signal?.removeEventListener("abort", onAbort);
        resolve(attach(ws));
      });
      ws.once("unexpected-response", (_req, res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (d: string) => (text += d.slice(0, 65536)));
        res.on("end", () => reject(errorFromWire(safeJson(text), res.statusCode ?? 500)));
        res.on("error", () => reject(errorFromWire(undefined, res.statusCode ?? 500)));
      });
      ws.once("error", (err) => {
        if (/handshake has timed out/i.test(err.message)) return reject(new TimeoutError("SAIL_TIMEOUT", `GET ${path} got no answer from ${this.apiUrl} within ${timeoutMs} ms`));
        reject(new InternalError("SAIL_UNAVAILABLE", `Cannot reach the Sail daemon at ${this.apiUrl} (${describeCause(err)}): is \`sail up\` running?`));
      });
    });
  }

  private fetch(method: Method, path: string, body: unknown, signal: AbortSignal | undefined, headers: Record<string, string> = {}): Promise<Response> {
    return fetch(this.apiUrl + path, {
      method,
      headers: {
        authorization: `Bearer ${this.#token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    }).catch((err: unknown) => {
      if ((err as Error).name === "AbortError" || (err as Error).name === "TimeoutError") throw err;
      throw new AnswerLost(describeCause(err));
    });
  }

  /** Run `attempt`; when its answer was lost and `retry` allows, again after a pause (cut short by `signal`). */
  private async withRetries<T>(retry: boolean, signal: AbortSignal | undefined, attempt: () => Promise<T>): Promise<T> {
    for (let n = 0; ; n++) {
      try {
        return await attempt();
      } catch (err) {
        const lost = err instanceof AnswerLost || (!(err instanceof SailError) && !signal?.aborted && (err as Error).name !== "AbortError");
        if (!lost || !retry || n >= RETRY_DELAYS_MS.length) throw err;
        await sleep(RETRY_DELAYS_MS[n]!, signal);
      }
    }
  }
}

/** A call's end: the caller's signal, and its time limit (if any). */
class Deadline {
  private readonly timer: AbortSignal | undefined;
  readonly signal: AbortSignal | undefined;
  private readonly timeoutMs: number | undefined;

  constructor(
    private readonly options: CallOptions,
    defaultTimeoutMs: number | undefined,
  ) {
    this.timeoutMs = options.timeoutMs ?? defaultTimeoutMs;
    this.timer = this.timeoutMs === undefined ? undefined : AbortSignal.timeout(this.timeoutMs);
    const signals = [options.signal, this.timer].filter((s): s is AbortSignal => !!s);
    this.signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
  }

  async run<T>(what: string, apiUrl: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw this.typed(err, what, apiUrl);
    }
  }

  /** Any failure as the SDK's typed error: aborted by the caller, out of time, or the daemon unreachable. */
  typed(err: unknown, what: string, apiUrl: string): SailError {
    if (err instanceof SailError) return err;
    if (this.options.signal?.aborted) {
      const aborted = new AbortedError("SAIL_ABORTED", `${what} was aborted by its signal${describeReason(this.options.signal.reason)}`, {});
      return Object.assign(aborted, { cause: this.options.signal.reason });
    }
    if (this.timer?.aborted) return new TimeoutError("SAIL_TIMEOUT", `${what} got no answer from ${apiUrl} within ${this.timeoutMs} ms`);
    const cause = err instanceof AnswerLost ? err.message : describeCause(err);
    return new InternalError("SAIL_UNAVAILABLE", `Cannot reach the Sail daemon at ${apiUrl} (${cause}): is \`sail up\` running?`);
  }
}

/** Aborts when `reset` was not called for `ms`. */
class IdleWatch {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout;
  readonly signal = this.controller.signal;

  constructor(private readonly ms: number) {
    this.timer = setTimeout(() => this.controller.abort(), ms);
  }

  reset(): void {
    this.timer.refresh();
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}

/** The lines of an NDJSON body as they arrive. */
async function* ndjsonLines(response: Response): AsyncGenerator<string> {
  if (!response.body) return;
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    buffered += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (line) yield line;
    }
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
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

function describeReason(reason: unknown): string {
  if (reason === undefined) return "";
  return `: ${reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason)}`;
}
