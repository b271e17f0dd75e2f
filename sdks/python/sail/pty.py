"""Interactive exec: a command on a pseudo-terminal in a Sailbox (``sb.pty()``)."""

from __future__ import annotations

import json
import queue
import threading
from typing import Any, Iterator, Optional, Union

from . import _websocket
from .errors import InternalError, InvalidArgumentError, SailError, TimeoutError, error_from_wire

__all__ = ["PtySession"]

_END = object()


class PtySession:
    """A program on a terminal in a Sailbox, like ``docker exec -it`` or an SSH session:
    raw bytes in and out, a size you can change, an exit code at the end. Use it as a
    context manager (leaving it hangs up) or call ``close()``.

    Example::

        with sb.pty(cols=120, rows=40) as term:
            term.write("ls --color\\r")
            term.write("exit\\r")
            for chunk in term.output:
                sys.stdout.buffer.write(chunk)
            print(term.wait())
    """

    def __init__(self, ws: _websocket.WebSocket) -> None:
        self._ws = ws
        self._chunks: "queue.Queue[object]" = queue.Queue()
        self._done = threading.Event()
        self._exit_code: Optional[int] = None
        self._failure: Optional[SailError] = None
        self._read_once = False
        self._reader = threading.Thread(target=self._read, name="sail-pty", daemon=True)
        self._reader.start()

    def __repr__(self) -> str:
        state = "running" if not self._done.is_set() else f"exit {self._exit_code}" if self._failure is None else self._failure.code
        return f"PtySession({state})"

    def __enter__(self) -> "PtySession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def output(self) -> Iterator[bytes]:
        """What the program writes to the terminal, as raw bytes, as it writes them; ends when
        the program exits (or raises the error that ended the session). Read it once."""
        if self._read_once:
            raise RuntimeError("this terminal's output was already read")
        self._read_once = True
        return self._drain()

    def _drain(self) -> Iterator[bytes]:
        while True:
            item = self._chunks.get()
            if item is _END:
                if self._failure is not None:
                    raise self._failure
                return
            assert isinstance(item, bytes)
            yield item

    def write(self, data: Union[str, bytes]) -> None:
        """Type into the terminal: keystrokes as a terminal sends them (``"\\r"`` is Enter,
        ``"\\x03"`` is Ctrl-C, ``"\\x04"`` Ctrl-D)."""
        self._ws.send_binary(data.encode("utf-8") if isinstance(data, str) else bytes(data))

    def resize(self, cols: int, rows: int) -> None:
        """Change the terminal's size in character cells (1-10000); the program gets SIGWINCH."""
        _check_size(cols, rows)
        self._ws.send_text(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    def wait(self, timeout: Optional[float] = None) -> int:
        """The program's exit code once it ends (128+N when signal N ended it).

        Raises:
            sail.TimeoutError: it still runs after ``timeout`` seconds (it keeps running).
            sail.SailError: the session ended without an exit code (e.g. the Sailbox was paused
                or terminated, or the daemon stopped).
        """
        if not self._done.wait(timeout):
            raise TimeoutError("SAIL_TIMEOUT", f"the program on the terminal still runs after {timeout} s")
        if self._failure is not None:
            raise self._failure
        assert self._exit_code is not None
        return self._exit_code

    def close(self) -> None:
        """Hang up: the program gets SIGHUP, as when an SSH session drops. Idempotent."""
        self._ws.close(1000)
        if not self._done.wait(5):
            self._ws.abort()

    def _read(self) -> None:
        try:
            while True:
                op, payload = self._ws.recv()
                if op == _websocket.OP_BINARY:
                    self._chunks.put(payload)
                    continue
                if op == _websocket.OP_CLOSE:
                    self._finish(failure=InternalError("SAIL_INTERNAL", f"the terminal's connection closed (WebSocket code {self._ws.close_code}) before the program's exit code arrived"))
                    return
                message = json.loads(payload.decode("utf-8"))
                if message.get("type") == "exit" and isinstance(message.get("exitCode"), int):
                    self._finish(exit_code=message["exitCode"])
                elif message.get("type") == "error":
                    self._finish(failure=error_from_wire(message, 500))
        except (OSError, ValueError, _websocket.ProtocolError) as err:
            self._finish(failure=InternalError("SAIL_UNAVAILABLE", f"the terminal's connection to the Sail daemon failed: {err}"))

    def _finish(self, exit_code: Optional[int] = None, failure: Optional[SailError] = None) -> None:
        if self._done.is_set():
            return
        self._exit_code, self._failure = exit_code, failure
        self._done.set()
        self._chunks.put(_END)


def _check_size(cols: int, rows: int) -> None:
    for name, value in (("cols", cols), ("rows", rows)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
            raise InvalidArgumentError("SAIL_INVALID_ARGUMENT", f"{name} must be a whole number of character cells from 1 to 10000, got {value!r}", {"field": name})
