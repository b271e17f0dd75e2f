import { errorFromWire, SailError, type AppInfo, type BackgroundExecInfo, type ListenerInfo, type SailboxInfo, type SailboxTraffic } from "@sail/protocol";

export { SailError };

/**
 * The console talks to the same API as the SDK, on its own origin, with the session cookie
 * (HttpOnly: this code never sees it). Refusals become the same typed errors, with the same
 * codes and messages the CLI prints.
 */
export async function api<T>(method: "GET" | "POST" | "PUT" | "DELETE", path: string, body?: unknown): Promise<T> {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!response.ok) throw errorFromWire(parsed, response.status);
  return parsed as T;
}

/** "SAIL_CODE: message", as `sail` prints it. */
export function describeError(err: unknown): string {
  return err instanceof SailError ? `${err.code}: ${err.message}` : String((err as Error)?.message ?? err);
}

export const listApps = () => api<{ apps: AppInfo[] }>("GET", "/v1/apps").then((r) => r.apps);
export const listBoxes = () => api<{ sailboxes: SailboxInfo[] }>("GET", "/v1/sailboxes").then((r) => r.sailboxes);
export const getBox = (id: string) => api<SailboxInfo>("GET", `/v1/sailboxes/${encodeURIComponent(id)}`);
export const getListeners = (id: string) => api<{ listeners: ListenerInfo[] }>("GET", `/v1/sailboxes/${encodeURIComponent(id)}/listeners`).then((r) => r.listeners);
export const getTraffic = (id: string) => api<SailboxTraffic>("GET", `/v1/sailboxes/${encodeURIComponent(id)}/traffic`);
export const getExecs = (id: string) => api<{ execs: BackgroundExecInfo[] }>("GET", `/v1/sailboxes/${encodeURIComponent(id)}/execs`).then((r) => r.execs);
export async function getExecLog(id: string, execId: string): Promise<string> {
  const response = await fetch(`/v1/sailboxes/${encodeURIComponent(id)}/execs/${encodeURIComponent(execId)}/log`, { credentials: "same-origin" });
  const text = await response.text();
  if (!response.ok) throw errorFromWire(JSON.parse(text || "null"), response.status);
  return text;
}
export const boxAction = (id: string, action: "sleep" | "pause" | "resume") => api<SailboxInfo>("POST", `/v1/sailboxes/${encodeURIComponent(id)}/${action}`, {});
export const terminateBox = (id: string) => api<SailboxInfo>("DELETE", `/v1/sailboxes/${encodeURIComponent(id)}`);
export const mintApp = (name: string) => api<AppInfo>("PUT", `/v1/apps/${encodeURIComponent(name)}`, {});
export const logout = () => api<object>("POST", "/v1/console/logout", {});
