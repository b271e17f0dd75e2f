"""A PEP 517 build backend with no requirements, so the SDK installs offline.

pip builds in an isolated environment and would download setuptools for the usual backend;
this one writes the wheel (PEP 427) with the standard library: the ``sail`` package, its
metadata and a RECORD. ``build_editable`` (PEP 660) writes a wheel whose ``.pth`` points at
this tree, for ``pip install -e``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import zipfile
from typing import Dict, List, Optional, Tuple

NAME = "sail"
VERSION = "0.1.0"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, NAME)
DIST_INFO = f"{NAME}-{VERSION}.dist-info"
TAG = "py3-none-any"

METADATA = f"""Metadata-Version: 2.1
Name: {NAME}
Version: {VERSION}
Summary: Python SDK for Sail: isolated Linux sandboxes (Sailboxes) with published ports
Requires-Python: >=3.9
"""

WHEEL = f"""Wheel-Version: 1.0
Generator: sail_build
Root-Is-Purelib: true
Tag: {TAG}
"""


def _package_files() -> List[Tuple[str, bytes]]:
    files = []
    for folder, dirs, names in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith((".py", ".typed")):
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    files.append((os.path.relpath(path, ROOT).replace(os.sep, "/"), f.read()))
    return files


def _write_wheel(directory: str, files: List[Tuple[str, bytes]]) -> str:
    files = files + [(f"{DIST_INFO}/METADATA", METADATA.encode()), (f"{DIST_INFO}/WHEEL", WHEEL.encode())]
    record = []
    for path, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{DIST_INFO}/RECORD,,")
    files.append((f"{DIST_INFO}/RECORD", ("\n".join(record) + "\n").encode()))
    filename = f"{NAME}-{VERSION}-{TAG}.whl"
    with zipfile.ZipFile(os.path.join(directory, filename), "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in files:
            wheel.writestr(zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return filename


def build_wheel(wheel_directory: str, config_settings: Optional[Dict[str, str]] = None, metadata_directory: Optional[str] = None) -> str:
    return _write_wheel(wheel_directory, _package_files())


def build_editable(wheel_directory: str, config_settings: Optional[Dict[str, str]] = None, metadata_directory: Optional[str] = None) -> str:
    return _write_wheel(wheel_directory, [(f"_{NAME}_editable.pth", (ROOT + "\n").encode())])


def build_sdist(sdist_directory: str, config_settings: Optional[Dict[str, str]] = None) -> str:
    base = f"{NAME}-{VERSION}"
    filename = f"{base}.tar.gz"
    extra = ["pyproject.toml", "_build/sail_build.py"]
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as sdist:
        for path, data in _package_files() + [(p, open(os.path.join(ROOT, p), "rb").read()) for p in extra]:
            info = tarfile.TarInfo(f"{base}/{path}")
            info.size = len(data)
            sdist.addfile(info, io.BytesIO(data))
        pkg_info = tarfile.TarInfo(f"{base}/PKG-INFO")
        pkg_info.size = len(METADATA.encode())
        sdist.addfile(pkg_info, io.BytesIO(METADATA.encode()))
    return filename
