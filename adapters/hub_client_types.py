"""What a ``HubClient`` hands to its application: messages, signals, errors.

Kept apart from the client so handlers and type annotations can import them
without the I/O. Events are frozen dataclasses; states and reasons are enums;
every failure is a ``HubClientError`` subclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..core import WsHubError

__all__ = [
    "CallError",
    "CallTimeout",
    "ClientClosed",
    "ConnectionLost",
    "ConnectionState",
    "Gap",
    "GapReason",
    "GaveUp",
    "History",
    "HubClientError",
    "Message",
    "Presence",
    "Refused",
    "ServerMessage",
    "StateChange",
    "StreamPosition",
    "Unrecovered",
]


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A place in a topic's stream: a ``seq`` means something only with its ``epoch``."""

    seq: int
    epoch: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """A message published on a topic, delivered once, in ``seq`` order.

    ``epoch`` is the stream's epoch as the server last announced it (None
    from a server without epochs); ``message_type`` is ``"message"`` unless
    the server published with another type.
    """

    topic: str
    seq: int
    epoch: str | None
    payload: Any
    timestamp: int
    message_type: str = "message"

    @property
    def position(self) -> StreamPosition | None:
        """Where to resume after this message (``subscribe(..., since=...)``)."""
        return None if self.epoch is None else StreamPosition(self.seq, self.epoch)


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    """A ``history`` answer: where the stream stands (``seq``, ``epoch``), whether
    ``since`` was recovered (None when none was asked), and kept messages, oldest first."""

    topic: str
    seq: int
    epoch: str | None
    recovered: bool | None
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerMessage:
    """A broadcast or direct message (anything that is not a topic message,
    a reply or a protocol notice); ``envelope`` is the whole decoded object."""

    message_type: str
    payload: Any
    timestamp: int
    envelope: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Presence:
    """A connection joined or left a topic with presence enabled."""

    topic: str
    joined: bool
    conn_id: str
    principal: str


class GapReason(Enum):
    """Why messages of a topic are missing."""

    EPOCH_CHANGED = "epoch_changed"  # the stream restarted (server restart, history lost)
    NOT_RECOVERED = "not_recovered"  # same epoch, but history no longer reaches back
    NO_RECOVERY = "no_recovery"  # a server without epochs (no recovery), and its seq moved
    SEQ_GAP = "seq_gap"  # a live stream skipped seqs (e.g. ``dropped`` on a drop topic)


@dataclass(frozen=True, slots=True, kw_only=True)
class Gap:
    """Messages of ``topic`` between ``last`` (the last one delivered) and
    ``resumed_at`` (the stream goes on after it) will never be delivered."""

    topic: str
    reason: GapReason
    last_seq: int | None
    last_epoch: str | None
    resumed_at: int
    epoch: str | None

    @property
    def epoch_changed(self) -> bool:
        return self.reason is GapReason.EPOCH_CHANGED

    @property
    def missed(self) -> int | None:
        """How many messages are lost, when the count is known (same epoch)."""
        if self.reason is GapReason.EPOCH_CHANGED or self.last_seq is None:
            return None
        return max(0, self.resumed_at - self.last_seq)


class ConnectionState(Enum):
    CONNECTING = "connecting"  # an attempt is under way
    OPEN = "open"  # welcomed; topics resubscribed; calls go out
    DISCONNECTED = "disconnected"  # an open connection ended (``code``, ``reason``)
    RECONNECTING = "reconnecting"  # waiting ``delay`` seconds before the next attempt
    CLOSED = "closed"  # for good: closed by the application, refused, or gave up (``error``)


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChange:
    """One transition of the client's connection; fields that do not apply are None."""

    state: ConnectionState
    attempt: int = 0  # consecutive attempts since the last success (CONNECTING, RECONNECTING)
    delay: float | None = None  # RECONNECTING
    code: int | None = None  # close code, or HTTP status of a refused upgrade
    reason: str = ""
    error: BaseException | None = None  # what failed (RECONNECTING, CLOSED)
    conn_id: str | None = None  # OPEN
    principal: str | None = None  # OPEN


class HubClientError(WsHubError):
    """Base of the hub client's errors."""


class CallError(HubClientError):
    """A request failed; ``code`` is the server's stable error code
    (docs/protocol.md) or one of the client's own: ``timeout``,
    ``connection_lost``."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class CallTimeout(CallError, TimeoutError):
    """No reply within the call's timeout (which includes waiting for a connection)."""

    def __init__(self, message: str = "no reply in time") -> None:
        super().__init__("timeout", message)


class ConnectionLost(CallError):
    """The connection ended after the request was sent and before its reply:
    the server may or may not have acted on it, so it is not sent again."""

    def __init__(self, message: str = "connection lost before the reply") -> None:
        super().__init__("connection_lost", message)


class Refused(HubClientError):
    """The server refused the credentials or the connection (HTTP 401/403, close
    4401/4403/1008) and the token callback had no other token: not retried."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"refused by the server: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class GaveUp(HubClientError):
    """``Backoff.max_attempts`` consecutive attempts failed; ``last`` is the last error."""

    def __init__(self, attempts: int, last: BaseException | None) -> None:
        super().__init__(f"gave up after {attempts} attempt(s): {last}")
        self.attempts = attempts
        self.last = last


class ClientClosed(HubClientError):
    """The client was closed by the application."""

    def __init__(self) -> None:
        super().__init__("the hub client is closed")


class Unrecovered(HubClientError):
    """Raised by a subscription's iterator at the place of a gap that could not
    be filled; the iteration may go on after it (the stream resumed)."""

    def __init__(self, gap: Gap) -> None:
        what = "epoch changed" if gap.epoch_changed else gap.reason.value
        super().__init__(f"topic {gap.topic!r}: messages lost ({what})")
        self.gap = gap

    @property
    def topic(self) -> str:
        return self.gap.topic

    @property
    def epoch_changed(self) -> bool:
        return self.gap.epoch_changed
