"""Base images for Sailboxes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, Optional, Tuple, Union

from ._progress import ProgressCallback, progress_callback

if TYPE_CHECKING:
    from ._client import SailClient

__all__ = ["Image"]


class Image:
    """A base image: Debian 12 (bookworm) with python3, openssh-server, iproute2, procps,
    ca-certificates and curl.

    ``Image.debian`` is the daemon host's architecture; ``Image.debian_arm64`` and
    ``Image.debian_amd64`` name one. A foreign architecture runs under emulation (qemu
    user mode, like ``docker run --platform``): slower, and the first create builds its
    base image (a few minutes), which is then cached.

    Example::

        sb = sail.Sailbox.create(app=app, image=sail.Image.debian_arm64)
    """

    debian: "Image"
    debian_amd64: "Image"
    debian_arm64: "Image"

    def __init__(self, name: str = "debian", arch: Optional[str] = None, apt_packages: Iterable[str] = ()) -> None:
        self.name = name
        self.arch = arch
        self.apt_packages: Tuple[str, ...] = tuple(sorted(set(apt_packages)))

    def apt_install(self, *packages: Union[str, Iterable[str]]) -> "Image":
        """This image plus Debian packages (``apt-get install --no-install-recommends``,
        services not started). The daemon builds each package set once and caches it.

        Example::

            image = sail.Image.debian.apt_install("postgresql")
        """
        names = list(self.apt_packages)
        for entry in packages:
            names.extend([entry] if isinstance(entry, str) else list(entry))
        return Image(self.name, self.arch, names)

    def build(self, client: Optional["SailClient"] = None, on_progress: Union[ProgressCallback, bool, None] = None, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Build this image on the daemon now (or find it built), so creates of it do not wait:
        the first build of an emulated architecture takes minutes. Progress goes to stderr
        unless ``on_progress`` says otherwise (``False``: quiet; a callable: every event). A
        ``timeout`` ends the call, not the build: it goes on and is cached.

        Returns the image as the daemon has it: ``{"name", "arch", "aptPackages", "emulated"}``.

        Example::

            sail.Image.debian_arm64.build()
        """
        from ._client import SailClient

        client = client or SailClient.default()
        return client.long_call("/v1/images", self._wire(), "image", on_event=progress_callback(on_progress), timeout=timeout)  # type: ignore[no-any-return]

    def _wire(self) -> Dict[str, Any]:
        ref: Dict[str, Any] = {"name": self.name}
        if self.arch is not None:
            ref["arch"] = self.arch
        if self.apt_packages:
            ref["aptPackages"] = list(self.apt_packages)
        return ref

    def __repr__(self) -> str:
        base = f"Image.{self.name}" + (f"_{self.arch}" if self.arch else "")
        return base + (f".apt_install({', '.join(repr(p) for p in self.apt_packages)})" if self.apt_packages else "")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and (self.name, self.arch, self.apt_packages) == (other.name, other.arch, other.apt_packages)

    def __hash__(self) -> int:
        return hash((self.name, self.arch, self.apt_packages))


Image.debian = Image("debian")
Image.debian_amd64 = Image("debian", "amd64")
Image.debian_arm64 = Image("debian", "arm64")
