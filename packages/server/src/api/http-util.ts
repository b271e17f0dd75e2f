import type { IncomingMessage, ServerResponse } from "node:http";
import { sailError, SailError } from "@sail/protocol";

/** Bodies are small JSON documents; anything bigger is refused with 413. */
export const MAX_BODY_BYTES = 1024 * 1024;

export async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw sailError("SAIL_BODY_TOO_LARGE", `The request body is larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  if (size === 0) return {};
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
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
