import { createReadStream } from "node:fs";
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import {
  sailError,
  SailError,
  type CreateTokenRequest,
  type ExecEvent,
  type ExecRequest,
  type NetworkPolicyRequest,
  type ListenerInfo,
  type ListenerTraffic,
  type SailboxTraffic,
} from "@sail/protocol";
import type { Boxes } from "../boxes/boxes.js";
import type { Tokens } from "../boxes/tokens.js";
import type { OrgRow } from "../boxes/boxes.js";
import { ProgressRelay } from "../boxes/images.js";
import { ConsoleAssets } from "./console-assets.js";
import type { ConsoleSessions } from "./console-sessions.js";
import { onlyFields, readJsonBody, sendError, sendJson } from "./http-util.js";
import { answerLong } from "./long-answer.js";
import { PtySockets } from "./pty-socket.js";

interface Logger {
  error(obj: object, msg: string): void;
}

/** Who a token belongs to; the store answers it. */
export type Authenticate = (token: string) => OrgRow | undefined;

interface Context {
  org: OrgRow;
  /** How the request authenticated: the API token, or the console's session cookie. */
  auth: { bearer?: string; session?: string };
  params: string[];
  req: IncomingMessage;
  res: ServerResponse;
  query: URLSearchParams;
}

type Handler = (ctx: Context) => Promise<void> | void;

/**
 * The control-plane API under /v1 (docs/api.md): routing, auth, request shape,
 * error → status. Business rules stay in `boxes`.
 */
/** The web console, served by the API's listener (docs/api.md, "The web console"). */
export interface ConsoleOptions {
  sessions: ConsoleSessions;
  /** packages/console/dist */
  assetsDir: string;
}

/** Per-listener counters for `GET /v1/sailboxes/{id}/traffic` (the gateway's TrafficLedger). */
export interface TrafficSource {
  forListeners(listeners: readonly ListenerInfo[]): ListenerTraffic[];
}

export function createApiServer(
  boxes: Boxes,
  tokens: Tokens,
  authenticate: Authenticate,
  tls: { caCert?: string },
  log: Logger,
  extras: { console?: ConsoleOptions; traffic?: TrafficSource } = {},
): Server {
  const webConsole = extras.console;
  const consoleAssets = webConsole && new ConsoleAssets(webConsole.assetsDir, webConsole.sessions);
  const ptySockets = new PtySockets(boxes.execs, log);
  const routes: Array<[string, RegExp, Handler]> = [
    ["GET", /^\/v1\/whoami$/, ({ org, res }) => sendJson(res, 200, { org: org.name })],
    [
      "GET",
      /^\/v1\/ca$/,
      ({ res }) => {
        if (!tls.caCert) throw sailError("SAIL_ROUTE_NOT_FOUND", "This Sail serves a certificate it was given (--tls-cert): there is no local CA to trust");
        res.writeHead(200, { "content-type": "application/x-pem-file" });
        res.end(tls.caCert);
      },
    ],
    [
      "POST",
      /^\/v1\/console\/login-links$/,
      async ({ auth, req, res }) => {
        onlyFields(await readJsonBody(req), []);
        if (!webConsole) throw sailError("SAIL_ROUTE_NOT_FOUND", "This daemon serves no console");
        if (!auth.bearer) throw sailError("SAIL_AUTH_MISSING", "A console login link is made with the API token (`sail console`), not from a console session");
        const link = webConsole.sessions.createLoginLink(auth.bearer);
        sendJson(res, 201, { path: `/console/login?token=${link.token}`, expiresAt: link.expiresAt });
      },
    ],
    [
      "POST",
      /^\/v1\/console\/logout$/,
      ({ auth, req, res }) => {
        webConsole?.sessions.logout(auth.session);
        if (webConsole) res.setHeader("set-cookie", webConsole.sessions.clearingCookie(req));
        sendJson(res, 200, {});
      },
    ],
    ["GET", /^\/v1\/tokens$/, ({ org, query, res }) => sendJson(res, 200, { tokens: tokens.list(org, query.get("org") ?? undefined) })],
    [
      "POST",
      /^\/v1\/tokens$/,
      async ({ org, auth, req, res }) => {
        const body = await readJsonBody(req);
        onlyFields(body, ["label", "org"]);
        // a session is the console's 12-hour login: a token made from it would outlive it, its
        // token's revocation and a stolen cookie's theft (issue 26)
        if (!auth.bearer) throw sailError("SAIL_SESSION_FORBIDDEN", "A console session cannot create API tokens: use `sail token create` with the API token");
        sendJson(res, 201, tokens.create(org, body as CreateTokenRequest));
      },
    ],
    ["DELETE", /^\/v1\/tokens\/([^/]+)$/, ({ org, params, res }) => sendJson(res, 200, tokens.revoke(org, params[0]!))],
    ["GET", /^\/v1\/orgs\/([^/]+)\/limits$/, ({ org, params, res }) => sendJson(res, 200, boxes.orgLimits.get(org, params[0]!))],
    ["PUT", /^\/v1\/orgs\/([^/]+)\/limits$/, async ({ org, params, req, res }) => sendJson(res, 200, boxes.orgLimits.set(org, params[0]!, await readJsonBody(req)))],
    ["GET", /^\/v1\/apps$/, ({ org, res }) => sendJson(res, 200, { apps: boxes.apps.list(org) })],
    ["GET", /^\/v1\/apps\/([^/]+)$/, ({ org, params, res }) => sendJson(res, 200, boxes.apps.find(org, params[0]!))],
    [
      "PUT",
      /^\/v1\/apps\/([^/]+)$/,
      async ({ org, params, req, res }) => {
        onlyFields(await readJsonBody(req), []);
        sendJson(res, 200, boxes.apps.mint(org, params[0]!));
      },
    ],
    [
      "POST",
      /^\/v1\/sailboxes$/,
      async ({ org, req, res }) => {
        const body = await readJsonBody(req);
        onlyFields(body, ["appId", "name", "image", "cpu", "memoryMiB", "diskMiB", "ingressPorts", "ssh", "idleTimeout", "blockNetwork", "allowOut", "denyOut"]);
        if (typeof body.appId !== "string") throw sailError("SAIL_INVALID_ARGUMENT", "appId must be the id of one of your apps", { field: "appId" });
        const startedAt = Date.now();
        const ticket = await boxes.creates.begin(org, body, idempotencyKeyOf(req));
        await answerLong(
          req,
          res,
          { result: ticket.result, listen: ticket.listen, onGone: ticket.leave, finalKey: "sailbox", status: 201, startedAt, headers: ticket.replayed ? { "idempotent-replayed": "true" } : undefined },
          log,
        );
      },
    ],
    [
      "POST",
      /^\/v1\/images$/,
      async ({ req, res }) => {
        const body = await readJsonBody(req);
        onlyFields(body, ["name", "arch", "aptPackages"]);
        const plan = boxes.images.check(body, "body");
        const startedAt = Date.now();
        const progress = new ProgressRelay();
        // a client that leaves does not stop the build: it is shared and cached for the next caller
        const result = boxes.images.prepare(plan, progress.emit, startedAt).then(() => boxes.images.info(plan));
        await answerLong(req, res, { result, listen: (sink) => progress.listen(sink), onGone: () => {}, finalKey: "image", status: 200, startedAt }, log);
      },
    ],
    [
      "GET",
      /^\/v1\/sailboxes$/,
      ({ org, query, res }) => {
        const filter = { appId: query.get("appId") ?? undefined, name: query.get("name") ?? undefined, liveOnly: query.get("live") === "true" };
        sendJson(res, 200, { sailboxes: boxes.views.list(org, filter) });
      },
    ],
    ["GET", /^\/v1\/sailboxes\/([^/]+)$/, ({ org, params, res }) => sendJson(res, 200, boxes.views.get(org, params[0]!))],
    ["DELETE", /^\/v1\/sailboxes\/([^/]+)$/, async ({ org, params, res }) => sendJson(res, 200, await boxes.endings.terminate(org, params[0]!))],
    [
      "POST",
      /^\/v1\/sailboxes\/([^/]+)\/(sleep|pause|resume)$/,
      async ({ org, params, req, res }) => {
        onlyFields(await readJsonBody(req), []);
        const [id, action] = params as [string, "sleep" | "pause" | "resume"];
        sendJson(res, 200, await boxes.power[action](org, id));
      },
    ],
    [
      "POST",
      /^\/v1\/sailboxes\/([^/]+)\/sshd$/,
      async ({ org, params, req, res }) => {
        onlyFields(await readJsonBody(req), []);
        await boxes.execs.startSshd(org, params[0]!);
        sendJson(res, 200, { sshd: "running" });
      },
    ],
    ["GET", /^\/v1\/sailboxes\/([^/]+)\/network$/, ({ org, params, res }) => sendJson(res, 200, boxes.views.get(org, params[0]!).network)],
    [
      "PUT",
      /^\/v1\/sailboxes\/([^/]+)\/network$/,
      async ({ org, params, req, res }) => {
        const body = await readJsonBody(req);
        onlyFields(body, ["blockNetwork", "allowOut", "denyOut"]);
        sendJson(res, 200, await boxes.outbound.set(org, params[0]!, body as NetworkPolicyRequest));
      },
    ],
    [
      "GET",
      /^\/v1\/sailboxes\/([^/]+)\/traffic$/,
      ({ org, params, res }) => {
        const box = boxes.views.get(org, params[0]!);
        const listeners = extras.traffic?.forListeners(boxes.listeners.list(org, box.id)) ?? [];
        sendJson(res, 200, { sailboxId: box.id, wakes: box.wakes, sampledAt: new Date().toISOString(), listeners } satisfies SailboxTraffic);
      },
    ],
    ["GET", /^\/v1\/sailboxes\/([^/]+)\/listeners$/, ({ org, params, res }) => sendJson(res, 200, { listeners: boxes.listeners.list(org, params[0]!) })],
    [
      "GET",
      /^\/v1\/sailboxes\/([^/]+)\/listeners\/(\d{1,5})$/,
      async ({ org, params, query, res }) => {
        const waitMs = Number(query.get("waitMs") ?? 0);
        if (!Number.isFinite(waitMs) || waitMs < 0) throw sailError("SAIL_INVALID_ARGUMENT", "waitMs must be a number of milliseconds >= 0", { field: "waitMs" });
        sendJson(res, 200, await boxes.listeners.wait(org, params[0]!, Number(params[1]), waitMs));
      },
    ],
    [
      "POST",
      /^\/v1\/sailboxes\/([^/]+)\/exec$/,
      async (ctx) => {
        const body = await readJsonBody(ctx.req);
        onlyFields(body, ["cmd", "cwd", "env", "background"]);
        const request = body as unknown as ExecRequest;
        if (request.background) {
          sendJson(ctx.res, 201, await boxes.execs.execBackground(ctx.org, ctx.params[0]!, request));
        } else {
          await streamExec(ctx, request);
        }
      },
    ],
    ["GET", /^\/v1\/sailboxes\/([^/]+)\/execs$/, ({ org, params, res }) => sendJson(res, 200, { execs: boxes.execs.listBackground(org, params[0]!) })],
    [
      "GET",
      /^\/v1\/sailboxes\/([^/]+)\/execs\/([^/]+)\/log$/,
      async ({ org, params, res }) => {
        const path = boxes.execs.logPath(org, params[0]!, params[1]!);
        res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
        await new Promise<void>((resolve, reject) => createReadStream(path).on("error", reject).on("end", resolve).pipe(res));
      },
    ],
  ];

  /** Foreground exec: NDJSON events as output is produced, then `{ exitCode }`. */
  async function streamExec({ org, params, req, res }: Context, request: ExecRequest): Promise<void> {
    const running = await boxes.execs.exec(org, params[0]!, request);
    res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
    res.flushHeaders();
    const write = (event: ExecEvent) => res.write(JSON.stringify(event) + "\n");
    for (const stream of ["stdout", "stderr"] as const) {
      const decoder = new StringDecoder("utf8");
      running[stream].on("data", (chunk: Buffer) => {
        const data = decoder.write(chunk);
        if (data) write({ stream, data });
      });
      running[stream].on("end", () => {
        const rest = decoder.end();
        if (rest) write({ stream, data: rest });
      });
    }
    // the client went away: stop the command rather than let it run unobserved
    const onClose = () => running.kill();
    req.socket.on("close", onClose);
    try {
      const exitCode = await running.exit;
      res.end(JSON.stringify({ exitCode } satisfies ExecEvent) + "\n");
    } finally {
      req.socket.off("close", onClose);
    }
  }

  const server = createServer(async (req, res) => {
    try {
      // the request target is a path: never let "//host/..." be read as a URL with a host
      const url = new URL(`http://api${(req.url ?? "/").startsWith("/") ? req.url : "/"}`);
      if (consoleAssets && ConsoleAssets.handles(url.pathname)) return await consoleAssets.serve(req, res, url);
      const { org, auth } = authenticateRequest(req, authenticate, webConsole?.sessions);
      for (const [method, pattern, handler] of routes) {
        const match = pattern.exec(url.pathname);
        if (!match) continue;
        if (req.method !== method) continue;
        await handler({ org, auth, params: match.slice(1).map(decodePathSegment), req, res, query: url.searchParams });
        return;
      }
      throw sailError("SAIL_ROUTE_NOT_FOUND", `No API route ${req.method} ${url.pathname}: see docs/api.md`);
    } catch (err) {
      if (err instanceof SailError) return sendError(res, err);
      log.error({ err: String((err as Error).stack ?? err), method: req.method, url: req.url }, "API request failed");
      sendError(res, sailError("SAIL_INTERNAL", `Sail failed on ${req.method} ${req.url}: ${(err as Error).message}`));
    }
  });

  // the PTY WebSocket: auth (and, with a session cookie, the Origin check) before the upgrade
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => socket.destroy());
    try {
      const url = new URL(`http://api${(req.url ?? "/").startsWith("/") ? req.url : "/"}`);
      const match = /^\/v1\/sailboxes\/([^/]+)\/pty$/.exec(url.pathname);
      const { org } = authenticateRequest(req, authenticate, webConsole?.sessions, true);
      if (!match || req.method !== "GET") throw sailError("SAIL_ROUTE_NOT_FOUND", `No WebSocket route ${req.method} ${url.pathname}: see docs/api.md`);
      ptySockets.accept(req, socket, head, org, decodePathSegment(match[1]!), url.searchParams);
    } catch (err) {
      const error = err instanceof SailError ? err : sailError("SAIL_INTERNAL", `Sail failed on the upgrade of ${req.url}: ${(err as Error).message}`);
      refuseUpgrade(socket, error);
    }
  });
  // an idle kept-alive connection is the client's to close (undici after 4 s): a server that
  // closes first (Node's default 5 s) races the client's next request on it, which a client
  // whose event loop was busy for a few seconds then sees fail as a reset (UND_ERR_SOCKET)
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  return server;
}

/** A refused upgrade gets a real HTTP answer with the usual JSON error body, then the socket is closed (as websockets/ws does). */
function refuseUpgrade(socket: Duplex, err: SailError): void {
  const body = JSON.stringify(err.toWire());
  socket.end(
    `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? "Error"}\r\nconnection: close\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/** The create's `Idempotency-Key` header, if it has one (checked by the boxes room). */
function idempotencyKeyOf(req: IncomingMessage): string | undefined {
  const key = req.headers["idempotency-key"];
  return Array.isArray(key) ? key.join(", ") : key;
}

function decodePathSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw sailError("SAIL_INVALID_ARGUMENT", `The path segment ${JSON.stringify(segment.slice(0, 80))} is not valid percent-encoding`);
  }
}

/**
 * The API token (`Authorization: Bearer`), or else the console's session cookie. A cookie is
 * sent by the browser on its own, so a cookie request that changes something (or opens a
 * WebSocket) must also come from the console's own origin.
 */
function authenticateRequest(req: IncomingMessage, authenticate: Authenticate, sessions: ConsoleSessions | undefined, upgrade = false): { org: OrgRow; auth: { bearer?: string; session?: string } } {
  const header = req.headers.authorization;
  const token = header?.startsWith("Bearer ") ? header.slice(7).trim() : undefined;
  const session = header ? undefined : sessions?.sessionOf(req);
  if (session) return { org: sessions!.authenticate(req, session, upgrade || (req.method !== "GET" && req.method !== "HEAD")), auth: { session } };
  if (!token)
    throw sailError(
      "SAIL_AUTH_MISSING",
      "Missing bearer token: send `Authorization: Bearer <token>` (the SDK reads SAIL_TOKEN or the config `sail up` wrote; the console: open the link `sail console` prints)",
    );
  const org = authenticate(token);
  if (!org) throw sailError("SAIL_AUTH_INVALID", "The token is not valid (wrong or revoked): check SAIL_TOKEN or ~/.sail/config.json");
  return { org, auth: { bearer: token } };
}
