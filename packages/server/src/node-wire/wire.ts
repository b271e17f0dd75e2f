/**
 * What both ends of the node wire agree on: the version header, the bearer credential and
 * how it is compared, and the JSON error body (the API's own `{ error: { code, message } }`).
 */
import { timingSafeEqual, createHash } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { sailError, SailError } from "@sail/protocol";
import { NODE_WIRE_VERSION } from "./node-api.js";

export const VERSION_HEADER = "sail-wire-version";

/** The node wire's routes live under this prefix (on the node's listener, and on the control plane's API for node → control). */
export const WIRE_PREFIX = "/node/v1";

/** Refuse a request without the shared node credential, or from another wire version. */
export function checkWireRequest(req: IncomingMessage, credential: string): void {
  const header = req.headers.authorization ?? "";
  const given = header.startsWith("Bearer ") ? header.slice(7).trim() : "";
  if (!sameSecret(given, credential)) throw sailError("SAIL_AUTH_INVALID", "The node wire needs the node credential (sail up --node-token) as a bearer token");
  const version = Number(req.headers[VERSION_HEADER]);
  if (version !== NODE_WIRE_VERSION) {
    throw sailError(
      "SAIL_INVALID_ARGUMENT",
      `This side speaks node wire version ${NODE_WIRE_VERSION}, the other ${req.headers[VERSION_HEADER] ?? "none"}: run the same Sail version on the control plane and its nodes`,
      {
        field: VERSION_HEADER,
      },
    );
  }
}

/** Constant-time comparison of two secrets of any length (hashes first, so lengths leak nothing). */
export function sameSecret(a: string, b: string): boolean {
  const x = createHash("sha256").update(a).digest();
  const y = createHash("sha256").update(b).digest();
  return timingSafeEqual(x, y) && a.length > 0;
}

export function wireHeaders(credential: string): Record<string, string> {
  return { authorization: `Bearer ${credential}`, [VERSION_HEADER]: String(NODE_WIRE_VERSION) };
}

/** Answer an error on the wire: a SailError as it is, anything else as SAIL_INTERNAL naming what failed. */
export function sendWireError(res: ServerResponse, err: unknown, what: string): void {
  const error = err instanceof SailError ? err : sailError("SAIL_INTERNAL", `The node failed on ${what}: ${(err as Error)?.message ?? String(err)}`);
  if (res.headersSent) {
    // a stream already under way: its last line says why it ended
    res.end(JSON.stringify(error.toWire()) + "\n");
    return;
  }
  const body = JSON.stringify(error.toWire());
  res.writeHead(error.status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

/** Bodies on the wire are small JSON documents (a box's spec is the largest). */
const MAX_WIRE_BODY_BYTES = 1024 * 1024;

/** The JSON body of a wire request (an empty body is `{}`). */
export async function readWireJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_WIRE_BODY_BYTES) throw sailError("SAIL_BODY_TOO_LARGE", `A node wire body is larger than ${MAX_WIRE_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  if (!size) return {};
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
  } catch {
    throw sailError("SAIL_BAD_JSON", "A node wire body is not JSON");
  }
}

export function sendWireJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body ?? {});
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
