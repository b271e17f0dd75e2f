import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { errorResponse } from "../../packages/server/src/gateway/error-pages.js";

describe("gateway error answers", () => {
  test("JSON when asked for, HTML otherwise, both naming the box and port, with a correct length", () => {
    const err = { status: 502, code: "SAIL_NOTHING_LISTENING" as const, message: "No process listens on port 3000 in sailbox sb-x <here>", sailboxId: "sb-x", port: 3000 };
    const json = errorResponse("application/json", err);
    const [head, body] = json.split("\r\n\r\n") as [string, string];
    assert.match(head, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
    assert.match(head, new RegExp(`content-length: ${Buffer.byteLength(body)}`));
    assert.deepEqual(JSON.parse(body), { error: { code: "SAIL_NOTHING_LISTENING", message: err.message, sailboxId: "sb-x", port: 3000 } });
    const html = errorResponse("text/html", err);
    assert.match(html, /content-type: text\/html/);
    assert.match(html, /sb-x &#60;here&#62;/); // escaped
    assert.doesNotMatch(html, /retry-after/i);
  });

  test("a wake that takes too long says when to retry (Retry-After), in JSON and HTML alike", () => {
    const err = { status: 503, code: "SAIL_WAKE_TIMEOUT" as const, message: "waking", sailboxId: "sb-x", port: 3000, retryAfterSeconds: 5 };
    for (const accept of ["application/json", "text/html"]) {
      const [head, body] = errorResponse(accept, err).split("\r\n\r\n") as [string, string];
      assert.match(head, /\r\nretry-after: 5(\r\n|$)/);
      assert.doesNotMatch(body, /retryAfterSeconds/);
    }
  });
});
