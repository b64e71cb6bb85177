"""A hub connection for servers that frame messages themselves (ASGI).

Under an ASGI server the application hands over whole messages and the
server frames (and compresses) each one, so the hub's frame-once broadcast
cannot apply: ``OutboxConnection`` keeps the hub's encode-once instead. Each
connection queues the encoded messages in a bounded outbox, counted in the
bytes of the frames they become, with the slow-consumer rule of
``ServerConnection``: a message that would push a non-empty outbox past
``Limits.max_outbox_size`` drops what is queued and closes with 1013. The
driver takes messages with ``pop`` and hands them to the server, one at a
time, as fast as the server takes them.

Pure, like the rest of the core: no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .connection import State, validate_close
from .errors import ConnectionClosedError
from .frames import Opcode, PreparedMessage
from .limits import Limits

__all__ = ["CloseRequest", "OutboxConnection", "TextCache", "frame_size"]


def frame_size(payload_length: int) -> int:
    """Bytes of an unmasked, uncompressed frame with this payload (RFC 6455 §5.2)."""
    if payload_length < 126:
        return payload_length + 2
    if payload_length < 1 << 16:
        return payload_length + 4
    return payload_length + 10


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """What ``pop`` returns once the outbox is drained after ``close``."""

    code: int
    reason: str


class TextCache:
    """The text of the last few messages, decoded once for all connections.

    A broadcast hands the same ``PreparedMessage`` to every connection in
    turn; ASGI wants a ``str`` for a text message, so the UTF-8 payload is
    decoded on the first connection and the same ``str`` object is queued on
    the others. Holds ``size`` messages at most.
    """

    __slots__ = ("_recent",)

    def __init__(self, size: int = 4) -> None:
        self._recent: deque[tuple[PreparedMessage, str]] = deque(maxlen=size)

    def text(self, message: PreparedMessage) -> str:
        for known, text in self._recent:
            if known is message:
                return text
        text = message.payload.decode("utf-8")
        self._recent.append((message, text))
        return text


class OutboxConnection:
    """A connection's state and bounded outbox of whole messages (``HubConnection``).

    ``OPEN`` until ``close`` (``CLOSING``: the queued messages, then the
    close, are still to be handed over) or until the driver reports the end
    with ``transport_closed`` (``CLOSED``).
    """

    __slots__ = ("_close", "_close_taken", "_queue", "_size", "_state", "_texts", "limits")

    def __init__(self, *, limits: Limits | None = None, texts: TextCache | None = None) -> None:
        self.limits = limits or Limits()
        self._texts = texts or TextCache()
        self._state = State.OPEN
        self._queue: deque[tuple[str | bytes, int]] = deque()
        self._size = 0
        self._close: CloseRequest | None = None
        self._close_taken = False

    def __repr__(self) -> str:
        return f"<OutboxConnection {self._state.name} {len(self._queue)} queued, {self._size} B>"

    # -- what the hub uses ---------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def outbox_size(self) -> int:
        """Frame bytes of the messages queued and not yet popped."""
        return self._size

    @property
    def deflate(self) -> None:
        """Compression is the server's business: the hub sizes plain frames."""
        return None

    def send_prepared(self, message: PreparedMessage) -> bool:
        """Queue a message; False if it overflowed the outbox (then closed 1013)."""
        if self._state is not State.OPEN:
            raise ConnectionClosedError(f"cannot send: connection is {self._state.name}")
        data: str | bytes
        if message.opcode is Opcode.TEXT:
            data = self._texts.text(message)
        else:
            data = message.payload
        size = frame_size(len(message.payload))
        if self._size and self._size + size > self.limits.max_outbox_size:
            self._queue.clear()
            self._size = 0
            self.close(1013, "slow consumer")
            return False
        self._queue.append((data, size))
        self._size += size
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close after the messages already queued; nothing if closing or closed."""
        validate_close(code, reason)
        if self._state is not State.OPEN:
            return
        self._state = State.CLOSING
        self._close = CloseRequest(code, reason)

    # -- what the driver uses ------------------------------------------------

    @property
    def close_request(self) -> CloseRequest | None:
        """The close this side asked for, if any (kept after ``pop`` took it)."""
        return self._close

    def pop(self) -> str | bytes | CloseRequest | None:
        """The next message, then the close once drained; None when nothing is due."""
        if self._queue:
            data, size = self._queue.popleft()
            self._size -= size
            return data
        if self._close is not None and not self._close_taken and self._state is State.CLOSING:
            self._close_taken = True
            return self._close
        return None

    def transport_closed(self) -> None:
        """The server reported the end (disconnect): nothing more will be sent."""
        self._state = State.CLOSED
        self._queue.clear()
        self._size = 0
