import type { IncomingMessage, ServerResponse } from "node:http";
import { sailError, SailError } from "@sail/protocol";

/** Bodies are small JSON documents; anything bigger is refused with 413. */
export const MAX_BODY_BYTES = 1024 * 1024;

/** Past this, a too-large body is not even drained: the connection is closed. */
const DISCARD_LIMIT_BYTES = 64 * 1024 * 1024;

/**
 * The request's JSON object. A body over the limit is refused with 413 as soon as that is
 * known (its Content-Length, or the first byte over); the rest is read and dropped (up to a
 * bound) rather than reset, so the client gets to read the answer.
 */
export function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const tooLarge = () => sailError("SAIL_BODY_TOO_LARGE", `The request body is larger than ${MAX_BODY_BYTES} bytes`);
  if (Number(req.headers["content-length"] ?? 0) > MAX_BODY_BYTES) {
    req.resume();
    return Promise.reject(tooLarge());
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) return void chunks.push(chunk);
      chunks.length = 0;
      reject(tooLarge()); // once: a settled promise ignores the rest
      if (size > DISCARD_LIMIT_BYTES) req.destroy();
    });
    req.on("error", reject);
    req.on("end", () => {
      if (size > MAX_BODY_BYTES) return; // refused when the first byte over arrived
      if (size === 0) return resolve({});
      try {
        resolve(parseObject(Buffer.concat(chunks).toString("utf8")));
      } catch (err) {
        reject(err);
      }
    });
  });
}

function parseObject(text: string): Record<string, unknown> {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw sailError("SAIL_BAD_JSON", `The request body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw sailError("SAIL_BAD_JSON", "The request body must be a JSON object");
  return body as Record<string, unknown>;
}

/** Refuse fields the route does not know, so a typo never silently does nothing. */
export function onlyFields(body: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) {
      throw sailError("SAIL_UNKNOWN_FIELD", `Unknown field "${key}": this request accepts ${allowed.map((a) => `"${a}"`).join(", ")}`, { field: key });
    }
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

export function sendError(res: ServerResponse, err: SailError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, err.status, err.toWire());
}

/** Resolves once `res` can take more (or its client is gone): back-pressure for streamed answers. */
export function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.once("drain", done);
    res.once("close", done);
  });
}
