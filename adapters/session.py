"""One server-side connection as the application sees it: ``ServerSession``.

Sending never blocks: the core queues the frame in its bounded outbox and the
connection's writer task drains it, so any task of the event loop may send
(a broadcast loop, a timer, another connection's handler). A peer too slow to
keep its outbox under ``Limits.max_outbox_size`` is closed with 1013 and the
send returns False.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
from anyio.abc import ByteStream

from ..core import (
    BinaryMessage,
    Closed,
    ConnectionClosedError,
    Event,
    HandshakeRequest,
    HttpRequest,
    Opened,
    Pong,
    PreparedMessage,
    ServerConnection,
    State,
    TextMessage,
)
from ..core.auth import Denial
from ..core.server import HOST_REFUSED
from ._driver import Driver
from ._pings import PongWaiters
from ._scheduler import Scheduler
from ._socket_driver import SocketDriver
from .handler import Accept, Handler, HttpResponse

if TYPE_CHECKING:
    from ..core.auth import Principal

__all__ = ["ServerSession"]

logger = logging.getLogger("wshub.server")

_MESSAGES = (TextMessage, BinaryMessage)  # a tuple: isinstance takes it faster than a union
_CLOSE_HOOK_TIMEOUT = 5.0  # on_close after an abort runs shielded, but not forever


class ServerSession:
    """A server connection: identity, non-blocking sends, closing, completion."""

    __slots__ = (
        "_done",
        "_driver",
        "_failed",
        "_finished",
        "_handler",
        "_opened",
        "_pongs",
        "closed_event",
        "core",
        "id",
        "remote",
    )

    def __init__(
        self,
        core: ServerConnection,
        transport: ByteStream | socket.socket,
        handler: Handler,
        *,
        remote: tuple[str, int] | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.id: str = secrets.token_hex(8)
        self.remote = remote
        self.core = core
        self.closed_event: Closed | None = None
        self._handler = handler
        self._opened = False
        self._failed = False  # a hook raised: stop delivering messages
        self._done: anyio.Event | None = None  # created by the first wait_closed
        self._finished = False  # Closed dispatched and the transport is done
        self._pongs: PongWaiters | None = None  # made by the first ping()
        self._driver: Driver | SocketDriver
        if isinstance(transport, socket.socket):
            if scheduler is None:
                raise ValueError("a socket connection needs the server's scheduler")
            self._driver = SocketDriver(
                core,
                transport,
                self._dispatch,
                scheduler=scheduler,
                logger=logger,
                name=self.id,
                dispatch_nowait=self._dispatch_nowait,
            )
        else:
            self._driver = Driver(core, transport, self._dispatch, logger=logger, name=self.id)

    def __repr__(self) -> str:
        return f"<ServerSession {self.id} {self.remote} {self.core.state.name}>"

    # -- identity --------------------------------------------------------

    @property
    def principal(self) -> Principal | object:
        """What ``on_handshake`` passed in ``Accept(principal=...)``."""
        return self.core.principal

    @property
    def request(self) -> HandshakeRequest | None:
        """The upgrade request (None for plain HTTP requests)."""
        return self.core.request

    @property
    def subprotocol(self) -> str | None:
        return self.core.subprotocol

    @property
    def is_open(self) -> bool:
        return self.core.state is State.OPEN

    # -- sending ---------------------------------------------------------

    def send_text(self, text: str) -> bool:
        """Queue a text message. False if it was not queued: closing, closed or overflow."""
        try:
            ok = self.core.send_text(text)
        except ConnectionClosedError:
            return False
        self._driver.notify()
        return ok

    def send_binary(self, data: bytes) -> bool:
        """Queue a binary message. False if it was not queued: closing, closed or overflow."""
        try:
            ok = self.core.send_binary(data)
        except ConnectionClosedError:
            return False
        self._driver.notify()
        return ok

    def send_prepared(self, message: PreparedMessage) -> bool:
        """Queue a message framed once for many sessions (see ``PreparedMessage``)."""
        try:
            ok = self.core.send_prepared(message)
        except ConnectionClosedError:
            return False
        self._driver.notify()
        return ok

    async def ping(self, payload: bytes | None = None) -> float:
        """Ping the client; the round-trip time in seconds once its pong came.

        Raises ``ConnectionClosedError`` if the connection is or gets closed
        before the pong (see ``Connection.send_ping`` for the payload's rules).
        """
        payload = self.core.send_ping(payload)
        self._driver.notify()
        if self._pongs is None:
            self._pongs = PongWaiters()
        return await self._pongs.wait(payload)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; ``wait_closed`` waits for its end."""
        self.core.close(code, reason)
        self._driver.notify()

    def notify(self) -> None:
        """Wake the writer after other code queued bytes on ``core`` directly."""
        self._driver.notify()

    @property
    def waker(self) -> Callable[[], None]:
        """``notify`` without the hop through the session: what a hub calls
        once per message queued on this connection, so the cheaper the better."""
        return self._driver.notify

    def abort(self) -> None:
        """Drop the transport now, without flushing or waiting for the peer.

        For peers that stopped reading: after a 1013 close they would hold the
        connection until ``close_timeout``.
        """
        self._driver.abort()

    async def wait_closed(self) -> Closed:
        """Wait until the connection is over (Closed dispatched, transport done)."""
        if not self._finished:
            if self._done is None:
                self._done = anyio.Event()
            await self._done.wait()
        assert self.closed_event is not None
        return self.closed_event

    # -- driving (called by the server) ----------------------------------

    async def _run(self) -> None:
        try:
            await self._driver.run()
        finally:
            if self.closed_event is None:
                # Aborted (shutdown or cancellation) before the core reported
                # the end: report it ourselves so on_close always runs.
                self.core.receive_eof()
                with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_HOOK_TIMEOUT):
                    for event in self.core.events_received():
                        await self._dispatch(event)
            self._finished = True
            if self._done is not None:
                self._done.set()

    def _shutdown(self, code: int, reason: str) -> None:
        """Server stopping: close open connections, answer pending ones with 503."""
        state = self.core.state
        if state is State.OPEN:
            self.close(code, reason)
        elif state is State.DECIDING:
            self.core.reject(503, reason)
            self._driver.notify()
        elif state is State.CONNECTING:
            self.core.refuse(503, reason)
            self._driver.notify()

    def _dispatch_nowait(self, event: Event) -> Awaitable[None] | None:
        """Hand a message to the handler at once; what is left to await, if anything.

        Other events (open, close, handshake, HTTP) are always awaited.
        """
        if isinstance(event, _MESSAGES):
            if self._failed:
                return None
            try:
                rest = self._handler.on_message_nowait(self, event.data)
            except Exception:
                self._hook_failed("on_message")
                return None
            return None if rest is None else self._finish_message(rest)
        return self._dispatch(event)

    async def _finish_message(self, rest: Awaitable[None]) -> None:
        try:
            await rest
        except Exception:
            self._hook_failed("on_message")

    async def _dispatch(self, event: Event) -> None:
        if isinstance(event, _MESSAGES):
            rest = self._dispatch_nowait(event)
            if rest is not None:
                await rest
        elif isinstance(event, Opened):
            self._opened = True
            try:
                await self._handler.on_open(self)
            except Exception:
                self._hook_failed("on_open")
        elif isinstance(event, Pong):
            if self._pongs is not None:
                self._pongs.resolve(event)
        elif isinstance(event, Closed):
            self.closed_event = event
            if self._pongs is not None:
                self._pongs.fail_all(lambda: ConnectionClosedError("connection closed"))
            if self._opened:
                try:
                    await self._handler.on_close(self, event)
                except Exception:
                    logger.exception("connection %s: on_close raised", self.id)
            elif event.reason == HOST_REFUSED:
                # Logged like Origin and token refusals (which the hub logs).
                logger.info(
                    "connection %s: refused: %s (from %s)", self.id, event.reason, self.remote
                )
        elif isinstance(event, HandshakeRequest):
            await self._decide(event)
        elif isinstance(event, HttpRequest):
            await self._answer_http(event)

    def _hook_failed(self, hook: str) -> None:
        logger.exception("connection %s: %s raised; closing with 1011", self.id, hook)
        self._failed = True
        if self.core.state is State.OPEN:
            self.close(1011, "internal error")

    async def _decide(self, request: HandshakeRequest) -> None:
        core = self.core
        try:
            decision = await self._handler.on_handshake(self, request)
        except Exception:
            logger.exception("connection %s: on_handshake raised", self.id)
            decision = Denial(500, "internal error")
        if core.state is not State.DECIDING:
            return  # timed out or shut down meanwhile: already answered
        if isinstance(decision, Accept):
            try:
                core.accept(
                    decision.principal, subprotocol=decision.subprotocol, headers=decision.headers
                )
                return
            except Exception:
                logger.exception("connection %s: invalid Accept %r", self.id, decision)
                decision = Denial(500, "internal error")
        elif not isinstance(decision, Denial):
            logger.error("connection %s: on_handshake returned %r", self.id, decision)
            decision = Denial(500, "internal error")
        try:
            core.reject(decision.status, decision.reason, headers=decision.headers)
        except Exception:
            logger.exception("connection %s: invalid Denial %r", self.id, decision)
            core.reject(500, "internal error")

    async def _answer_http(self, request: HttpRequest) -> None:
        core = self.core
        try:
            response = await self._handler.on_http(self, request)
        except Exception:
            logger.exception("connection %s: on_http raised", self.id)
            response = HttpResponse(500, (), b"internal error")
        if core.state is not State.DECIDING:
            return
        try:
            core.respond(response.status, headers=response.headers, body=response.body)
        except Exception:
            logger.exception("connection %s: invalid HttpResponse %r", self.id, response)
            core.respond(500, body=b"internal error")
