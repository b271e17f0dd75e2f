"""Fixtures for the Python SDK's tests.

The end-to-end tests need a running daemon: test/e2e/python-sdk.test.ts starts one (as every
e2e file does) and runs pytest with SAIL_CONFIG pointing at it. Unit tests need nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from typing import Iterator, List

import pytest

import sail


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if os.environ.get("SAIL_CONFIG") or os.environ.get("SAIL_API_URL"):
        return
    skip = pytest.mark.skip(reason="needs a Sail daemon: run through `npm test` (test/e2e/python-sdk.test.ts)")
    for item in items:
        if "daemon" in item.fixturenames:
            item.add_marker(skip)


@pytest.fixture
def daemon() -> Iterator[sail.SailClient]:
    """The test daemon; every Sailbox a test creates is terminated afterwards, and its id
    printed if that fails."""
    client = sail.SailClient.default()
    before = {sb.id for sb in sail.Sailbox.list(client=client)}
    yield client
    for sb in sail.Sailbox.list(client=client):
        if sb.id not in before and sb.info.status not in ("terminated", "failed"):
            try:
                sb.terminate()
            except sail.SailError as err:
                print(f"could not terminate test sailbox {sb.id}: {err}")


@pytest.fixture(scope="session")
def ca_file() -> Iterator[str]:
    """Sail's local CA, as `sail ca` prints it, for curl --cacert and ssl."""
    folder = tempfile.mkdtemp(prefix="sail-pytest-")
    path = os.path.join(folder, "sail-ca.pem")
    with open(path, "w", encoding="utf-8") as f:
        f.write(sail.SailClient.default().ca_certificate())
    yield path
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def loopback_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """`*.localhost` is loopback (RFC 6761): curl knows it, glibc (and so Python) does not."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(host, str) and (host == "localhost" or host.endswith(".localhost")):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def ssh_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A HOME with ~/.ssh/id_ed25519(.pub), as a user who ran `ssh-keygen -t ed25519` has."""
    home = tempfile.mkdtemp(prefix="sail-pytest-home-")
    os.mkdir(os.path.join(home, ".ssh"), 0o700)
    key = os.path.join(home, ".ssh", "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    monkeypatch.setenv("HOME", home)
    yield home
    shutil.rmtree(home, ignore_errors=True)


FAKE_INTERNET_NS = "sail-pytest-net"
FAKE_INTERNET_HOST_IF = "sptnet0"
# A transit /30 of the fake internet's half of 198.51.100.0/24 (RFC 5737; the upper half is the
# cluster's), and clients beyond it, each routed from the host as a /32: 203.0.113.0/24 is a
# real range on some hosts (this workplace's package mirror sits in it), so the host routes
# only the one client address the seed's allowlist needs, never the range.
HOST_SIDE = "198.51.100.105"
TRANSIT = ("198.51.100.105/30", "198.51.100.106/30")
CLIENTS = ["203.0.113.10", "198.51.100.7", "198.51.100.8"]


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def fake_internet() -> Iterator["FakeInternet"]:
    """A network namespace this test owns, holding documentation addresses, routed to the host
    over a veth pair: clients "on the internet" at 203.0.113.10, 198.51.100.7 and 198.51.100.8
    dial the host at 198.51.100.105. Removed afterwards."""
    _ip("netns", "del", FAKE_INTERNET_NS, check=False)
    _ip("link", "del", FAKE_INTERNET_HOST_IF, check=False)
    _ip("netns", "add", FAKE_INTERNET_NS)
    try:
        _ip("link", "add", FAKE_INTERNET_HOST_IF, "type", "veth", "peer", "name", "eth0", "netns", FAKE_INTERNET_NS)
        _ip("addr", "add", TRANSIT[0], "dev", FAKE_INTERNET_HOST_IF)
        _ip("link", "set", FAKE_INTERNET_HOST_IF, "up")
        _ip("-n", FAKE_INTERNET_NS, "addr", "add", TRANSIT[1], "dev", "eth0")
        for address in CLIENTS:
            _ip("-n", FAKE_INTERNET_NS, "addr", "add", f"{address}/32", "dev", "eth0")
        _ip("-n", FAKE_INTERNET_NS, "link", "set", "eth0", "up")
        _ip("-n", FAKE_INTERNET_NS, "link", "set", "lo", "up")
        _ip("-n", FAKE_INTERNET_NS, "route", "add", "default", "via", HOST_SIDE)
        for address in CLIENTS:
            _ip("route", "add", f"{address}/32", "via", TRANSIT[1].split("/")[0], "dev", FAKE_INTERNET_HOST_IF)
        yield FakeInternet()
    finally:
        _ip("netns", "del", FAKE_INTERNET_NS, check=False)
        _ip("link", "del", FAKE_INTERNET_HOST_IF, check=False)


class FakeInternet:
    host_address = HOST_SIDE

    def tcp_exchange(self, source: str, port: int, payload: bytes) -> bytes:
        """Dial the host's `port` from `source` inside the namespace, send `payload`, half-close,
        and return what came back (b"" when the connection was dropped)."""
        script = (
            "import socket, sys\n"
            "s = socket.socket(); s.settimeout(20)\n"
            f"s.bind(({source!r}, 0))\n"
            "try:\n"
            f"    s.connect(({self.host_address!r}, {port}))\n"
            f"    s.sendall({payload!r}); s.shutdown(socket.SHUT_WR)\n"
            "    data = b''\n"
            "    while True:\n"
            "        chunk = s.recv(65536)\n"
            "        if not chunk: break\n"
            "        data += chunk\n"
            "except (ConnectionError, OSError):\n"
            "    data = b''\n"
            "sys.stdout.buffer.write(data)\n"
        )
        result = subprocess.run(["ip", "netns", "exec", FAKE_INTERNET_NS, "python3", "-c", script], capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout
