import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";

export interface GatewayError {
  status: number;
  code: string;
  message: string;
  sailboxId?: string;
  port?: number;
}

const TITLES: Record<number, string> = { 400: "Bad request", 404: "Not found", 502: "Bad gateway", 503: "Unavailable", 504: "Gateway timeout" };

/** JSON for clients that ask for it (`Accept: application/json`), a short HTML page for browsers. */
function render(req: IncomingMessage, err: GatewayError): { type: string; body: string } {
  if (/application\/json/i.test(req.headers.accept ?? "")) {
    const { status: _status, ...error } = err;
    return { type: "application/json; charset=utf-8", body: JSON.stringify({ error }) };
  }
  const title = `${err.status} ${TITLES[err.status] ?? "Error"}`;
  const body = `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head><body style="font-family:sans-serif;max-width:40em;margin:4em auto"><h1>${title}</h1><p>${escapeHtml(err.message)}</p><p><small>Sail gateway · ${err.code}</small></p></body></html>\n`;
  return { type: "text/html; charset=utf-8", body };
}

export function sendGatewayError(req: IncomingMessage, res: ServerResponse, err: GatewayError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const { type, body } = render(req, err);
  res.writeHead(err.status, { "content-type": type, "content-length": Buffer.byteLength(body), "cache-control": "no-store", "x-sail-error": err.code });
  res.end(body);
}

/** A refused WebSocket upgrade still gets a real HTTP answer before the socket closes (as websockets/ws does). */
export function rejectUpgrade(req: IncomingMessage, socket: Duplex, err: GatewayError): void {
  const { type, body } = render(req, err);
  socket.end(
    `HTTP/1.1 ${err.status} ${TITLES[err.status] ?? "Error"}\r\nconnection: close\r\ncontent-type: ${type}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-sail-error: ${err.code}\r\n\r\n${body}`,
  );
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
