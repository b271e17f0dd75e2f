/**
 * The control plane's side of the node wire: a NodeApi whose calls go to a node agent over
 * HTTP (undici, kept-alive) and a WebSocket for the PTY. Every call is bounded: a deadline of
 * its own (long ones — an image build, a create, a listener wait — a deadline that fits them)
 * and the caller's signal; a node that cannot be reached is SAIL_NODE_UNAVAILABLE naming it.
 */
import { Agent, request, type Dispatcher } from "undici";
import WebSocket from "ws";
import { errorFromWire, ptyQuery, sailError, SailError, type NetworkInfo, type PtyRequest } from "@sail/protocol";
import type { NodeApi, NodeBoxSpec, NodeBoxState, NodeExec, NodeExecEvent, NodeInfo, NodePty } from "./node-api.js";
import { WIRE_PREFIX, wireHeaders } from "./wire.js";

/** A quick call (a power change, a network change, a listing): seconds, or the node is stuck. */
const QUICK_MS = 60_000;
/** A create (crun run, firewall, sshd) within the node's own 120 s deadline. */
const CREATE_MS = 150_000;
/** An image build: an emulated first build takes minutes; the stream's lines keep it alive. */
const BUILD_IDLE_MS = 10 * 60_000;

type Method = "GET" | "POST" | "PUT" | "DELETE";

export class RemoteNode implements NodeApi {
  private readonly dispatcher: Dispatcher;

  constructor(
    /** The node's wire address, e.g. http://198.51.100.130:7080 */
    readonly url: string,
    private readonly credential: string,
  ) {
    this.dispatcher = new Agent({ keepAliveTimeout: 30_000, connect: { timeout: 5_000 } });
  }

  close(): Promise<void> {
    return this.dispatcher.close();
  }

  private async call(method: Method, path: string, options: { body?: unknown; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Dispatcher.ResponseData> {
    const timeoutMs = options.timeoutMs ?? QUICK_MS;
    const signal = options.signal ? AbortSignal.any([options.signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
    let answer: Dispatcher.ResponseData;
    try {
      answer = await request(`${this.url}${WIRE_PREFIX}${path}`, {
        method,
        dispatcher: this.dispatcher,
        headers: { ...wireHeaders(this.credential), ...(options.body === undefined ? {} : { "content-type": "application/json" }) },
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    } catch (err) {
      if (options.signal?.aborted) throw options.signal.reason;
      throw sailError("SAIL_NODE_UNAVAILABLE", `The node at ${this.url} did not answer ${method} ${path}: ${(err as Error).message}`, { node: this.url });
    }
    if (answer.statusCode >= 400) throw errorFromWire(await answer.body.json().catch(() => undefined), answer.statusCode);
    return answer;
  }

  private async json<T>(method: Method, path: string, options: { body?: unknown; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<T> {
    return (await (await this.call(method, path, options)).body.json()) as T;
  }

  info(): Promise<NodeInfo> {
    return this.json("GET", "/info");
  }

  async prepareImage(image: { arch: NodeBoxSpec["image"]["arch"]; aptPackages: string[] }, options: Parameters<NodeApi["prepareImage"]>[1] = {}): Promise<void> {
    const answer = await this.call("POST", "/images", { body: image, timeoutMs: BUILD_IDLE_MS, signal: options.signal });
    for await (const line of ndjson(answer.body)) {
      const value = line as { progress?: Parameters<NonNullable<NonNullable<Parameters<NodeApi["prepareImage"]>[1]>["onProgress"]>>[0]; done?: boolean; error?: unknown };
      if (value.progress) options.onProgress?.(value.progress);
      if (value.error) throw errorFromWire(value, 500);
      if (value.done) return;
    }
    throw sailError("SAIL_NODE_UNAVAILABLE", `The node at ${this.url} ended an image build without saying how it ended`, { node: this.url });
  }

  createBox(spec: NodeBoxSpec, options: { signal?: AbortSignal } = {}): Promise<NodeBoxState> {
    return this.json("POST", "/boxes", { body: spec, timeoutMs: CREATE_MS, signal: options.signal });
  }

  async destroyBox(sailboxId: string, options: { afterCrash?: boolean; signal?: AbortSignal } = {}): Promise<void> {
    await this.call("DELETE", `/boxes/${encodeURIComponent(sailboxId)}${options.afterCrash ? "?afterCrash=true" : ""}`, { timeoutMs: CREATE_MS, signal: options.signal });
  }

  setPower(sailboxId: string, action: "sleep" | "pause" | "resume"): Promise<NodeBoxState> {
    return this.json("POST", `/boxes/${encodeURIComponent(sailboxId)}/power`, { body: { action } });
  }

  awake(sailboxId: string): Promise<NodeBoxState> {
    return this.json("POST", `/boxes/${encodeURIComponent(sailboxId)}/awake`, { body: {} });
  }

  async setNetwork(sailboxId: string, policy: NetworkInfo): Promise<void> {
    await this.call("PUT", `/boxes/${encodeURIComponent(sailboxId)}/network`, { body: policy });
  }

  async exec(sailboxId: string, request: { cmd: string; cwd?: string; env?: Record<string, string> }): Promise<NodeExec> {
    const stop = new AbortController();
    // a foreground command runs as long as the user wants: the stream has no deadline, the client's close ends it
    const answer = await this.call("POST", `/boxes/${encodeURIComponent(sailboxId)}/exec`, { body: request, timeoutMs: 0x7fffffff, signal: stop.signal });
    const url = this.url;
    return {
      kill: () => stop.abort(new Error("killed")),
      events: (async function* () {
        try {
          for await (const line of ndjson(answer.body)) {
            const value = line as NodeExecEvent & { error?: unknown };
            if (value.error) throw errorFromWire(value, 500);
            yield value;
          }
        } catch (err) {
          if (stop.signal.aborted) return;
          if (err instanceof SailError) throw err;
          throw sailError("SAIL_NODE_UNAVAILABLE", `The node at ${url} dropped the command's stream: ${(err as Error).message}`, { node: url, sailboxId });
        }
      })(),
    };
  }

  async execBackground(sailboxId: string, execId: string, request: { cmd: string; cwd?: string; env?: Record<string, string> }): Promise<void> {
    await this.call("POST", `/boxes/${encodeURIComponent(sailboxId)}/execs/${encodeURIComponent(execId)}`, { body: request });
  }

  execLog(sailboxId: string, execId: string, options: { follow?: boolean; signal?: AbortSignal } = {}): AsyncIterable<Uint8Array> {
    const call = () =>
      this.call("GET", `/boxes/${encodeURIComponent(sailboxId)}/execs/${encodeURIComponent(execId)}/log${options.follow ? "?follow=true" : ""}`, { timeoutMs: 0x7fffffff, signal: options.signal });
    return (async function* () {
      const answer = await call();
      for await (const chunk of answer.body) yield chunk as Uint8Array;
    })();
  }

  async pty(sailboxId: string, request: PtyRequest): Promise<NodePty> {
    const query = ptyQuery(request);
    const ws = new WebSocket(`${this.url.replace(/^http/, "ws")}${WIRE_PREFIX}/boxes/${encodeURIComponent(sailboxId)}/pty?${query}`, {
      headers: wireHeaders(this.credential),
      perMessageDeflate: false,
      handshakeTimeout: QUICK_MS,
    });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("unexpected-response", (_req, res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (d: string) => (body += d));
        res.on("end", () => reject(errorFromWire(safeJson(body), res.statusCode ?? 500)));
      });
      ws.once("error", (err) => reject(sailError("SAIL_NODE_UNAVAILABLE", `Could not open a terminal on the node at ${this.url}: ${err.message}`, { node: this.url, sailboxId })));
    });
    return wirePty(ws);
  }

  async startSshd(sailboxId: string): Promise<void> {
    await this.call("POST", `/boxes/${encodeURIComponent(sailboxId)}/sshd`, { body: {} });
  }

  async waitListener(sailboxId: string, listener: Parameters<NodeApi["waitListener"]>[1], timeoutMs: number): Promise<void> {
    await this.call("POST", `/boxes/${encodeURIComponent(sailboxId)}/listeners/wait`, { body: { listener, timeoutMs }, timeoutMs: timeoutMs + QUICK_MS });
  }

  traffic(sailboxId: string): ReturnType<NodeApi["traffic"]> {
    return this.json("GET", `/boxes/${encodeURIComponent(sailboxId)}/traffic`);
  }

  async boxes(): Promise<NodeBoxState[]> {
    return (await this.json<{ boxes: NodeBoxState[] }>("GET", "/boxes")).boxes;
  }

  box(sailboxId: string): Promise<NodeBoxState> {
    return this.json("GET", `/boxes/${encodeURIComponent(sailboxId)}`);
  }

  adopt(expected: Parameters<NodeApi["adopt"]>[0]): ReturnType<NodeApi["adopt"]> {
    return this.json("POST", "/adopt", { body: { expected }, timeoutMs: CREATE_MS });
  }

  checkNetwork(policy: NetworkInfo): Promise<NetworkInfo> {
    return this.json("POST", "/network-check", { body: policy });
  }

  async metricsText(): Promise<string> {
    return (await this.call("GET", "/metrics")).body.text();
  }
}

/** A PTY whose bytes travel as the WebSocket's binary frames; the last text frame says how it ended. */
function wirePty(ws: WebSocket): NodePty {
  const chunks: Uint8Array[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  let settle!: { resolve: (code: number) => void; reject: (err: unknown) => void };
  const exit = new Promise<number>((resolve, reject) => (settle = { resolve, reject }));
  exit.catch(() => {});
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    if (isBinary) {
      chunks.push(new Uint8Array(data));
      wake?.();
      return;
    }
    const message = safeJson(data.toString("utf8")) as { type?: string; exitCode?: number; error?: unknown };
    if (message.type === "exit") settle.resolve(message.exitCode ?? 0);
    else if (message.type === "error") settle.reject(errorFromWire(message, 500));
  });
  ws.once("close", () => {
    ended = true;
    wake?.();
    settle.reject(sailError("SAIL_NODE_UNAVAILABLE", "The node closed the terminal without an exit code", {}));
  });
  return {
    output: (async function* () {
      for (;;) {
        while (chunks.length) yield chunks.shift()!;
        if (ended) return;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
    })(),
    write: (bytes) => ws.readyState === ws.OPEN && ws.send(bytes, { binary: true }),
    resize: (cols, rows) => ws.readyState === ws.OPEN && ws.send(JSON.stringify({ type: "resize", cols, rows })),
    exit,
    close: () => ws.close(),
  };
}

/** One JSON value per line of a body stream. */
async function* ndjson(body: AsyncIterable<unknown>): AsyncIterable<unknown> {
  let buffered = "";
  const decoder = new TextDecoder();
  for await (const chunk of body) {
    buffered += decoder.decode(chunk as Uint8Array, { stream: true });
    let newline: number;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line) yield JSON.parse(line);
    }
  }
  if (buffered.trim()) yield JSON.parse(buffered);
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
