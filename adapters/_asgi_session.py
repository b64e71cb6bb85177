"""One WebSocket of the ASGI app, from the ASGI events to the hub and back.

The ASGI server reads and frames; this session turns its events into calls
of the ``HubRuntime`` and drains the connection's ``OutboxConnection`` with
one sender task awaiting ``send``, so a peer that does not read holds up its
own sender only, and its outbox overflows (1013) instead of growing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from ..core import Closed, HandshakeRequest
from ..core.connection import State
from ..core.events import Side
from ..core.outbox_connection import CloseRequest, OutboxConnection
from .hub_commands import log_conn
from .hub_runtime import HubRuntime

__all__ = [
    "AsgiSession",
    "Receive",
    "Scope",
    "Send",
    "client_address",
    "deny",
    "handshake_request",
    "header_values",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_HTTP_RESPONSE = "websocket.http.response"
_REPORT_TIMEOUT = 5.0  # on_disconnect after a cancellation runs shielded, not forever


def header_values(scope: Scope, name: bytes) -> list[str]:
    """Every value of one (lower-case) header of the request, decoded as latin-1."""
    return [bytes(v).decode("latin-1") for n, v in scope.get("headers", ()) if bytes(n) == name]


def handshake_request(scope: Scope) -> HandshakeRequest:
    """The upgrade request as the core describes it, from an ASGI websocket scope."""
    headers = tuple(
        (bytes(name).decode("latin-1").lower(), bytes(value).decode("latin-1"))
        for name, value in scope.get("headers", ())
    )
    hosts = [value for name, value in headers if name == "host"]
    origins = [value for name, value in headers if name == "origin"]
    extensions = tuple(
        item.strip()
        for name, value in headers
        if name == "sec-websocket-extensions"
        for item in value.split(",")
        if item.strip()
    )
    return HandshakeRequest(
        method="GET",
        path=str(scope.get("path", "/")),
        query=bytes(scope.get("query_string", b"")).decode("latin-1"),
        host=hosts[0].strip() if hosts else "",
        headers=headers,
        origin=origins[0] if origins else None,
        subprotocols=tuple(scope.get("subprotocols", ())),
        extensions=extensions,
    )


def client_address(scope: Scope) -> tuple[str, int] | None:
    client = scope.get("client")
    if not client:
        return None
    host, port = client[0], client[1]
    return (str(host), int(port or 0))


async def deny(
    scope: Scope, send: Send, status: int, reason: str, headers: tuple[tuple[str, str], ...]
) -> None:
    """Refuse an upgrade: the HTTP status where the server can send one, else a
    close before accept (which the server answers with 403)."""
    if _HTTP_RESPONSE in (scope.get("extensions") or {}):
        body = reason.encode("utf-8")
        raw = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers]
        if not any(n == b"content-type" for n, _ in raw):
            raw.append((b"content-type", b"text/plain; charset=utf-8"))
        raw.append((b"content-length", str(len(body)).encode("ascii")))
        await send({"type": "websocket.http.response.start", "status": status, "headers": raw})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": reason})


class _Signal:
    """Wakes the sender task; set before a wait is not lost.

    On asyncio a bare future per wait: an ``anyio.Event`` per wake-up (one
    for every message a connection is sent) costs a backend lookup and an
    ``asyncio.Event`` with its own future. Elsewhere (trio), an anyio Event.
    """

    __slots__ = ("_event", "_future", "_loop", "_pending")

    def __init__(self) -> None:
        self._loop = asyncio._get_running_loop()
        self._future: asyncio.Future[None] | None = None
        self._event: anyio.Event | None = None
        self._pending = False

    def set(self) -> None:
        if self._pending:
            return
        self._pending = True
        future = self._future
        if future is not None:
            if not future.done():
                future.set_result(None)
        elif self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        """Return once ``set`` was called since the last wait returned."""
        if not self._pending:
            if self._loop is not None:
                self._future = self._loop.create_future()
                try:
                    await self._future
                finally:
                    self._future = None
            else:
                self._event = anyio.Event()
                try:
                    await self._event.wait()
                finally:
                    self._event = None
        self._pending = False


class AsgiSession:
    """An accepted connection: a reader (in the caller's task) and a sender task.

    Ends when the server reports the disconnect, or, once this side asked to
    close, after ``close_timeout`` (``grace`` for a slow consumer's 1013)
    even if the peer never completes the closing handshake.
    """

    __slots__ = (
        "_closing",
        "_disconnect",
        "_ended",
        "_grace",
        "_receive",
        "_reported",
        "_scope",
        "_send",
        "_timeout",
        "_wakeup",
        "conn_id",
        "connection",
        "max_message_size",
        "runtime",
    )

    def __init__(
        self,
        runtime: HubRuntime,
        conn_id: str,
        connection: OutboxConnection,
        receive: Receive,
        send: Send,
        *,
        grace: float,
    ) -> None:
        self.runtime = runtime
        self.conn_id = conn_id
        self.connection = connection
        self.max_message_size = connection.limits.max_message_size
        self._receive = receive
        self._send = send
        self._grace = grace
        self._timeout = connection.limits.close_timeout
        self._wakeup = _Signal()
        self._closing = anyio.Event()  # this side asked to close, or the transport ended
        self._ended = anyio.Event()  # the transport ended (disconnect, or send failed)
        self._disconnect: tuple[int, str] | None = None
        self._scope: anyio.CancelScope | None = None
        self._reported = False

    def wake(self) -> None:
        """The hub queued output or closed the connection (``HubRuntime`` calls it)."""
        self._wakeup.set()
        if self.connection.state is not State.OPEN:
            self._closing.set()

    def close(self, code: int, reason: str) -> None:
        """Close after what is queued (server shutdown)."""
        if self.connection.state is State.OPEN:
            self.connection.close(code, reason)
            self.wake()

    def abort(self) -> None:
        """Stop now: the shutdown deadline passed."""
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, accept: Message, announce: Callable[[], Awaitable[None]]) -> None:
        """Send the accept, announce the connection, serve it until it ends."""
        try:
            with anyio.CancelScope() as self._scope:
                try:
                    await self._send(accept)
                except Exception:  # the server cannot accept any more: the peer left
                    self._lost("connection lost during handshake")
                    return
                await announce()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._sender)
                    tg.start_soon(self._reader)
                    await self._closing.wait()
                    request = self.connection.close_request
                    if not self._ended.is_set() and request is not None:
                        if request.code == 1013:
                            # Failed, as the core fails a connection: the hub
                            # forgets it now; the close frame gets ``grace``.
                            await self._report()
                        timeout = self._grace if request.code == 1013 else self._timeout
                        with anyio.move_on_after(timeout):
                            await self._ended.wait()
                        if not self._ended.is_set():
                            log_conn(
                                logging.INFO,
                                self.conn_id,
                                "closing handshake not completed in %s s: leaving the transport"
                                " to the server",
                                timeout,
                            )
                    tg.cancel_scope.cancel()
        finally:
            self.connection.transport_closed()
            with anyio.CancelScope(shield=True), anyio.move_on_after(_REPORT_TIMEOUT):
                await self._report()

    async def _reader(self) -> None:
        receive = self._receive
        runtime = self.runtime
        conn_id = self.conn_id
        limit = self.max_message_size
        failed = False  # the hub raised: deliver nothing more (as the native server)
        while True:
            try:
                message = await receive()
            except Exception:  # not in the ASGI contract, but servers have bugs
                log_conn(logging.WARNING, conn_id, "receive failed", exc=True)
                self._lost("connection lost")
                return
            kind = message["type"]
            if kind == "websocket.receive":
                data: str | bytes | None = message.get("text")
                if data is None:
                    data = message.get("bytes")
                    if data is None:
                        continue
                if failed:
                    continue
                if _too_big(data, limit):
                    self.close(1009, "message too big")
                    continue
                try:
                    await runtime.receive(conn_id, data)
                except Exception:
                    log_conn(logging.ERROR, conn_id, "handling a message raised", exc=True)
                    failed = True
                    self.close(1011, "internal error")
            elif kind == "websocket.disconnect":
                code = message.get("code")
                self._ended_with(1005 if code is None else int(code), message.get("reason") or "")
                return

    async def _sender(self) -> None:
        connection = self.connection
        send = self._send
        try:
            while True:
                item = connection.pop()
                if item is None:
                    if connection.state is State.CLOSED:
                        return
                    await self._wakeup.wait()
                elif isinstance(item, str):
                    await send({"type": "websocket.send", "text": item})
                elif isinstance(item, CloseRequest):
                    await send(
                        {"type": "websocket.close", "code": item.code, "reason": item.reason}
                    )
                    return
                else:
                    await send({"type": "websocket.send", "bytes": item})
        except Exception:  # the server refuses to send: the peer is gone
            log_conn(logging.DEBUG, self.conn_id, "send failed", exc=True)
            self._lost("connection lost")

    def _lost(self, reason: str) -> None:
        self._ended_with(1006, reason)

    def _ended_with(self, code: int, reason: str) -> None:
        if self._disconnect is None:
            self._disconnect = (code, reason)
        self.connection.transport_closed()
        self._ended.set()
        self._closing.set()

    async def _report(self) -> None:
        """Tell the runtime how the connection ended (once)."""
        if self._reported:
            return
        self._reported = True
        request = self.connection.close_request
        disconnect = self._disconnect
        if request is not None:
            event = Closed(
                code=request.code,
                reason=request.reason,
                clean=disconnect is not None and disconnect[0] != 1006,
                initiator=Side.LOCAL,
            )
        elif disconnect is not None:
            code, reason = disconnect
            event = Closed(code=code, reason=reason, clean=code != 1006, initiator=Side.REMOTE)
        else:  # cancelled from outside before either side closed
            event = Closed(code=1006, reason="connection dropped", initiator=Side.LOCAL)
        await self.runtime.closed(self.conn_id, event)


def _too_big(data: str | bytes, limit: int) -> bool:
    """More than ``limit`` bytes (UTF-8 for text), encoding only when in doubt."""
    if isinstance(data, bytes):
        return len(data) > limit
    n = len(data)
    if n > limit:
        return True
    if 4 * n <= limit or data.isascii():
        return False
    return len(data.encode("utf-8", "surrogatepass")) > limit
