import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { sailError } from "@sail/protocol";
import type { OrgRow } from "../boxes/boxes.js";

/** The console's session cookie: HttpOnly (no script reads it), SameSite=Strict (no other site sends it). */
export const SESSION_COOKIE = "sail_session";

/** A login link works once, within this time (like a Jupyter token URL, but single-use and short-lived). */
export const LOGIN_LINK_TTL_MS = 2 * 60_000;
/** A session lasts this long from login; then `sail console` again. */
export const SESSION_TTL_MS = 12 * 60 * 60_000;
/** Bounded memory: the oldest sessions and links go first. */
const MAX_ENTRIES = 1000;

interface Grant {
  /** SHA-256 of the API token that asked for the link: the session dies when that token is revoked. */
  tokenSha256: string;
  expiresAt: number;
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

/**
 * Login links and sessions of the web console, in memory (a daemon restart logs everyone
 * out). Only hashes are kept: neither a link's secret nor a session id can be read back.
 */
export class ConsoleSessions {
  private readonly links = new Map<string, Grant>();
  private readonly sessions = new Map<string, Grant>();

  constructor(
    /** The org of a live API token, by its SHA-256. */
    private readonly orgForTokenHash: (sha256: string) => Promise<OrgRow | undefined>,
    /** The box domain: box pages are attacker-controlled, so the console never answers under it. */
    private readonly boxDomain: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** A single-use login secret for the holder of `bearerToken`. */
  createLoginLink(bearerToken: string): { token: string; expiresAt: string } {
    const token = randomBytes(32).toString("base64url");
    const expiresAt = this.now() + LOGIN_LINK_TTL_MS;
    remember(this.links, sha256(token), { tokenSha256: sha256(bearerToken), expiresAt }, this.now());
    return { token, expiresAt: new Date(expiresAt).toISOString() };
  }

  /** Trade a login secret (once) for a session id. */
  async redeem(loginToken: string): Promise<string> {
    const key = sha256(loginToken);
    const grant = this.links.get(key);
    this.links.delete(key);
    if (!grant || grant.expiresAt < this.now() || !(await this.orgForTokenHash(grant.tokenSha256))) {
      throw sailError("SAIL_CONSOLE_LINK_INVALID", "This console link was already used, has expired (links last 2 minutes) or its token was revoked: run `sail console` for a new one");
    }
    const session = randomBytes(32).toString("base64url");
    remember(this.sessions, sha256(session), { tokenSha256: grant.tokenSha256, expiresAt: this.now() + SESSION_TTL_MS }, this.now());
    return session;
  }

  /** The `Set-Cookie` value of a session (Secure when the console is reached over HTTPS). */
  cookie(session: string, req: IncomingMessage): string {
    return `${SESSION_COOKIE}=${session}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${SESSION_TTL_MS / 1000}${isHttps(req) ? "; Secure" : ""}`;
  }

  clearingCookie(req: IncomingMessage): string {
    return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${isHttps(req) ? "; Secure" : ""}`;
  }

  /** The session id the request carries, if any. */
  sessionOf(req: IncomingMessage): string | undefined {
    for (const part of (req.headers.cookie ?? "").split(";")) {
      const [name, ...value] = part.trim().split("=");
      if (name === SESSION_COOKIE && value.length) return value.join("=");
    }
    return undefined;
  }

  /**
   * The org of a cookie-authenticated request. State-changing methods and WebSocket upgrades
   * must come from the console's own page: `Origin` must equal this request's own origin
   * (CSRF and cross-site WebSocket hijacking), on top of the SameSite=Strict cookie.
   */
  async authenticate(req: IncomingMessage, session: string, stateChanging: boolean): Promise<OrgRow> {
    this.checkHost(req);
    const grant = this.sessions.get(sha256(session));
    const org = grant && grant.expiresAt >= this.now() ? await this.orgForTokenHash(grant.tokenSha256) : undefined;
    if (!org) {
      this.sessions.delete(sha256(session));
      throw sailError("SAIL_AUTH_INVALID", "Your console session ended (expired, logged out, the daemon restarted or its token was revoked): run `sail console` for a new link");
    }
    if (stateChanging) this.checkOrigin(req);
    return org;
  }

  logout(session: string | undefined): void {
    if (session) this.sessions.delete(sha256(session));
  }

  /** Box pages live under the box domain: the console must not be same-site with them. */
  checkHost(req: IncomingMessage): void {
    const host = (req.headers.host ?? "").toLowerCase().replace(/:\d+$/, "");
    if (host === this.boxDomain || host.endsWith(`.${this.boxDomain}`)) {
      throw sailError(
        "SAIL_ORIGIN_FORBIDDEN",
        `The console is not served under the box domain ${this.boxDomain} (box pages there are anyone's content): open it at the API's address, e.g. http://127.0.0.1:7070/console/`,
      );
    }
  }

  checkOrigin(req: IncomingMessage): void {
    const origin = req.headers.origin;
    const expected = `${isHttps(req) ? "https" : "http"}://${req.headers.host ?? ""}`;
    if (!origin || !sameText(origin.toLowerCase(), expected.toLowerCase())) {
      throw sailError("SAIL_ORIGIN_FORBIDDEN", `A request with the console's session must come from the console itself (Origin ${expected}), not ${JSON.stringify(origin ?? "none")}`, {
        origin: origin ?? null,
      });
    }
  }
}

function remember(map: Map<string, Grant>, key: string, grant: Grant, now: number): void {
  for (const [k, g] of map) if (g.expiresAt < now) map.delete(k);
  while (map.size >= MAX_ENTRIES) map.delete(map.keys().next().value!);
  map.set(key, grant);
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function isHttps(req: IncomingMessage): boolean {
  return (req.socket as { encrypted?: boolean }).encrypted === true;
}
