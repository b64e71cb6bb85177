"""wshub's sans-IO core: WebSocket connections as pure state machines.

Nothing in this package performs I/O or reads the clock: time and randomness
are parameters, so every protocol decision can be tested deterministically.
docs/core.md is the guide: driving a connection by hand, timers, limits,
closing, pings, the hub, and an event loop of your own.
"""

from .auth import AccessPolicy, Denial, Principal, StaticTokens, TokenRejection, Verifier
from .client import ClientConnection
from .connection import Connection, State
from .deflate import DeflateParams
from .envelope import Codec, ErrorCode, JsonCodec
from .errors import ConnectionClosedError, LocalProtocolError, WsHubError
from .events import (
    BinaryMessage,
    Closed,
    Event,
    HandshakeRequest,
    HttpRequest,
    Opened,
    Pong,
    Rejected,
    Side,
    TextMessage,
)
from .frames import Opcode, PreparedMessage
from .hosts import is_loopback, loopback_hosts
from .hub import Hub
from .hub_config import HubConfig
from .hub_events import (
    BinaryReceived,
    CommandExpired,
    CommandRequest,
    HubEvent,
    PresenceChanged,
    Published,
)
from .hub_stats import HubStats, prometheus_text
from .limits import Limits
from .ratelimit import KeyedLimiter, TokenBucket
from .registry import Admission, ConnectionInfo, HubConnection
from .server import ServerConnection
from .tokens import SignedTokens
from .topics import TopicPolicy

__all__ = [
    "AccessPolicy",
    "Admission",
    "BinaryMessage",
    "BinaryReceived",
    "ClientConnection",
    "Closed",
    "Codec",
    "CommandExpired",
    "CommandRequest",
    "Connection",
    "ConnectionClosedError",
    "ConnectionInfo",
    "DeflateParams",
    "Denial",
    "ErrorCode",
    "Event",
    "HandshakeRequest",
    "HttpRequest",
    "Hub",
    "HubConfig",
    "HubConnection",
    "HubEvent",
    "HubStats",
    "JsonCodec",
    "KeyedLimiter",
    "Limits",
    "LocalProtocolError",
    "Opcode",
    "Opened",
    "Pong",
    "PreparedMessage",
    "PresenceChanged",
    "Principal",
    "Published",
    "Rejected",
    "ServerConnection",
    "Side",
    "SignedTokens",
    "State",
    "StaticTokens",
    "TextMessage",
    "TokenBucket",
    "TokenRejection",
    "TopicPolicy",
    "Verifier",
    "WsHubError",
    "is_loopback",
    "loopback_hosts",
    "prometheus_text",
]
