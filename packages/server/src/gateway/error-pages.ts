import { STATUS_CODES } from "node:http";
import type { ErrorCode } from "@sail/protocol";

/** An answer the gateway gives itself; `code` is from the one catalogue (@sail/protocol ERROR_CODES). */
export interface GatewayError {
  status: number;
  code: ErrorCode;
  message: string;
  sailboxId?: string;
  port?: number;
  /** Sent as Retry-After (RFC 9110 §10.2.3): when a client may try again. */
  retryAfterSeconds?: number;
}

/** A Host field with several values: which box is meant is ambiguous (RFC 9112 §3.2: 400). HAProxy answers it; the slow path too. */
export const HOST_AMBIGUOUS: GatewayError = {
  status: 400,
  code: "SAIL_HOST_AMBIGUOUS",
  message: "The request names several hosts (a Host with several values, or several Host fields): send exactly one",
};

/**
 * A request whose Host is not the TLS server name its connection was routed by: an edge passes
 * TLS to a node by SNI, so a client reusing one connection for another box's host (HTTP/2
 * coalescing with the wildcard certificate) would reach the wrong node. 421 makes it reconnect
 * (RFC 9110 §15.5.20; browsers retry on a new connection).
 */
export const MISDIRECTED: GatewayError = {
  status: 421,
  code: "SAIL_MISDIRECTED",
  message: "This connection was opened for another host: open a new connection for this one",
};

/**
 * The page for an answer the gateway gives itself: JSON for clients that ask for it
 * (`Accept: application/json`), a short HTML page otherwise; `x-sail-error` names the code.
 * One status per cause: 404 unknown, 502 nothing listening, 503 paused or waking too long.
 */
export function renderError(accept: string | undefined, err: GatewayError): { status: number; headers: Record<string, string>; body: string } {
  const reason = STATUS_CODES[err.status] ?? "Error";
  let type: string;
  let body: string;
  if (/application\/json/i.test(accept ?? "")) {
    type = "application/json; charset=utf-8";
    body = JSON.stringify({ error: { code: err.code, message: err.message, sailboxId: err.sailboxId, port: err.port } });
  } else {
    type = "text/html; charset=utf-8";
    body = `<!doctype html><html><head><meta charset="utf-8"><title>${err.status} ${reason}</title></head><body style="font-family:sans-serif;max-width:40em;margin:4em auto"><h1>${err.status} ${reason}</h1><p>${escapeHtml(err.message)}</p><p><small>Sail gateway · ${err.code}</small></p></body></html>\n`;
  }
  const headers: Record<string, string> = { "cache-control": "no-store", "content-type": type, "content-length": String(Buffer.byteLength(body)), "x-sail-error": err.code };
  if (err.retryAfterSeconds) headers["retry-after"] = String(err.retryAfterSeconds);
  return { status: err.status, headers, body };
}

/** The same answer as raw HTTP/1.1 bytes, for a connection taken over for an upgrade; the connection then closes. */
export function errorResponse(accept: string | undefined, err: GatewayError): string {
  const { status, headers, body } = renderError(accept, err);
  const head = Object.entries({ connection: "close", ...headers })
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join("");
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Error"}\r\n${head}\r\n${body}`;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
