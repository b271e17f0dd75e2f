"""The product page (docs/product/sailbox-networking.txt), run as printed.

Each test holds one code block of the page verbatim (test_page_blocks_are_verbatim checks
that), with only what the page leaves to the reader added around it: a server to start,
a client to connect, the assertions. `image=sail.Image.debian_arm64` included: on an amd64
host those boxes run under emulation.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import tempfile

import pytest
import websocket

import sail
from guest import curl, http_get, start_guest_server, start_tcp_echo

PAGE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "product", "sailbox-networking.txt")


def test_http_and_websocket_services(daemon, ca_file, loopback_names, capsys):
    # --- the page: HTTP and WebSocket services ---
    import sail
    app = sail.App.find(name="web-demo", mint_if_missing=True)
    sb = sail.Sailbox.create(
    app=app,
    image=sail.Image.debian_arm64,
    name="web-demo",
    ingress_ports=[3000],
    )
    sb.exec("mkdir -p /srv/app && echo hello > /srv/app/index.html").wait()
    sb.exec("python3 -m http.server 3000", background=True, cwd="/srv/app").wait()
    listener = sb.listener(3000)
    listener.wait(timeout=60)
    print(listener.endpoint.url)
    # --- the reader: the printed HTTPS URL answers "hello" (curl --cacert, as the README says) ---
    url = capsys.readouterr().out.strip()
    assert re.fullmatch(r"https://3000-[a-z0-9]{12}\.sail\.localhost(:\d+)?", url), url
    assert http_get(url, ca_file) == (200, "hello\n")
    assert sb.info.image == {"name": "debian", "arch": "arm64", "aptPackages": [], "emulated": sb.info.image["emulated"]}
    assert sb.exec("uname -m").output().stdout.strip() == "aarch64"

    # --- the page: the same URL for WebSocket clients ---
    ws_url = listener.endpoint.url.replace("https://", "wss://")
    # --- the reader: a process in the box that speaks WebSocket on that port ---
    assert sb.exec("pkill -f 'http[.]server 3000'; while pgrep -f 'http[.]server 3000'; do sleep 0.1; done").wait() == 0
    start_guest_server(sb, 3000)
    sb.listener(3000).wait(timeout=60)
    ws = websocket.create_connection(ws_url + "/ws", sslopt={"ca_certs": ca_file}, timeout=30)
    try:
        ws.send("hello over wss")
        assert ws.recv() == "hello over wss"
        ws.send_binary(bytes(range(256)))
        assert ws.recv() == bytes(range(256))
    finally:
        ws.close()


def test_raw_tcp_ports(daemon, fake_internet, capsys):
    import sail
    app = sail.App.find(name="web-demo", mint_if_missing=True)
    # --- the page: raw TCP ports ---
    sb = sail.Sailbox.create(
    app=app,
    image=sail.Image.debian_arm64,
    name="tcp-demo",
    ingress_ports=[sail.IngressPort(5432, "tcp", cidr_allowlist=["203.0.113.0/24"])],
    )
    # --- the reader: a TCP service on 5432 (an echo server stands in for PostgreSQL) ---
    start_tcp_echo(sb, 5432)
    # --- the page ---
    listener = sb.listener(5432).wait(timeout=60)
    host, port = listener.endpoint.host, listener.endpoint.port
    print(f"postgres://user:password@{host}:{port}/postgres")
    # --- the reader: a client in 203.0.113.0/24 gets through; another source is dropped before the guest ---
    assert capsys.readouterr().out.strip() == f"postgres://user:password@{host}:{port}/postgres"
    assert listener.protocol == "tcp" and listener.cidr_allowlist == ["203.0.113.0/24"]
    assert fake_internet.tcp_exchange("203.0.113.10", port, b"from the allowed range") == b"from the allowed range"
    assert fake_internet.tcp_exchange("198.51.100.7", port, b"from outside the range") == b""
    peers = sb.exec("cat /tmp/peers.log").output().stdout
    assert peers == "from the allowed range\n", peers


def test_ssh_access(daemon, ssh_home, capsys):
    import sail
    app = sail.App.find(name="web-demo", mint_if_missing=True)
    # --- the page: SSH access ---
    import sail
    sb = sail.Sailbox.create(
    app=app,
    image=sail.Image.debian_arm64,
    name="ssh-demo",
    ssh=True,
    )
    endpoint = sb.listener(22).wait(timeout=60).endpoint
    print(f"ssh -p {endpoint.port} root@{endpoint.host}")
    # --- the reader: the printed command logs in with the key ssh=True installed ---
    command = capsys.readouterr().out.split()
    assert command[:2] == ["ssh", "-p"] and command[3] == f"root@{endpoint.host}"
    known_hosts = os.path.join(ssh_home, ".ssh", "known_hosts")

    def ssh(remote: str) -> subprocess.CompletedProcess:
        # OpenSSH finds keys from the passwd entry's home, not $HOME: name the key ssh=True installed
        identity = os.path.join(ssh_home, ".ssh", "id_ed25519")
        options = ["-i", identity, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known_hosts}", "-o", "ConnectTimeout=30"]
        return subprocess.run([*command[:3], *options, command[3], remote], capture_output=True, text=True, timeout=120)

    first = ssh("uname -m")
    assert first.returncode == 0 and first.stdout.strip() == "aarch64", first.stderr
    # the page: the SSH server persists across sleep; plain ssh wakes the box, with the same host key
    sb.sleep()
    assert sb.status() == "sleeping"
    again = ssh("echo awake")
    assert again.returncode == 0 and again.stdout.strip() == "awake", again.stderr  # StrictHostKeyChecking: same key
    assert sb.status() == "running"
    # the page: start_sshd() is idempotent, and starts sshd again when it stopped
    sb.start_sshd()
    sb.start_sshd()
    assert sb.exec("pgrep -x sshd | wc -l").output().stdout.strip() == "1"
    assert sb.exec("pkill -x sshd; while pgrep -x sshd; do sleep 0.1; done").wait() == 0
    sb.start_sshd()
    assert ssh("true").returncode == 0


def test_inspect_endpoints(daemon, ca_file, capsys):
    import sail
    app = sail.App.find(name="web-demo", mint_if_missing=True)
    sb = sail.Sailbox.create(
        app=app,
        image=sail.Image.debian_arm64,
        ingress_ports=[3000, sail.IngressPort(7000, "tcp", allow_public=True)],
    )
    sb.exec("mkdir -p /srv/app && echo hello > /srv/app/index.html").wait()
    sb.exec("python3 -m http.server 3000", background=True, cwd="/srv/app").wait()
    start_tcp_echo(sb, 7000)
    # --- the page: inspect endpoints ---
    for listener in sb.listeners():
        listener = listener.wait(timeout=60)
        if listener.protocol == "http":
            print(listener.port, listener.endpoint.url)
        else:
            endpoint = listener.endpoint
            print(listener.port, f"{endpoint.host}:{endpoint.port}")
    # --- the reader ---
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"3000 https://3000-[a-z0-9]{12}\.sail\.localhost(:\d+)?", lines[0]), lines
    assert re.fullmatch(r"7000 localhost:\d+", lines[1]), lines
    assert http_get(lines[0].split()[1], ca_file) == (200, "hello\n")
    # the listener handle knows its endpoint before anything listens (the URL is fixed at create)
    assert sb.listener(3000).endpoint.url == lines[0].split()[1]


def test_access_controls(daemon, fake_internet):
    import sail
    app = sail.App.find(name="web-demo", mint_if_missing=True)
    # --- the page: restrict which source IPs may connect ---
    sb = sail.Sailbox.create(app=app, image=sail.Image.debian_arm64,
    ingress_ports=[
    sail.IngressPort(22, "tcp", cidr_allowlist=["203.0.113.0/24", "198.51.100.7/32"]),
    ]
    )
    # --- the reader: both listed prefixes connect, a neighbour of 198.51.100.7 is dropped ---
    start_tcp_echo(sb, 22)
    port = sb.listener(22).wait(timeout=60).endpoint.port
    assert fake_internet.tcp_exchange("203.0.113.10", port, b"one") == b"one"
    assert fake_internet.tcp_exchange("198.51.100.7", port, b"two") == b"two"
    assert fake_internet.tcp_exchange("198.51.100.8", port, b"three") == b""
    assert sb.exec("cat /tmp/peers.log").output().stdout == "one\ntwo\n"

    # the page: a well-known unauthenticated port as public raw TCP is refused, and creates nothing
    before = [s.id for s in sail.Sailbox.list(app=app)]
    with pytest.raises(sail.InvalidArgumentError) as refused:
        sail.Sailbox.create(app=app, image=sail.Image.debian_arm64, ingress_ports=[sail.IngressPort(5432, "tcp")])
    assert refused.value.code == "SAIL_PORT_UNAUTHENTICATED" and refused.value.port == 5432
    assert "allow_public" in refused.value.message or "allowPublic" in refused.value.message
    assert [s.id for s in sail.Sailbox.list(app=app)] == before

    # --- the page: allow_public=True confirms it ---
    public = sail.Sailbox.create(app=app, image=sail.Image.debian_arm64,
    ingress_ports=[
    sail.IngressPort(5432, "tcp", allow_public=True),
    ]
    )
    assert [(l.port, l.protocol) for l in public.listeners()] == [(5432, "tcp")]

    # the page: cidr_allowlist is a TCP-only control
    with pytest.raises(sail.InvalidArgumentError) as on_http:
        sail.Sailbox.create(app=app, image=sail.Image.debian_arm64, ingress_ports=[sail.IngressPort(3000, "http", cidr_allowlist=["203.0.113.0/24"])])
    assert on_http.value.code == "SAIL_CIDR_ON_HTTP"


def test_sleeping_services(daemon, ca_file):
    import sail
    app = sail.App.find(name="web-demo", mint_if_missing=True)
    sb = sail.Sailbox.create(app=app, image=sail.Image.debian_arm64, ingress_ports=[3000])
    sb.exec("mkdir -p /srv/app && echo hello > /srv/app/index.html").wait()
    sb.exec("python3 -m http.server 3000", background=True, cwd="/srv/app").wait()
    listener = sb.listener(3000).wait(timeout=60)
    # --- the page: sleeping services ---
    sb.sleep()
    # A later request to listener.endpoint.url wakes the Sailbox.
    # --- the reader ---
    assert sb.status() == "sleeping"
    assert http_get(listener.endpoint.url, ca_file) == (200, "hello\n")
    assert sb.status() == "running"

    # the page: pause() keeps the state and does not wake on network traffic
    sb.pause()
    status, body = http_get(listener.endpoint.url + "/", ca_file)
    assert status == 503 and sb.id in body
    assert sb.status() == "paused"
    with pytest.raises(sail.SailboxPausedError):
        sb.exec("true").wait()
    sb.resume()
    assert http_get(listener.endpoint.url, ca_file) == (200, "hello\n")


def test_ports_and_cleanup(daemon, ca_file):
    import sail
    app = sail.App.find(name="web-demo", mint_if_missing=True)
    refusals = {
        "SAIL_PORT_DUPLICATE": [3000, 3000],
        "SAIL_PORT_INVALID": [0],
        "SAIL_PORT_RESERVED": [10000],
        "SAIL_PORT_SSH_ON_HTTP": [22],
    }
    for code, ports in refusals.items():
        with pytest.raises(sail.InvalidArgumentError) as refused:
            sail.Sailbox.create(app=app, image=sail.Image.debian_arm64, ingress_ports=ports)
        assert refused.value.code == code, refused.value
    with pytest.raises(sail.InvalidArgumentError) as too_high:
        sail.Sailbox.create(app=app, ingress_ports=[65536])
    assert too_high.value.code == "SAIL_PORT_INVALID"
    # 22 is fine as raw TCP
    sb = sail.Sailbox.create(app=app, image=sail.Image.debian_arm64, ingress_ports=[sail.IngressPort(22, "tcp"), 3000])
    # an org holds at most 32 raw-TCP endpoints: this box holds one, 32 more are refused
    with pytest.raises(sail.LimitExceededError) as limit:
        sail.Sailbox.create(app=app, ingress_ports=[sail.IngressPort(p, "tcp") for p in range(40000, 40032)])
    assert limit.value.code == "SAIL_TCP_LIMIT_EXCEEDED" and limit.value.details["limit"] == 32
    # terminating removes its listeners: the URL answers 404 and listeners() is empty
    url = sb.listener(3000).endpoint.url
    sb.terminate()
    assert sb.status() == "terminated"
    assert sb.listeners() == []
    assert http_get(url, ca_file)[0] == 404


# Each code block of the page by its first and last line (the page is plain text).
PAGE_BLOCKS = [
    ("import sail", "print(listener.endpoint.url)"),
    ('ws_url = listener.endpoint.url.replace("https://", "wss://")', None),
    ("sb = sail.Sailbox.create(", ")"),
    ("listener = sb.listener(5432).wait(timeout=60)", 'print(f"postgres://user:password@{host}:{port}/postgres")'),
    ("import sail", 'print(f"ssh -p {endpoint.port} root@{endpoint.host}")'),
    ("for listener in sb.listeners():", 'print(listener.port, f"{endpoint.host}:{endpoint.port}")'),
    ("ingress_ports=[", "]"),
    ("ingress_ports=[", "]"),
    ("sb.sleep()", "# A later request to listener.endpoint.url wakes the Sailbox."),
]


def test_page_blocks_are_verbatim():
    """Every code block of the page appears, line for line, in this file (indentation aside)."""
    with open(PAGE, encoding="utf-8") as f:
        page = [line.strip() for line in f]
    with open(__file__, encoding="utf-8") as f:
        here = [line.strip() for line in f]
    at = 0
    for first, last in PAGE_BLOCKS:
        at = page.index(first, at)
        end = at if last is None else page.index(last, at)
        block = page[at : end + 1]
        assert contains(here, block), f"this block of the page is not verbatim in {__file__}: {block}"
        at = end + 1
    # the last block is the page's last code: nothing after it looks like code
    assert not any(line.startswith(("sb.", "sail.", "import ")) for line in page[at:])


def contains(haystack, needle):
    return any(haystack[i : i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))
