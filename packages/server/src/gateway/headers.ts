import type { IncomingHttpHeaders, IncomingMessage } from "node:http";

/** Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy; nor do client-supplied forwarding headers. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "proxy-authorization", "proxy-authenticate"]);
const SPOOFABLE = new Set(["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "forwarded", "x-real-ip"]);

/** Names the Connection header lists are hop-by-hop too (RFC 9110 §7.6.1). */
function connectionListed(headers: IncomingHttpHeaders): Set<string> {
  const value = headers.connection;
  return new Set((value ?? "").split(",").map((t) => t.trim().toLowerCase()).filter(Boolean));
}

/** The client's address as the gateway saw it, IPv4-mapped IPv6 shown as IPv4. */
export function clientAddress(req: IncomingMessage): string {
  return (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
}

/**
 * Request headers for the guest: end-to-end ones as received, client-supplied
 * X-Forwarded-* dropped and set from what the gateway saw.
 */
export function upstreamRequestHeaders(req: IncomingMessage, options: { keepUpgrade?: boolean } = {}): Record<string, string | string[]> {
  const listed = connectionListed(req.headers);
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || SPOOFABLE.has(name) || name === "expect") continue;
    if ((HOP_BY_HOP.has(name) || listed.has(name)) && !(options.keepUpgrade && (name === "upgrade" || name === "connection"))) continue;
    out[name] = value;
  }
  out["x-forwarded-for"] = clientAddress(req);
  out["x-forwarded-proto"] = "https";
  if (req.headers.host) out["x-forwarded-host"] = req.headers.host;
  return out;
}

/** Response headers for the client, without hop-by-hop ones (Node frames the body itself). */
export function downstreamResponseHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const connection = headers.connection;
  const listed = new Set((Array.isArray(connection) ? connection.join(",") : connection ?? "").split(",").map((t) => t.trim().toLowerCase()).filter(Boolean));
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || listed.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Serialize a request head for a raw upstream socket (WebSocket upgrades). */
export function requestHead(method: string, path: string, headers: Record<string, string | string[]>): string {
  let head = `${method} ${path} HTTP/1.1\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value]) head += `${name}: ${v}\r\n`;
  }
  return head + "\r\n";
}
