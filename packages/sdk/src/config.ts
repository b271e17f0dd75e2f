import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { AuthError, type ClientConfig } from "@sail/protocol";

/** Where `sail up` writes the client config: `$SAIL_CONFIG`, else `~/.sail/config.json`. */
export function clientConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.SAIL_CONFIG || join(homedir(), ".sail", "config.json");
}

export interface ConnectionOptions {
  /**
   * The daemon's API, e.g. `http://127.0.0.1:7070`.
   * @default `SAIL_API_URL`, else the config file `sail up` wrote
   */
  apiUrl?: string;
  /**
   * The org's bearer token.
   * @default `SAIL_TOKEN`, else the config file `sail up` wrote
   */
  token?: string;
  /**
   * How long one API request may take before it fails with a `TimeoutError`.
   * @default 60000
   */
  requestTimeoutMs?: number;
}

/** Resolve option > environment > config file; fail with a message that says how to fix it. */
export function resolveConnection(options: ConnectionOptions = {}, env: NodeJS.ProcessEnv = process.env): ClientConfig {
  let file: Partial<ClientConfig> = {};
  const path = clientConfigPath(env);
  if (!(options.apiUrl ?? env.SAIL_API_URL) || !(options.token ?? env.SAIL_TOKEN)) {
    try {
      file = JSON.parse(readFileSync(path, "utf8")) as Partial<ClientConfig>;
    } catch {
      file = {};
    }
  }
  const apiUrl = options.apiUrl ?? env.SAIL_API_URL ?? file.apiUrl;
  const token = options.token ?? env.SAIL_TOKEN ?? file.token;
  if (!apiUrl || !token) {
    throw new AuthError("SAIL_AUTH_MISSING", `No Sail daemon configured: set SAIL_API_URL and SAIL_TOKEN, or run \`sail up\` on this machine (it writes ${path})`);
  }
  return { apiUrl: apiUrl.replace(/\/+$/, ""), token };
}
