"""Events the hub hands to its driver: frozen, slotted, keyword-only.

The hub decides everything it can by itself (routing, subscriptions,
errors); these events are what needs the application: running a command,
handling binary data, reacting to presence or to a client's publish.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .auth import Principal
from .envelope import RequestId

__all__ = [
    "AuthRequest",
    "BinaryReceived",
    "CommandExpired",
    "CommandRequest",
    "HubEvent",
    "PresenceChanged",
    "Published",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthRequest:
    """A client sent an ``auth`` message: verify ``token``.

    The driver verifies it (the same way as a handshake token) before feeding
    the connection's next message, then calls ``Hub.authenticate`` with the
    principal or ``Hub.reject_auth``. ``refresh`` is False for a connection
    still waiting for its first credentials and True for an open one renewing
    an expiring token.
    """

    conn_id: str
    token: str
    request_id: RequestId | None
    refresh: bool
    deadline: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRequest:
    """A client invoked a registered command it is allowed to run.

    The driver runs the handler, then calls ``Hub.reply`` or
    ``Hub.reply_error`` exactly once; ``deadline`` (on the hub's monotonic
    clock) is when the hub answers ``command_timeout`` itself.
    """

    conn_id: str
    request_id: RequestId
    name: str
    payload: Any
    principal: Principal
    deadline: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandExpired:
    """A command's deadline passed: the client got ``command_timeout``;
    the driver should cancel the handler (its late reply would be discarded)."""

    conn_id: str
    request_id: RequestId
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BinaryReceived:
    """A binary message, for a hub configured with ``accept_binary``."""

    conn_id: str
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceChanged:
    """A connection joined or left a topic that has presence enabled."""

    topic: str
    conn_id: str
    principal_id: str
    joined: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Published:
    """A client published to a topic (already delivered to its subscribers);
    reported so the application can log, persist or relay it."""

    conn_id: str
    topic: str
    seq: int
    payload: Any
    delivered: int


HubEvent = (
    AuthRequest | CommandRequest | CommandExpired | BinaryReceived | PresenceChanged | Published
)
