import type { IncomingMessage } from "node:http";
import { sailError, type ExecEvent, type ExecRequest, type NetworkPolicyRequest, type SailboxTraffic } from "@sail/protocol";
import type { Boxes } from "../../boxes/boxes.js";
import { ProgressRelay } from "../../boxes/images.js";
import type { Logger } from "../../boxes/logger.js";
import { drained, sendJson } from "../http-util.js";
import { answerLong } from "../long-answer.js";
import type { Context, Route } from "../route.js";

const CREATE_FIELDS = ["appId", "name", "image", "cpu", "memoryMiB", "diskMiB", "ingressPorts", "ssh", "idleTimeout", "blockNetwork", "allowOut", "denyOut"] as const;

/** Sailboxes, images, power, network, listeners, traffic and execs (docs/api.md, "Sailboxes"). */
export function sailboxRoutes(boxes: Boxes, log: Logger): Route[] {
  return [
    {
      method: "POST",
      path: /^\/v1\/sailboxes$/,
      fields: CREATE_FIELDS,
      handler: async ({ org, body, req, res }) => {
        if (typeof body.appId !== "string") throw sailError("SAIL_INVALID_ARGUMENT", "appId must be the id of one of your apps", { field: "appId" });
        const startedAt = Date.now();
        const ticket = await boxes.creates.begin(org, body, idempotencyKeyOf(req));
        const headers = ticket.replayed ? { "idempotent-replayed": "true" } : undefined;
        await answerLong(req, res, { result: ticket.result, listen: ticket.listen, onGone: ticket.leave, finalKey: "sailbox", status: 201, startedAt, headers }, log);
      },
    },
    {
      method: "POST",
      path: /^\/v1\/images$/,
      fields: ["name", "arch", "aptPackages"],
      handler: async ({ body, req, res }) => {
        const plan = boxes.images.check(body, "body");
        const startedAt = Date.now();
        const progress = new ProgressRelay();
        // a client that leaves does not stop the build: it is shared and cached for the next caller
        const result = boxes.images.prepare(plan, progress.emit, startedAt).then(() => boxes.images.info(plan));
        await answerLong(req, res, { result, listen: (sink) => progress.listen(sink), onGone: () => {}, finalKey: "image", status: 200, startedAt }, log);
      },
    },
    {
      method: "GET",
      path: /^\/v1\/sailboxes$/,
      handler: async ({ org, query, res }) => {
        const filter = { appId: query.get("appId") ?? undefined, name: query.get("name") ?? undefined, liveOnly: query.get("live") === "true" };
        sendJson(res, 200, { sailboxes: await boxes.views.list(org, filter) });
      },
    },
    { method: "GET", path: /^\/v1\/sailboxes\/([^/]+)$/, handler: async ({ org, params, res }) => sendJson(res, 200, await boxes.views.get(org, params[0]!)) },
    { method: "DELETE", path: /^\/v1\/sailboxes\/([^/]+)$/, handler: async ({ org, params, res }) => sendJson(res, 200, await boxes.endings.terminate(org, params[0]!)) },
    {
      method: "POST",
      path: /^\/v1\/sailboxes\/([^/]+)\/(sleep|pause|resume)$/,
      fields: [],
      handler: async ({ org, params, res }) => {
        const [id, action] = params as [string, "sleep" | "pause" | "resume"];
        sendJson(res, 200, await boxes.power[action](org, id));
      },
    },
    {
      method: "POST",
      path: /^\/v1\/sailboxes\/([^/]+)\/sshd$/,
      fields: [],
      handler: async ({ org, params, res }) => {
        await boxes.execs.startSshd(org, params[0]!);
        sendJson(res, 200, { sshd: "running" });
      },
    },
    { method: "GET", path: /^\/v1\/sailboxes\/([^/]+)\/network$/, handler: async ({ org, params, res }) => sendJson(res, 200, (await boxes.views.get(org, params[0]!)).network) },
    {
      method: "PUT",
      path: /^\/v1\/sailboxes\/([^/]+)\/network$/,
      fields: ["blockNetwork", "allowOut", "denyOut"],
      handler: async ({ org, params, body, res }) => sendJson(res, 200, await boxes.outbound.set(org, params[0]!, body as NetworkPolicyRequest)),
    },
    {
      method: "GET",
      path: /^\/v1\/sailboxes\/([^/]+)\/traffic$/,
      handler: async ({ org, params, res }) => {
        const box = await boxes.views.get(org, params[0]!);
        const counted =
          box.status === "terminated" || box.status === "failed" ? { wakes: box.wakes, listeners: [] } : await (await boxes.nodes.of({ id: box.id, nodeId: box.node })).api.traffic(box.id);
        const listeners = box.listeners.map((l) => {
          const c = counted.listeners.find((t) => t.port === l.port);
          return { port: l.port, protocol: l.protocol, open: c?.open ?? 0, requests: c?.requests ?? 0, bytesIn: c?.bytesIn ?? 0, bytesOut: c?.bytesOut ?? 0, refusals: c?.refusals ?? {} };
        });
        sendJson(res, 200, { sailboxId: box.id, wakes: counted.wakes, sampledAt: new Date().toISOString(), listeners } satisfies SailboxTraffic);
      },
    },
    { method: "GET", path: /^\/v1\/sailboxes\/([^/]+)\/listeners$/, handler: async ({ org, params, res }) => sendJson(res, 200, { listeners: await boxes.listeners.list(org, params[0]!) }) },
    {
      method: "GET",
      path: /^\/v1\/sailboxes\/([^/]+)\/listeners\/(\d{1,5})$/,
      handler: async ({ org, params, query, res }) => {
        const waitMs = Number(query.get("waitMs") ?? 0);
        if (!Number.isFinite(waitMs) || waitMs < 0) throw sailError("SAIL_INVALID_ARGUMENT", "waitMs must be a number of milliseconds >= 0", { field: "waitMs" });
        sendJson(res, 200, await boxes.listeners.wait(org, params[0]!, Number(params[1]), waitMs));
      },
    },
    {
      method: "POST",
      path: /^\/v1\/sailboxes\/([^/]+)\/exec$/,
      fields: ["cmd", "cwd", "env", "background"],
      handler: async (ctx) => {
        const request = ctx.body as unknown as ExecRequest;
        if (request.background) sendJson(ctx.res, 201, await boxes.execs.execBackground(ctx.org, ctx.params[0]!, request));
        else await streamExec(boxes, ctx, request);
      },
    },
    { method: "GET", path: /^\/v1\/sailboxes\/([^/]+)\/execs$/, handler: async ({ org, params, res }) => sendJson(res, 200, { execs: await boxes.execs.listBackground(org, params[0]!) }) },
    {
      method: "GET",
      path: /^\/v1\/sailboxes\/([^/]+)\/execs\/([^/]+)\/log$/,
      handler: async ({ org, params, req, res }) => {
        const gone = new AbortController();
        req.socket.once("close", () => gone.abort());
        const log = await boxes.execs.log(org, params[0]!, params[1]!, gone.signal);
        res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
        for await (const chunk of log) if (!res.write(chunk)) await drained(res);
        res.end();
      },
    },
  ];
}

/** Foreground exec: NDJSON events as output is produced, then `{ exitCode }`. A client that goes away stops the command. */
async function streamExec(boxes: Boxes, { org, params, req, res }: Context, request: ExecRequest): Promise<void> {
  const running = await boxes.execs.exec(org, params[0]!, request);
  res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
  res.flushHeaders();
  const onClose = () => running.kill();
  req.socket.on("close", onClose);
  try {
    for await (const event of running.events) {
      if (!res.write(JSON.stringify(event satisfies ExecEvent) + "\n")) await drained(res);
    }
    res.end();
  } finally {
    req.socket.off("close", onClose);
  }
}

/** The create's `Idempotency-Key` header, if it has one (checked by the boxes room). */
function idempotencyKeyOf(req: IncomingMessage): string | undefined {
  const key = req.headers["idempotency-key"];
  return Array.isArray(key) ? key.join(", ") : key;
}
