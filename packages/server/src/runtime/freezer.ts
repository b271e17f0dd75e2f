import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";

/** A cgroup that would not freeze: it was thawed again (never left FREEZING), and the message says how hard it was tried. */
export class FreezeError extends Error {
  override readonly name = "FreezeError";
}

/**
 * Attempts before giving up, as runc's freezer (libcontainer/cgroups/fs/freezer.go): write
 * FROZEN, read the state back, retry while it says FREEZING; every 50th attempt thaw and
 * pause 10 ms (new tasks keep appearing: let them settle), every 200th pause longer. runc
 * pauses 1, 2, 4 then 8 s there; a box's sleep is not worth 15 s, so here it is 100 ms doubling.
 * A cgroup that never freezes is given up after ≈ 5 s here (test/unit/freezer.test.ts).
 */
export const FREEZE_ATTEMPTS = 1000;
const THAW_EVERY = 50;
const THAW_PAUSE_MS = 10;
const LONG_PAUSE_EVERY = 200;
const FIRST_LONG_PAUSE_MS = 100;

/**
 * Freeze the cgroup-v1 freezer at `dir`. The kernel reports FREEZING until every task stopped
 * (kernel docs: cgroup-v1/freezer-subsystem), and a task that cannot stop keeps it there: one
 * in an uninterruptible wait (a memory cgroup at its limit with the OOM killer off, a FUSE
 * request nobody answers) or new tasks arriving faster than they freeze. On failure, or when
 * `signal` aborts, the cgroup is thawed — leaving it FREEZING would stop some tasks of the box
 * and not others — and the error says so.
 */
export async function freezeCgroupV1(dir: string, options: { signal?: AbortSignal; attempts?: number } = {}): Promise<{ attempts: number }> {
  const file = join(dir, "freezer.state");
  const attempts = options.attempts ?? FREEZE_ATTEMPTS;
  let longPauseMs = FIRST_LONG_PAUSE_MS;
  try {
    for (let attempt = 1; attempt <= attempts; attempt++) {
      options.signal?.throwIfAborted();
      if (attempt % THAW_EVERY === 0) {
        await writeFile(file, "THAWED");
        await delay(THAW_PAUSE_MS);
      }
      await writeFile(file, "FROZEN");
      if (attempt % LONG_PAUSE_EVERY === 0) {
        await delay(longPauseMs, undefined, { signal: options.signal });
        longPauseMs *= 2;
      }
      const state = (await readFile(file, "utf8")).trim();
      if (state === "FROZEN") return { attempts: attempt };
      if (state !== "FREEZING") throw new FreezeError(`${file} says ${state} while freezing`);
    }
    throw new FreezeError(`${dir} was still FREEZING after ${attempts} attempts (a task in it cannot stop); thawed it again`);
  } catch (err) {
    await writeFile(file, "THAWED").catch(() => {});
    if (err instanceof FreezeError) throw err;
    throw new FreezeError(`could not freeze ${dir}: ${(err as Error).message}; thawed it again`, { cause: err });
  }
}
