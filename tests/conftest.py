"""Shared fixtures for the adapter tests: both anyio backends, a running server,
a raw-socket WebSocket client for speaking (and misbehaving) at byte level, and
a private ``redis-server`` (``redis_server``; see ``redis_support.py``)."""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream
from redis_support import RedisServer, redis_server_binary, skip_reason

from wshub.adapters import Handler, WebSocketServer
from wshub.core.frames import encode_frame


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


Frame = tuple[bool, bool, int, bytes]  # fin, rsv1, opcode, payload


class RawClient:
    """A byte-level client: sends exactly what a test says, reads frames by hand."""

    def __init__(self, stream: SocketStream, port: int = 0) -> None:
        self.stream = stream
        self.port = port
        self.buffer = bytearray()

    @classmethod
    @asynccontextmanager
    async def open(cls, port: int) -> AsyncIterator[RawClient]:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            yield cls(stream, port)

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def _fill(self) -> bool:
        try:
            chunk = await self.stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return False
        self.buffer += chunk
        return True

    async def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not await self._fill():
                raise EOFError(f"EOF with {len(self.buffer)} of {n} bytes")
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read_head(self) -> tuple[int, dict[str, str]]:
        """Read an HTTP response head: the status and lower-cased headers."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise EOFError("EOF before the end of the HTTP head")
        end = self.buffer.index(b"\r\n\r\n")
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        status_line, *lines = head.split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    async def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """A whole non-101 response (Content-Length delimited)."""
        status, headers = await self.read_head()
        body = await self.read_exact(int(headers.get("content-length", "0")))
        return status, headers, body

    async def read_to_eof(self) -> bytes:
        while await self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def handshake(
        self,
        *,
        path: str = "/",
        headers: tuple[tuple[str, str], ...] = (),
        expect: int = 101,
    ) -> dict[str, str]:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{n}: {v}" for n, v in headers),
        ]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, response_headers = await self.read_head()
        assert status == expect, (status, response_headers)
        return response_headers

    async def send_frame(
        self, opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False
    ) -> None:
        await self.send(encode_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=os.urandom(4)))

    async def recv_frame(self) -> Frame:
        first, second = await self.read_exact(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.read_exact(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.read_exact(8))
        assert not second & 0x80, "server frames must not be masked"
        payload = await self.read_exact(length)
        return bool(first & 0x80), bool(first & 0x40), first & 0x0F, payload

    async def recv_close(self) -> tuple[int, str, list[Frame]]:
        """Read frames until a close frame; return its code, reason and what came before."""
        before: list[Frame] = []
        while True:
            frame = await self.recv_frame()
            if frame[2] == 0x8:
                payload = frame[3]
                code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                return code, payload[2:].decode(), before
            before.append(frame)


@pytest.fixture
def raw_client() -> Callable[[int], AbstractAsyncContextManager[RawClient]]:
    """``async with raw_client(port) as raw:`` opens a byte-level connection."""
    return RawClient.open


@asynccontextmanager
async def _running(handler: Handler, **kwargs: Any) -> AsyncIterator[WebSocketServer]:
    server = WebSocketServer(handler, **kwargs)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        try:
            yield server
        finally:
            server.shutdown()


@pytest.fixture
def running_server() -> Callable[..., AbstractAsyncContextManager[WebSocketServer]]:
    """``async with running_server(handler, **kwargs) as server:`` serves on port 0."""
    return _running


# ---- Redis: a private server per test; skipped with its reason where there is none ----

_REDIS_SKIPPED: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "redis: needs a redis-server binary on PATH (tests using the redis_server fixture"
        " get it automatically); skipped without one, except under CI=true",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = skip_reason(redis_server_binary())
    for item in items:
        if "redis_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)
        if reason is not None and item.get_closest_marker("redis") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
            _REDIS_SKIPPED.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _REDIS_SKIPPED:
        terminalreporter.write_line(
            f"Redis tests not run: {len(_REDIS_SKIPPED)} (marker 'redis'):"
            f" {skip_reason(None)}; under CI=true they run or fail",
            yellow=True,
            bold=True,
        )


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private, empty ``redis-server`` on a free loopback port, stopped by its PID
    after the test (``.url``, ``.port``, ``.restart()``, ``.kill()``, ``.command()``)."""
    with RedisServer() as server:
        yield server
