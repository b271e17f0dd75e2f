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

const REASONS: Record<number, string> = {
  400: "Bad Request", 404: "Not Found", 408: "Request Timeout", 431: "Request Header Fields Too Large",
  501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
};

/**
 * A complete HTTP/1.1 answer the gateway gives itself (the connection then closes):
 * JSON for clients that ask for it (`Accept: application/json`), a short HTML page otherwise.
 * One status per cause: 404 unknown, 502 nothing listening, 503 paused or waking too long.
 */
export function errorResponse(accept: string | undefined, err: GatewayError): string {
  const reason = REASONS[err.status] ?? "Error";
  let type: string;
  let body: string;
  if (/application\/json/i.test(accept ?? "")) {
    const { status: _status, retryAfterSeconds: _retry, ...error } = err;
    type = "application/json; charset=utf-8";
    body = JSON.stringify({ error });
  } else {
    type = "text/html; charset=utf-8";
    body = `<!doctype html><html><head><meta charset="utf-8"><title>${err.status} ${reason}</title></head><body style="font-family:sans-serif;max-width:40em;margin:4em auto"><h1>${err.status} ${reason}</h1><p>${escapeHtml(err.message)}</p><p><small>Sail gateway · ${err.code}</small></p></body></html>\n`;
  }
  return (
    `HTTP/1.1 ${err.status} ${reason}\r\nconnection: close\r\ncache-control: no-store\r\ncontent-type: ${type}\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nx-sail-error: ${err.code}\r\n${err.retryAfterSeconds ? `retry-after: ${err.retryAfterSeconds}\r\n` : ""}\r\n${body}`
  );
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
