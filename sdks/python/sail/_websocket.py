"""A small WebSocket client (RFC 6455), standard library only, for the PTY.

It speaks to the Sail daemon's API, never to a guest, and still reads strictly: the
response head goes through ``http.client``'s parser, frames are checked (no reserved bits,
no masked server frames, control frames whole and short, payloads bounded), and anything
else ends the connection.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import ssl
import struct
import threading
from typing import Dict, Optional, Tuple
from urllib.parse import urlsplit

__all__ = ["WebSocket", "WebSocketRefused", "ProtocolError", "connect"]

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# the daemon sends terminal output in chunks far below this; a larger frame is a broken peer
_MAX_MESSAGE = 16 * 1024 * 1024

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketRefused(Exception):
    """The server answered the upgrade with an HTTP response instead of switching protocols."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class ProtocolError(Exception):
    """The peer broke RFC 6455."""


class WebSocket:
    """One client connection: ``recv()`` returns whole messages, ``send_*`` are thread-safe."""

    def __init__(self, sock: socket.socket, reader: "http.client.HTTPResponse") -> None:
        self._sock = sock
        self._response = reader  # kept: collecting it would close the buffered file below
        self._reader = reader.fp  # the bytes after the 101's head, buffered by http.client
        self._send_lock = threading.Lock()
        self.close_code: Optional[int] = None
        self._closed = False

    def send_binary(self, data: bytes) -> None:
        self._send(OP_BINARY, data)

    def send_text(self, text: str) -> None:
        self._send(OP_TEXT, text.encode("utf-8"))

    def close(self, code: int = 1000) -> None:
        """Send a close frame (once) and shut the connection down for writing."""
        if self._closed:
            return
        try:
            self._send(OP_CLOSE, struct.pack(">H", code))
        except OSError:
            pass
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def abort(self) -> None:
        """Drop the connection at once (what the reader sees as the end)."""
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def recv(self) -> Tuple[int, bytes]:
        """The next data message as ``(OP_TEXT or OP_BINARY, payload)``, or ``(OP_CLOSE, b"")``
        once the peer closed (``close_code`` says how). Answers pings itself."""
        message_op: Optional[int] = None
        parts = []
        size = 0
        while True:
            fin, op, payload = self._read_frame()
            if op == OP_PING:
                self._send(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                self.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.close(self.close_code if 1000 <= self.close_code < 5000 and self.close_code not in (1005, 1006) else 1000)
                return OP_CLOSE, b""
            if op == OP_CONTINUATION:
                if message_op is None:
                    raise ProtocolError("a continuation frame without a message to continue")
            else:
                if message_op is not None:
                    raise ProtocolError("a new message began before the last one ended")
                message_op = op
            size += len(payload)
            if size > _MAX_MESSAGE:
                raise ProtocolError(f"a message over {_MAX_MESSAGE} bytes")
            parts.append(payload)
            if fin:
                return message_op, b"".join(parts)

    def _read_exactly(self, n: int) -> bytes:
        data = self._reader.read(n)
        if data is None or len(data) != n:
            raise ConnectionError("the connection ended inside a frame" if data else "the connection ended")
        return data

    def _read_frame(self) -> Tuple[bool, int, bytes]:
        first, second = self._read_exactly(2)
        fin, rsv, op = bool(first & 0x80), first & 0x70, first & 0x0F
        masked, length = bool(second & 0x80), second & 0x7F
        if rsv:
            raise ProtocolError("reserved bits set (no extension was agreed)")
        if masked:
            raise ProtocolError("a masked frame from the server")
        if op not in (OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
            raise ProtocolError(f"unknown opcode {op}")
        if length == 126:
            length = struct.unpack(">H", self._read_exactly(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read_exactly(8))[0]
        if op >= OP_CLOSE and (length > 125 or not fin):
            raise ProtocolError("a control frame that is fragmented or over 125 bytes")
        if length > _MAX_MESSAGE:
            raise ProtocolError(f"a frame over {_MAX_MESSAGE} bytes")
        return fin, op, self._read_exactly(length) if length else b""

    def _send(self, op: int, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = struct.pack(">BB", 0x80 | op, 0x80 | length)
        elif length < 1 << 16:
            head = struct.pack(">BBH", 0x80 | op, 0x80 | 126, length)
        else:
            head = struct.pack(">BBQ", 0x80 | op, 0x80 | 127, length)
        with self._send_lock:
            self._sock.sendall(head + mask + _masked(payload, mask))


def _masked(payload: bytes, mask: bytes) -> bytes:
    # XOR as one big integer: fast enough for pasted text without a C extension
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


def connect(api_url: str, path: str, headers: Dict[str, str], timeout: float) -> WebSocket:
    """Open a WebSocket to ``api_url`` + ``path``; ``timeout`` (seconds) bounds the connect
    and the handshake only. Raises ``WebSocketRefused`` with the HTTP answer if the server
    does not switch protocols."""
    url = urlsplit(api_url)
    secure = url.scheme == "https"
    host = url.hostname or "127.0.0.1"
    port = url.port or (443 if secure else 80)
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {url.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        response = http.client.HTTPResponse(sock)
        response.begin()
        if response.status != 101:
            body = response.read(1 << 20)
            raise WebSocketRefused(response.status, body)
        expected = base64.b64encode(hashlib.sha1((key + _GUID).encode("ascii")).digest()).decode("ascii")
        if (response.getheader("upgrade") or "").lower() != "websocket" or response.getheader("sec-websocket-accept") != expected:
            raise ProtocolError("the server switched protocols without a valid WebSocket handshake")
        sock.settimeout(None)  # a terminal is quiet for as long as its user is
        return WebSocket(sock, response)
    except BaseException:
        sock.close()
        raise
