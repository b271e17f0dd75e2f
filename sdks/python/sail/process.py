"""Commands running in a Sailbox."""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, NamedTuple, Optional

from .errors import InternalError, SailError, TimeoutError, error_from_wire

if TYPE_CHECKING:
    from ._client import SailClient

__all__ = ["ExecProcess", "BackgroundProcess", "ExecOutput", "OutputStream"]

_END = object()


class ExecOutput(NamedTuple):
    """Everything a finished command wrote, and how it ended."""

    exit_code: int
    stdout: str
    stderr: str


class OutputStream:
    """One output stream of a command: iterate it to get text as the command writes it.
    It can be iterated once."""

    def __init__(self) -> None:
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._taken = False

    def _push(self, item: Any) -> None:
        self._queue.put(item)

    def __iter__(self) -> Iterator[str]:
        if self._taken:
            raise RuntimeError("this output stream was already read")
        self._taken = True
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class ExecProcess:
    """A foreground command: ``wait()`` returns its exit code, ``stdout`` / ``stderr`` yield its
    output as it is produced, ``output()`` collects everything.

    Example::

        proc = sb.exec("ls /")
        for text in proc.stdout:
            print(text, end="")
        print(proc.wait())
    """

    def __init__(self, events: Iterator[Dict[str, Any]]) -> None:
        self.stdout = OutputStream()
        self.stderr = OutputStream()
        self._collected: Dict[str, List[str]] = {"stdout": [], "stderr": []}
        self._exit_code: Optional[int] = None
        self._failure: Optional[BaseException] = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._pump, args=(events,), name="sail-exec", daemon=True)
        self._thread.start()

    def _pump(self, events: Iterator[Dict[str, Any]]) -> None:
        try:
            for event in events:
                if "stream" in event:
                    name = event["stream"]
                    self._collected[name].append(event["data"])
                    (self.stdout if name == "stdout" else self.stderr)._push(event["data"])
                elif "exitCode" in event:
                    self._exit_code = int(event["exitCode"])
                    break
                else:
                    raise error_from_wire(event, 500)
            if self._exit_code is None:
                raise InternalError("SAIL_INTERNAL", "the exec stream ended without an exit code")
        except BaseException as err:  # surfaced through wait(), output() and the streams
            self._failure = err if isinstance(err, SailError) else InternalError("SAIL_UNAVAILABLE", f"the exec stream broke: {err}")
        finally:
            end = self._failure if self._failure is not None else _END
            self.stdout._push(end)
            self.stderr._push(end)
            self._done.set()

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the command to end and return its exit code (128+N when signal N ended it).

        Raises:
            sail.TimeoutError: ``timeout`` seconds passed first (the command keeps running).
        """
        if not self._done.wait(timeout):
            raise TimeoutError("SAIL_TIMEOUT", f"the command did not end within {timeout} s")
        if self._failure is not None:
            raise self._failure
        assert self._exit_code is not None
        return self._exit_code

    def output(self, timeout: Optional[float] = None) -> ExecOutput:
        """Wait for the end and return everything the command wrote."""
        exit_code = self.wait(timeout)
        return ExecOutput(exit_code, "".join(self._collected["stdout"]), "".join(self._collected["stderr"]))


class BackgroundProcess:
    """A command started with ``background=True``: it has started by the time ``exec``
    returns and keeps running; its output goes to a log (``log()``)."""

    def __init__(self, client: "SailClient", info: Dict[str, Any]) -> None:
        self._client = client
        self.id: str = info["execId"]
        self.sailbox_id: str = info["sailboxId"]
        self.cmd: str = info["cmd"]
        self.started_at: str = info["startedAt"]

    def wait(self) -> "BackgroundProcess":
        """Returns at once: the command has started (it keeps running in the background)."""
        return self

    def log(self, timeout: Optional[float] = None) -> str:
        """Everything the command has written to stdout and stderr so far."""
        return self._client.text(f"/v1/sailboxes/{self.sailbox_id}/execs/{self.id}/log", timeout=timeout)

    def __repr__(self) -> str:
        return f"<BackgroundProcess {self.id} in {self.sailbox_id}: {self.cmd!r}>"
