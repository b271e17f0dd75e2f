import { createHash } from "node:crypto";
import { copyFileSync, existsSync, readFileSync, readdirSync, renameSync, rmSync, mkdirSync, writeFileSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Architecture } from "@sail/protocol";
import { COMMAND_DEADLINES_MS, spawnBounded } from "./commands.js";
import { ImageBuildError, type ImageProgress } from "./runtime.js";

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
  /** Build another architecture's image: debootstrap --foreign, then its second stage under emulation (qemu-user via binfmt_misc). */
  foreign: boolean;
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

/**
 * The read-only lower layer every box's overlay sits on. Built once, then reused: ≈ 60-90 s
 * natively, ≈ 3.5 min for a foreign architecture (its packages configure under emulation).
 */
export async function ensureBaseImage(options: ImageBuildOptions): Promise<string> {
  const key = baseImageKey(options.arch, options.tiniPath);
  const rootfs = join(options.imagesDir, `debian-${options.arch}-${key}`, "rootfs");
  if (existsSync(join(rootfs, "..", "complete"))) return rootfs;

  mkdirSync(options.imagesDir, { recursive: true });
  // a build of this image interrupted earlier leaves a .partial directory: start it over
  const partial = join(options.imagesDir, `debian-${options.arch}-${key}.partial`);
  rmSync(partial, { recursive: true, force: true });
  const partialRootfs = join(partial, "rootfs");
  mkdirSync(partialRootfs, { recursive: true });
  await debootstrap(partialRootfs, options);
  if (options.foreign) await secondStage(partialRootfs, options);
  options.onProgress?.({ phase: "finishing" });
  finishRootfs(partialRootfs, options.tiniPath);
  writeFileSync(join(partial, "complete"), JSON.stringify({ ...BASE_IMAGE_RECIPE, arch: options.arch, builtAt: new Date().toISOString() }));
  renameSync(partial, join(rootfs, ".."));
  options.onProgress?.({ phase: "ready", done: true });
  return rootfs;
}

function debootstrap(target: string, options: ImageBuildOptions): Promise<void> {
  const args = [
    ...(options.foreign ? ["--foreign"] : []),
    `--variant=${BASE_IMAGE_RECIPE.variant}`,
    `--arch=${options.arch}`,
    `--include=${BASE_IMAGE_RECIPE.packages.join(",")}`,
    BASE_IMAGE_RECIPE.suite,
    target,
    options.mirror,
  ];
  return runLogged("debootstrap", args, COMMAND_DEADLINES_MS.imageBuild, (code, tail) => new Error(`debootstrap exited ${code} while building the base image:\n${tail}`), debootstrapProgress(options));
}

/** debootstrap's lines of the download step (they alternate per package). */
const DOWNLOAD_LINES = new Set(["Retrieving", "Validating", "Checking", "Resolving", "Found"]);

/** debootstrap's "I: <phase> <detail>" lines as progress; retrieved packages are counted. */
function debootstrapProgress(options: ImageBuildOptions): (line: string) => void {
  let retrieved = 0;
  return (line) => {
    const match = /^I: (Retrieving|Validating|Extracting|Unpacking|Configuring|Installing|Resolving|Checking|Found|Base system)\s*(.*)$/.exec(line);
    if (!match) return;
    // one step for the whole download: debootstrap validates each package right after retrieving it
    const phase = DOWNLOAD_LINES.has(match[1]!) ? "retrieving" : match[1]!.toLowerCase();
    // "I: Retrieving libc6 2.36-9" is a package; "I: Retrieving Packages" is an index
    const isPackage = match[1] === "Retrieving" && /\S+ \S+/.test(match[2]!);
    if (isPackage) retrieved++;
    options.onProgress?.({ phase: options.foreign ? `${phase} (${options.arch}, emulated)` : phase, detail: isPackage ? `package ${retrieved}: ${match[2]}` : match[2] });
  };
}

/**
 * A foreign image's packages are unpacked and configured by its own binaries, run by qemu
 * through binfmt_misc: in a chroot inside a private mount namespace, so the /proc and /sys
 * debootstrap mounts go with it even if the build dies.
 */
function secondStage(target: string, options: ImageBuildOptions): Promise<void> {
  return runLogged(
    "unshare",
    ["--mount", "--propagation", "private", "chroot", target, "/debootstrap/debootstrap", "--second-stage"],
    COMMAND_DEADLINES_MS.imageBuild,
    (code, tail) => new Error(`debootstrap's second stage (under ${options.arch} emulation) exited ${code}:\n${tail}`),
    debootstrapProgress(options),
  );
}

/** Builds a daemon died in leave `.partial` directories: removed at start, before any build runs. */
export function removePartialBuilds(imagesDir: string): void {
  if (!existsSync(imagesDir)) return;
  for (const entry of readdirSync(imagesDir)) {
    if (entry.endsWith(".partial")) rmSync(join(imagesDir, entry), { recursive: true, force: true });
  }
}

/** Each box generates its own SSH host keys on first sshd start: never share one image's keys. */
function removeSshHostKeys(rootfs: string): void {
  for (const file of readdirSync(join(rootfs, "etc/ssh"))) {
    if (file.startsWith("ssh_host_")) unlinkSync(join(rootfs, "etc/ssh", file));
  }
}

/** Make the rootfs fit for many boxes: our init, no shared host keys, no caches. */
function finishRootfs(rootfs: string, tiniPath: string): void {
  copyFileSync(tiniPath, join(rootfs, "usr/local/sbin/tini"));
  removeSshHostKeys(rootfs);
  rmSync(join(rootfs, "var/cache/apt/archives"), { recursive: true, force: true });
  mkdirSync(join(rootfs, "var/cache/apt/archives/partial"), { recursive: true });
}

/**
 * The base image plus Debian packages: a copy of the base rootfs with `apt-get install` run
 * in a chroot (its own mount namespace, so nothing stays mounted if the build dies), services
 * kept from starting by a policy-rc.d. Cached by the base and the sorted package list; a
 * failed build leaves only a `.partial` directory, removed by the next build.
 */
export async function ensurePackageImage(baseRootfs: string, packages: readonly string[], options: Pick<ImageBuildOptions, "imagesDir" | "onProgress">): Promise<string> {
  const key = createHash("sha256").update(baseRootfs).update("\0").update(packages.join(" ")).digest("hex").slice(0, 16);
  const dir = join(options.imagesDir, `apt-${key}`);
  const rootfs = join(dir, "rootfs");
  if (existsSync(join(dir, "complete"))) return rootfs;

  const partial = `${dir}.partial`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { recursive: true });
  try {
    await buildPackageRootfs(baseRootfs, packages, partial, options.onProgress);
  } catch (err) {
    rmSync(partial, { recursive: true, force: true });
    throw err;
  }
  renameSync(partial, dir);
  options.onProgress?.({ phase: "ready", done: true });
  return rootfs;
}

async function buildPackageRootfs(baseRootfs: string, packages: readonly string[], partial: string, onProgress: ImageBuildOptions["onProgress"]): Promise<void> {
  onProgress?.({ phase: "copying", detail: "base image" });
  await runLogged("cp", ["-a", "--reflink=auto", baseRootfs, join(partial, "rootfs")], COMMAND_DEADLINES_MS.imageStep, buildError("copy the base image"));
  const root = join(partial, "rootfs");
  writeFileSync(join(root, "usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n", { mode: 0o755 });
  const apt = "DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0";
  const script = [
    "set -e",
    `mount -t proc proc ${root}/proc`,
    `mount --rbind /dev ${root}/dev`,
    `mount --bind /etc/resolv.conf ${root}/etc/resolv.conf`,
    `chroot ${root} sh -c '${apt} update && ${apt} install -y --no-install-recommends ${packages.join(" ")} && apt-get clean && rm -rf /var/lib/apt/lists/*'`,
  ].join("\n");
  await runLogged("unshare", ["--mount", "--propagation", "private", "sh", "-c", script], COMMAND_DEADLINES_MS.imageBuild, buildError(`install ${packages.join(", ")}`), (line) => {
    const match = /^(Get:\d+|Unpacking|Setting up) (\S+)/.exec(line);
    if (match) onProgress?.({ phase: match[1]!.startsWith("Get") ? "retrieving" : match[1]!.toLowerCase(), detail: match[2] });
  });
  unlinkSync(join(root, "usr/sbin/policy-rc.d"));
  removeSshHostKeys(root); // openssh-server's postinst may have made new ones
  writeFileSync(join(partial, "complete"), JSON.stringify({ base: baseRootfs, packages, builtAt: new Date().toISOString() }));
}

/** A package image step failed: the user's package list is the usual cause. */
const buildError = (what: string) => (code: number | null, tail: string) => new ImageBuildError(`could not ${what} (exit ${code}):\n${tail}`);

/**
 * Run a build step, passing each line it prints to `onLine`; on failure, `fail` gets the last lines
 * (apt's or debootstrap's reason). Past `timeoutMs` the step and its helpers are killed: a mirror
 * that stops answering mid-download must not hold a build (and every create waiting for it) forever.
 */
function runLogged(command: string, args: string[], timeoutMs: number, fail: (code: number | null, tail: string) => Error, onLine?: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const { child, stopped } = spawnBounded(command, args, { stdio: ["ignore", "pipe", "pipe"], timeoutMs });
    const tail: string[] = [];
    const keep = (line: string) => {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      onLine?.(line);
    };
    createInterface({ input: child.stdout! }).on("line", keep);
    createInterface({ input: child.stderr! }).on("line", keep);
    child.on("error", reject);
    child.on("exit", () => stopped() && reject(fail(null, `${stopped()!.message}\n${tail.join("\n")}`)));
    child.on("close", (code) => (code === 0 && !stopped() ? resolve() : reject(fail(code, tail.join("\n")))));
  });
}
