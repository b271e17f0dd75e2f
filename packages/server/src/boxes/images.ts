import { ARCHITECTURES, checkAptPackages, imageName, sailError, type Architecture, type BuildProgress, type ImageInfo, type ImageRef } from "@sail/protocol";
import type { Logger } from "./logger.js";
import type { AttachedNode, Nodes } from "./nodes.js";

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

/**
 * Images for boxes: the checks of an image reference, and its build on the node (or the cached
 * copy). Creates, `POST /v1/images` and `sail up --prebuild-image` all come through here, so
 * each build is shared by every caller that waits for it (the node's runtime shares builds)
 * and refused with one set of errors (the node's: SAIL_IMAGE_ARCH_UNSUPPORTED,
 * SAIL_IMAGE_BUILD_FAILED).
 */
export class Images {
  constructor(
    private readonly nodes: Pick<Nodes, "some" | "all">,
    private readonly log: Logger,
  ) {}

  private get hostArch(): Architecture {
    return this.nodes.some().info.hostArch;
  }

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
    return { arch: ref.arch ?? this.hostArch, aptPackages, name: imageName({ arch: ref.arch, aptPackages }) };
  }

  info(plan: ImagePlan): ImageInfo {
    return { name: "debian", arch: plan.arch, aptPackages: plan.aptPackages, emulated: plan.arch !== this.hostArch };
  }

  /**
   * Build the image on `node` (the one a create placed its box on), or on every node this
   * control plane drives (`POST /v1/images`, `--prebuild-image`), or find it cached (then at
   * once, without progress). `onProgress` hears each step; `startedAt` is when the call began.
   */
  async prepare(plan: ImagePlan, onProgress?: ProgressSink, startedAt = Date.now(), node?: AttachedNode): Promise<void> {
    if (!node) {
      for (const each of this.nodes.all()) await this.prepare(plan, onProgress, startedAt, each);
      return;
    }
    if (plan.arch === node.info.hostArch && !plan.aptPackages.length) return;
    const buildStarted = Date.now();
    let built = false;
    await node.api.prepareImage(
      { arch: plan.arch, aptPackages: plan.aptPackages },
      {
        onProgress: (step) => {
          built = true;
          onProgress?.({ phase: "image", image: plan.name, ...step, elapsedMs: Date.now() - startedAt });
        },
      },
    );
    if (built) this.log.info({ image: plan.name, ms: Date.now() - buildStarted }, "image ready");
  }
}
