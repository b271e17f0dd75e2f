import { readdirSync, readFileSync } from "node:fs";
import { basename } from "node:path";

/** The host tools the runtime runs for a box; only these are ever waited for or killed. */
const TOOLS = new Set(["crun", "ip", "nft", "mount", "umount", "conntrack", "mkfs.ext4"]);
const STRAY_WAIT_MS = 10_000;
const STRAY_POLL_MS = 20;

/**
 * Host processes a previous daemon started for box `id` that outlived it (killed daemons do not
 * take their children along): a `crun run` still creating the container, an `ip netns add`.
 * Only our own tools, outside other boxes' cgroups, whose arguments name the box: a guest naming a
 * process after another box's id is neither waited for nor killed.
 */
export function strayProcesses(id: string, cgroupParent = "sail"): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      if (!TOOLS.has(basename(argv[0] ?? "")) || !argv.slice(1).some((arg) => arg.includes(id))) continue;
      const cgroups = readFileSync(`/proc/${entry}/cgroup`, "utf8");
      // crun may already sit in this box's cgroup; anything in another box's is a guest, whichever
      // node agent's parent that box is under (agents sharing a kernel have one each)
      if (/\/sb-[a-z0-9]+(\/|$)/m.test(cgroups) && !cgroups.includes(`/${cgroupParent}/${id}`)) continue;
      found.push(pid);
    } catch {
      // it exited while we looked
    }
  }
  return found;
}

/** Let strays of box `id` finish (they are short), so cleaning up after them leaves nothing behind; kill any still there after 10 s. */
export async function settleStrays(id: string, cgroupParent = "sail"): Promise<number[]> {
  const deadline = Date.now() + STRAY_WAIT_MS;
  let strays = strayProcesses(id, cgroupParent);
  while (strays.length && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, STRAY_POLL_MS));
    strays = strayProcesses(id, cgroupParent);
  }
  for (const pid of strays) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  return strays;
}
