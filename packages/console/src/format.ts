import type { ListenerInfo, SailboxInfo } from "@sail/protocol";

export function ageOf(iso: string, now = Date.now()): string {
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d ${Math.floor((seconds % 86400) / 3600)}h`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${Math.round(n)} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

/** "debian/amd64+postgresql (emulated)", as `sail box ls` shows it. */
export const imageLabel = (image: SailboxInfo["image"]) => `${image.name}/${image.arch}${image.aptPackages.length ? `+${image.aptPackages.join(",")}` : ""}${image.emulated ? " (emulated)" : ""}`;

/** A line to paste into a shell for a TCP endpoint: the client that port usually speaks. */
export function tcpCommand(l: Extract<ListenerInfo, { protocol: "tcp" }>): string {
  const { host, port } = l.endpoint;
  switch (l.port) {
    case 22:
      return `ssh -p ${port} root@${host}`;
    case 5432:
      return `psql -h ${host} -p ${port} -U postgres`;
    case 3306:
      return `mysql -h ${host} -P ${port} -u root`;
    case 6379:
      return `redis-cli -h ${host} -p ${port}`;
    default:
      return `nc ${host} ${port}`;
  }
}
