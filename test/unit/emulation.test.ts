/**
 * Foreign-architecture emulation: what Sail finds in binfmt_misc, what it registers, and
 * the refusal a user gets when the host cannot emulate. A fake binfmt_misc directory stands
 * in for the kernel's (registering a real entry is exercised by the Python SDK's arm64 tests).
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { ensureEmulation, type EmulationPaths } from "../../packages/server/src/runtime/emulation.js";
import { EmulationUnavailableError } from "../../packages/server/src/runtime/runtime.js";

let root: string;
let paths: EmulationPaths;

const AARCH64_MAGIC = "7f454c460201010000000000000000000200b700";
const entry = (flags: string, interpreter: string) => `enabled\ninterpreter ${interpreter}\nflags: ${flags}\noffset 0\nmagic ${AARCH64_MAGIC}\nmask ffffffffffffff00fffffffffffffffffeffffff\n`;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "sail-emulation-"));
  paths = { binfmtDir: join(root, "binfmt_misc"), binDir: join(root, "bin"), binfmtConfDir: join(root, "binfmt.d") };
  for (const dir of Object.values(paths)) mkdirSync(dir);
  writeFileSync(join(paths.binfmtDir, "register"), "");
  writeFileSync(join(paths.binfmtDir, "status"), "enabled\n");
  writeFileSync(join(paths.binDir, "qemu-aarch64-static"), "");
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

test("without qemu-user-static an arm64 box is refused, saying what to install", async () => {
  rmSync(join(paths.binDir, "qemu-aarch64-static"));
  await assert.rejects(ensureEmulation("arm64", paths), (err: Error) => err instanceof EmulationUnavailableError && /apt-get install qemu-user-static/.test(err.message));
});

test("a disabled binfmt_misc is refused, saying how to enable it", async () => {
  writeFileSync(join(paths.binfmtDir, "status"), "disabled\n");
  await assert.rejects(ensureEmulation("arm64", paths), /binfmt_misc is disabled on this host: enable it with `echo 1 >/);
});

test("an enabled entry with the F flag is used as it is: nothing is registered", async () => {
  writeFileSync(join(paths.binfmtDir, "qemu-aarch64"), entry("POF", join(paths.binDir, "qemu-aarch64-static")));
  await ensureEmulation("arm64", paths);
  assert.equal(readFileSync(join(paths.binfmtDir, "register"), "utf8"), "");
});

test("with no entry, Debian's line is registered as systemd-binfmt would", async () => {
  const debian = ":qemu-aarch64:M::\\x7f\\x45\\x4c\\x46:\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF";
  writeFileSync(join(paths.binfmtConfDir, "qemu-aarch64.conf"), debian + "\n");
  // the fake kernel creates no entry, so the check after registering fails: the line is what matters here
  await assert.rejects(ensureEmulation("arm64", paths), /qemu-aarch64 is not enabled with the F flag/);
  assert.equal(readFileSync(join(paths.binfmtDir, "register"), "utf8"), debian);
});

test("an entry without the F flag is left alone, and Sail's own is registered before it", async () => {
  writeFileSync(join(paths.binfmtDir, "qemu-aarch64"), entry("P", "/usr/bin/qemu-aarch64"));
  await assert.rejects(ensureEmulation("arm64", paths), EmulationUnavailableError);
  const line = readFileSync(join(paths.binfmtDir, "register"), "utf8");
  assert.match(line, /^:sail-qemu-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02/);
  assert.ok(line.endsWith(`:${join(paths.binDir, "qemu-aarch64-static")}:F`), line);
});
