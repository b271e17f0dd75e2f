"""The public key for ``ssh=``: read on the caller's machine."""

from __future__ import annotations

import os
import re
from typing import List, Union

from .errors import InvalidArgumentError

_DEFAULT_KEYS = ("~/.ssh/id_ed25519.pub", "~/.ssh/id_rsa.pub")
_KEY_PREFIX = re.compile(r"^(ssh-|ecdsa-|sk-)")


def resolve_ssh_key(ssh: Union[bool, str]) -> str:
    """``True`` reads ~/.ssh/id_ed25519.pub, else ~/.ssh/id_rsa.pub; a string is a public key
    itself or the path to one. The daemon checks the key's format."""
    if ssh is True:
        tried: List[str] = [os.path.expanduser(p) for p in _DEFAULT_KEYS]
        for path in tried:
            try:
                with open(path, encoding="utf-8") as f:
                    return _looks_like_key(f.read(), path)
            except OSError:
                continue
        raise InvalidArgumentError(
            "SAIL_SSH_KEY_INVALID",
            f"ssh=True found no public key: tried {' and '.join(tried)}. Create one with `ssh-keygen -t ed25519`, or pass ssh=\"<path-or-key>\"",
            {"field": "ssh", "tried": tried},
        )
    if not isinstance(ssh, str) or not ssh.strip():
        raise InvalidArgumentError("SAIL_SSH_KEY_INVALID", "ssh must be True, a public key, or the path to one", {"field": "ssh"})
    if _KEY_PREFIX.match(ssh.strip()):
        return ssh.strip()
    path = os.path.abspath(os.path.expanduser(ssh))
    try:
        with open(path, encoding="utf-8") as f:
            return _looks_like_key(f.read(), path)
    except OSError as err:
        raise InvalidArgumentError(
            "SAIL_SSH_KEY_INVALID", f"cannot read the ssh public key {path}: {err.strerror}", {"field": "ssh", "tried": [path]}
        ) from None


def _looks_like_key(text: str, path: str) -> str:
    if not _KEY_PREFIX.match(text.strip()):
        raise InvalidArgumentError(
            "SAIL_SSH_KEY_INVALID",
            f"{path} is not an SSH public key: pass the contents of a .pub file, such as ~/.ssh/id_ed25519.pub",
            {"field": "ssh", "tried": [path]},
        )
    return text.strip()
