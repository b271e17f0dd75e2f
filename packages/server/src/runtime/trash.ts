import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync } from "node:fs";
import { createRequire } from "node:module";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { mustRun, runCommand } from "./commands.js";

/** Where `npm run build` puts the disk helper (native/disk.c), from src/ or dist/. */
const MODULE_PATH = join(dirname(fileURLToPath(import.meta.url)), "../../native/build/disk.node");

/** One `rm` may take this long (400k files took 3.7 s here); past it, the rest waits for the next daemon start. */
const REMOVE_TIMEOUT_MS = 10 * 60_000;

/** `nice` arguments: the trash's work yields the CPU to everything else. */
const LOWEST_PRIORITY = ["-n", "19"];

interface DiskNative {
  shutdownFilesystem(path: string): void;
}

let native: DiskNative | undefined;
function loadNative(): DiskNative {
  native ??= createRequire(import.meta.url)(MODULE_PATH) as DiskNative;
  return native;
}

/**
 * Directories on their way out: boxes that ended, spare disks nobody took. `discard` moves one
 * here with one rename on the same filesystem, so terminate answers as fast for a box that
 * wrote 400k files as for one that wrote none (a synchronous rmSync of those stalled the API
 * 3.7 s); a queue then unmounts what is mounted inside and removes the rest, one directory at a
 * time, in a child process at the lowest CPU priority, so the daemon's event loop and its
 * libuv threads are never the ones deleting. What a stopped daemon left here is resumed at start.
 */
export class Trash {
  private readonly pending: string[] = [];
  private working: Promise<void> | undefined;

  constructor(
    private readonly dir: string,
    private readonly onError: (path: string, err: unknown) => void,
  ) {}

  /** Removal of what an earlier daemon left here (it stopped, or died, before it was done). */
  resume(): void {
    let names: string[] = [];
    try {
      names = readdirSync(this.dir);
    } catch {
      return; // no trash yet
    }
    this.enqueue(...names.map((name) => join(this.dir, name)));
  }

  /** Move `path` into the trash and remove it in the background; a missing path is nothing to do. */
  discard(path: string): void {
    let target = join(this.dir, basename(path));
    try {
      mkdirSync(this.dir, { recursive: true });
      if (existsSync(target)) target += `.${randomBytes(4).toString("hex")}`;
      renameSync(path, target);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      target = path; // not movable (another filesystem: EXDEV): removed where it is
    }
    this.enqueue(target);
  }

  /** Resolves once everything discarded so far is removed, or failed and stays for the next start. */
  async drained(): Promise<void> {
    while (this.working) await this.working;
  }

  private enqueue(...paths: string[]): void {
    this.pending.push(...paths);
    this.working ??= this.work();
  }

  private async work(): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve)); // not within the caller's own call (terminate's)
    for (let path = this.pending.shift(); path !== undefined; path = this.pending.shift()) {
      try {
        await removeTree(path);
      } catch (err) {
        this.onError(path, err);
      }
    }
    this.working = undefined; // in the same step as the last look at the queue: nothing enqueued is left behind
  }
}

/**
 * Unmount what is mounted under `path`, then remove it. A box disk is shut down first
 * (FS_IOC_SHUTDOWN): its dirty pages are dropped, not written back to a file about to go.
 * Mounts come off in the reverse of their order (the overlay before the disk under it), and
 * `rm --one-file-system` never reaches into one that would not come off.
 */
async function removeTree(path: string): Promise<void> {
  const mounts = mountsUnder(path);
  for (const mount of mounts.filter((m) => m.fsType === "ext4" && m.source.startsWith("/dev/loop"))) {
    try {
      loadNative().shutdownFilesystem(mount.mountPoint);
    } catch {
      // then the unmount writes back what the guest left: slower, not wrong
    }
  }
  // one process for all, in this order; a loop device mounted with `-o loop` detaches itself when its filesystem is
  // unmounted (LO_FLAGS_AUTOCLEAR). Unmounting writes the disk's dirty metadata through it (250k new files: ≈ 2 s here).
  if (mounts.length && (await runCommand("nice", [...LOWEST_PRIORITY, "umount", ...mounts.map((m) => m.mountPoint)])).code !== 0) {
    for (const mount of mountsUnder(path)) await mustRun("umount", ["-l", mount.mountPoint]);
  }
  await mustRun("nice", [...LOWEST_PRIORITY, "rm", "-rf", "--one-file-system", "--", path], { timeoutMs: REMOVE_TIMEOUT_MS });
}

interface Mount {
  mountPoint: string;
  fsType: string;
  source: string;
}

/** Mounts at or below `path`, the last mounted first (proc(5): /proc/self/mountinfo is in mount order). */
export function mountsUnder(path: string, mountinfo = readFileSync("/proc/self/mountinfo", "utf8")): Mount[] {
  const mounts: Mount[] = [];
  for (const line of mountinfo.split("\n")) {
    const [before, after] = line.split(" - ");
    const mountPoint = unescapeMountField(before?.split(" ")[4] ?? "");
    const [fsType = "", source = ""] = (after ?? "").split(" ");
    if (mountPoint === path || mountPoint.startsWith(`${path}/`)) mounts.push({ mountPoint, fsType, source: unescapeMountField(source) });
  }
  return mounts.reverse();
}

/** mountinfo writes space, tab, newline and backslash in paths as octal escapes (\040). */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}
