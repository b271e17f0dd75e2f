import ipaddr from "ipaddr.js";
import type { Socket } from "node:net";

/** The PROXY protocol v2 signature (HAProxy's proxy-protocol.txt §2.2). */
const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const PROXY_TCP4 = [0x21, 0x11];
const PROXY_TCP6 = [0x21, 0x21];
const LOCAL = [0x20, 0x00];

/**
 * The binary PROXY protocol v2 header a TCP listener with `proxyProtocol` sends the guest before
 * the client's bytes, so the guest learns the client's address (the format nginx, HAProxy and
 * PostgreSQL poolers read). IPv4-mapped IPv6 peers are sent as IPv4; a pair of addresses it
 * cannot encode together gets a LOCAL header (no addresses), which receivers accept.
 */
export function proxyV2Header(source: { address?: string; port?: number }, destination: { address?: string; port?: number }): Buffer {
  const src = parse(source.address);
  const dst = parse(destination.address);
  if (!src || !dst || src.kind() !== dst.kind()) return PROXY_V2_LOCAL;
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(source.port ?? 0, 0);
  ports.writeUInt16BE(destination.port ?? 0, 2);
  const body = Buffer.concat([Buffer.from(src.toByteArray()), Buffer.from(dst.toByteArray()), ports]);
  const length = Buffer.alloc(2);
  length.writeUInt16BE(body.length);
  return Buffer.concat([SIGNATURE, Buffer.from(src.kind() === "ipv4" ? PROXY_TCP4 : PROXY_TCP6), length, body]);
}

/** The LOCAL form: no addresses. What a health check sends (the spec's own use), e.g. listener.wait()'s probe. */
export const PROXY_V2_LOCAL = Buffer.from([...SIGNATURE, ...LOCAL, 0, 0]);

/** ipaddr.process turns ::ffff:a.b.c.d into a.b.c.d. */
function parse(address: string | undefined): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  return address && ipaddr.isValid(address) ? ipaddr.process(address) : undefined;
}

/** The longest header read from an edge: addresses (216 bytes for AF_UNIX, the largest) and a few TLVs (proxy-protocol.txt §2.2). */
const MAX_PROXY_V2_BYTES = 16 + 512;

/** A PROXY v2 header that could not be read (not one, too long, or not in time). */
export class ProxyHeaderError extends Error {
  override readonly name = "ProxyHeaderError";
}

/**
 * Read the PROXY v2 header a trusted peer (an edge, HAProxy's `send-proxy-v2`) sends first on
 * `socket` (created paused), and say whose connection it is: the client's address and port, or
 * undefined for a LOCAL header (a health check: the connection is the peer's own). Bytes after
 * the header stay in the socket's buffer for whoever reads it next. Bounded in size
 * (MAX_PROXY_V2_BYTES) and time (`timeoutMs`); anything else rejects with ProxyHeaderError.
 */
export function readProxyV2(socket: Socket, timeoutMs: number): Promise<{ address: string; port: number } | undefined> {
  return new Promise((resolve, reject) => {
    let head: Buffer | null = null;
    const finish = (error?: Error, value?: { address: string; port: number }) => {
      clearTimeout(timer);
      socket.off("readable", onReadable);
      socket.off("end", onEnd);
      socket.off("close", onEnd);
      if (error) reject(error);
      else resolve(value);
    };
    const timer = setTimeout(() => finish(new ProxyHeaderError(`no PROXY v2 header within ${timeoutMs} ms`)), timeoutMs);
    const onEnd = () => finish(new ProxyHeaderError("the connection ended before its PROXY v2 header"));
    const onReadable = () => {
      if (!head) {
        head = socket.read(16) as Buffer | null;
        if (!head) return;
        if (!head.subarray(0, 12).equals(SIGNATURE) || head[12]! >> 4 !== 2) return finish(new ProxyHeaderError("the connection does not start with a PROXY v2 header"));
        if (16 + head.readUInt16BE(14) > MAX_PROXY_V2_BYTES) return finish(new ProxyHeaderError(`a PROXY v2 header longer than ${MAX_PROXY_V2_BYTES} bytes`));
      }
      const length = head.readUInt16BE(14);
      const body = length ? (socket.read(length) as Buffer | null) : Buffer.alloc(0);
      if (!body) return;
      try {
        finish(undefined, proxyV2Source(head, body));
      } catch (err) {
        finish(err as Error);
      }
    };
    socket.on("readable", onReadable);
    socket.once("end", onEnd);
    socket.once("close", onEnd);
    onReadable();
  });
}

/** The source of a parsed header: TCP over IPv4 or IPv6 carries it; LOCAL (and UNSPEC) none. */
function proxyV2Source(head: Buffer, body: Buffer): { address: string; port: number } | undefined {
  const command = head[12]! & 0x0f;
  if (command === 0) return undefined;
  if (command !== 1) throw new ProxyHeaderError(`a PROXY v2 header with unknown command ${command}`);
  const family = head[13]!;
  if (family === PROXY_TCP4[1]! && body.length >= 12) return { address: ipaddr.fromByteArray([...body.subarray(0, 4)]).toString(), port: body.readUInt16BE(8) };
  if (family === PROXY_TCP6[1]! && body.length >= 36) return { address: ipaddr.process(ipaddr.fromByteArray([...body.subarray(0, 16)]).toString()).toString(), port: body.readUInt16BE(32) };
  if (family === 0) return undefined;
  throw new ProxyHeaderError(`a PROXY v2 header for family 0x${family.toString(16)}, not TCP`);
}
