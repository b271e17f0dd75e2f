"""Interactive exec from Python: the same WebSocket wire as `sail box exec -it` and the console."""

from __future__ import annotations

import re
import threading

import pytest

import sail


def hang_up_after(term: sail.PtySession, seconds: float = 120) -> None:
    """A guard, not a bound: if the terminal never shows what a test waits for, hang up so the
    test fails (its output ends) instead of waiting forever."""
    timer = threading.Timer(seconds, term.close)
    timer.daemon = True
    timer.start()


def read_until(chunks, pattern: str) -> str:
    """Read terminal output until ``pattern`` (a regex) shows; the daemon's frames arrive as the program writes."""
    seen = ""
    for chunk in chunks:
        seen += chunk.decode("utf-8", errors="replace")
        if re.search(pattern, seen):
            return seen
    raise AssertionError(f"the terminal ended before {pattern!r} showed; it printed {seen[-400:]!r}")


def test_a_shell_on_a_terminal_types_resizes_and_exits_with_its_code(daemon: sail.SailClient) -> None:
    sb = sail.Sailbox.create(app=sail.App.find(name="pytest-pty", mint_if_missing=True, client=daemon), image=sail.Image.debian)
    with sb.pty(cols=100, rows=30, env={"GREETING": "hi"}) as term:
        hang_up_after(term)
        out = term.output
        term.write("tty; stty size; echo $GREETING-$((6*7))\r")
        seen = read_until(out, r"hi-42")
        assert "/dev/pts/" in seen
        assert "30 100" in seen
        term.resize(132, 43)
        term.write("stty size\r")
        read_until(out, r"43 132")
        term.write("exit 3\r")
        assert term.wait(timeout=30) == 3


def test_ctrl_c_reaches_the_program_and_its_signal_is_the_exit_code(daemon: sail.SailClient) -> None:
    sb = sail.Sailbox.create(app=sail.App.find(name="pytest-pty", mint_if_missing=True, client=daemon), image=sail.Image.debian)
    with sb.pty(cmd="echo ready; sleep 300") as term:
        hang_up_after(term)
        read_until(term.output, r"ready")
        # A ^C that lands between `echo` and the start of `sleep` is caught by the shell, which acts on
        # it only once `sleep` ends (one run in about 25 here): press it again, as a user would. A ^C
        # that never reached the program would leave it running through every press.
        code = None
        for _ in range(5):
            term.write("\x03")
            try:
                code = term.wait(timeout=5)
                break
            except sail.TimeoutError:
                continue
        assert code == 130


def test_refusals_are_typed_errors(daemon: sail.SailClient) -> None:
    sb = sail.Sailbox.create(app=sail.App.find(name="pytest-pty", mint_if_missing=True, client=daemon), image=sail.Image.debian)
    with pytest.raises(sail.InvalidArgumentError) as bad_size:
        sb.pty(cols=0)  # checked before anything is sent
    assert bad_size.value.code == "SAIL_INVALID_ARGUMENT"
    with pytest.raises(sail.InvalidArgumentError) as bad_cwd:
        sb.pty(cwd="relative/dir").wait(timeout=30)  # the server's refusal, in the session's last frame
    assert bad_cwd.value.code == "SAIL_EXEC_INVALID"
    sb.pause()
    with pytest.raises(sail.SailboxPausedError):
        sb.pty(cmd="true").wait(timeout=30)
    sb.resume()
    sb.terminate()
    with pytest.raises(sail.ConflictError) as ended:
        sb.pty().wait(timeout=30)
    assert ended.value.code == "SAIL_SAILBOX_NOT_RUNNING"
