import { connect } from "node:net";
import { runCommand } from "./commands.js";
import { BoxNetworks } from "./network.js";

/** Does something accept TCP connections at address:port? (A refused or timed-out dial is no.) `greeting` is sent, then the probe ends. */
export function probeTcp(address: string, port: number, greeting?: Buffer, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: address, port });
    const done = (ok: boolean) => {
      if (ok && greeting) socket.end(greeting);
      else socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** LISTEN sockets in a box's network namespace, from /proc/net/tcp{,6} (state 0A). */
export async function listeningAddresses(id: string, port: number): Promise<string[]> {
  const result = await runCommand("ip", ["netns", "exec", BoxNetworks.namespace(id), "cat", "/proc/net/tcp", "/proc/net/tcp6"]);
  const found: string[] = [];
  for (const line of result.stdout.split("\n")) {
    const cols = line.trim().split(/\s+/);
    if (cols[3] !== "0A" || !cols[1]) continue;
    const [hexAddress, hexPort] = cols[1].split(":");
    if (parseInt(hexPort!, 16) !== port) continue;
    found.push(decodeProcAddress(hexAddress!));
  }
  return found;
}

/** /proc/net/tcp stores addresses as little-endian 32-bit words in hex. */
export function decodeProcAddress(hex: string): string {
  const words = hex.match(/.{8}/g)!.map((w) => w.match(/../g)!.reverse().join(""));
  if (words.length === 1)
    return words[0]!
      .match(/../g)!
      .map((b) => parseInt(b, 16))
      .join(".");
  const groups = words
    .join("")
    .match(/.{4}/g)!
    .map((g) => parseInt(g, 16).toString(16));
  const v6 = groups.join(":").replace(/(^|:)0(:0)+(:|$)/, "::");
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(v6);
  if (mapped) {
    const n = (parseInt(mapped[1]!, 16) << 16) | parseInt(mapped[2]!, 16);
    return `::ffff:${[24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".")}`;
  }
  return v6;
}
