"""The SDK's one transport: auth, retry (idempotent requests, and creates by their Idempotency-Key), deadline."""

from __future__ import annotations

import builtins
import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from . import _websocket
from .errors import AuthError, SailError, TimeoutError, UnavailableError, error_from_wire

__all__ = ["SailClient", "client_config_path"]

_IDEMPOTENT = frozenset({"GET", "PUT", "DELETE"})
# The daemon may be restarting: idempotent requests are retried after these pauses (seconds).
_RETRY_DELAYS = (0.1, 0.3, 0.9)
_DEFAULT_TIMEOUT = 60.0
# a streamed answer silent this long (the daemon sends a heartbeat every 5 s) is a lost connection
_STREAM_IDLE = 60.0
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
        """A JSON request; a refusal raises the typed error its ``code`` names.

        ``timeout``: seconds the whole call may take (default ``request_timeout``), retries included.
        """
        deadline = _Deadline(timeout if timeout is not None else self.request_timeout, method, path, self.api_url)
        for attempt in self._attempts(method in _IDEMPOTENT, deadline):
            try:
                with self._open(method, path, body, deadline.remaining(), {}) as response:
                    text = response.read()
                return json.loads(text) if text else None
            except SailError:
                raise  # a typed refusal (some are also ValueError, OSError or TimeoutError): never a lost answer
            except _SOCKET_TIMEOUTS:
                raise deadline.timed_out() from None
            except _AnswerLost as lost:
                attempt.failed(lost)
        raise AssertionError("unreachable")

    def ca_certificate(self, timeout: Optional[float] = None) -> str:
        """The certificate (PEM) of the daemon's local CA, which signs the gateway's HTTPS
        certificate: trust it with ``curl --cacert`` or ``ssl.create_default_context(cafile=...)``.

        Raises:
            sail.NotFoundError: the daemon serves a certificate it was given (``--tls-cert``).
        """
        return self.text("/v1/ca", timeout=timeout)

    def text(self, path: str, timeout: Optional[float] = None) -> str:
        """A plain-text answer (logs, the CA certificate)."""
        deadline = _Deadline(timeout if timeout is not None else self.request_timeout, "GET", path, self.api_url)
        for attempt in self._attempts(True, deadline):
            try:
                with self._open("GET", path, None, deadline.remaining(), {}) as response:
                    return response.read().decode("utf-8", errors="replace")
            except SailError:
                raise  # a typed refusal (some are also ValueError, OSError or TimeoutError): never a lost answer
            except _SOCKET_TIMEOUTS:
                raise deadline.timed_out() from None
            except _AnswerLost as lost:
                attempt.failed(lost)
        raise AssertionError("unreachable")

    def long_call(
        self, path: str, body: Any, final_key: str, on_event: Optional[Callable[[Dict[str, Any]], None]] = None, timeout: Optional[float] = None
    ) -> Any:
        """A create or an image build: the daemon answers at once and streams progress lines
        (``on_event``) and a heartbeat every 5 s, then ``{final_key: ...}``, so a build of many
        minutes is never cut short by a timeout. A lost answer (a reset, or a minute of silence)
        is retried with the same ``Idempotency-Key``, which joins the call still in flight.
        No time limit unless ``timeout`` (seconds); leaving early abandons a create (no box)."""
        key = str(uuid.uuid4())
        deadline = _Deadline(timeout, "POST", path, self.api_url)
        headers = {"accept": "application/x-ndjson", "idempotency-key": key}
        for attempt in self._attempts(True, deadline):
            try:
                idle = _STREAM_IDLE if timeout is None else min(_STREAM_IDLE, deadline.remaining() or _STREAM_IDLE)
                with self._open("POST", path, body, idle, headers) as response:
                    if "application/x-ndjson" not in (response.headers.get("content-type") or ""):
                        return json.loads(response.read())  # a daemon from before streaming: the one JSON document
                    for raw in response:
                        line = raw.strip()
                        if not line:
                            continue
                        event = json.loads(line)
                        if final_key in event:
                            return event[final_key]
                        if "error" in event:
                            raise error_from_wire(event, 500)
                        if on_event is not None and ("progress" in event or "heartbeat" in event):
                            on_event(event)
                        deadline.check()
                raise _AnswerLost("the answer ended before its last line")
            except SailError:
                raise  # a typed refusal (some are also ValueError, OSError or TimeoutError): never a lost answer
            except _SOCKET_TIMEOUTS:
                deadline.check()
                attempt.failed(_AnswerLost(f"no line for {_STREAM_IDLE:.0f} s"))
            except (_AnswerLost, http.client.HTTPException, ValueError, OSError) as lost:
                attempt.failed(lost if isinstance(lost, _AnswerLost) else _AnswerLost(str(lost)))
        raise AssertionError("unreachable")

    def stream(self, path: str, body: Any, timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """POST and yield the NDJSON answer one event per line as it arrives (no time limit
        unless ``timeout``: commands run as long as they run). Raises before yielding if the
        request is refused."""
        deadline = _Deadline(timeout, "POST", path, self.api_url)
        try:
            response = self._open("POST", path, body, deadline.remaining(), {})
        except SailError:
            raise  # a typed refusal (some are also ValueError, OSError or TimeoutError): never a lost answer
        except _SOCKET_TIMEOUTS:
            raise deadline.timed_out() from None
        except _AnswerLost as lost:
            raise deadline.unavailable(lost) from None

        def events() -> Iterator[Dict[str, Any]]:
            with response:
                try:
                    for line in response:
                        line = line.strip()
                        if line:
                            yield json.loads(line)
                        deadline.check()
                except SailError:
                    raise  # a typed refusal (some are also ValueError, OSError or TimeoutError): never a lost answer
                except _SOCKET_TIMEOUTS:
                    raise deadline.timed_out() from None

        return events()

    def websocket(self, path: str, timeout: Optional[float] = None) -> "_websocket.WebSocket":
        """Open a WebSocket on the API (the PTY). A refused upgrade raises its typed error."""
        timeout = timeout if timeout is not None else self.request_timeout
        try:
            return _websocket.connect(self.api_url, path, {"Authorization": f"Bearer {self.__token}"}, timeout)
        except _websocket.WebSocketRefused as refused:
            try:
                parsed = json.loads(refused.body) if refused.body else None
            except ValueError:
                parsed = None
            raise error_from_wire(parsed, refused.status) from None
        except _SOCKET_TIMEOUTS:
            raise TimeoutError("SAIL_TIMEOUT", f"GET {path} got no answer from {self.api_url} within {timeout} s") from None
        except (OSError, _websocket.ProtocolError) as unreachable:
            raise UnavailableError("SAIL_UNAVAILABLE", f"Cannot open a WebSocket to the Sail daemon at {self.api_url} ({unreachable}): is `sail up` running?") from None

    def _open(self, method: str, path: str, body: Any, timeout: Optional[float], extra_headers: Dict[str, str]) -> Any:
        """One HTTP exchange: the open response, the typed error of a refusal, ``_AnswerLost``
        when the daemon could not be reached, or a socket timeout (for the caller's deadline)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"authorization": f"Bearer {self.__token}", "accept": "application/json", **extra_headers}
        if data is not None:
            headers["content-type"] = "application/json"
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
            # a proxy's 502-504 carries no Sail error: the request may not have reached the daemon
            if 502 <= refused.code <= 504 and not (isinstance(parsed, dict) and "error" in parsed):
                raise _AnswerLost(f"HTTP {refused.code}") from None
            raise error_from_wire(parsed, refused.code) from None
        except (urllib.error.URLError, ConnectionError) as unreachable:
            reason = getattr(unreachable, "reason", unreachable)
            if isinstance(reason, _SOCKET_TIMEOUTS):
                raise reason from None  # the caller's deadline names it
            raise _AnswerLost(str(reason)) from None

    def _attempts(self, retry: bool, deadline: "_Deadline") -> Iterator["_Attempt"]:
        """Attempts of one call: another after a pause while the answer was lost and ``retry``
        allows it, within the deadline; then ``sail.UnavailableError`` (SAIL_UNAVAILABLE, a ConnectionError)."""
        delays = _RETRY_DELAYS if retry else ()
        for n in range(len(delays) + 1):
            attempt = _Attempt()
            yield attempt
            if attempt.lost is None:
                return
            if n >= len(delays):
                raise deadline.unavailable(attempt.lost)
            remaining = deadline.remaining()
            time.sleep(delays[n] if remaining is None else min(delays[n], remaining))
            deadline.check()


class _AnswerLost(Exception):
    """The request may not have reached the daemon, or its answer was lost."""


class _Attempt:
    def __init__(self) -> None:
        self.lost: Optional[_AnswerLost] = None

    def failed(self, lost: _AnswerLost) -> None:
        self.lost = lost


class _Deadline:
    """When a call must be over (``None``: no limit), and its typed errors."""

    def __init__(self, timeout: Optional[float], method: str, path: str, api_url: str) -> None:
        self.timeout = timeout
        self.at = None if timeout is None else time.monotonic() + timeout
        self.what = f"{method} {path}"
        self.api_url = api_url

    def remaining(self) -> Optional[float]:
        """Seconds left (at least a millisecond, so a socket still times out rather than blocks)."""
        return None if self.at is None else max(0.001, self.at - time.monotonic())

    def check(self) -> None:
        if self.at is not None and time.monotonic() >= self.at:
            raise self.timed_out()

    def timed_out(self) -> TimeoutError:
        return TimeoutError("SAIL_TIMEOUT", f"{self.what} got no answer from {self.api_url} within {self.timeout} s")

    def unavailable(self, lost: _AnswerLost) -> UnavailableError:
        return UnavailableError("SAIL_UNAVAILABLE", f"Cannot reach the Sail daemon at {self.api_url} ({lost}): is `sail up` running?")
