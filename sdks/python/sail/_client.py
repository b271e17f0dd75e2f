"""The SDK's one transport: auth, retry (idempotent methods only), timeout."""

from __future__ import annotations

import builtins
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Iterator, Optional, Tuple

from . import _websocket
from .errors import AuthError, TimeoutError, UnavailableError, error_from_wire

__all__ = ["SailClient", "client_config_path"]

_IDEMPOTENT = frozenset({"GET", "PUT", "DELETE"})
# The daemon may be restarting: idempotent requests are retried after these pauses (seconds).
_RETRY_DELAYS = (0.1, 0.3, 0.9)
_DEFAULT_TIMEOUT = 60.0
# socket.timeout is an alias of the builtin since 3.10; 3.9 needs both
_SOCKET_TIMEOUTS = (socket.timeout, builtins.TimeoutError)


def client_config_path(env: Optional[Dict[str, str]] = None) -> str:
    """Where ``sail up`` writes the client config: ``$SAIL_CONFIG``, else ``~/.sail/config.json``."""
    env = os.environ if env is None else env
    return env.get("SAIL_CONFIG") or os.path.join(os.path.expanduser("~"), ".sail", "config.json")


def _resolve(api_url: Optional[str], token: Optional[str]) -> Tuple[str, str]:
    """Argument, then ``SAIL_API_URL`` / ``SAIL_TOKEN``, then the config file ``sail up`` wrote."""
    api_url = api_url or os.environ.get("SAIL_API_URL")
    token = token or os.environ.get("SAIL_TOKEN")
    path = client_config_path()
    if not api_url or not token:
        try:
            with open(path, encoding="utf-8") as f:
                stored = json.load(f)
        except (OSError, ValueError):
            stored = {}
        if isinstance(stored, dict):
            api_url = api_url or stored.get("apiUrl")
            token = token or stored.get("token")
    if not api_url or not token:
        raise AuthError(
            "SAIL_AUTH_MISSING",
            f"No Sail daemon configured: set SAIL_API_URL and SAIL_TOKEN, or run `sail up` on this machine (it writes {path})",
        )
    return api_url.rstrip("/"), token


class SailClient:
    """A connection to a Sail daemon.

    Every ``App`` and ``Sailbox`` holds one. ``SailClient.default()`` reads ``SAIL_API_URL`` /
    ``SAIL_TOKEN``, else the config file ``sail up`` wrote, so scripts on the machine that
    runs ``sail up`` need no configuration.

    Args:
        api_url: the daemon's API, e.g. ``http://127.0.0.1:7070``.
        token: the org's bearer token (never shown by ``repr``).
        request_timeout: seconds one API request may take before ``sail.TimeoutError``.
    """

    _shared: Optional["SailClient"] = None
    _shared_lock = threading.Lock()

    def __init__(self, api_url: Optional[str] = None, token: Optional[str] = None, request_timeout: float = _DEFAULT_TIMEOUT) -> None:
        self.api_url, self.__token = _resolve(api_url, token)
        self.request_timeout = request_timeout
        # never through a proxy from the environment: the API is the daemon itself
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        return f"SailClient(api_url={self.api_url!r})"

    @classmethod
    def default(cls) -> "SailClient":
        """The client built from the environment or the config file, made once."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def request(self, method: str, path: str, body: Any = None, timeout: Optional[float] = None) -> Any:
        """A JSON request; a refusal raises the typed error its ``code`` names."""
        with self._send(method, path, body, timeout or self.request_timeout) as response:
            text = response.read()
        return json.loads(text) if text else None

    def ca_certificate(self) -> str:
        """The certificate (PEM) of the daemon's local CA, which signs the gateway's HTTPS
        certificate: trust it with ``curl --cacert`` or ``ssl.create_default_context(cafile=...)``.

        Raises:
            sail.NotFoundError: the daemon serves a certificate it was given (``--tls-cert``).
        """
        return self.text("/v1/ca")

    def text(self, path: str) -> str:
        """A plain-text answer (logs, the CA certificate)."""
        with self._send("GET", path, None, self.request_timeout) as response:
            return response.read().decode("utf-8", errors="replace")

    def stream(self, path: str, body: Any) -> Iterator[Dict[str, Any]]:
        """POST and yield the NDJSON answer one event per line as it arrives (no read timeout:
        commands run as long as they run). Raises before yielding if the request is refused."""
        response = self._send("POST", path, body, None)

        def events() -> Iterator[Dict[str, Any]]:
            with response:
                for line in response:
                    line = line.strip()
                    if line:
                        yield json.loads(line)

        return events()

    def websocket(self, path: str) -> "_websocket.WebSocket":
        """Open a WebSocket on the API (the PTY). A refused upgrade raises its typed error."""
        try:
            return _websocket.connect(self.api_url, path, {"Authorization": f"Bearer {self.__token}"}, self.request_timeout)
        except _websocket.WebSocketRefused as refused:
            try:
                parsed = json.loads(refused.body) if refused.body else None
            except ValueError:
                parsed = None
            raise error_from_wire(parsed, refused.status) from None
        except _SOCKET_TIMEOUTS:
            raise TimeoutError("SAIL_TIMEOUT", f"GET {path} got no answer from {self.api_url} within {self.request_timeout} s") from None
        except (OSError, _websocket.ProtocolError) as unreachable:
            raise UnavailableError("SAIL_UNAVAILABLE", f"Cannot open a WebSocket to the Sail daemon at {self.api_url} ({unreachable}): is `sail up` running?") from None

    def _send(self, method: str, path: str, body: Any, timeout: Optional[float]) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"authorization": f"Bearer {self.__token}", "accept": "application/json"}
        if data is not None:
            headers["content-type"] = "application/json"
        attempts = len(_RETRY_DELAYS) + 1 if method in _IDEMPOTENT else 1
        for attempt in range(attempts):
            request = urllib.request.Request(self.api_url + path, data=data, method=method, headers=headers)
            try:
                return self._opener.open(request, timeout=timeout)
            except urllib.error.HTTPError as refused:
                with refused:
                    raw = refused.read()
                try:
                    parsed = json.loads(raw) if raw else None
                except ValueError:
                    parsed = None
                raise error_from_wire(parsed, refused.code) from None
            except _SOCKET_TIMEOUTS:
                raise TimeoutError("SAIL_TIMEOUT", f"{method} {path} got no answer from {self.api_url} within {timeout} s") from None
            except (urllib.error.URLError, ConnectionError) as unreachable:
                reason = getattr(unreachable, "reason", unreachable)
                if isinstance(reason, _SOCKET_TIMEOUTS):
                    raise TimeoutError("SAIL_TIMEOUT", f"{method} {path} got no answer from {self.api_url} within {timeout} s") from None
                if attempt + 1 >= attempts:
                    raise UnavailableError(
                        "SAIL_UNAVAILABLE",
                        f"Cannot reach the Sail daemon at {self.api_url} ({reason}): is `sail up` running?",
                    ) from None
                time.sleep(_RETRY_DELAYS[attempt])
        raise AssertionError("unreachable")

