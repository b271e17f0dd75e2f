"""One exception tree for everything Sail refuses.

Every error carries a stable ``code`` (``SAIL_PORT_RESERVED``, ...): match on it, not on
the message. The class is chosen from the same code table the TypeScript SDK and the
server use (``_error_codes.py`` is generated from ``@sail/protocol``).

Each class also derives from the builtin a plain Python handler would name, so
``except TimeoutError`` (the builtin) catches Sail's timeouts, ``except ConnectionError`` an
unreachable daemon, ``except PermissionError`` a refused token, ``except ValueError`` bad
input and ``except LookupError`` something that does not exist.
"""

from __future__ import annotations

import builtins
from typing import Any, Dict, Mapping, Optional, Type

from ._error_codes import ERROR_CODES

__all__ = [
    "SailError",
    "InvalidArgumentError",
    "NotFoundError",
    "ConflictError",
    "LimitExceededError",
    "TimeoutError",
    "AbortedError",
    "AuthError",
    "SailboxPausedError",
    "InternalError",
    "UnavailableError",
    "error_class_for",
    "error_from_wire",
]


class SailError(Exception):
    """The base of every error Sail raises.

    Attributes:
        code: the stable error code, e.g. ``"SAIL_PORT_UNAUTHENTICATED"``.
        message: what failed and how to fix it (names the sailbox, port and rule).
        status: the HTTP status the API answered with.
        details: what else the server said (``sailboxId``, ``port``, ``limit``, ...).
    """

    def __init__(self, code: str, message: str, details: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details: Dict[str, Any] = dict(details or {})
        entry = ERROR_CODES.get(code)
        self.status: int = entry[0] if entry else 500

    @property
    def sailbox_id(self) -> Optional[str]:
        """The sailbox the error is about, when there is one."""
        value = self.details.get("sailboxId")
        return value if isinstance(value, str) else None

    @property
    def port(self) -> Optional[int]:
        """The port the error is about, when there is one."""
        value = self.details.get("port")
        return value if isinstance(value, int) else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InvalidArgumentError(SailError, ValueError):
    """Bad input: the request was refused and nothing changed."""


class NotFoundError(SailError, LookupError):
    """The app, sailbox, listener or exec does not exist (or is not yours)."""


class ConflictError(SailError):
    """The request clashes with the current state (a name in use, a box not running)."""


class LimitExceededError(SailError):
    """A quota would be exceeded; the message names the limit and the usage."""


class TimeoutError(SailError, builtins.TimeoutError):  # noqa: A001 - the name users expect next to the others
    """Something did not happen in the time allowed (a listener, an API answer); also the builtin ``TimeoutError``."""


class AbortedError(SailError):
    """The call was cancelled by its caller (the TypeScript SDK's ``signal``; kept so both SDKs share one table)."""


class AuthError(SailError, PermissionError):
    """The token is missing, wrong or revoked (or may not do this); also a ``PermissionError``."""


class SailboxPausedError(SailError):
    """The sailbox is paused: call ``resume()`` first."""


class InternalError(SailError):
    """Sail itself failed, or cannot be reached; the message says what it was doing."""


class UnavailableError(InternalError, ConnectionError):
    """The daemon cannot be reached (``SAIL_UNAVAILABLE``); also a ``ConnectionError``."""


_CLASS_OF_KIND: Dict[str, Type[SailError]] = {
    "InvalidArgument": InvalidArgumentError,
    "NotFound": NotFoundError,
    "Conflict": ConflictError,
    "LimitExceeded": LimitExceededError,
    "Timeout": TimeoutError,
    "Aborted": AbortedError,
    "Auth": AuthError,
    "SailboxPaused": SailboxPausedError,
    "Internal": InternalError,
}


#: Codes whose class is narrower than their kind's.
_CLASS_OF_CODE: Dict[str, Type[SailError]] = {"SAIL_UNAVAILABLE": UnavailableError}


def error_class_for(code: str) -> Type[SailError]:
    """The class an error code maps to (``SailError`` itself for a code this SDK does not know)."""
    if code in _CLASS_OF_CODE:
        return _CLASS_OF_CODE[code]
    entry = ERROR_CODES.get(code)
    return _CLASS_OF_KIND[entry[1]] if entry else SailError


def error_from_wire(body: Any, status: int) -> SailError:
    """Rebuild the typed error from an API answer ``{"error": {"code", "message", ...}}``."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str) or not isinstance(error.get("message"), str):
        return InternalError("SAIL_INTERNAL", f"Sail answered HTTP {status} without an error body")
    details = {k: v for k, v in error.items() if k not in ("code", "message")}
    return error_class_for(error["code"])(error["code"], error["message"], details)
