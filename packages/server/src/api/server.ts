import { createReadStream } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { StringDecoder } from "node:string_decoder";
import { sailError, SailError, type CreateSailboxRequest, type CreateTokenRequest, type ExecEvent, type ExecRequest, type NetworkPolicyRequest } from "@sail/protocol";
import type { Boxes } from "../boxes/boxes.js";
import type { Tokens } from "../boxes/tokens.js";
import type { OrgRow } from "../boxes/boxes.js";
import { onlyFields, readJsonBody, sendError, sendJson } from "./http-util.js";

interface Logger {
  error(obj: object, msg: string): void;
}

/** Who a token belongs to; the store answers it. */
export type Authenticate = (token: string) => OrgRow | undefined;

interface Context {
  org: OrgRow;
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
export function createApiServer(boxes: Boxes, tokens: Tokens, authenticate: Authenticate, tls: { caCert?: string }, log: Logger): Server {
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
    ["GET", /^\/v1\/tokens$/, ({ org, query, res }) => sendJson(res, 200, { tokens: tokens.list(org, query.get("org") ?? undefined) })],
    [
      "POST",
      /^\/v1\/tokens$/,
      async ({ org, req, res }) => {
        const body = await readJsonBody(req);
        onlyFields(body, ["label", "org"]);
        sendJson(res, 201, tokens.create(org, body as CreateTokenRequest));
      },
    ],
    ["DELETE", /^\/v1\/tokens\/([^/]+)$/, ({ org, params, res }) => sendJson(res, 200, tokens.revoke(org, params[0]!))],
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
        onlyFields(body, ["appId", "name", "image", "cpu", "memoryMiB", "ingressPorts", "ssh", "idleTimeout", "blockNetwork", "allowOut", "denyOut"]);
        if (typeof body.appId !== "string") throw sailError("SAIL_INVALID_ARGUMENT", "appId must be the id of one of your apps", { field: "appId" });
        sendJson(res, 201, await boxes.creator.create(org, body as unknown as CreateSailboxRequest));
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

  return createServer(async (req, res) => {
    try {
      // the request target is a path: never let "//host/..." be read as a URL with a host
      const url = new URL(`http://api${(req.url ?? "/").startsWith("/") ? req.url : "/"}`);
      const org = authenticateRequest(req, authenticate);
      for (const [method, pattern, handler] of routes) {
        const match = pattern.exec(url.pathname);
        if (!match) continue;
        if (req.method !== method) continue;
        await handler({ org, params: match.slice(1).map(decodePathSegment), req, res, query: url.searchParams });
        return;
      }
      throw sailError("SAIL_ROUTE_NOT_FOUND", `No API route ${req.method} ${url.pathname}: see docs/api.md`);
    } catch (err) {
      if (err instanceof SailError) return sendError(res, err);
      log.error({ err: String((err as Error).stack ?? err), method: req.method, url: req.url }, "API request failed");
      sendError(res, sailError("SAIL_INTERNAL", `Sail failed on ${req.method} ${req.url}: ${(err as Error).message}`));
    }
  });
}

function decodePathSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw sailError("SAIL_INVALID_ARGUMENT", `The path segment ${JSON.stringify(segment.slice(0, 80))} is not valid percent-encoding`);
  }
}

function authenticateRequest(req: IncomingMessage, authenticate: Authenticate): OrgRow {
  const header = req.headers.authorization;
  const token = header?.startsWith("Bearer ") ? header.slice(7).trim() : undefined;
  if (!token) throw sailError("SAIL_AUTH_MISSING", "Missing bearer token: send `Authorization: Bearer <token>` (the SDK reads SAIL_TOKEN or the config `sail up` wrote)");
  const org = authenticate(token);
  if (!org) throw sailError("SAIL_AUTH_INVALID", "The token is not valid (wrong or revoked): check SAIL_TOKEN or ~/.sail/config.json");
  return org;
}
