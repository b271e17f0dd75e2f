import { accessSync, constants, existsSync } from "node:fs";
import { join } from "node:path";

export const APT_INSTALL = "apt-get update && apt-get install -y crun debootstrap tini iproute2 util-linux e2fsprogs nftables conntrack";

/** Why the daemon will not start, and what to run to fix it. */
export class PreflightError extends Error {
  override readonly name = "PreflightError";
}

/** Refuse to start, clearly, when the host cannot run boxes. */
export function preflight(options: { tiniPath: string; outbound: boolean }): void {
  if (process.getuid?.() !== 0) {
    throw new PreflightError("saild must run as root: it creates network namespaces, mounts and cgroups (try `sudo sail up`)");
  }
  const missing: string[] = [];
  // each box's disk is an ext4 (mkfs.ext4, from e2fsprogs) on a loop device
  for (const command of ["crun", "debootstrap", "ip", "nft", "unshare", "mount", "umount", "mkfs.ext4"]) {
    if (!onPath(command)) missing.push(command);
  }
  // a policy change cuts the connections it no longer allows by their conntrack entries
  if (options.outbound && !onPath("conntrack")) missing.push("conntrack (or start with --outbound off)");
  if (!isExecutable(options.tiniPath)) missing.push(`tini (${options.tiniPath})`);
  if (missing.length) throw new PreflightError(`Sail needs ${missing.join(", ")}, which ${missing.length > 1 ? "are" : "is"} missing: run \`${APT_INSTALL}\``);
  if (!existsSync("/dev/loop-control")) {
    throw new PreflightError("Sail gives each box its own filesystem on a loop device, and this host has none (/dev/loop-control is missing): load the loop module (`modprobe loop`)");
  }
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function onPath(command: string): boolean {
  return (process.env.PATH ?? "").split(":").some((dir) => dir && isExecutable(join(dir, command)));
}
