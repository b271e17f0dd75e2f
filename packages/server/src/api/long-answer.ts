import type { IncomingMessage, ServerResponse } from "node:http";
import { sailError, SailError, type BuildProgress } from "@sail/protocol";
import { sendJson } from "./http-util.js";

/**
 * A line every 5 s while nothing else is said: far inside every idle timer between a client
 * and the daemon (undici's body timeout is 300 s, the SDKs give up after 60 s of silence), so
 * a build of many minutes never reads as a dead daemon.
 */
export const HEARTBEAT_MS = 5000;

/** Progress lines of one step come at most this often (debootstrap prints hundreds of lines); a new step goes out at once. */
const PROGRESS_EVERY_MS = 500;

/** The client asked for the streamed form (`Accept: application/x-ndjson`). */
export function wantsStream(req: IncomingMessage): boolean {
  return (req.headers.accept ?? "").includes("application/x-ndjson");
}

export interface LongCall<T> {
  result: Promise<T>;
  /** Where progress comes from. */
  listen(sink: (progress: BuildProgress) => void): void;
  /** The client went away before the answer. */
  onGone(): void;
  /** The final line's key: `{"sailbox": …}`, `{"image": …}`. */
  finalKey: string;
  /** The status of the one-JSON answer. */
  status: number;
  startedAt: number;
  headers?: Record<string, string>;
}

/**
 * Answer a call that may take minutes (a create that builds an image, an image build). Streamed:
 * 200 and the headers at once, progress lines, heartbeats, then one final line, the value or
 * `{"error": …}`. Otherwise one JSON answer at the end, as before streaming existed (old clients).
 * Either way `onGone` runs if the client leaves before the answer.
 */
export async function answerLong<T>(req: IncomingMessage, res: ServerResponse, call: LongCall<T>, log: { error(obj: object, msg: string): void }): Promise<void> {
  let answered = false;
  let gone = false;
  const onClose = () => {
    if (answered) return;
    gone = true;
    call.onGone();
  };
  res.on("close", onClose);
  if (!wantsStream(req)) {
    try {
      const value = await call.result;
      answered = true;
      for (const [name, header] of Object.entries(call.headers ?? {})) res.setHeader(name, header);
      return sendJson(res, call.status, value);
    } catch (err) {
      if (gone) return; // nobody to tell: the create was abandoned, and left nothing
      throw err;
    } finally {
      answered = true;
      res.off("close", onClose);
    }
  }
  res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store", ...call.headers });
  res.flushHeaders();
  let lastLine = Date.now();
  let lastProgress: BuildProgress | undefined;
  const write = (event: object) => {
    if (res.writableEnded || res.destroyed) return;
    res.write(JSON.stringify(event) + "\n");
    lastLine = Date.now();
  };
  call.listen((progress) => {
    const sameStep = lastProgress && lastProgress.phase === progress.phase && lastProgress.step === progress.step;
    if (sameStep && Date.now() - lastLine < PROGRESS_EVERY_MS) return;
    lastProgress = progress;
    write({ progress });
  });
  const heartbeat = setInterval(() => {
    if (Date.now() - lastLine >= HEARTBEAT_MS / 2) write({ heartbeat: { elapsedMs: Date.now() - call.startedAt } });
  }, HEARTBEAT_MS);
  try {
    const value = await call.result;
    answered = true;
    res.end(JSON.stringify({ [call.finalKey]: value }) + "\n");
  } catch (err) {
    answered = true;
    if (gone) return;
    if (!(err instanceof SailError)) log.error({ err: String((err as Error).stack ?? err), method: req.method, url: req.url }, "API request failed");
    const error = err instanceof SailError ? err : sailError("SAIL_INTERNAL", `Sail failed on ${req.method} ${req.url}: ${(err as Error).message}`);
    res.end(JSON.stringify(error.toWire()) + "\n");
  } finally {
    clearInterval(heartbeat);
    res.off("close", onClose);
  }
}
