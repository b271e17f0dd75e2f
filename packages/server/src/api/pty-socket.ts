import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type RawData, type WebSocket } from "ws";
import { checkPtySize, parsePtyQuery, ptyCloseCode, sailError, SailError, type PtyServerMessage } from "@sail/protocol";
import type { OrgRow } from "../boxes/boxes.js";
import type { Execs } from "../boxes/execs.js";
import type { NodePty } from "../node-wire/node-api.js";

/** A terminal's output waiting for a slow client: past this the terminal is not read (back-pressure to the program). */
const SEND_BUFFER_BYTES = 1024 * 1024;
/** Frames from clients: keystrokes and pastes; a bigger frame is a mistake or an attack. */
const MAX_FRAME_BYTES = 1024 * 1024;
/** After the program exits, output still in the terminal is forwarded until it hangs up, or this long (a background child may hold it open). */
const DRAIN_AFTER_EXIT_MS = 250;

import type { Logger } from "../boxes/logger.js";

/**
 * `GET /v1/sailboxes/{id}/pty` upgraded to a WebSocket (docs/api.md): binary frames carry the
 * terminal's bytes both ways, text frames carry `resize` (in) and `exit` / `error` (out, last).
 * The daemon never looks inside the terminal's output: it is the guest's bytes, for the
 * client's terminal emulator (xterm.js in the console) to parse.
 */
export class PtySockets {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false });

  constructor(
    private readonly execs: Pick<Execs, "execPty">,
    private readonly log: Logger,
  ) {}

  /** Take an authenticated upgrade: from here on, refusals are an error frame and a close. */
  accept(req: IncomingMessage, socket: Duplex, head: Buffer, org: OrgRow, sailboxId: string, query: URLSearchParams): void {
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      void this.serve(ws, org, sailboxId, query).catch((err) => this.fail(ws, err));
    });
  }

  private async serve(ws: WebSocket, org: OrgRow, sailboxId: string, query: URLSearchParams): Promise<void> {
    const request = parsePtyQuery(query);
    // frames that arrive while the terminal opens are kept in order
    const early: Array<[RawData, boolean]> = [];
    const keep = (data: RawData, isBinary: boolean) => early.push([data, isBinary]);
    ws.on("message", keep);
    let closedEarly = false;
    ws.once("close", () => (closedEarly = true));
    const pty = await this.execs.execPty(org, sailboxId, request);
    if (closedEarly) return pty.close();
    ws.off("message", keep);
    this.pump(ws, pty);
    for (const [data, isBinary] of early) ws.emit("message", data, isBinary);
  }

  private pump(ws: WebSocket, pty: NodePty): void {
    // the terminal's output, pulled only while the client keeps up: a slow client stops the
    // pulling, and the node then stops reading the terminal (back-pressure to the program)
    const output = (async () => {
      for await (const chunk of pty.output) {
        if (ws.readyState !== ws.OPEN) break;
        ws.send(chunk, { binary: true });
        while (ws.bufferedAmount > SEND_BUFFER_BYTES && ws.readyState === ws.OPEN) await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })().catch(() => {});

    ws.on("message", (data: RawData, isBinary: boolean) => {
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      if (isBinary) return pty.write(bytes);
      try {
        const message = parseControl(bytes);
        pty.resize(message.cols, message.rows);
      } catch (err) {
        this.fail(ws, err);
        pty.close();
      }
    });
    ws.once("close", () => pty.close());

    void pty.exit.then(
      async (exitCode: number) => {
        // output still in the terminal is forwarded until it hangs up, or a moment (a background child may hold it open)
        await Promise.race([output, new Promise((resolve) => setTimeout(resolve, DRAIN_AFTER_EXIT_MS))]);
        this.finish(ws, { type: "exit", exitCode }, 1000);
        pty.close();
      },
      (err: unknown) => this.fail(ws, err),
    );
  }

  private fail(ws: WebSocket, err: unknown): void {
    const error = err instanceof SailError ? err : sailError("SAIL_INTERNAL", `The terminal failed: ${(err as Error).message}`);
    if (!(err instanceof SailError)) this.log.error({ err: String((err as Error)?.stack ?? err) }, "PTY session failed");
    this.finish(ws, { type: "error", error: error.toWire().error }, ptyCloseCode(error.status));
  }

  private finish(ws: WebSocket, message: PtyServerMessage, code: number): void {
    if (ws.readyState !== ws.OPEN) return;
    ws.send(JSON.stringify(message));
    ws.close(code);
  }
}

function parseControl(bytes: Buffer): { cols: number; rows: number } {
  let message: unknown;
  try {
    message = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw sailError("SAIL_BAD_JSON", 'A text frame on a PTY socket must be a JSON control message such as {"type":"resize","cols":120,"rows":40}');
  }
  const { type, cols, rows } = (message ?? {}) as Record<string, unknown>;
  if (type !== "resize") throw sailError("SAIL_INVALID_ARGUMENT", `Unknown PTY control message type ${JSON.stringify(type)}: the only one is "resize"`, { field: "type" });
  return checkPtySize(cols, rows);
}
