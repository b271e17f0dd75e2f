import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, readFileSync, readdirSync, renameSync, rmSync, mkdirSync, writeFileSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Architecture } from "@sail/protocol";
import type { ImageProgress } from "./runtime.js";

/** The base image: Debian bookworm minbase plus what the product's features need. */
export const BASE_IMAGE_RECIPE = {
  suite: "bookworm",
  variant: "minbase",
  packages: ["python3", "openssh-server", "iproute2", "procps", "ca-certificates", "curl"],
  /** Bumped when the post-build steps below change. */
  revision: 1,
};

export interface ImageBuildOptions {
  imagesDir: string;
  arch: Architecture;
  mirror: string;
  tiniPath: string;
  onProgress?: (progress: ImageProgress) => void;
}

/** Images are cached by content: the recipe, the architecture and the tini binary. */
export function baseImageKey(arch: Architecture, tiniPath: string): string {
  return createHash("sha256")
    .update(JSON.stringify({ ...BASE_IMAGE_RECIPE, arch }))
    .update(readFileSync(tiniPath))
    .digest("hex")
    .slice(0, 16);
}

/** The read-only lower layer every box's overlay sits on. Built once (≈ 60-90 s), then reused. */
export async function ensureBaseImage(options: ImageBuildOptions): Promise<string> {
  const key = baseImageKey(options.arch, options.tiniPath);
  const rootfs = join(options.imagesDir, `debian-${options.arch}-${key}`, "rootfs");
  if (existsSync(join(rootfs, "..", "complete"))) return rootfs;

  mkdirSync(options.imagesDir, { recursive: true });
  // a build interrupted earlier leaves a .partial directory: start it over
  for (const entry of readdirSync(options.imagesDir)) {
    if (entry.endsWith(".partial")) rmSync(join(options.imagesDir, entry), { recursive: true, force: true });
  }
  const partial = join(options.imagesDir, `debian-${options.arch}-${key}.partial`);
  const partialRootfs = join(partial, "rootfs");
  mkdirSync(partialRootfs, { recursive: true });
  await debootstrap(partialRootfs, options);
  options.onProgress?.({ phase: "finishing" });
  finishRootfs(partialRootfs, options.tiniPath);
  writeFileSync(join(partial, "complete"), JSON.stringify({ ...BASE_IMAGE_RECIPE, arch: options.arch, builtAt: new Date().toISOString() }));
  renameSync(partial, join(rootfs, ".."));
  options.onProgress?.({ phase: "ready", done: true });
  return rootfs;
}

function debootstrap(target: string, options: ImageBuildOptions): Promise<void> {
  const args = [
    `--variant=${BASE_IMAGE_RECIPE.variant}`,
    `--arch=${options.arch}`,
    `--include=${BASE_IMAGE_RECIPE.packages.join(",")}`,
    BASE_IMAGE_RECIPE.suite,
    target,
    options.mirror,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn("debootstrap", args, { stdio: ["ignore", "pipe", "pipe"] });
    const tail: string[] = [];
    let retrieved = 0;
    const onLine = (line: string) => {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      const match = /^I: (Retrieving|Validating|Extracting|Unpacking|Configuring|Installing|Resolving|Checking|Found|Base system)\s*(.*)$/.exec(line);
      if (!match) return;
      const phase = match[1]!.toLowerCase();
      // "I: Retrieving libc6 2.36-9" is a package; "I: Retrieving Packages" is an index
      const isPackage = phase === "retrieving" && /\S+ \S+/.test(match[2]!);
      if (isPackage) retrieved++;
      options.onProgress?.({ phase, detail: isPackage ? `package ${retrieved}: ${match[2]}` : match[2] });
    };
    createInterface({ input: child.stdout! }).on("line", onLine);
    createInterface({ input: child.stderr! }).on("line", onLine);
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve() : reject(new Error(`debootstrap exited ${code} while building the base image:\n${tail.join("\n")}`)),
    );
  });
}

/** Make the rootfs fit for many boxes: our init, no shared host keys, no caches. */
function finishRootfs(rootfs: string, tiniPath: string): void {
  copyFileSync(tiniPath, join(rootfs, "usr/local/sbin/tini"));
  // each box generates its own SSH host keys on first sshd start; never share one image's keys
  for (const file of readdirSync(join(rootfs, "etc/ssh"))) {
    if (file.startsWith("ssh_host_")) unlinkSync(join(rootfs, "etc/ssh", file));
  }
  rmSync(join(rootfs, "var/cache/apt/archives"), { recursive: true, force: true });
  mkdirSync(join(rootfs, "var/cache/apt/archives/partial"), { recursive: true });
}
