import assert from "node:assert/strict";
import { test } from "node:test";
import { RefusalLog } from "../../packages/server/src/gateway/refusal-log.js";

test("a refusal flood is logged at most ten lines a second per reason, then counted in one line", () => {
  const lines: Array<{ obj: Record<string, unknown>; msg: string }> = [];
  const sink = {
    info: (obj: object, msg: string) => lines.push({ obj: obj as Record<string, unknown>, msg }),
    warn: (obj: object, msg: string) => lines.push({ obj: obj as Record<string, unknown>, msg }),
    error: (obj: object, msg: string) => lines.push({ obj: obj as Record<string, unknown>, msg }),
  };
  let now = 10_000;
  const refusals = new RefusalLog(sink, () => now);
  for (let i = 0; i < 8000; i++) refusals.info("SAIL_ROUTE_UNKNOWN", { peer: "198.51.100.9" }, "gateway refused a request");
  for (let i = 0; i < 3; i++) refusals.warn("cidr", { peer: "203.0.113.5" }, "TCP connection refused by cidrAllowlist");
  assert.equal(lines.length, 13, "ten 404 lines and every cidr line: reasons are limited separately");
  assert.deepEqual(lines[0]!.obj, { peer: "198.51.100.9", reason: "SAIL_ROUTE_UNKNOWN" });
  now += 1000;
  refusals.info("SAIL_ROUTE_UNKNOWN", {}, "gateway refused a request");
  assert.deepEqual(lines[13]!.obj, { reason: "SAIL_ROUTE_UNKNOWN", suppressed: 7990 });
  assert.equal(lines[13]!.msg, "7990 more refusals (SAIL_ROUTE_UNKNOWN) in the last second were not logged");
  assert.equal(lines.length, 15, "the next second logs again");
});
