import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  ChunkedScanner, HttpParseError, parseRequestHead, parseResponseHead, requestFraming, responseFraming,
} from "../../packages/server/src/gateway/http1.js";
import { errorResponse } from "../../packages/server/src/gateway/error-pages.js";

const req = (head: string) => parseRequestHead(head);
const refused = (status: number) => (e: unknown) => e instanceof HttpParseError && e.status === status;

describe("request smuggling and malformed heads are refused", () => {
  test("Content-Length together with Transfer-Encoding", () => {
    assert.throws(() => requestFraming(req("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\ntransfer-encoding: chunked")), refused(400));
  });
  test("two different Content-Lengths, or a non-numeric one", () => {
    assert.throws(() => requestFraming(req("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\ncontent-length: 5")), refused(400));
    assert.throws(() => requestFraming(req("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 4, 5")), refused(400));
    assert.throws(() => requestFraming(req("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: +4")), refused(400));
    assert.deepEqual(requestFraming(req("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\ncontent-length: 4")), { kind: "length", length: 4 });
  });
  test("a Transfer-Encoding other than chunked", () => {
    assert.throws(() => requestFraming(req("POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked")), refused(501));
    assert.throws(() => requestFraming(req("POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: xchunked")), refused(501));
  });
  test("whitespace before the colon, obs-fold, bad names and bad request lines", () => {
    assert.throws(() => req("GET / HTTP/1.1\r\nhost: a\r\ntransfer-encoding : chunked"), refused(400));
    assert.throws(() => req("GET / HTTP/1.1\r\nhost: a\r\nx-a: 1\r\n folded"), refused(400));
    assert.throws(() => req("GET /  HTTP/1.1\r\nhost: a"), refused(400));
    assert.throws(() => req("GET / HTTP/2.0\r\nhost: a"), refused(505));
    assert.throws(() => req("G(T / HTTP/1.1\r\nhost: a"), refused(400));
  });
  test("malformed chunked bodies", () => {
    for (const body of ["zz\r\n", "5\r\nhelloX", "-1\r\n", "\r\n", "1234567890abc\r\n"]) {
      assert.throws(() => new ChunkedScanner().feed(Buffer.from(body)), HttpParseError, JSON.stringify(body));
    }
  });
});

describe("framing", () => {
  test("the chunked scanner finds the end across any split, trailers included", () => {
    const body = Buffer.from("5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\nNEXT");
    for (let split = 0; split <= body.length; split++) {
      const scanner = new ChunkedScanner();
      const first = scanner.feed(body.subarray(0, split));
      const end = first >= 0 ? first : split + scanner.feed(body.subarray(split));
      assert.equal(body.subarray(end).toString(), "NEXT", `split at ${split}`);
    }
  });
  test("responses: HEAD, 204 and 304 have no body; no framing means read to close", () => {
    const head = (s: string) => parseResponseHead(s);
    assert.deepEqual(responseFraming(head("HTTP/1.1 200 OK\r\ncontent-length: 10"), "HEAD"), { kind: "none" });
    assert.deepEqual(responseFraming(head("HTTP/1.1 204 No Content"), "GET"), { kind: "none" });
    assert.deepEqual(responseFraming(head("HTTP/1.1 304 Not Modified\r\ncontent-length: 10"), "GET"), { kind: "none" });
    assert.deepEqual(responseFraming(head("HTTP/1.1 200 OK"), "GET"), { kind: "close" });
    assert.deepEqual(responseFraming(head("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked"), "GET"), { kind: "chunked" });
    assert.throws(() => responseFraming(head("HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked"), "GET"), refused(502));
  });
});

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
