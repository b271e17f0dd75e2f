"""Servers the tests start inside Sailboxes (with the SDK, as a user would)."""

from __future__ import annotations

import os
import subprocess

import sail

_TCP_ECHO = """
import socket, sys, threading
def handle(c):
    with c:
        first = True
        while True:
            d = c.recv(65536)
            if not d: break
            if first:
                open('/tmp/peers.log', 'ab').write(d[:64] + b'\\n'); first = False
            c.sendall(d)
        c.shutdown(socket.SHUT_WR)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(64)
while True:
    c, _ = s.accept(); threading.Thread(target=handle, args=(c,), daemon=True).start()
"""

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def write_file(sb: sail.Sailbox, path: str, text: str) -> None:
    assert sb.exec(f"mkdir -p $(dirname {path}) && cat > {path} <<'SAIL_EOF'\n{text}\nSAIL_EOF").wait() == 0


def start_tcp_echo(sb: sail.Sailbox, port: int) -> None:
    """A TCP echo server on `port`: it logs each connection's first bytes to /tmp/peers.log."""
    write_file(sb, "/srv/tcp-echo.py", _TCP_ECHO)
    sb.exec(f"python3 /srv/tcp-echo.py {port}", background=True).wait()


def start_guest_server(sb: sail.Sailbox, port: int) -> None:
    """test/fixtures/guest-server.py on `port`: HTTP test routes and a WebSocket echo at /ws."""
    with open(os.path.join(REPO, "test", "fixtures", "guest-server.py"), encoding="utf-8") as f:
        write_file(sb, "/srv/guest-server.py", f.read())
    sb.exec(f"python3 /srv/guest-server.py {port}", background=True).wait()


def curl(url: str, ca_file: str, *extra: str) -> subprocess.CompletedProcess:
    """curl as a user runs it: it resolves *.localhost to loopback itself (RFC 6761)."""
    return subprocess.run(
        ["curl", "-sS", "--max-time", "60", "--cacert", ca_file, "-w", "\n%{http_code}", *extra, url],
        capture_output=True,
        text=True,
    )


def http_get(url: str, ca_file: str) -> tuple:
    """(status, body) of a GET through the gateway."""
    result = curl(url, ca_file)
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body
