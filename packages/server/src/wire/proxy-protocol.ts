import ipaddr from "ipaddr.js";

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
