import { sailError } from "./errors.js";
import { checkExec } from "./rules.js";

/**
 * An interactive exec: a command on a pseudo-terminal over a WebSocket
 * (`GET /v1/sailboxes/{id}/pty`, docs/api.md). Terminal bytes travel as binary frames both
 * ways; these JSON text frames carry the rest.
 */
export interface PtyRequest {
  /** Run with /bin/sh -c; omitted: the box's login shell. */
  cmd?: string;
  cwd?: string;
  env?: Record<string, string>;
  /** The terminal's size in character cells. */
  cols: number;
  rows: number;
}

/** Client → daemon (text frame). */
export type PtyClientMessage = { type: "resize"; cols: number; rows: number };

/** Daemon → client (text frame), each the last frame before the daemon closes the socket. */
export type PtyServerMessage = { type: "exit"; exitCode: number } | { type: "error"; error: { code: string; message: string; [detail: string]: unknown } };

/** Terminal sizes beyond this are mistakes (a 4K screen in a 4-pixel font is ~1000 columns). */
export const PTY_MAX_CELLS = 10_000;

/** Close code of the WebSocket after an error frame: 4000 + the code's HTTP status (4404, 4409, …). */
export const ptyCloseCode = (status: number) => 4000 + (status % 1000);

export function checkPtySize(cols: unknown, rows: unknown): { cols: number; rows: number } {
  for (const [field, value] of [
    ["cols", cols],
    ["rows", rows],
  ] as const) {
    if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > PTY_MAX_CELLS) {
      throw sailError("SAIL_INVALID_ARGUMENT", `${field} must be a whole number of character cells from 1 to ${PTY_MAX_CELLS}, got ${JSON.stringify(value)}`, { field });
    }
  }
  return { cols: cols as number, rows: rows as number };
}

/** The PTY request's checks: the exec rules for `cmd`, `cwd` and `env`, and a sane size. */
export function checkPtyRequest(request: PtyRequest): void {
  checkPtySize(request.cols, request.rows);
  if (request.cmd !== undefined) checkExec({ cmd: request.cmd, cwd: request.cwd, env: request.env });
  else checkExec({ cmd: "true", cwd: request.cwd, env: request.env });
}

/** The request as URL query parameters: `cols`, `rows`, `cmd`, `cwd` and one `env=KEY=VALUE` per variable. */
export function ptyQuery(request: PtyRequest): URLSearchParams {
  const query = new URLSearchParams({ cols: String(request.cols), rows: String(request.rows) });
  if (request.cmd !== undefined) query.set("cmd", request.cmd);
  if (request.cwd !== undefined) query.set("cwd", request.cwd);
  for (const [key, value] of Object.entries(request.env ?? {})) query.append("env", `${key}=${value}`);
  return query;
}

/** Read a PTY request from the upgrade's query; unknown parameters are refused like unknown fields. */
export function parsePtyQuery(query: URLSearchParams): PtyRequest {
  for (const key of new Set(query.keys())) {
    if (!["cols", "rows", "cmd", "cwd", "env"].includes(key)) {
      throw sailError("SAIL_UNKNOWN_FIELD", `Unknown parameter "${key}": a PTY accepts "cols", "rows", "cmd", "cwd", "env"`, { field: key });
    }
  }
  const whole = (name: string, fallback: number) => (query.has(name) ? (/^\d{1,6}$/.test(query.get(name)!) ? Number(query.get(name)) : query.get(name)) : fallback);
  const env: Record<string, string> = {};
  for (const pair of query.getAll("env")) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw sailError("SAIL_EXEC_INVALID", `env ${JSON.stringify(pair.slice(0, 80))} must be KEY=VALUE`, { field: "env" });
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const request: PtyRequest = {
    cols: whole("cols", 80) as number,
    rows: whole("rows", 24) as number,
    cmd: query.get("cmd") ?? undefined,
    cwd: query.get("cwd") ?? undefined,
    env: query.has("env") ? env : undefined,
  };
  checkPtyRequest(request);
  return request;
}
