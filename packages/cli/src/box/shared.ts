import { App, Image, InvalidArgumentError, Sailbox, type Listener, type SailboxInfo } from "@sail/sdk";

/** "debian/arm64 (emulated)", "debian/amd64+postgresql". */
export const imageLabel = (image: SailboxInfo["image"]) => `${image.name}/${image.arch}${image.aptPackages.length ? `+${image.aptPackages.join(",")}` : ""}${image.emulated ? " (emulated)" : ""}`;

/** "open", "blocked", "allow 3", "deny 1". */
const networkLabel = (network: SailboxInfo["network"]) =>
  network.outbound === "allowlist" ? `allow ${network.allowOut.length}` : network.outbound === "denylist" ? `deny ${network.denyOut.length}` : network.outbound;

/** The policy in words, e.g. "outbound: only *.debian.org, 198.51.100.0/24". */
export const networkSentence = (network: SailboxInfo["network"]) =>
  network.outbound === "allowlist"
    ? `outbound: only ${network.allowOut.join(", ")}`
    : network.outbound === "denylist"
      ? `outbound: everywhere but ${network.denyOut.join(", ")}`
      : network.outbound === "blocked"
        ? "outbound: blocked (nothing leaves the box, DNS included)"
        : "outbound: open (never to private ranges, the host or other boxes)";

/** A `sail box ls` row. */
export const boxRow = (sb: Sailbox) => {
  const d = sb.describe();
  return {
    id: d.id,
    name: d.name,
    status: d.status,
    image: imageLabel(d.image),
    cpu: d.cpu,
    memory: `${d.memoryMiB}MiB`,
    disk: d.diskMiB === null ? "-" : `${d.diskMiB}MiB`,
    network: networkLabel(d.network),
    created: d.createdAt,
  };
};

export const listenerRow = (l: Listener) => ({
  port: l.port,
  protocol: l.protocol,
  endpoint: l.protocol === "http" ? l.endpoint.url : `${l.endpoint.host}:${l.endpoint.port}`,
  // an unbound TCP port says why (another program holds it) and that Sail retries
  state: l.unbound ? `unbound: ${l.unbound.code} since ${l.unbound.since} (retrying)` : l.state,
});

export const sshCommand = (l: Listener) => `ssh -p ${l.endpoint.port} root@${l.endpoint.host}`;

export function collectPorts(value: string, previous: number[]): number[] {
  return [...previous, Number(value)];
}

export function collectStrings(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function imageForArch(arch: string | undefined): Image {
  if (arch === undefined) return Image.debian;
  if (arch === "amd64") return Image.debian_amd64;
  if (arch === "arm64") return Image.debian_arm64;
  throw new InvalidArgumentError("SAIL_IMAGE_UNKNOWN", `--arch ${JSON.stringify(arch)} is not an architecture Sail knows: use amd64 or arm64`, { field: "image" });
}

/** An id (`sb-…`) or the name of a live box in `--app`. */
export async function resolveBox(idOrName: string, appName: string): Promise<Sailbox> {
  if (idOrName.startsWith("sb-")) return Sailbox.fromId(idOrName);
  return Sailbox.fromName(await App.find({ name: appName }), idOrName);
}
