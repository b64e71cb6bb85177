"""The anyio WebSocket client: ``async with connect(url) as ws``.

Built on the same driver as the server (reader, writer, timer tasks). Unlike
the server, ``send`` may wait: it applies backpressure by waiting for the
outbox to drain instead of overflowing it; and received messages wait in a
small queue (``max_queue``) so that a client that stops reading stops reading
the socket too.
"""

from __future__ import annotations

import contextlib
import logging
import ssl as _ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import anyio
from anyio.abc import ByteStream

from ..core import (
    BinaryMessage,
    ClientConnection,
    Closed,
    ConnectionClosedError,
    Event,
    Limits,
    Opened,
    Pong,
    Rejected,
    State,
    TextMessage,
)
from ..core.deflate import deflate_bound
from ._clock import current_time
from ._driver import Driver
from ._pings import PongWaiters
from .errors import ConnectionClosed, HandshakeError, HandshakeRejected

__all__ = ["ClientSession", "connect"]

logger = logging.getLogger("wshub.client")

Headers = tuple[tuple[str, str], ...]

_HIGH_WATER = 64 * 1024  # outbox bytes above which ``send`` waits for the writer
_FRAME_OVERHEAD = 14  # largest client frame header: 2 + 8 length + 4 mask


class ClientSession:
    """An open client connection: ``recv``/``send``/``close`` and async iteration."""

    def __init__(self, core: ClientConnection, stream: ByteStream, *, max_queue: int = 16) -> None:
        self.core = core
        self.closed_event: Closed | None = None
        self._rejected: Rejected | None = None
        self._incoming_send, self._incoming = anyio.create_memory_object_stream[str | bytes](
            max_queue
        )
        self._opened = anyio.Event()
        self._pongs = PongWaiters()
        self._was_opened = False
        self._closed = anyio.Event()
        self._done = anyio.Event()
        self._driver = Driver(core, stream, self._dispatch, logger=logger)

    @property
    def subprotocol(self) -> str | None:
        return self.core.subprotocol

    @property
    def is_open(self) -> bool:
        return self.core.state is State.OPEN

    # -- receiving -------------------------------------------------------

    async def recv(self) -> str | bytes:
        """The next message; raises ``ConnectionClosed`` once the connection is over."""
        try:
            return await self._incoming.receive()
        except anyio.EndOfStream:
            raise self._closed_error() from None

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self

    async def __anext__(self) -> str | bytes:
        """Messages until a normal close (1000, 1001); other endings raise."""
        try:
            return await self._incoming.receive()
        except anyio.EndOfStream:
            event = self.closed_event
            if event is not None and event.code in (1000, 1001):
                raise StopAsyncIteration from None
            raise self._closed_error() from None

    # -- sending ---------------------------------------------------------

    async def send(self, message: str | bytes) -> None:
        """Queue a message, waiting while the outbox is full; raises once closed."""
        core = self.core
        text = isinstance(message, str)
        if core.outbox_size:  # only then can the message have to wait
            size = len(message.encode("utf-8")) if isinstance(message, str) else len(message)
            if core.deflate is not None:
                size = deflate_bound(size)
            await self._driver.wait_room(size + _FRAME_OVERHEAD, _HIGH_WATER)
        try:
            if text:
                ok = core.send_text(message)  # type: ignore[arg-type]
            else:
                ok = core.send_binary(message)  # type: ignore[arg-type]
        except ConnectionClosedError:
            ok = False
        self._driver.notify()
        if not ok:
            await self._closed.wait()
            raise self._closed_error()

    async def ping(self, payload: bytes | None = None) -> float:
        """Ping the server; the round-trip time in seconds once its pong came.

        Raises ``ConnectionClosed`` if the connection is or gets closed before
        the pong (see ``Connection.send_ping`` for the payload's rules).
        """
        try:
            payload = self.core.send_ping(payload)
        except ConnectionClosedError:
            await self._closed.wait()
            raise self._closed_error() from None
        self._driver.notify()
        return await self._pongs.wait(payload)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close and wait for the end of the closing handshake (or its timeout)."""
        if self.core.state is State.OPEN:
            self.core.close(code, reason)
            self._driver.notify()
        self._discard_incoming()
        await self._done.wait()

    async def wait_closed(self) -> Closed:
        await self._done.wait()
        assert self.closed_event is not None
        return self.closed_event

    # -- internals -------------------------------------------------------

    def _closed_error(self) -> ConnectionClosed:
        event = self.closed_event or Closed(code=1006, reason="connection closed")
        return ConnectionClosed(event)

    def _discard_incoming(self) -> None:
        # Nobody will read these; free the reader if it waits for queue space.
        while True:
            try:
                self._incoming.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                return

    async def _run(self) -> None:
        try:
            await self._driver.run()
        except Exception:
            logger.exception("client connection crashed")
        finally:
            if self.closed_event is None:
                self.closed_event = Closed(code=1006, reason="connection aborted")
                self._pongs.fail_all(self._closed_error)
                self._incoming_send.close()
                self._closed.set()
            self._opened.set()
            self._done.set()

    async def _dispatch(self, event: Event) -> None:
        if isinstance(event, TextMessage | BinaryMessage):
            with contextlib.suppress(anyio.BrokenResourceError):  # receiver gone
                await self._incoming_send.send(event.data)
        elif isinstance(event, Opened):
            self._was_opened = True
            self._opened.set()
        elif isinstance(event, Rejected):
            self._rejected = event
        elif isinstance(event, Pong):
            self._pongs.resolve(event)
        elif isinstance(event, Closed):
            self.closed_event = event
            self._pongs.fail_all(self._closed_error)
            self._incoming_send.close()
            self._closed.set()
            self._opened.set()

    async def _wait_open(self) -> None:
        await self._opened.wait()
        if self._was_opened:
            return  # even if it closed right after: the messages are still readable
        if self._rejected is not None:
            r = self._rejected
            raise HandshakeRejected(r.status, r.headers, r.body)
        reason = self.closed_event.reason if self.closed_event else "connection lost"
        raise HandshakeError(f"WebSocket handshake failed: {reason}")


def _parse_url(url: str) -> tuple[bool, str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"expected a ws:// or wss:// URL, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return secure, parts.hostname, port, target


def _host_header(host: str, port: int, secure: bool) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if secure else 80) else f"{name}:{port}"


@asynccontextmanager
async def connect(
    url: str,
    *,
    token: str | None = None,
    subprotocols: Iterable[str] = (),
    headers: Iterable[tuple[str, str]] = (),
    compression: bool = False,
    limits: Limits | None = None,
    ssl: _ssl.SSLContext | None = None,
    open_timeout: float = 10.0,
    max_queue: int = 16,
) -> AsyncIterator[ClientSession]:
    """Open a WebSocket connection; close it (1000) when the block ends.

    ``token`` is sent as ``Authorization: Bearer <token>``. Raises
    ``HandshakeRejected`` when the server refuses, ``HandshakeError`` when the
    handshake fails otherwise, ``TimeoutError`` after ``open_timeout``.
    """
    secure, host, port, target = _parse_url(url)
    extra = tuple(headers)
    if token is not None:
        extra += (("Authorization", f"Bearer {token}"),)
    context = ssl if ssl is not None else _ssl.create_default_context() if secure else None
    # Exceptions (the handshake's, or the body's) are re-raised outside the
    # task group, so that callers see them as they are, not in an ExceptionGroup.
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        try:
            with anyio.fail_after(open_timeout):
                stream: ByteStream
                if context is not None and secure:
                    stream = await anyio.connect_tcp(
                        host, port, ssl_context=context, tls_standard_compatible=False
                    )
                else:
                    stream = await anyio.connect_tcp(host, port)
                core = ClientConnection(
                    host=_host_header(host, port, secure),
                    target=target,
                    subprotocols=tuple(subprotocols),
                    headers=extra,
                    compression=compression,
                    limits=limits,
                    clock=current_time,
                )
                session = ClientSession(core, stream, max_queue=max_queue)
                tg.start_soon(session._run)
                await session._wait_open()
        except Exception as exc:
            failure = exc
            tg.cancel_scope.cancel()
        else:
            try:
                yield session
            except Exception as exc:
                failure = exc
            finally:
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(core.limits.close_timeout + 1.0):
                        await session.close()
                    tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
