import type { IncomingMessage, ServerResponse } from "node:http";
import type { OrgRow } from "../boxes/boxes.js";

/** What a handler gets: the caller's org, how it authenticated, the path's parameters, the request and its answer. */
export interface Context {
  org: OrgRow;
  /** The API token, or the console's session cookie. */
  auth: { bearer?: string; session?: string };
  params: string[];
  req: IncomingMessage;
  res: ServerResponse;
  query: URLSearchParams;
  /** The JSON body, read and checked against `fields` (routes without `fields` read no body). */
  body: Record<string, unknown>;
}

/**
 * One API route, as fastify's route objects: the method, the path (its groups are the
 * parameters), the body fields it accepts (any other is SAIL_UNKNOWN_FIELD; omitted: no body is
 * read), and the handler. Each room's routes are one list (api/routes/*.ts).
 */
export interface Route {
  method: "GET" | "POST" | "PUT" | "DELETE";
  path: RegExp;
  fields?: readonly string[];
  handler(ctx: Context): Promise<void> | void;
}
