import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Architecture } from "@sail/protocol";
import { runCommand } from "./commands.js";
import { EmulationUnavailableError } from "./runtime.js";

/** Where the kernel's binfmt_misc lives, qemu's binaries, and Debian's registration lines (tests point them elsewhere). */
export interface EmulationPaths {
  binfmtDir: string;
  binDir: string;
  binfmtConfDir: string;
}

const HOST_PATHS: EmulationPaths = { binfmtDir: "/proc/sys/fs/binfmt_misc", binDir: "/usr/bin", binfmtConfDir: "/usr/lib/binfmt.d" };

/**
 * How the kernel recognises each architecture's ELF binaries (qemu's scripts/qemu-binfmt-conf.sh):
 * the e_ident bytes and e_machine (0xb7 aarch64, 0x3e x86-64) under a mask.
 */
const QEMU_TARGETS: Record<Architecture, { qemu: string; magic: string; mask: string }> = {
  arm64: {
    qemu: "aarch64",
    magic: "7f454c460201010000000000000000000200b700",
    mask: "ffffffffffffff00fffffffffffffffffeffffff",
  },
  amd64: {
    qemu: "x86_64",
    magic: "7f454c4602010100000000000000000002003e00",
    mask: "fffffffffffefe00fffffffffffffffffeffffff",
  },
};

const escaped = (hex: string) => hex.replace(/../g, (byte) => `\\x${byte}`);

/** An entry of /proc/sys/fs/binfmt_misc, as the kernel prints it. */
interface BinfmtEntry {
  name: string;
  enabled: boolean;
  interpreter: string;
  flags: string;
  magic: string;
}

function readEntries(binfmtDir: string): BinfmtEntry[] {
  return readdirSync(binfmtDir)
    .filter((name) => name !== "register" && name !== "status")
    .flatMap((name) => {
      try {
        const text = readFileSync(join(binfmtDir, name), "utf8");
        const field = (key: string) => new RegExp(`^${key}:? (.*)$`, "m").exec(text)?.[1]?.trim() ?? "";
        return [{ name, enabled: text.startsWith("enabled"), interpreter: field("interpreter"), flags: field("flags"), magic: field("magic") }];
      } catch {
        return []; // removed while we read
      }
    });
}

/**
 * Running a foreign architecture's binaries in a box, the way `docker run --platform` does:
 * Debian's qemu-user-static behind a binfmt_misc entry with the F flag (the kernel opens the
 * interpreter when the entry is registered, so it is found from inside a box's own root).
 * Mounts binfmt_misc and registers the entry when the host has not; an entry that lacks F is
 * left alone and one of Sail's own is registered before it (the kernel tries newest first).
 * Throws `EmulationUnavailableError` saying why and how to fix it.
 */
export async function ensureEmulation(arch: Architecture, paths: EmulationPaths = HOST_PATHS): Promise<void> {
  const { binfmtDir } = paths;
  const target = QEMU_TARGETS[arch];
  const interpreter = join(paths.binDir, `qemu-${target.qemu}-static`);
  if (!existsSync(interpreter)) {
    throw new EmulationUnavailableError(`${interpreter} is missing: install Debian's qemu-user-static (apt-get install qemu-user-static)`);
  }
  if (!existsSync(join(binfmtDir, "register"))) {
    const mounted = await runCommand("mount", ["-t", "binfmt_misc", "binfmt_misc", binfmtDir]);
    if (mounted.code !== 0) {
      throw new EmulationUnavailableError(
        `binfmt_misc cannot be mounted at ${binfmtDir} (${mounted.stderr.trim() || `mount exited ${mounted.code}`}): load it with \`modprobe binfmt_misc\`; in a container, the host must provide it`,
      );
    }
  }
  if (readFileSync(join(binfmtDir, "status"), "utf8").trim() !== "enabled") {
    throw new EmulationUnavailableError(`binfmt_misc is disabled on this host: enable it with \`echo 1 > ${binfmtDir}/status\``);
  }
  const entries = readEntries(binfmtDir);
  const usable = entries.find((e) => e.enabled && e.magic === target.magic && e.flags.includes("F") && existsSync(e.interpreter));
  if (usable) return;
  // Debian's own line (qemu-user-static's binfmt.d file: preserve argv[0], open the binary, fix
  // the interpreter) is what systemd-binfmt registers at boot on a host that runs it.
  const debianLine = readDebianLine(join(paths.binfmtConfDir, `qemu-${target.qemu}.conf`));
  const taken = new Set(entries.map((e) => e.name));
  const name = taken.has(`qemu-${target.qemu}`) ? `sail-qemu-${target.qemu}` : `qemu-${target.qemu}`;
  const line = debianLine ? debianLine.replace(/^:[^:]*:/, `:${name}:`) : `:${name}:M::${escaped(target.magic)}:${escaped(target.mask)}:${interpreter}:F`;
  if (!taken.has(name)) {
    try {
      writeFileSync(join(binfmtDir, "register"), line);
    } catch (err) {
      throw new EmulationUnavailableError(`could not register qemu-${target.qemu} with binfmt_misc (${(err as NodeJS.ErrnoException).code ?? err}): this host does not allow it`);
    }
  }
  if (!readEntries(binfmtDir).some((e) => e.name === name && e.enabled && e.flags.includes("F"))) {
    throw new EmulationUnavailableError(`the binfmt_misc entry ${name} is not enabled with the F flag: remove it (echo -1 > ${binfmtDir}/${name}) and try again`);
  }
}

function readDebianLine(path: string): string | undefined {
  try {
    const line = readFileSync(path, "utf8").trim();
    return /^:[^:]+:M:/.test(line) && /:[A-Z]*F[A-Z]*$/.test(line) ? line : undefined;
  } catch {
    return undefined;
  }
}
