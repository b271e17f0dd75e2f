import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mustRun } from "./commands.js";
import { bindIdmapped, unmount } from "./mounts.js";

/**
 * Every box runs in a user namespace of its own: its root is root over the box's files only,
 * and is an unprivileged uid on the host (a file it writes is owned by that uid, a host file is
 * nobody's to it, capabilities count inside the namespace only). Ids 0-65535 inside (Debian's
 * system users and `nobody`, 65534) map to a range of the host's ids of the same size.
 */
export const BOX_ID_COUNT = 65_536;

/**
 * The first host id given to boxes: 2^31, above every conventional allocation on a Linux host:
 * regular users (UID_MAX 60000 in Debian's login.defs), useradd's subordinate ranges
 * (100000-600100000), systemd-nspawn's container range (524288-1879048191) and SSSD's default
 * ID mapping (200000-2000200000). Kubernetes' user-namespaced pods also take theirs up here.
 * `checkHostIds` refuses to start when a host user or delegated range falls inside anyway.
 */
export const FIRST_BOX_ID = 2 ** 31;

/** Whole ranges below 2^32 - 1 (`(uid_t) -1` means "no id" to chown(2)): the last one is left out. */
export const MAX_ID_RANGES = (2 ** 32 - FIRST_BOX_ID) / BOX_ID_COUNT - 1;

/** A box's ids on the host: `hostId` is its root, `hostId + count - 1` its last id. */
export interface IdRange {
  hostId: number;
  count: number;
}

/**
 * The box with network slot `slot` gets the slot-th range: disjoint among one daemon's live
 * boxes (the store keeps their slots unique) and the same after a daemon restart.
 */
export function idRange(slot: number): IdRange {
  if (!Number.isInteger(slot) || slot < 0 || slot >= MAX_ID_RANGES) throw new RangeError(`network slot ${slot} has no id range (at most ${MAX_ID_RANGES} boxes)`);
  return { hostId: FIRST_BOX_ID + slot * BOX_ID_COUNT, count: BOX_ID_COUNT };
}

/** The OCI runtime spec's part of it: a new user namespace and the same mapping for uids and gids. */
export function userNamespaceSpec(ids: IdRange) {
  const mapping = [{ containerID: 0, hostID: ids.hostId, size: ids.count }];
  return { namespace: { type: "user" as const }, uidMappings: mapping, gidMappings: mapping };
}

/** Where the host names its users, groups and the id ranges it delegates (newuidmap's). */
const HOST_ID_FILES = { passwd: "/etc/passwd", group: "/etc/group", subuid: "/etc/subuid", subgid: "/etc/subgid" };

/**
 * Host users, groups and delegated ranges whose ids fall in the first `ranges` box ranges: a
 * box's root must never be someone on the host. Returns what overlaps ("user alice (uid …)").
 */
export function hostIdsInBoxRanges(ranges: number, files = HOST_ID_FILES): string[] {
  const first = FIRST_BOX_ID;
  const end = FIRST_BOX_ID + ranges * BOX_ID_COUNT;
  const overlaps = (start: number, count: number) => start < end && start + count > first;
  const found: string[] = [];
  for (const [kind, idName, file] of [
    ["user", "uid", files.passwd],
    ["group", "gid", files.group],
  ] as const) {
    for (const [name, , id] of lines(file)) {
      if (id !== undefined && overlaps(Number(id), 1)) found.push(`${kind} ${name} (${idName} ${id}, ${file})`);
    }
  }
  for (const file of [files.subuid, files.subgid]) {
    for (const [owner, start, count] of lines(file)) {
      if (start !== undefined && count !== undefined && overlaps(Number(start), Number(count))) found.push(`the range ${start}+${count} of ${owner} (${file})`);
    }
  }
  return found;
}

/** The colon-separated fields of a host file's lines; none when the file is absent. */
function lines(file: string): string[][] {
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((line) => line && !line.startsWith("#"))
    .map((line) => line.split(":"));
}

/**
 * Mount `image` read-only at `target` as the box sees it: the image's files (owned by the
 * host's root and Debian's system users) appear owned by the same ids in the box's range, so
 * the box's root owns them in its namespace. Nothing on disk changes; boxes share the image.
 * Takes < 1 ms (a user namespace made for the call, open_tree, mount_setattr, move_mount).
 * Read-only: the box never writes its lower layer, and removing a box directory whose lower
 * is still mounted fails there instead of deleting the image.
 */
export function mountIdmappedLower(image: string, target: string, ids: IdRange): void {
  mkdirSync(target, { recursive: true });
  try {
    bindIdmapped(image, target, ids.hostId, ids.count);
  } catch (err) {
    throw new Error(`could not mount ${image} at ${target} mapped to ids ${ids.hostId}-${ids.hostId + ids.count - 1}: ${(err as Error).message}`);
  }
}

/**
 * The overlay's upper directory gives the root of the box's filesystem its owner and mode:
 * the box's root, and the image root's mode. Files the box writes land here, owned by its ids.
 */
export function prepareUpper(upper: string, image: string, ids: IdRange): void {
  mkdirSync(upper, { recursive: true });
  chmodSync(upper, lstatSync(image).mode & 0o7777);
  chownSync(upper, ids.hostId, ids.hostId);
}

/** Files the daemon writes into a box's root (hostname, hosts, resolv.conf) become the box root's. */
export function giveToBox(paths: readonly string[], ids: IdRange): void {
  for (const path of paths) chownSync(path, ids.hostId, ids.hostId);
}

/**
 * Whether this host can give boxes their ids: an overlay over an idmapped mount of `images`
 * (its filesystem must support idmapped mounts: ext4, xfs, btrfs…; overlayfs takes an idmapped
 * layer from Linux 5.19) made and removed at start, so a host that cannot says so then, not
 * at the first box.
 */
export async function checkIdmappedMounts(images: string): Promise<void> {
  mkdirSync(images, { recursive: true });
  const probe = mkdtempSync(join(tmpdir(), "sail-idmap-probe-"));
  const [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map((sub) => join(probe, sub)) as [string, string, string, string];
  for (const sub of [upper, work, merged]) mkdirSync(sub);
  try {
    mountIdmappedLower(images, lower, idRange(0));
    try {
      await mustRun("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${lower},upperdir=${upper},workdir=${work}`, merged]);
      unmount(merged);
    } finally {
      unmount(lower);
    }
  } catch (err) {
    throw new Error(`boxes need their own user namespace, and this host cannot map their ids: ${(err as Error).message}`);
  } finally {
    // one by one, never recursively: a directory still mounted stays, and nothing under it is touched
    for (const sub of [join(work, "work"), lower, upper, work, merged, probe]) removeEmptyDir(sub);
  }
}

function removeEmptyDir(path: string): void {
  try {
    rmdirSync(path);
  } catch {
    // absent, or not empty (still mounted): left as it is
  }
}
