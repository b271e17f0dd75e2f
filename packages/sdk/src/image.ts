import type { Architecture, ImageRef } from "@sail/protocol";

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
  /** Debian for arm64; refused with a clear error by a daemon on another architecture. */
  static readonly debian_arm64 = new Image({ name: "debian", arch: "arm64" });
  /** Debian for amd64 (x86_64); refused with a clear error by a daemon on another architecture. */
  static readonly debian_amd64 = new Image({ name: "debian", arch: "amd64" });

  private constructor(readonly ref: ImageRef) {}

  get arch(): Architecture | undefined {
    return this.ref.arch;
  }

  toString(): string {
    return this.ref.arch ? `${this.ref.name}_${this.ref.arch}` : this.ref.name;
  }
}
