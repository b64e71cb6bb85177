"""Exceptions raised by the adapters' client."""

from __future__ import annotations

from ..core import Closed, WsHubError

__all__ = ["ConnectionClosed", "HandshakeError", "HandshakeRejected"]

Headers = tuple[tuple[str, str], ...]


class HandshakeError(WsHubError):
    """The opening handshake failed (invalid response, connection lost, timeout)."""


class HandshakeRejected(HandshakeError):
    """The server answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        super().__init__(f"server rejected the WebSocket handshake with HTTP {status}")
        self.status = status
        self.headers = headers
        self.body = body


class ConnectionClosed(WsHubError):
    """The connection is over; ``event`` says how (code, reason, clean, initiator)."""

    def __init__(self, event: Closed) -> None:
        super().__init__(f"connection closed: {event.code} {event.reason!r}")
        self.event = event

    @property
    def code(self) -> int:
        return self.event.code

    @property
    def reason(self) -> str:
        return self.event.reason
