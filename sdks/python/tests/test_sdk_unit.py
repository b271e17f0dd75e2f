"""The SDK without a daemon: the error table, configuration, what objects show."""

from __future__ import annotations

import builtins
import json
import socket

import pytest

import sail
from sail._error_codes import ERROR_CODES
from sail.errors import error_class_for, error_from_wire

CLASS_OF_KIND = {
    "InvalidArgument": sail.InvalidArgumentError,
    "NotFound": sail.NotFoundError,
    "Conflict": sail.ConflictError,
    "LimitExceeded": sail.LimitExceededError,
    "Timeout": sail.TimeoutError,
    "Aborted": sail.AbortedError,
    "Auth": sail.AuthError,
    "SailboxPaused": sail.SailboxPausedError,
    "Internal": sail.InternalError,
}


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_every_code_the_server_answers_maps_to_its_class(code):
    status, kind = ERROR_CODES[code]
    err = error_from_wire({"error": {"code": code, "message": "m", "sailboxId": "sb-x", "port": 5432}}, status)
    assert type(err) is error_class_for(code) and issubclass(error_class_for(code), CLASS_OF_KIND[kind])
    assert isinstance(err, sail.SailError)
    assert (err.code, err.status, err.message, err.sailbox_id, err.port) == (code, status, "m", "sb-x", 5432)


#: The builtin a plain handler names for each kind (``except TimeoutError:`` must catch Sail's).
BUILTIN_OF_KIND = {"InvalidArgument": ValueError, "NotFound": LookupError, "Timeout": builtins.TimeoutError, "Auth": PermissionError}


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_plain_python_handlers_catch_sails_errors(code):
    status, kind = ERROR_CODES[code]
    err = error_from_wire({"error": {"code": code, "message": "m"}}, status)
    if kind in BUILTIN_OF_KIND:
        assert isinstance(err, BUILTIN_OF_KIND[kind])
    assert isinstance(err, ConnectionError) == (code == "SAIL_UNAVAILABLE")
    assert str(err) == f"{code}: m"


def test_except_timeout_error_catches_a_daemon_that_does_not_answer():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts into the backlog, never answers
        client = sail.SailClient(api_url=f"http://127.0.0.1:{listener.getsockname()[1]}", token="t", request_timeout=0.5)
        try:
            sail.App.find(name="web-demo", client=client)
        except builtins.TimeoutError as err:
            assert isinstance(err, sail.TimeoutError) and err.code == "SAIL_TIMEOUT"
        else:
            raise AssertionError("no timeout")


def test_the_table_has_the_codes_users_match_on():
    for code in ("SAIL_PORT_UNAUTHENTICATED", "SAIL_CIDR_ON_HTTP", "SAIL_TCP_LIMIT_EXCEEDED", "SAIL_SAILBOX_PAUSED", "SAIL_LISTENER_TIMEOUT"):
        assert code in ERROR_CODES
    assert set(kind for _, kind in ERROR_CODES.values()) == set(CLASS_OF_KIND)


def test_an_unknown_code_is_a_plain_sail_error_and_a_bodyless_answer_an_internal_one():
    err = error_from_wire({"error": {"code": "SAIL_FROM_THE_FUTURE", "message": "new"}}, 418)
    assert type(err) is sail.SailError and err.code == "SAIL_FROM_THE_FUTURE"
    assert type(error_from_wire("<html>", 502)) is sail.InternalError


def test_no_object_shows_the_token(tmp_path):
    secret = "sail_TOPSECRET_token_value"
    client = sail.SailClient(api_url="http://127.0.0.1:9", token=secret)
    app = sail.App(client, {"id": "app-1", "name": "web-demo", "createdAt": "now"})
    sb = sail.Sailbox(client, {"id": "sb-abc", "appId": "app-1", "name": "x", "status": "running", "image": {}, "cpu": 1, "memoryMiB": 1024, "createdAt": "now"})
    listener = sail.Listener(client, "sb-abc", 3000, {"port": 3000, "protocol": "http", "endpoint": {"url": "https://u", "host": "h", "port": 443}})
    for shown in (client, app, sb, listener, sb.info, listener.endpoint):
        assert secret not in repr(shown) and secret not in str(shown)
    assert secret not in json.dumps(vars(sb.info), default=str)


def test_configuration_argument_then_environment_then_file(tmp_path, monkeypatch):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"apiUrl": "http://file:1", "token": "file-token"}))
    monkeypatch.setenv("SAIL_CONFIG", str(config))
    monkeypatch.delenv("SAIL_API_URL", raising=False)
    monkeypatch.delenv("SAIL_TOKEN", raising=False)
    assert sail.SailClient().api_url == "http://file:1"
    monkeypatch.setenv("SAIL_API_URL", "http://env:2/")
    monkeypatch.setenv("SAIL_TOKEN", "env-token")
    assert sail.SailClient().api_url == "http://env:2"
    assert sail.SailClient(api_url="http://arg:3", token="t").api_url == "http://arg:3"
    monkeypatch.delenv("SAIL_API_URL")
    monkeypatch.delenv("SAIL_TOKEN")
    monkeypatch.setenv("SAIL_CONFIG", str(tmp_path / "missing.json"))
    with pytest.raises(sail.AuthError) as missing:
        sail.SailClient()
    assert missing.value.code == "SAIL_AUTH_MISSING" and "sail up" in missing.value.message


def test_an_unreachable_daemon_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    client = sail.SailClient(api_url=f"http://127.0.0.1:{port}", token="t")
    with pytest.raises(ConnectionError) as err:
        sail.App.find(name="web-demo", client=client)
    assert isinstance(err.value, sail.InternalError) and isinstance(err.value, sail.UnavailableError)
    assert err.value.code == "SAIL_UNAVAILABLE" and "sail up" in err.value.message


def test_images_and_ports_on_the_wire():
    assert sail.Image.debian._wire() == {"name": "debian"}
    assert sail.Image.debian_arm64._wire() == {"name": "debian", "arch": "arm64"}
    assert sail.Image.debian.apt_install("redis-server", "postgresql")._wire() == {"name": "debian", "aptPackages": ["postgresql", "redis-server"]}
    assert repr(sail.Image.debian_arm64) == "Image.debian_arm64"
    assert sail.IngressPort(5432, "tcp", cidr_allowlist=["203.0.113.0/24"])._wire() == {"port": 5432, "protocol": "tcp", "cidrAllowlist": ["203.0.113.0/24"]}
    assert sail.IngressPort(5432, "tcp", allow_public=True)._wire() == {"port": 5432, "protocol": "tcp", "allowPublic": True}


def test_ssh_true_without_a_key_names_the_files_it_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    from sail._ssh import resolve_ssh_key

    with pytest.raises(sail.InvalidArgumentError) as err:
        resolve_ssh_key(True)
    assert err.value.code == "SAIL_SSH_KEY_INVALID"
    assert str(tmp_path / ".ssh" / "id_ed25519.pub") in err.value.message and "id_rsa.pub" in err.value.message
    (tmp_path / "key.pub").write_text("not a key")
    with pytest.raises(sail.InvalidArgumentError):
        resolve_ssh_key(str(tmp_path / "key.pub"))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa.pub").write_text("ssh-rsa AAAAB3Nza user@host\n")
    assert resolve_ssh_key(True) == "ssh-rsa AAAAB3Nza user@host"


# --- the PTY's WebSocket client reads frames strictly (a socketpair plays the daemon) ---


class _Head:
    def __init__(self, sock: socket.socket) -> None:
        self.fp = sock.makefile("rb")


def _client_and_peer():
    from sail import _websocket

    ours, peer = socket.socketpair()
    return _websocket.WebSocket(ours, _Head(ours)), peer


def _frame(op: int, payload: bytes, fin: bool = True, first_extra: int = 0, mask: bool = False) -> bytes:
    first = (0x80 if fin else 0) | first_extra | op
    if len(payload) < 126:
        head = bytes([first, (0x80 if mask else 0) | len(payload)])
    else:
        head = bytes([first, (0x80 if mask else 0) | 126]) + len(payload).to_bytes(2, "big")
    return head + (b"\0\0\0\0" if mask else b"") + payload


def _read_client_frame(peer: socket.socket) -> tuple:
    head = peer.recv(2)
    assert head[1] & 0x80, "client frames must be masked"
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(peer.recv(2), "big")
    mask = peer.recv(4)
    data = b""
    while len(data) < length:
        data += peer.recv(length - len(data))
    return head[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def test_websocket_reassembles_fragments_and_answers_pings():
    from sail import _websocket

    ws, peer = _client_and_peer()
    peer.sendall(_frame(_websocket.OP_BINARY, b"ab", fin=False) + _frame(_websocket.OP_PING, b"p1") + _frame(_websocket.OP_CONTINUATION, b"cd"))
    assert ws.recv() == (_websocket.OP_BINARY, b"abcd")
    assert _read_client_frame(peer) == (_websocket.OP_PONG, b"p1")
    ws.send_binary(b"x" * 300)  # a 16-bit length, masked
    assert _read_client_frame(peer) == (_websocket.OP_BINARY, b"x" * 300)
    peer.sendall(_frame(_websocket.OP_CLOSE, (1000).to_bytes(2, "big")))
    assert ws.recv() == (_websocket.OP_CLOSE, b"")
    assert ws.close_code == 1000
    assert _read_client_frame(peer)[0] == _websocket.OP_CLOSE


@pytest.mark.parametrize(
    "frame, why",
    [
        (_frame(0x2, b"x", mask=True), "masked"),
        (_frame(0x2, b"x", first_extra=0x40), "reserved"),
        (_frame(0x9, b"p" * 126), "control"),
        (_frame(0x9, b"p", fin=False), "control"),
        (_frame(0x3, b"x"), "opcode"),
        (_frame(0x0, b"x"), "continuation"),
        (bytes([0x82, 127]) + (1 << 40).to_bytes(8, "big"), "over"),
    ],
)
def test_websocket_refuses_frames_that_break_the_protocol(frame, why):
    from sail import _websocket

    ws, peer = _client_and_peer()
    peer.sendall(frame)
    with pytest.raises(_websocket.ProtocolError, match=why):
        ws.recv()


def test_a_refused_upgrade_is_the_typed_error_of_its_body():
    from sail import _websocket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer():
        conn, _ = listener.accept()
        conn.recv(65536)
        body = json.dumps({"error": {"code": "SAIL_SAILBOX_NOT_FOUND", "message": "No sailbox sb-x"}}).encode()
        conn.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        conn.close()

    import threading

    server = threading.Thread(target=answer)
    server.start()
    client = sail.SailClient(api_url=f"http://127.0.0.1:{listener.getsockname()[1]}", token="t")
    with pytest.raises(sail.NotFoundError) as refused:
        client.websocket("/v1/sailboxes/sb-x/pty")
    assert refused.value.code == "SAIL_SAILBOX_NOT_FOUND"
    server.join()
    listener.close()
    assert _websocket.WebSocketRefused(404, b"").status == 404


def test_build_progress_prints_a_line_per_step_and_a_still_line_on_a_long_one(monkeypatch):
    from sail import _progress

    clock = [1000.0]
    monkeypatch.setattr(_progress.time, "monotonic", lambda: clock[0])
    lines = []
    on_event = _progress.print_build_progress(lines.append)
    step = lambda name, ms: {"progress": {"phase": "image", "image": "debian_arm64", "step": name, "detail": "libc6", "elapsedMs": ms}}  # noqa: E731
    on_event({"progress": {"phase": "starting", "image": "debian", "sailboxId": "sb-x", "elapsedMs": 5}})  # no build: nothing
    on_event(step("retrieving (arm64, emulated)", 1000))
    on_event(step("retrieving (arm64, emulated)", 1500))
    on_event(step("configuring (arm64, emulated)", 60_000))
    on_event(step("configuring (arm64, emulated)", 61_000))  # the same step, soon after: no line
    clock[0] += 30
    on_event({"heartbeat": {"elapsedMs": 91_000}})  # 30 s on one step: a heartbeat says it still runs
    assert lines == [
        "sail: building debian_arm64: retrieving (arm64, emulated) libc6 (1 s)\n",
        "sail: building debian_arm64: configuring (arm64, emulated) libc6 (60 s)\n",
        "sail: still building debian_arm64: configuring (arm64, emulated) libc6 (91 s)\n",
    ]


class _Refuser:
    """A daemon that refuses every request with one code: as a JSON answer, or (streamed
    create) as the error line of an NDJSON answer that has already begun."""

    def __init__(self, code: str, status: int, streamed: bool) -> None:
        import http.server
        import threading

        body = {"error": {"code": code, "message": f"refused with {code}"}}
        self.requests = 0
        refuser = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                refuser.requests += 1
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if streamed:
                    payload = (json.dumps({"progress": {"step": "image"}}) + "\n" + json.dumps(body) + "\n").encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/x-ndjson")
                else:
                    payload = json.dumps(body).encode()
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


#: Refusals whose classes are also builtins a transport failure raises (ValueError, OSError,
#: TimeoutError): each must reach the caller as itself, once, never as a lost answer retried.
@pytest.mark.parametrize("code", ["SAIL_RESOURCES_INVALID", "SAIL_AUTH_INVALID", "SAIL_TIMEOUT", "SAIL_LISTENER_NOT_FOUND"])
@pytest.mark.parametrize("streamed", [False, True])
def test_a_refusal_is_its_typed_error_not_a_lost_answer(code, streamed):
    status, _ = ERROR_CODES[code]
    daemon = _Refuser(code, status, streamed)
    try:
        client = sail.SailClient(api_url=daemon.url, token="t", request_timeout=5)
        with pytest.raises(sail.SailError) as err:
            if streamed:
                client.long_call("/v1/sailboxes", {}, "sailbox", timeout=5)
            else:
                client.request("POST", "/v1/sailboxes", {})
        assert type(err.value) is error_class_for(code) and err.value.code == code
        assert f"refused with {code}" in err.value.message
        assert daemon.requests == 1
    finally:
        daemon.close()
