import { checkName, checkTokenLabel, type CreatedToken, type TokenInfo } from "@sail/protocol";
import { SailClient, type CallOptions } from "./client.js";

/**
 * API tokens of your org. A token is shown once, when it is created; revoking one refuses it
 * on the very next request. The operator's org (the one `sail up` made) may create a token
 * for another org, which creates that org: its apps, boxes and listeners are invisible to
 * every other org.
 *
 * @example
 * const { token } = await Tokens.create({ label: "ci" });
 * await Tokens.revoke(id);
 */
export class Tokens {
  static async create(options: CallOptions & { label?: string; org?: string; client?: SailClient } = {}): Promise<CreatedToken> {
    const label = checkTokenLabel(options.label);
    if (options.org !== undefined) checkName("org", options.org);
    const client = options.client ?? SailClient.default();
    return client.request<CreatedToken>("POST", "/v1/tokens", { label, org: options.org }, { signal: options.signal, timeoutMs: options.timeoutMs });
  }

  /** Your org's tokens, revoked ones included (the operator may pass another `org`). */
  static async list(options: CallOptions & { org?: string; client?: SailClient } = {}): Promise<TokenInfo[]> {
    const client = options.client ?? SailClient.default();
    const query = options.org ? `?org=${encodeURIComponent(options.org)}` : "";
    return (await client.request<{ tokens: TokenInfo[] }>("GET", `/v1/tokens${query}`, undefined, { signal: options.signal, timeoutMs: options.timeoutMs })).tokens;
  }

  static async revoke(id: string, options: CallOptions & { client?: SailClient } = {}): Promise<TokenInfo> {
    const client = options.client ?? SailClient.default();
    return client.request<TokenInfo>("DELETE", `/v1/tokens/${encodeURIComponent(id)}`, undefined, { signal: options.signal, timeoutMs: options.timeoutMs });
  }
}
