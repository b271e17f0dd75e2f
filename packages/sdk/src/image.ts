import { checkAptPackages, imageName, parseImageName, type Architecture, type ImageInfo, type ImageRef } from "@sail/protocol";
import { SailClient, type CallOptions, type ProgressEvent } from "./client.js";
import { printBuildProgress } from "./progress.js";

/**
 * A base image for a Sailbox: Debian 12 (bookworm) with python3, openssh-server,
 * iproute2, procps, ca-certificates and curl.
 *
 * @example
 * await Sailbox.create({ app, image: Image.debian });
 */
export class Image {
  /** Debian on the daemon host's architecture. */
  static readonly debian = new Image({ name: "debian" });
  /**
   * Debian for arm64. On another host it runs under emulation (qemu user mode, like
   * `docker run --platform linux/arm64`): slower, and the first create builds its base image
   * (a few minutes). A host that cannot emulate refuses it with `SAIL_IMAGE_ARCH_UNSUPPORTED`.
   */
  static readonly debian_arm64 = new Image({ name: "debian", arch: "arm64" });
  /** Debian for amd64 (x86_64); emulated on an arm64 host, like `debian_arm64` on amd64. */
  static readonly debian_amd64 = new Image({ name: "debian", arch: "amd64" });

  private constructor(readonly ref: ImageRef) {}

  get arch(): Architecture | undefined {
    return this.ref.arch;
  }

  /** The Debian packages this image adds to the base. */
  get aptPackages(): readonly string[] {
    return this.ref.aptPackages ?? [];
  }

  /**
   * This image plus Debian packages (installed with `apt-get install --no-install-recommends`,
   * services not started). The daemon builds each package set once and caches it, so the
   * first create with a new set takes as long as the install (≈ 20 s for PostgreSQL).
   *
   * @example
   * const image = Image.debian.aptInstall("postgresql");
   * await Sailbox.create({ app, image, ingressPorts: [new IngressPort(5432, "tcp", { cidrAllowlist: ["10.0.0.0/8"] })] });
   */
  aptInstall(...packages: Array<string | string[]>): Image {
    const aptPackages = checkAptPackages([...this.aptPackages, ...packages.flat()]);
    return new Image({ ...this.ref, aptPackages });
  }

  /** The image a name names, as `toString()` and the CLI write it: "debian_arm64", "debian+postgresql,redis-server". */
  static fromName(name: string): Image {
    return new Image(parseImageName(name));
  }

  /**
   * Build this image on the daemon now (or find it built), so creates of it do not wait: for an
   * emulated architecture the first build takes minutes. Progress goes to stderr unless
   * `onProgress` says otherwise (`false`: quiet; a function: every step). A cancelled or timed-out
   * call does not stop the build: it goes on and is cached.
   *
   * @example
   * await Image.debian_arm64.build();
   * await Image.debian.aptInstall("postgresql").build({ onProgress: false });
   */
  async build(options: CallOptions & { client?: SailClient; onProgress?: ((event: ProgressEvent) => void) | false } = {}): Promise<ImageInfo> {
    const client = options.client ?? SailClient.default();
    const onEvent = options.onProgress === false ? undefined : (options.onProgress ?? printBuildProgress());
    return client.longCall<ImageInfo>("/v1/images", this.ref, "image", { signal: options.signal, timeoutMs: options.timeoutMs, onEvent });
  }

  toString(): string {
    return imageName(this.ref);
  }
}
