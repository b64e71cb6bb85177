"""A minimal blocking WebSocket client for the fairness and churn scenarios.

Plain sockets, one thread each, so the client's own event loop cannot hide
or cause a stall: what it measures is the server's. It speaks just enough of
RFC 6455 for the scenarios (upgrade with a bearer token, masked frames out,
any server frame in) and of the hub's envelopes.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any

__all__ = ["RawClient", "frame"]


def frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (FIN set)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little"
    )
    return head + mask + masked


class RawClient:
    """One connection: ``upgrade``, ``send``, ``recv_frame``; blocking, with a timeout."""

    def __init__(
        self, host: str, port: int, token: str, *, rcvbuf: int | None = None, timeout: float = 30.0
    ) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window scale allows it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.host, self.port, self.token = host, port, token
        self._buf = bytearray()

    @property
    def rcvbuf(self) -> int:
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def upgrade(self) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        head = (
            f"GET / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: wshub.v1\r\nAuthorization: Bearer {self.token}\r\n\r\n"
        )
        self.sock.sendall(head.encode())
        while b"\r\n\r\n" not in self._buf:
            self._fill()
        end = self._buf.index(b"\r\n\r\n") + 4
        status = bytes(self._buf[:end]).split(b" ", 2)[1]
        del self._buf[:end]
        if status != b"101":
            raise RuntimeError(f"upgrade refused: {status.decode()}")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_json(self, envelope: dict[str, Any]) -> None:
        self.sock.sendall(frame(0x1, json.dumps(envelope).encode()))

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("connection closed by the server")
        self._buf += chunk

    def _need(self, n: int) -> None:
        while len(self._buf) < n:
            self._fill()

    def recv_frame(self) -> tuple[int, bytes]:
        """The next frame: (opcode, payload). Server frames are unmasked and unfragmented here."""
        self._need(2)
        opcode, length = self._buf[0] & 0x0F, self._buf[1] & 0x7F
        start = 2
        if length == 126:
            self._need(4)
            length, start = struct.unpack_from("!H", self._buf, 2)[0], 4
        elif length == 127:
            self._need(10)
            length, start = struct.unpack_from("!Q", self._buf, 2)[0], 10
        self._need(start + length)
        payload = bytes(self._buf[start : start + length])
        del self._buf[: start + length]
        return opcode, payload

    def recv_json(self) -> dict[str, Any]:
        """The next text message as JSON (control frames are returned as errors)."""
        opcode, payload = self.recv_frame()
        if opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if payload else 1005
            raise ConnectionError(f"closed {code} {payload[2:].decode(errors='replace')}")
        if opcode != 0x1:
            raise RuntimeError(f"unexpected opcode {opcode}")
        envelope: dict[str, Any] = json.loads(payload)
        return envelope

    def close(self) -> None:
        self.sock.close()
