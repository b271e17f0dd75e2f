/**
 * `@sail/sdk`: create Sailboxes, run commands in them, publish their ports.
 * Finds the daemon from `SAIL_API_URL` / `SAIL_TOKEN`, else the config `sail up` wrote.
 */
export { App, type FindAppOptions } from "./app.js";
export { Sailbox, type CreateSailboxOptions, type ExecOptions, type NetworkOptions } from "./sailbox.js";
export { Image } from "./image.js";
export { IngressPort, Listener, HttpEndpoint, TcpEndpoint, type IngressPortOptions } from "./listener.js";
export { ExecProcess, BackgroundProcess, type ExecOutput } from "./exec.js";
export { PtySession, type PtyOptions } from "./pty.js";
export { SailClient, type CallOptions, type ProgressEvent } from "./client.js";
export { describeProgress, printBuildProgress } from "./progress.js";
export { Tokens } from "./tokens.js";
export { Orgs } from "./orgs.js";
export { Nodes } from "./nodes.js";
export { clientConfigPath, type ConnectionOptions } from "./config.js";
export {
  SailError,
  InvalidArgumentError,
  NotFoundError,
  ConflictError,
  LimitExceededError,
  TimeoutError,
  AbortedError,
  AuthError,
  SailboxPausedError,
  InternalError,
  ERROR_CODES,
  type ErrorCode,
  type SailboxStatus,
  type SailboxInfo,
  type AppInfo,
  type ListenerInfo,
  type TokenInfo,
  type CreatedToken,
  type OrgLimits,
  type OrgLimitsInfo,
  type NodeSummary,
  type SetOrgLimitsRequest,
  type ConsoleLoginLink,
  type SailboxTraffic,
  type ListenerTraffic,
  type BuildProgress,
  type ImageInfo,
} from "@sail/protocol";
