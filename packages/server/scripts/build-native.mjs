// Builds the native data paths into native/build/*.node with the system C compiler and
// Node-API headers (from the node-api-headers package: no download, and the modules work on
// every Node version with Node-API 8). Skipped when up to date.
//  - splice-pump: the raw-TCP pump (splice(2)).
//  - http-engine: the HTTPS gateway's data path. It calls OpenSSL, whose symbols it takes
//    from the node binary itself at load time (Node exports them for addons); the headers come
//    from Debian's libssl-dev, of the same OpenSSL 3.0 series as Node 20's.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const { include_dir: includeDir } = createRequire(import.meta.url)("node-api-headers");
const cc = process.env.CC ?? "cc";

for (const name of ["splice-pump", "http-engine"]) {
  const source = join(root, `native/${name}.c`);
  const output = join(root, `native/build/${name}.node`);
  if (existsSync(output) && statSync(output).mtimeMs >= statSync(source).mtimeMs) continue;
  mkdirSync(dirname(output), { recursive: true });
  const args = ["-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", "-pthread", "-DNAPI_VERSION=8", `-DNODE_GYP_MODULE_NAME=${name.replace("-", "_")}`, `-I${includeDir}`, "-o", output, source];
  try {
    execFileSync(cc, args, { stdio: "inherit" });
  } catch (err) {
    console.error(`could not build ${source} with ${cc} (${err.message}); install a C compiler and OpenSSL's headers: apt-get install gcc libc6-dev libssl-dev`);
    process.exit(1);
  }
}
