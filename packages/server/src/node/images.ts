import { ARCHITECTURES, checkAptPackages, imageName, sailError, type Architecture } from "@sail/protocol";
import { EmulationUnavailableError, ImageBuildError, type ImageProgress, type Runtime } from "../runtime/runtime.js";
import type { Logger } from "./logger.js";

/** An image as a node builds it: an architecture and a sorted package list (the control plane resolved the reference). */
export interface NodeImage {
  arch: Architecture;
  aptPackages: string[];
}

/** One step of a build, as the node reports it (the control plane adds its phase, image name and elapsed time). */
export interface NodeImageProgress {
  step?: string;
  detail?: string;
}

/** The node logs a build's progress at most this often (debootstrap prints hundreds of lines). */
const LOG_EVERY_MS = 2000;

/**
 * Images on this node: the build (or the cached copy) of an architecture's base image and a
 * package set on it. Every build is logged, shared by every caller that waits for it (the
 * runtime shares it), and refused with one set of errors.
 */
export class Images {
  constructor(
    private readonly runtime: Pick<Runtime, "hostArch" | "prepareImage" | "preparePackageImage">,
    private readonly log: Logger,
  ) {}

  /** An image as it crossed the wire, checked: a known architecture, valid package names (sorted, as builds are keyed). */
  check(image: NodeImage): NodeImage {
    const arch = (image as Partial<NodeImage> | null)?.arch;
    if (!arch || !ARCHITECTURES.includes(arch)) {
      throw sailError("SAIL_IMAGE_UNKNOWN", `Unknown architecture ${JSON.stringify(arch)}: use ${ARCHITECTURES.join(" or ")}`, { field: "image" });
    }
    return { arch, aptPackages: checkAptPackages(image.aptPackages) };
  }

  /**
   * Build the image, or find it cached (then at once, without progress). A foreign
   * architecture the host cannot emulate, or a package set apt cannot install, is refused
   * with its typed error. `onProgress` hears each step. A caller whose `signal` aborts stops
   * waiting; the build goes on and is cached for the next one.
   */
  async prepare(given: NodeImage, options: { onProgress?: (progress: NodeImageProgress) => void; signal?: AbortSignal } = {}): Promise<void> {
    const image = this.check(given);
    const foreign = image.arch !== this.runtime.hostArch;
    if (!foreign && !image.aptPackages.length) return;
    const name = imageName({ arch: foreign ? image.arch : undefined, aptPackages: image.aptPackages });
    const buildStarted = Date.now();
    let lastLog = 0;
    let built = false;
    const report = (progress: ImageProgress) => {
      built = true;
      if (!options.signal?.aborted) options.onProgress?.({ step: progress.phase, ...(progress.detail ? { detail: progress.detail } : {}) });
      if (Date.now() - lastLog < LOG_EVERY_MS && !progress.done) return;
      lastLog = Date.now();
      this.log.info({ image: name, ...progress }, "building image");
    };
    const label = `Image.debian${foreign ? `_${image.arch}` : ""}${image.aptPackages.length ? `.aptInstall(${image.aptPackages.map((p) => JSON.stringify(p)).join(", ")})` : ""}`;
    const build = image.aptPackages.length ? this.runtime.preparePackageImage(image.arch, image.aptPackages, report) : this.runtime.prepareImage(image.arch, report);
    try {
      await untilAborted(build, options.signal);
    } catch (err) {
      if (err instanceof EmulationUnavailableError) {
        throw sailError(
          "SAIL_IMAGE_ARCH_UNSUPPORTED",
          `${label} needs ${image.arch} emulation on this ${this.runtime.hostArch} host, which is not available: ${err.message}. Or use Image.debian (the host's architecture)`,
          { field: "image", requested: image.arch, host: this.runtime.hostArch },
        );
      }
      if (err instanceof ImageBuildError) throw sailError("SAIL_IMAGE_BUILD_FAILED", `Could not build ${label}: ${err.message}`, { field: "image.aptPackages", aptPackages: image.aptPackages });
      throw err;
    }
    if (built) this.log.info({ image: name, ms: Date.now() - buildStarted }, "image ready");
  }
}

/** `work`, or the signal's reason once it aborts (the work goes on: nobody waits for it). */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  work.catch(() => {});
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
