import { ARCHITECTURES, checkAptPackages, imageName, sailError, type Architecture, type BuildProgress, type ImageInfo, type ImageRef } from "@sail/protocol";
import { EmulationUnavailableError, ImageBuildError, type ImageProgress, type Runtime } from "../runtime/runtime.js";
import type { Logger } from "./logger.js";

/** An image a create or a build asked for, checked: its architecture resolved, its packages sorted. */
export interface ImagePlan {
  arch: Architecture;
  aptPackages: string[];
  /** As the SDKs name it ("debian_arm64+postgresql"); the host's architecture is plain "debian" unless asked by name. */
  name: string;
}

/** Progress of one call (a create or a build), from its start. */
export type ProgressSink = (progress: BuildProgress) => void;

/**
 * Progress fanned out to whoever listens, each hearing the latest step at once when it starts
 * listening (a caller that joins a build late, or a stream whose headers went out after it began).
 */
export class ProgressRelay {
  private readonly sinks = new Set<ProgressSink>();
  private latest: BuildProgress | undefined;

  readonly emit: ProgressSink = (progress) => {
    this.latest = progress;
    for (const sink of this.sinks) sink(progress);
  };

  /** Hear progress from now on; returns the way to stop. */
  listen(sink: ProgressSink): () => void {
    this.sinks.add(sink);
    if (this.latest) sink(this.latest);
    return () => this.sinks.delete(sink);
  }
}

/** The daemon logs a build's progress at most this often (debootstrap prints hundreds of lines). */
const LOG_EVERY_MS = 2000;

/**
 * Images for boxes: the checks of an image reference, and its build (or the cached copy).
 * Creates, `POST /v1/images` and `sail up --prebuild-image` all come through here, so each
 * build is logged, shared by every caller that waits for it, and refused with one set of errors.
 */
export class Images {
  constructor(
    private readonly runtime: Pick<Runtime, "hostArch" | "prepareImage" | "preparePackageImage">,
    private readonly log: Logger,
  ) {}

  /** Check an image reference (`{ name: "debian", arch?, aptPackages? }`) from a request. */
  check(image: unknown, field = "image"): ImagePlan {
    const ref = image as Partial<ImageRef> | null | undefined;
    if (!ref || typeof ref !== "object" || ref.name !== "debian") {
      throw sailError("SAIL_IMAGE_UNKNOWN", `Unknown image ${JSON.stringify(image)}: the available image is Image.debian (Debian 12)`, { field });
    }
    const unknown = Object.keys(ref).filter((key) => !["name", "arch", "aptPackages"].includes(key));
    if (unknown.length) throw sailError("SAIL_UNKNOWN_FIELD", `${field} has unknown field ${JSON.stringify(unknown[0])}: an image has name, arch and aptPackages`, { field: `${field}.${unknown[0]}` });
    if (ref.arch !== undefined && !ARCHITECTURES.includes(ref.arch)) {
      throw sailError("SAIL_IMAGE_UNKNOWN", `Unknown architecture ${JSON.stringify(ref.arch)}: use ${ARCHITECTURES.join(" or ")}`, { field });
    }
    const aptPackages = checkAptPackages(ref.aptPackages);
    return { arch: ref.arch ?? this.runtime.hostArch, aptPackages, name: imageName({ arch: ref.arch, aptPackages }) };
  }

  info(plan: ImagePlan): ImageInfo {
    return { name: "debian", arch: plan.arch, aptPackages: plan.aptPackages, emulated: plan.arch !== this.runtime.hostArch };
  }

  /**
   * Build the image, or find it cached (then at once, without progress). A foreign
   * architecture the host cannot emulate, or a package set apt cannot install, is refused
   * with its typed error. `onProgress` hears each step; `startedAt` is when the call began.
   */
  async prepare(plan: ImagePlan, onProgress?: ProgressSink, startedAt = Date.now()): Promise<void> {
    const foreign = plan.arch !== this.runtime.hostArch;
    if (!foreign && !plan.aptPackages.length) return;
    const buildStarted = Date.now();
    let lastLog = 0;
    let built = false;
    const report = (progress: ImageProgress) => {
      built = true;
      onProgress?.({ phase: "image", image: plan.name, step: progress.phase, ...(progress.detail ? { detail: progress.detail } : {}), elapsedMs: Date.now() - startedAt });
      if (Date.now() - lastLog < LOG_EVERY_MS && !progress.done) return;
      lastLog = Date.now();
      this.log.info({ image: plan.name, ...progress }, "building image");
    };
    const label = `Image.debian${foreign ? `_${plan.arch}` : ""}${plan.aptPackages.length ? `.aptInstall(${plan.aptPackages.map((p) => JSON.stringify(p)).join(", ")})` : ""}`;
    try {
      if (plan.aptPackages.length) await this.runtime.preparePackageImage(plan.arch, plan.aptPackages, report);
      else await this.runtime.prepareImage(plan.arch, report);
    } catch (err) {
      if (err instanceof EmulationUnavailableError) {
        throw sailError(
          "SAIL_IMAGE_ARCH_UNSUPPORTED",
          `${label} needs ${plan.arch} emulation on this ${this.runtime.hostArch} host, which is not available: ${err.message}. Or use Image.debian (the host's architecture)`,
          { field: "image", requested: plan.arch, host: this.runtime.hostArch },
        );
      }
      if (err instanceof ImageBuildError) throw sailError("SAIL_IMAGE_BUILD_FAILED", `Could not build ${label}: ${err.message}`, { field: "image.aptPackages", aptPackages: plan.aptPackages });
      throw err;
    }
    if (built) this.log.info({ image: plan.name, ms: Date.now() - buildStarted }, "image ready");
  }
}
