import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** native/mounts.c: mounts made in-process, each in well under a millisecond (a `mount` process costs ≈ 12-17 ms here). */
interface MountsNative {
  bindIdmapped(source: string, target: string, hostId: number, count: number): void;
  mountSysfs(netnsPath: string, target: string): void;
  unmount(path: string): boolean;
}

/** Where `npm run build` puts the module: packages/server/native/build, from src/ or dist/. */
const MODULE_PATH = join(dirname(fileURLToPath(import.meta.url)), "../../native/build/mounts.node");
let native: MountsNative | undefined;
const load = () => (native ??= createRequire(import.meta.url)(MODULE_PATH) as MountsNative);

/** `source` read-only at `target`, a file owned by id k < count appearing owned by hostId + k (an idmapped mount). */
export function bindIdmapped(source: string, target: string, hostId: number, count: number): void {
  load().bindIdmapped(source, target, hostId, count);
}

/** A read-only sysfs at `target` showing the network devices of the namespace at `netnsPath`. */
export function mountSysfs(netnsPath: string, target: string): void {
  load().mountSysfs(netnsPath, target);
}

/** Unmount `path` (lazily when busy); false when nothing was mounted there. Idempotent. */
export function unmount(path: string): boolean {
  return load().unmount(path);
}
