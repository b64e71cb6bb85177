"""wshub's sans-IO core: WebSocket connections as pure state machines.

Nothing in this package performs I/O or reads the clock; see DESIGN.md.
"""

from .client import ClientConnection
from .connection import Connection, State
from .deflate import DeflateParams
from .errors import ConnectionClosedError, LocalProtocolError, WsHubError
from .events import (
    BinaryMessage,
    Closed,
    Event,
    HandshakeRequest,
    HttpRequest,
    Opened,
    Rejected,
    Side,
    TextMessage,
)
from .frames import Opcode, PreparedMessage
from .limits import Limits
from .server import ServerConnection

__all__ = [
    "BinaryMessage",
    "ClientConnection",
    "Closed",
    "Connection",
    "ConnectionClosedError",
    "DeflateParams",
    "Event",
    "HandshakeRequest",
    "HttpRequest",
    "Limits",
    "LocalProtocolError",
    "Opcode",
    "Opened",
    "PreparedMessage",
    "Rejected",
    "ServerConnection",
    "Side",
    "State",
    "TextMessage",
    "WsHubError",
]
