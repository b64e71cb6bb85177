"""What the server asks of the application: a base class with overridable hooks.

Subclass ``Handler`` and override what you need; every hook is async so it
may consult a database or a remote service. The server never lets a hook's
exception escape: it is logged (logger ``wshub.server``) and turned into an
HTTP 500 (handshake, plain HTTP) or a close with 1011 (after the handshake).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core import Closed, HandshakeRequest, HttpRequest
from ..core.auth import Denial

if TYPE_CHECKING:
    from .session import ServerSession

__all__ = ["Accept", "Handler", "HttpResponse"]

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Accept:
    """Complete the upgrade: who the peer is, the subprotocol chosen, extra headers.

    ``subprotocol`` must be one the client offered (or None).
    """

    principal: object = None
    subprotocol: str | None = None
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete answer to a plain HTTP request on the WebSocket port."""

    status: int
    headers: Headers = ()
    body: bytes = b""


_UPGRADE_REQUIRED = HttpResponse(426, (("Upgrade", "websocket"),), b"Upgrade Required")
_HEALTHY = HttpResponse(200, (), b"ok")


class Handler:
    """Application hooks, called in order for each connection.

    ``on_open``, ``on_message`` and ``on_close`` of one connection never run
    concurrently, and messages arrive in order. ``on_close`` is called once
    for every connection that was opened (never for refused handshakes or
    plain HTTP requests), whatever ended it.
    """

    def __init_subclass__(cls, **kwargs: object) -> None:
        """A subclass that overrides ``on_message`` alone gets it called, even
        if a parent answers in ``on_message_nowait`` (EchoHandler does)."""
        super().__init_subclass__(**kwargs)
        if "on_message" in vars(cls) and "on_message_nowait" not in vars(cls):
            cls.on_message_nowait = Handler.on_message_nowait  # type: ignore[method-assign]

    async def on_handshake(
        self,
        session: ServerSession,  # noqa: ARG002 - a default, to override
        request: HandshakeRequest,  # noqa: ARG002
    ) -> Accept | Denial:
        """Decide on an upgrade request. The default accepts everyone: override it."""
        return Accept()

    async def on_http(
        self,
        session: ServerSession,  # noqa: ARG002 - a default, to override
        request: HttpRequest,
    ) -> HttpResponse:
        """Answer a plain HTTP request: ``GET /healthz`` is 200, the rest 426."""
        if request.method == "GET" and request.path == "/healthz":
            return _HEALTHY
        return _UPGRADE_REQUIRED

    async def on_open(self, session: ServerSession) -> None:
        """The handshake completed; ``session`` may send."""

    async def on_message(self, session: ServerSession, message: str | bytes) -> None:
        """A whole message: ``str`` for text frames, ``bytes`` for binary ones."""

    def on_message_nowait(
        self, session: ServerSession, message: str | bytes
    ) -> Awaitable[None] | None:
        """Start handling a message without waiting; return what is left to await.

        The server calls this for every message, on plain TCP straight from
        the event loop's read callback: a handler that can answer at once
        (an echo, a hub routing an envelope) returns None and the message
        costs no task switch. Return an awaitable for work that must wait;
        the connection's next message is handled once it is done. The
        default hands everything to ``on_message``.
        """
        return self.on_message(session, message)

    async def on_close(self, session: ServerSession, event: Closed) -> None:
        """The connection is over; ``event`` says how it ended."""
