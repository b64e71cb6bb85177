"""Events the core reports to its driver: frozen, slotted, keyword-only."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "BinaryMessage",
    "Closed",
    "Event",
    "HandshakeRequest",
    "HttpRequest",
    "Opened",
    "Pong",
    "Rejected",
    "Side",
    "TextMessage",
]

Headers = tuple[tuple[str, str], ...]


class Side(Enum):
    """Which end started the closing of a connection."""

    LOCAL = "local"
    REMOTE = "remote"


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeRequest:
    """A well-formed WebSocket upgrade request, waiting for accept or reject.

    Header names are lower-cased; values are decoded as latin-1 (RFC 9110
    allows only visible ASCII, so nothing is lost for valid requests).
    """

    method: str
    path: str
    query: str
    host: str
    headers: Headers
    origin: str | None
    subprotocols: tuple[str, ...]
    extensions: tuple[str, ...]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        key = name.lower()
        for hname, value in self.headers:
            if hname == key:
                return value
        return None

    def __repr__(self) -> str:
        # Requests get logged; their credentials must not be.
        from .redact import redact_headers, redact_query, redact_subprotocols

        return (
            f"HandshakeRequest(method={self.method!r}, path={self.path!r}, "
            f"query={redact_query(self.query)!r}, host={self.host!r}, "
            f"headers={redact_headers(self.headers)!r}, origin={self.origin!r}, "
            f"subprotocols={redact_subprotocols(self.subprotocols)!r}, "
            f"extensions={self.extensions!r})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequest:
    """A plain HTTP request (not an upgrade) on the WebSocket port.

    The driver answers it with ``ServerConnection.respond``.
    """

    method: str
    path: str
    query: str
    headers: Headers

    def __repr__(self) -> str:
        from .redact import redact_headers, redact_query

        return (
            f"HttpRequest(method={self.method!r}, path={self.path!r}, "
            f"query={redact_query(self.query)!r}, headers={redact_headers(self.headers)!r})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Opened:
    """The opening handshake completed; messages may flow."""

    subprotocol: str | None
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """Client side: the server answered the upgrade with a plain HTTP response."""

    status: int
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class TextMessage:
    """A whole text message: reassembled, UTF-8 validated, within the size limit."""

    data: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BinaryMessage:
    """A whole binary message: reassembled, within the size limit."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong:
    """The answer to a ping the application sent (``Connection.send_ping``).

    ``rtt``: seconds from queueing the ping to receiving this pong, on the
    connection's clock (so it includes the time the ping waited in the outbox).
    Keepalive pings, which the connection sends by itself, report nothing.
    """

    payload: bytes
    rtt: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Closed:
    """The connection is over; always the last event, reported exactly once.

    ``code`` is the close code the peer sent when a close frame was received,
    otherwise the code we sent when we failed the connection (1002, 1007,
    1009, 1011, 1013...), otherwise 1006 (transport lost without a close
    frame). ``clean`` is True when the ending was orderly (completed close
    handshake, or an HTTP exchange answered in full). ``initiator`` says
    which side started the ending.
    """

    code: int
    reason: str = ""
    clean: bool = False
    initiator: Side = field(default=Side.REMOTE)


Event = (
    HandshakeRequest | HttpRequest | Opened | Rejected | TextMessage | BinaryMessage | Pong | Closed
)
