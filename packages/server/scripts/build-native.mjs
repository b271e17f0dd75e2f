// Builds the native raw-TCP pump (splice(2), native/splice-pump.c), the terminal helper
// (native/pty.c: the console socket's SCM_RIGHTS, TIOCSWINSZ), a box's mounts (native/mounts.c:
// its idmapped lower layer, its network namespace's sysfs, umount2) and the disk helper
// (native/disk.c: FS_IOC_SHUTDOWN before a box's disk is removed) into native/build with the
// system C compiler and Node-API headers (from the node-api-headers package: no download, and
// the module works on every Node version with Node-API 8). Skipped when up to date.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const { include_dir: includeDir } = createRequire(import.meta.url)("node-api-headers");
const cc = process.env.CC ?? "cc";

for (const name of ["splice-pump", "pty", "mounts", "disk"]) {
  const source = join(root, `native/${name}.c`);
  const output = join(root, `native/build/${name}.node`);
  if (existsSync(output) && statSync(output).mtimeMs >= statSync(source).mtimeMs) continue;
  mkdirSync(dirname(output), { recursive: true });
  const args = ["-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", "-pthread", "-DNAPI_VERSION=8", `-DNODE_GYP_MODULE_NAME=${name.replace("-", "_")}`, `-I${includeDir}`, "-o", output, source];
  try {
    execFileSync(cc, args, { stdio: "inherit" });
  } catch (err) {
    console.error(`could not build ${source} with ${cc} (${err.message}); install a C compiler: apt-get install gcc libc6-dev`);
    process.exit(1);
  }
}
