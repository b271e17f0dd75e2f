import { readFile, stat } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { extname, join, normalize, sep } from "node:path";
import { sailError } from "@sail/protocol";
import type { ConsoleSessions } from "./console-sessions.js";

/**
 * The console's Content-Security-Policy: scripts, fetches and the terminal's WebSocket from the
 * console's own origin only; no frames, no plugins, no inline script. Inline styles are allowed
 * because xterm.js writes its theme and cell sizes into <style> elements it creates.
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const SECURITY_HEADERS = {
  "content-security-policy": CONSOLE_CSP,
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
};

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".json": "application/json",
};

/**
 * `/console/…`: the console's static files (packages/console/dist, built by `npm run build`),
 * and `/console/login?token=…`, which trades a login link for a session cookie. The files hold
 * no data: everything the console shows comes from the API with the session cookie.
 */
export class ConsoleAssets {
  constructor(
    private readonly dir: string,
    private readonly sessions: ConsoleSessions,
  ) {}

  /** Whether this request is the console's (the API answers everything else). */
  static handles(pathname: string): boolean {
    return pathname === "/" || pathname === "/console" || pathname.startsWith("/console/");
  }

  async serve(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    this.sessions.checkHost(req);
    if (req.method !== "GET" && req.method !== "HEAD") throw sailError("SAIL_ROUTE_NOT_FOUND", `No console route ${req.method} ${url.pathname}`);
    if (url.pathname === "/" || url.pathname === "/console") return redirect(res, "/console/");
    if (url.pathname === "/console/login") return this.login(req, res, url);
    const relative = url.pathname === "/console/" ? "index.html" : decodeURIComponent(url.pathname.slice("/console/".length));
    const path = normalize(join(this.dir, relative));
    if (!path.startsWith(this.dir + sep) || relative.includes("\0")) throw sailError("SAIL_ROUTE_NOT_FOUND", `No console file ${url.pathname}`);
    const info = await stat(path).catch(() => undefined);
    if (!info?.isFile()) {
      if (relative === "index.html") throw sailError("SAIL_ROUTE_NOT_FOUND", `The console is not built (no ${path}): run \`npm run build\``);
      throw sailError("SAIL_ROUTE_NOT_FOUND", `No console file ${url.pathname}`);
    }
    const body = await readFile(path);
    res.writeHead(200, {
      ...SECURITY_HEADERS,
      "content-type": TYPES[extname(path)] ?? "application/octet-stream",
      "content-length": body.length,
      // Vite puts a content hash in every asset's name; the page itself must be fetched again
      "cache-control": relative.startsWith("assets/") ? "public, max-age=31536000, immutable" : "no-store",
    });
    res.end(req.method === "HEAD" ? undefined : body);
  }

  /** A single-use link from `sail console`: set the session cookie and go to the console, leaving no secret in the address bar. */
  private async login(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    res.setHeader("cache-control", "no-store");
    res.setHeader("referrer-policy", "no-referrer");
    let session: string;
    try {
      session = await this.sessions.redeem(url.searchParams.get("token") ?? "");
    } catch (err) {
      const message = (err as Error).message;
      const page = `<!doctype html><meta charset="utf-8"><title>Sail console</title><h1>Sail console</h1><p>SAIL_CONSOLE_LINK_INVALID: ${escapeHtml(message)}</p>`;
      res.writeHead(401, { ...SECURITY_HEADERS, "content-type": "text/html; charset=utf-8", "x-sail-error": "SAIL_CONSOLE_LINK_INVALID" });
      res.end(page);
      return;
    }
    res.setHeader("set-cookie", this.sessions.cookie(session, req));
    redirect(res, "/console/");
  }
}

function redirect(res: ServerResponse, location: string): void {
  res.writeHead(303, { location, "cache-control": "no-store", "content-length": 0 });
  res.end();
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
