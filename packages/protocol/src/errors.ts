/**
 * One catalogue of every error Sail raises, shared by the server (which picks the
 * HTTP status from it) and the SDK (which rebuilds the right class from `code`).
 * Codes are stable: clients match on them, so never rename one.
 */

/** The families users `instanceof` on; each maps to one SDK class. */
export type ErrorKind = "InvalidArgument" | "NotFound" | "Conflict" | "LimitExceeded" | "Timeout" | "Aborted" | "Auth" | "SailboxPaused" | "Internal";

/** Who answers with a code: the API, the HTTPS gateway (its own error pages), or the SDK itself. */
export type ErrorSource = "api" | "gateway" | "sdk";

interface CodeInfo {
  readonly status: number;
  readonly kind: ErrorKind;
  /** Default "api". */
  readonly from?: ErrorSource | readonly ErrorSource[];
  /** Where the gateway answers the same condition with another status than the API. */
  readonly gatewayStatus?: number;
}

/**
 * Every error code Sail answers, with its HTTP status and the SDK class (kind) it maps to.
 * The gateway's codes are here too: one catalogue for the API, the gateway and both SDKs.
 */
export const ERROR_CODES = {
  // request shape
  SAIL_BAD_JSON: { status: 400, kind: "InvalidArgument" },
  SAIL_BODY_TOO_LARGE: { status: 413, kind: "InvalidArgument" },
  SAIL_UNKNOWN_FIELD: { status: 400, kind: "InvalidArgument" },
  SAIL_INVALID_ARGUMENT: { status: 400, kind: "InvalidArgument" },
  SAIL_NAME_INVALID: { status: 400, kind: "InvalidArgument" },
  SAIL_IMAGE_UNKNOWN: { status: 400, kind: "InvalidArgument" },
  SAIL_IMAGE_ARCH_UNSUPPORTED: { status: 400, kind: "InvalidArgument" },
  SAIL_IMAGE_PACKAGES_INVALID: { status: 400, kind: "InvalidArgument" },
  SAIL_IMAGE_BUILD_FAILED: { status: 400, kind: "InvalidArgument" },
  SAIL_RESOURCES_INVALID: { status: 400, kind: "InvalidArgument" },
  SAIL_EXEC_INVALID: { status: 400, kind: "InvalidArgument" },
  // creates carry an Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): a reuse with another body is 422 there
  SAIL_IDEMPOTENCY_KEY_INVALID: { status: 400, kind: "InvalidArgument" },
  SAIL_IDEMPOTENCY_KEY_REUSED: { status: 422, kind: "Conflict" },
  // ingress rules (rules.ts)
  SAIL_PORT_INVALID: { status: 400, kind: "InvalidArgument" },
  SAIL_PORT_DUPLICATE: { status: 400, kind: "InvalidArgument" },
  SAIL_PORT_RESERVED: { status: 400, kind: "InvalidArgument" },
  SAIL_PORT_SSH_ON_HTTP: { status: 400, kind: "InvalidArgument" },
  SAIL_PROTOCOL_INVALID: { status: 400, kind: "InvalidArgument" },
  SAIL_CIDR_ON_HTTP: { status: 400, kind: "InvalidArgument" },
  SAIL_CIDR_INVALID: { status: 400, kind: "InvalidArgument" },
  SAIL_PORT_UNAUTHENTICATED: { status: 400, kind: "InvalidArgument" },
  SAIL_LISTENER_NOT_FOUND: { status: 404, kind: "NotFound" },
  SAIL_SSH_KEY_INVALID: { status: 400, kind: "InvalidArgument" },
  // outbound network rules (network.ts)
  SAIL_NETWORK_ENTRY_INVALID: { status: 400, kind: "InvalidArgument" },
  SAIL_NETWORK_ENTRY_REFUSED: { status: 400, kind: "InvalidArgument" },
  SAIL_NETWORK_POLICY_CONFLICT: { status: 400, kind: "InvalidArgument" },
  // auth
  SAIL_AUTH_MISSING: { status: 401, kind: "Auth" },
  SAIL_AUTH_INVALID: { status: 401, kind: "Auth" },
  SAIL_FORBIDDEN: { status: 403, kind: "Auth" },
  SAIL_TOKEN_NOT_FOUND: { status: 404, kind: "NotFound" },
  SAIL_ORG_NOT_FOUND: { status: 404, kind: "NotFound" },
  // the web console: a login link is single-use and short-lived; cookie requests must come from the console's own origin
  SAIL_CONSOLE_LINK_INVALID: { status: 401, kind: "Auth" },
  SAIL_ORIGIN_FORBIDDEN: { status: 403, kind: "Auth" },
  SAIL_SESSION_FORBIDDEN: { status: 403, kind: "Auth" },
  // lookups
  SAIL_ROUTE_NOT_FOUND: { status: 404, kind: "NotFound" },
  SAIL_APP_NOT_FOUND: { status: 404, kind: "NotFound" },
  SAIL_SAILBOX_NOT_FOUND: { status: 404, kind: "NotFound" },
  SAIL_EXEC_NOT_FOUND: { status: 404, kind: "NotFound" },
  // state
  SAIL_NAME_TAKEN: { status: 409, kind: "Conflict" },
  SAIL_SAILBOX_NOT_RUNNING: { status: 409, kind: "Conflict" },
  // another request drives the box right now (its lease in the store), and did not finish in time
  SAIL_SAILBOX_BUSY: { status: 409, kind: "Conflict" },
  // paused: the API refuses the call (409); the gateway refuses the traffic (503, the box is not serving)
  SAIL_SAILBOX_PAUSED: { status: 409, kind: "SailboxPaused", from: ["api", "gateway"], gatewayStatus: 503 },
  SAIL_LIMIT_EXCEEDED: { status: 429, kind: "LimitExceeded" },
  SAIL_TCP_LIMIT_EXCEEDED: { status: 429, kind: "LimitExceeded" },
  SAIL_ORG_LIMIT_EXCEEDED: { status: 429, kind: "LimitExceeded" },
  // the box's disk (bytes or inodes) is full: what Sail writes into it (a background exec's log) cannot be made (RFC 4918's 507)
  SAIL_DISK_FULL: { status: 507, kind: "LimitExceeded" },
  SAIL_TIMEOUT: { status: 504, kind: "Timeout", from: "sdk" },
  // the caller's own AbortSignal ended the call (499: nginx's "client closed request"; never on the wire)
  SAIL_ABORTED: { status: 499, kind: "Aborted", from: "sdk" },
  SAIL_LISTENER_TIMEOUT: { status: 504, kind: "Timeout" },
  // ours
  SAIL_RUNTIME_FAILED: { status: 500, kind: "Internal" },
  // a runtime step (thaw, freeze, create, destroy) passed its deadline: it was stopped, the box's lock released
  SAIL_RUNTIME_TIMEOUT: { status: 504, kind: "Timeout" },
  // the host could not bind a TCP listener's public port (another program holds it): the gateway keeps retrying
  SAIL_LISTENER_UNBOUND: { status: 503, kind: "Internal" },
  SAIL_INTERNAL: { status: 500, kind: "Internal" },
  SAIL_UNAVAILABLE: { status: 503, kind: "Internal", from: "sdk" },
  // the control plane cannot reach the node that runs the box (or no node has joined yet)
  SAIL_NODE_UNAVAILABLE: { status: 503, kind: "Internal" },
  // `sail node drain` of a node no control plane has heard of
  SAIL_NODE_NOT_FOUND: { status: 404, kind: "NotFound" },
  // the control plane's database (PostgreSQL) did not answer in time or could not be reached; nothing known changed
  SAIL_STORE_UNAVAILABLE: { status: 503, kind: "Internal" },
  // the HTTPS gateway's own answers (x-sail-error), for traffic to published ports
  SAIL_ROUTE_UNKNOWN: { status: 404, kind: "NotFound", from: "gateway" },
  SAIL_HOST_AMBIGUOUS: { status: 400, kind: "InvalidArgument", from: "gateway" },
  // a connection the edge passed by its TLS server name carries a request for another host (HTTP/2 coalescing, RFC 9110 §15.5.20): reconnect
  SAIL_MISDIRECTED: { status: 421, kind: "InvalidArgument", from: "gateway" },
  SAIL_NOTHING_LISTENING: { status: 502, kind: "Conflict", from: "gateway" },
  SAIL_UPSTREAM_FAILED: { status: 502, kind: "Internal", from: "gateway" },
  SAIL_WAKE_TIMEOUT: { status: 503, kind: "Timeout", from: "gateway" },
  SAIL_UPSTREAM_TIMEOUT: { status: 504, kind: "Timeout", from: "gateway" },
} as const satisfies Record<string, CodeInfo>;

/** The status a code is answered with by `source` (the gateway's differs for some). */
export function statusOf(code: ErrorCode, source: "api" | "gateway" = "api"): number {
  const info: CodeInfo = ERROR_CODES[code];
  return source === "gateway" && info.gatewayStatus !== undefined ? info.gatewayStatus : info.status;
}

export type ErrorCode = keyof typeof ERROR_CODES;

/** What every refusal looks like on the wire: `{ "error": { code, message, ... } }`. */
export interface WireError {
  error: {
    code: ErrorCode | string;
    message: string;
    sailboxId?: string;
    port?: number;
    [detail: string]: unknown;
  };
}

/** Details an error may carry besides its message (sailbox, port, limit, ...). */
export type ErrorDetails = { sailboxId?: string; port?: number; [detail: string]: unknown };

/**
 * The one base class of every error Sail raises, on the server and in the SDK.
 *
 * @example
 * try { await Sailbox.create({ app, image: Image.debian_arm64 }); }
 * catch (e) { if (e instanceof SailError) console.error(e.code, e.message); }
 */
export class SailError extends Error {
  override readonly name: string = "SailError";
  readonly code: ErrorCode | string;
  readonly status: number;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode | string, message: string, details: ErrorDetails = {}) {
    super(message);
    this.code = code;
    this.status = (ERROR_CODES as Record<string, CodeInfo>)[code]?.status ?? 500;
    this.details = details;
  }

  get sailboxId(): string | undefined {
    return this.details.sailboxId;
  }

  toWire(): WireError {
    return { error: { ...this.details, code: this.code, message: this.message } };
  }
}

/** Bad input: the request was refused and nothing changed. */
export class InvalidArgumentError extends SailError {
  override readonly name = "InvalidArgumentError";
}
/** The app, sailbox, exec or route does not exist (or is not yours). */
export class NotFoundError extends SailError {
  override readonly name = "NotFoundError";
}
/** The request clashes with the current state (a name in use, a box not running). */
export class ConflictError extends SailError {
  override readonly name = "ConflictError";
}
/** A quota would be exceeded; the message names the limit and the usage. */
export class LimitExceededError extends SailError {
  override readonly name = "LimitExceededError";
}
/** Something did not happen in the time allowed. */
export class TimeoutError extends SailError {
  override readonly name = "TimeoutError";
}
/** The caller's AbortSignal ended the call; `cause` is the signal's reason. */
export class AbortedError extends SailError {
  override readonly name = "AbortedError";
}
/** The token is missing, wrong or revoked. */
export class AuthError extends SailError {
  override readonly name = "AuthError";
}
/** The sailbox is paused: resume it first. */
export class SailboxPausedError extends SailError {
  override readonly name = "SailboxPausedError";
}
/** Sail itself failed; the message says what it was doing. */
export class InternalError extends SailError {
  override readonly name = "InternalError";
}

const CLASS_OF_KIND: Record<ErrorKind, new (code: string, message: string, details?: ErrorDetails) => SailError> = {
  InvalidArgument: InvalidArgumentError,
  NotFound: NotFoundError,
  Conflict: ConflictError,
  LimitExceeded: LimitExceededError,
  Timeout: TimeoutError,
  Aborted: AbortedError,
  Auth: AuthError,
  SailboxPaused: SailboxPausedError,
  Internal: InternalError,
};

/** Build the error class that belongs to `code` (the one table both sides share). */
export function sailError(code: ErrorCode, message: string, details: ErrorDetails = {}): SailError {
  const Class = CLASS_OF_KIND[ERROR_CODES[code].kind];
  return new Class(code, message, details);
}

/** Rebuild a typed error from a wire body; unknown codes become a plain SailError. */
export function errorFromWire(body: unknown, status: number): SailError {
  const err = (body as Partial<WireError> | null)?.error;
  if (!err || typeof err.code !== "string" || typeof err.message !== "string") {
    return new InternalError("SAIL_INTERNAL", `Sail answered HTTP ${status} without an error body`);
  }
  const { code, message, ...details } = err;
  const info = (ERROR_CODES as Record<string, CodeInfo>)[code];
  const Class = info ? CLASS_OF_KIND[info.kind] : SailError;
  return new Class(code, message, details as ErrorDetails);
}
