/**
 * Just enough HTTP/1.1 (RFC 9112) for a proxy that parses as little as it can: request
 * and response heads, message framing, and a chunked-body scanner that finds where a
 * body ends without copying it. Strict where lenient parsing enables smuggling: no
 * Content-Length with Transfer-Encoding, no differing Content-Lengths, no obs-fold, no
 * whitespace before a field's colon (RFC 9112 §5.1, §6.1, §6.3, §11.2).
 */

export class HttpParseError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export const MAX_HEAD_BYTES = 16 * 1024;

export interface MessageHead {
  /** Request: method; response: status code. */
  method: string;
  target: string;
  status: number;
  version: "1.0" | "1.1";
  /** Field names lower-cased, in order; values as sent (latin1). */
  fields: Array<[string, string]>;
}

export type Framing = { kind: "none" } | { kind: "length"; length: number } | { kind: "chunked" } | { kind: "close" };

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BAD_VALUE = /[\0\r\n]/;
const TARGET = /^[\x21-\x7e]+$/;

/** Offset just past the blank line ending a head in `buf`, or -1. */
export function headEnd(buf: Buffer): number {
  const i = buf.indexOf("\r\n\r\n", 0, "latin1");
  return i < 0 ? -1 : i + 4;
}

function parseFields(lines: string[]): Array<[string, string]> {
  const fields: Array<[string, string]> = [];
  for (const line of lines) {
    if (line === "") continue;
    if (line[0] === " " || line[0] === "\t") throw new HttpParseError(400, "obsolete line folding is not accepted");
    const colon = line.indexOf(":");
    const name = colon > 0 ? line.slice(0, colon) : "";
    if (!TOKEN.test(name)) throw new HttpParseError(400, `invalid header field name ${JSON.stringify(name.slice(0, 40))}`);
    const value = line.slice(colon + 1).trim();
    if (BAD_VALUE.test(value)) throw new HttpParseError(400, `invalid value in header ${name}`);
    fields.push([name.toLowerCase(), value]);
  }
  return fields;
}

export function parseRequestHead(head: string): MessageHead {
  const lines = head.split("\r\n");
  const [method, target, version, extra] = lines[0]!.split(" ");
  if (extra !== undefined || !method || !TOKEN.test(method) || !target || !TARGET.test(target)) throw new HttpParseError(400, "malformed request line");
  if (version !== "HTTP/1.1" && version !== "HTTP/1.0") throw new HttpParseError(505, `unsupported protocol version ${JSON.stringify(version)}`);
  return { method, target, status: 0, version: version === "HTTP/1.1" ? "1.1" : "1.0", fields: parseFields(lines.slice(1)) };
}

export function parseResponseHead(head: string): MessageHead {
  const lines = head.split("\r\n");
  const match = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(lines[0]!);
  if (!match) throw new HttpParseError(502, "malformed status line from the guest");
  return { method: "", target: "", status: Number(match[2]), version: match[1] === "1" ? "1.1" : "1.0", fields: parseFields(lines.slice(1)) };
}

export function fieldValues(head: MessageHead, name: string): string[] {
  const values: string[] = [];
  for (const [n, v] of head.fields) if (n === name) values.push(v);
  return values;
}

/** Comma-separated tokens of all fields called `name`, lower-cased (Connection, Upgrade…). */
export function fieldTokens(head: MessageHead, name: string): string[] {
  return fieldValues(head, name)
    .flatMap((v) => v.split(","))
    .map((t) => t.trim().toLowerCase())
    .filter(Boolean);
}

function framingOf(head: MessageHead, status: number): Framing {
  const te = fieldTokens(head, "transfer-encoding");
  const cl = fieldValues(head, "content-length").flatMap((v) => v.split(",")).map((v) => v.trim());
  if (te.length) {
    if (cl.length) throw new HttpParseError(status, "Content-Length together with Transfer-Encoding is refused (request smuggling)");
    if (te.length !== 1 || te[0] !== "chunked") throw new HttpParseError(status === 400 ? 501 : status, `unsupported Transfer-Encoding ${te.join(", ")}`);
    return { kind: "chunked" };
  }
  if (cl.length) {
    if (!cl.every((v) => /^\d{1,15}$/.test(v)) || new Set(cl).size !== 1) throw new HttpParseError(status, "invalid or conflicting Content-Length");
    const length = Number(cl[0]);
    return length === 0 ? { kind: "none" } : { kind: "length", length };
  }
  return { kind: "none" };
}

/** How a request's body is delimited (no framing header means no body). */
export function requestFraming(head: MessageHead): Framing {
  return framingOf(head, 400);
}

/** How a response's body is delimited (RFC 9112 §6.3). */
export function responseFraming(head: MessageHead, requestMethod: string): Framing {
  if (requestMethod === "HEAD" || (head.status >= 100 && head.status < 200) || head.status === 204 || head.status === 304) return { kind: "none" };
  const framing = framingOf(head, 502);
  if (framing.kind === "none" && fieldValues(head, "content-length").length === 0 && fieldValues(head, "transfer-encoding").length === 0) return { kind: "close" };
  return framing;
}

/**
 * Finds where a chunked body ends (last chunk, trailers, blank line) as bytes stream
 * past; the bytes themselves are forwarded untouched.
 */
export class ChunkedScanner {
  private state: "size" | "ext" | "sizeLf" | "data" | "dataCr" | "dataLf" | "trailer" | "trailerLf" | "done" = "size";
  private size = 0;
  private digits = 0;
  private remaining = 0;
  private lineLength = 0;

  /** Consume `buf` from `start`; return the offset just past the body's end, or -1 if it continues. */
  feed(buf: Buffer, start = 0): number {
    for (let i = start; i < buf.length; i++) {
      const c = buf[i]!;
      switch (this.state) {
        case "size": {
          const digit = hexValue(c);
          if (digit >= 0) {
            if (++this.digits > 12) throw new HttpParseError(400, "chunk size too large");
            this.size = this.size * 16 + digit;
          } else if (c === 0x3b && this.digits > 0) this.state = "ext";
          else if (c === 0x0d && this.digits > 0) this.state = "sizeLf";
          else throw new HttpParseError(400, "malformed chunk size");
          break;
        }
        case "ext":
          if (c === 0x0d) this.state = "sizeLf";
          else if (c === 0x0a || ++this.lineLength > 1024) throw new HttpParseError(400, "malformed chunk extension");
          break;
        case "sizeLf":
          if (c !== 0x0a) throw new HttpParseError(400, "malformed chunk size line");
          this.lineLength = 0;
          if (this.size === 0) this.state = "trailer";
          else {
            this.remaining = this.size;
            this.state = "data";
          }
          this.size = 0;
          this.digits = 0;
          break;
        case "data": {
          const take = Math.min(this.remaining, buf.length - i);
          this.remaining -= take;
          i += take - 1;
          if (this.remaining === 0) this.state = "dataCr";
          break;
        }
        case "dataCr":
          if (c !== 0x0d) throw new HttpParseError(400, "chunk data longer than its size");
          this.state = "dataLf";
          break;
        case "dataLf":
          if (c !== 0x0a) throw new HttpParseError(400, "malformed chunk end");
          this.state = "size";
          break;
        case "trailer":
          if (c === 0x0d) this.state = "trailerLf";
          else if (++this.lineLength > MAX_HEAD_BYTES) throw new HttpParseError(431, "trailers too large");
          break;
        case "trailerLf":
          if (c !== 0x0a) throw new HttpParseError(400, "malformed trailer");
          if (this.lineLength === 0) {
            this.state = "done";
            return i + 1;
          }
          this.lineLength = 0;
          this.state = "trailer";
          break;
        case "done":
          return i;
      }
    }
    return -1;
  }
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}
