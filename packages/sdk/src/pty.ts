import { checkPtyRequest, errorFromWire, InternalError, ptyQuery, type PtyRequest, type PtyServerMessage } from "@sail/protocol";
import type WebSocket from "ws";
import type { CallOptions, SailClient } from "./client.js";
import { Queue } from "./queue.js";

export interface PtyOptions {
  /** The command, run with /bin/sh -c. @default the box's login shell */
  cmd?: string;
  /** Working directory inside the Sailbox. @default "/root" */
  cwd?: string;
  /** Extra environment variables (TERM is xterm-256color unless you set it). */
  env?: Record<string, string>;
  /** Terminal size in character cells. @default 80 x 24 */
  cols?: number;
  rows?: number;
}

/**
 * A command on a pseudo-terminal in a Sailbox (`sail box exec -it`): raw bytes in and out,
 * a size you can change, an exit code at the end. `close()` hangs up (the program gets SIGHUP).
 *
 * @example
 * const pty = await sb.pty({ cols: 120, rows: 40 });
 * pty.write("ls --color\r");
 * for await (const chunk of pty.output) process.stdout.write(chunk);
 * console.log(await pty.wait());
 */
export class PtySession {
  /** What the program writes to the terminal, as raw bytes (read it once, or use `onData`). */
  readonly output: AsyncIterable<Uint8Array>;
  private readonly queue = new Queue<Uint8Array>();
  private readonly listeners = new Set<(chunk: Uint8Array) => void>();
  /** Output that arrived before any `onData` listener: the first listener gets it, so none is lost. */
  private early: Uint8Array[] | undefined = [];
  private readonly exit: Promise<number>;

  /** @internal */
  constructor(private readonly ws: WebSocket) {
    this.output = this.queue;
    this.exit = new Promise<number>((resolve, reject) => {
      const fail = (err: unknown) => {
        this.queue.end(err);
        reject(err);
      };
      ws.on("message", (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => {
        const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
        if (isBinary) {
          const chunk = new Uint8Array(bytes);
          this.queue.push(chunk);
          if (this.early) this.early.push(chunk);
          else for (const listener of this.listeners) listener(chunk);
          return;
        }
        const message = JSON.parse(bytes.toString("utf8")) as PtyServerMessage;
        if (message.type === "exit") {
          this.queue.end();
          resolve(message.exitCode);
        } else if (message.type === "error") fail(errorFromWire(message, 500));
      });
      ws.on("error", (err) => fail(new InternalError("SAIL_UNAVAILABLE", `The terminal's connection to the Sail daemon failed: ${err.message}`)));
      ws.on("close", (code) => fail(new InternalError("SAIL_INTERNAL", `The terminal's connection closed (WebSocket code ${code}) before the program's exit code arrived`)));
    });
    this.exit.catch(() => {}); // surfaced through wait() and the output
  }

  /** Call `listener` with each chunk of output (alongside `output`); the first listener also gets what arrived before it. */
  onData(listener: (chunk: Uint8Array) => void): () => void {
    this.listeners.add(listener);
    // what the program wrote between the terminal's opening and this first listener
    const early = this.early;
    this.early = undefined;
    for (const chunk of early ?? []) listener(chunk);
    return () => this.listeners.delete(listener);
  }

  /** Type into the terminal: keystrokes as the terminal sends them ("\r" is Enter, "\x03" is Ctrl-C). */
  write(data: string | Uint8Array): void {
    this.ws.send(typeof data === "string" ? Buffer.from(data, "utf8") : data, { binary: true });
  }

  /** Change the terminal's size; the program gets SIGWINCH. */
  resize(cols: number, rows: number): void {
    this.ws.send(JSON.stringify({ type: "resize", cols, rows }));
  }

  /** Resolves to the exit code once the program ends (128+N when signal N ended it). */
  wait(): Promise<number> {
    return this.exit;
  }

  /** Hang up: the program gets SIGHUP, as when an SSH session drops. */
  close(): void {
    this.ws.close(1000);
  }
}

/** Open the PTY WebSocket; resolves once it is open (refusals before the upgrade reject with their typed error). */
export async function openPty(client: SailClient, sailboxId: string, options: PtyOptions & CallOptions): Promise<PtySession> {
  const request: PtyRequest = { cols: options.cols ?? 80, rows: options.rows ?? 24, cmd: options.cmd, cwd: options.cwd, env: options.env };
  checkPtyRequest(request);
  return client.webSocket(`/v1/sailboxes/${encodeURIComponent(sailboxId)}/pty?${ptyQuery(request)}`, (ws) => new PtySession(ws), { signal: options.signal, timeoutMs: options.timeoutMs });
}
