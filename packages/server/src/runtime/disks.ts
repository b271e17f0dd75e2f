import { randomBytes } from "node:crypto";
import { closeSync, mkdirSync, openSync, readdirSync, renameSync, statfsSync, truncateSync } from "node:fs";
import { dirname, join } from "node:path";
import { mustRun } from "./commands.js";
import type { Trash } from "./trash.js";

/** How every box's disk is made. */
export interface DiskSettings {
  /** The size of a box's disk when its create does not say (MiB): spares are made of it. */
  defaultMiB: number;
  /** One inode per this many bytes of disk (mkfs.ext4 -i): at 16384, a 1 GiB disk holds 65536 files and directories. */
  bytesPerInode: number;
}

/** Under a box's directory: its disk's mount point, which holds everything the guest can make grow. */
export const DISK_DIR = "disk";
/** The disk's backing file, beside its mount point. */
const DISK_IMAGE = "disk.img";
/** On the disk: the overlay's upper and work directories, and background execs' logs. */
const DISK_SUBDIRS = ["upper", "work", "execs"];

/**
 * Disks ready for creates of the default size. Making one (a sparse file, mkfs.ext4, a loop
 * mount) took ≈ 60 ms here, against ≈ 26 ms for the box's network it would race on the
 * create's path: a create of the default size takes a spare with one rename instead, and the
 * spare is made again in the background. Two cover creates one after another.
 */
const SPARE_DISKS = 2;

/** Spares are made again this long after a create: its routes and answer come after the runtime's part, and mkfs should not compete with them. */
const REFILL_DELAY_MS = 250;

/**
 * Every box gets its own ext4 filesystem, of the size its create asked for, on a loop device
 * over a sparse file in its directory: the kernel refuses a write past the size (ENOSPC) and a
 * file past its inodes, and `df` in the box shows that filesystem (overlayfs reports its upper
 * layer's). This kernel has neither XFS nor ext4 project quotas (CONFIG_XFS_QUOTA and
 * CONFIG_QFMT_V2 unset), so a filesystem per box is the kernel's limit that is there.
 */
export class BoxDisks {
  private readonly spares: string[] = [];
  private filling: Promise<void> | undefined;
  private refillTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly sparesDir: string,
    private readonly settings: DiskSettings,
    private readonly trash: Trash,
    private readonly onError: (err: unknown) => void,
  ) {}

  /** Spares an earlier daemon left (perhaps half made) go to the trash; new ones are made in the background. */
  start(): void {
    let names: string[] = [];
    try {
      names = readdirSync(this.sparesDir);
    } catch {
      // none yet
    }
    for (const name of names) this.trash.discard(join(this.sparesDir, name));
    this.fill();
  }

  /**
   * Give `dir` (which must not exist yet) a disk of `sizeMiB` mounted on `dir/disk`, with
   * `upper/`, `work/` and `execs/` on it; resolves to its inodes. On failure `dir` may hold a
   * part of it: the caller's cleanup discards `dir`.
   */
  async provide(dir: string, sizeMiB: number): Promise<number> {
    const spare = sizeMiB === this.settings.defaultMiB ? this.spares.shift() : undefined;
    if (spare) {
      mkdirSync(dirname(dir), { recursive: true }); // the first box of a data dir
      renameSync(spare, dir);
    } else await makeDisk(dir, sizeMiB, this.settings.bytesPerInode);
    return statfsSync(join(dir, DISK_DIR)).files;
  }

  /** Make the spares taken again, once the create that took one is done (the runtime calls this at its end). */
  refillSoon(): void {
    this.refillTimer ??= setTimeout(() => {
      this.refillTimer = undefined;
      this.fill();
    }, REFILL_DELAY_MS).unref();
  }

  /** Make spares until there are enough, one at a time. */
  private fill(): void {
    if (this.filling || this.stopped) return;
    this.filling = (async () => {
      while (!this.stopped && this.spares.length < SPARE_DISKS) {
        const dir = join(this.sparesDir, `spare-${randomBytes(6).toString("hex")}`);
        try {
          await makeDisk(dir, this.settings.defaultMiB, this.settings.bytesPerInode);
        } catch (err) {
          this.trash.discard(dir);
          throw err;
        }
        if (this.stopped) this.trash.discard(dir);
        else this.spares.push(dir);
      }
    })()
      .catch(this.onError) // the next create makes its own disk, and tries to refill again
      .finally(() => (this.filling = undefined));
  }

  /** No more spares; the ones made go to the trash (the caller drains it). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.refillTimer);
    await this.filling;
    for (const spare of this.spares.splice(0)) this.trash.discard(spare);
  }
}

/**
 * A sparse file (the host's disk holds only what the guest writes: ≈ 4 MB for a fresh 10 GiB
 * disk), an ext4 on it and a loop mount. mkfs.ext4 options:
 *   -m 0          nothing reserved for root: the guest is root, and the limit is the size
 *   -b 4096       one block size whatever the size (mke2fs would pick 1 KiB below 512 MiB)
 *   ^has_journal  a box's disk never outlives a host crash (its container does not), so a
 *                 journal would only cost writes
 *   lazy_itable_init, nodiscard, and noinit_itable at mount: the inode tables of a fresh
 *                 sparse file read as zeros already, so nothing writes them
 * and `-o loop` gives the loop device LO_FLAGS_AUTOCLEAR: it detaches itself at unmount.
 */
async function makeDisk(dir: string, sizeMiB: number, bytesPerInode: number): Promise<void> {
  const image = join(dir, DISK_IMAGE);
  const mountPoint = join(dir, DISK_DIR);
  mkdirSync(mountPoint, { recursive: true });
  closeSync(openSync(image, "wx"));
  truncateSync(image, sizeMiB * 1024 * 1024);
  await mustRun("mkfs.ext4", ["-q", "-F", "-m", "0", "-b", "4096", "-i", String(bytesPerInode), "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard", image]);
  await mustRun("mount", ["-t", "ext4", "-o", "loop,noinit_itable", image, mountPoint]);
  for (const sub of DISK_SUBDIRS) mkdirSync(join(mountPoint, sub));
}
