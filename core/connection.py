"""The per-connection WebSocket state machine shared by server and client.

Sans-IO in the manner of h11: bytes in (``receive_data``), events out
(``events_received``), bytes to write out (``data_to_send``), timers driven by
the caller (``next_deadline`` / ``handle_timer``). The clock and the random
source are constructor parameters; nothing here reads the system clock.

Received frames are decoded by the ``FrameReader`` part (``frame_reader``);
frames are written by ``frames.encode_frame``. Because output is buffered
here, the machine answers pings, echoes closes and sends close frames on
protocol errors by itself. States and transitions are in ``state``, close
codes in ``close_codes``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import ClassVar

from .close_codes import truncate_reason, validate_close
from .deflate import DeflateParams, compress_message
from .errors import ConnectionClosedError, LocalProtocolError
from .events import Closed, Event, Opened, Pong, Side
from .frame_reader import FrameReader
from .frames import Opcode, PreparedMessage, encode_frame
from .limits import Limits
from .ratelimit import TokenBucket
from .state import TRANSITIONS as _TRANSITIONS
from .state import State

__all__ = [
    "MAX_PINGS_OUTSTANDING",
    "Clock",
    "Connection",
    "RandomSource",
    "State",
    "validate_close",
]

Clock = Callable[[], float]
RandomSource = Callable[[int], bytes]

MAX_PINGS_OUTSTANDING = 16
"""Application pings awaiting their pong (``Connection.send_ping``)."""


class Connection(FrameReader):
    """State, output buffer, frames, keepalive and closing; subclasses add handshakes."""

    is_client: ClassVar[bool] = False

    # Slots keep an idle connection small (a 30-attribute instance dict is
    # ~1.3 KB); "__dict__" still lets subclasses and tests add attributes.
    __slots__ = (
        "__dict__",
        "_clock",
        "_close_deadline",
        "_close_transport",
        "_closed_cleanly",
        "_deflate",
        "_eof",
        "_events",
        "_handshake_deadline",
        "_last_receive",
        "_msg_size",
        "_next_ping",
        "_out",
        "_out_size",
        "_ping_bucket",
        "_ping_payload",
        "_pings",
        "_pong_deadline",
        "_random",
        "_raw_idx",
        "_state",
        "bytes_queued",
        "bytes_received",
        "limits",
        "subprotocol",
    )

    def __init__(self, *, limits: Limits, clock: Clock, random: RandomSource = os.urandom) -> None:
        self.limits = limits
        self._clock = clock
        self._random = random
        self._state = State.CONNECTING
        self._events: list[Event] = []
        self._out: list[bytes] = []
        self._out_size = 0  # every byte waiting in _out
        self._msg_size = 0  # the part of it made of messages (subject to the cap)
        self._raw_idx: list[int] = []  # positions in _out of handshake bytes / close frames
        self._close_transport = False
        self._closed_cleanly = False  # a close frame went each way
        self._eof = False
        self._reset_input()
        self._deflate: DeflateParams | None = None
        now = clock()
        self._last_receive = now
        self._handshake_deadline: float | None = now + limits.handshake_timeout
        self._next_ping: float | None = None
        self._pong_deadline: float | None = None
        self._ping_payload = b""
        self._ping_bucket: TokenBucket | None = None  # the peer's ping budget, at its first ping
        self._pings: dict[bytes, float] | None = None  # the application's, by payload: sent at
        self._close_deadline: float | None = None
        self.subprotocol: str | None = None
        self.bytes_received = 0
        self.bytes_queued = 0

    # -- state -----------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def deflate(self) -> DeflateParams | None:
        """The negotiated permessage-deflate parameters, if any."""
        return self._deflate

    def _transition(self, new: State) -> None:
        if new not in _TRANSITIONS[self._state]:  # pragma: no cover - a bug, not an input
            raise AssertionError(f"illegal transition {self._state.name} -> {new.name}")
        self._state = new

    # -- I/O surface -----------------------------------------------------

    def events_received(self) -> list[Event]:
        """Events since the last call, in order."""
        events = self._events
        if not events:
            return []
        self._events = []
        return events

    def data_to_send(self) -> bytes:
        """Bytes the transport must write now, in order (may be empty)."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        self._raw_idx.clear()
        self._out_size = self._msg_size = 0
        return data

    def should_close_transport(self) -> bool:
        """True once the transport must be closed after writing ``data_to_send``."""
        return self._close_transport

    def should_drain_before_close(self) -> bool:
        """Once ``should_close_transport``: end only our side of the transport and
        read (and drop) what the peer still sends until it ends its side, rather
        than close at once.

        False only for a server whose closing handshake completed: it "MUST
        close the underlying TCP connection immediately" (RFC 6455 §7.1.1), and
        the peer, having sent its close frame, sends nothing more. A client
        waits for the server to close first; after a failure, an HTTP error or
        a lost peer, draining lets the peer read our last bytes before our
        kernel would answer its further data with a reset.
        """
        return self.is_client or not self._closed_cleanly

    @property
    def outbox_size(self) -> int:
        """Bytes queued and not yet taken by ``data_to_send``."""
        return self._out_size

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the transport. Never raises on peer input."""
        if self._eof or self._state is State.CLOSED or not data:
            return
        self.bytes_received += len(data)
        self._last_receive = self._clock()
        if self._state in (State.CONNECTING, State.DECIDING):
            self._receive_handshake(data)
        else:
            self._receive_frames(data)

    def receive_eof(self) -> None:
        """The peer closed its side of the transport. Safe to call twice."""
        if self._eof:
            return
        self._eof = True
        self._close_transport = True
        if self._state in (State.CONNECTING, State.DECIDING):
            self._finish(Closed(code=1006, reason="connection lost during handshake"))
        elif self._state is State.OPEN:
            self._finish(Closed(code=1006, reason="connection lost"))
        elif self._state is State.CLOSING:
            self._finish(
                Closed(code=1006, reason="connection lost while closing", initiator=Side.LOCAL)
            )

    # -- application decisions -------------------------------------------

    def _check_can_send(self) -> None:
        if self._state is not State.OPEN:
            if self._state in (State.CLOSING, State.CLOSED):
                raise ConnectionClosedError(f"cannot send: connection is {self._state.name}")
            raise LocalProtocolError(f"cannot send before the handshake ({self._state.name})")

    def send_text(self, text: str) -> bool:
        """Queue a text message; False if the outbox overflowed (closed with 1013)."""
        self._check_can_send()
        return self._queue_message(self._frame(Opcode.TEXT, text.encode("utf-8")))

    def send_binary(self, data: bytes) -> bool:
        """Queue a binary message; False if the outbox overflowed (closed with 1013)."""
        self._check_can_send()
        return self._queue_message(self._frame(Opcode.BINARY, bytes(data)))

    def send_prepared(self, message: PreparedMessage) -> bool:
        """Queue a message framed once for many connections (server side only)."""
        if self.is_client:
            raise LocalProtocolError("prepared messages are unmasked: server side only")
        self._check_can_send()
        return self._queue_message(message.frame(self._deflate))

    def send_ping(self, payload: bytes | None = None) -> bytes:
        """Send a ping to measure the round trip; returns its payload.

        The matching pong comes out of ``events_received`` as a ``Pong`` with
        the round-trip time. ``payload`` (at most 125 bytes, RFC 6455 §5.5)
        defaults to 4 random bytes; it must differ from the payloads still
        outstanding, of which there may be ``MAX_PINGS_OUTSTANDING``. A pong
        also settles the pings sent before its own, which a peer may leave
        unanswered (§5.5.3).
        """
        self._check_can_send()
        if payload is None:
            payload = self._random(4)
        payload = bytes(payload)
        if len(payload) > 125:
            raise LocalProtocolError("a ping payload is at most 125 bytes")
        pings = self._pings
        if pings is None:
            pings = self._pings = {}
        if payload in pings or payload == self._ping_payload:
            raise LocalProtocolError("a ping with this payload is still outstanding")
        if len(pings) >= MAX_PINGS_OUTSTANDING:
            raise LocalProtocolError(f"{MAX_PINGS_OUTSTANDING} pings are already outstanding")
        pings[payload] = self._clock()
        self._queue_message(self._frame(Opcode.PING, payload))
        return payload

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake. Does nothing if already closing or closed."""
        encoded = validate_close(code, reason)
        if self._state in (State.CLOSING, State.CLOSED):
            return
        if self._state is not State.OPEN:
            raise LocalProtocolError("cannot close before the handshake; reject it instead")
        self._queue_close_frame(code, encoded)
        self._transition(State.CLOSING)
        self._next_ping = self._pong_deadline = None
        self._close_deadline = self._clock() + self.limits.close_timeout

    # -- timers ----------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must next be called, or None."""
        state = self._state
        if state is State.OPEN:
            # Called after every message by the adapters: no allocation here.
            best = self._next_ping
            pong = self._pong_deadline
            if pong is not None and (best is None or pong < best):
                best = pong
            idle = self.limits.idle_timeout
            if idle is not None:
                at = self._last_receive + idle
                if best is None or at < best:
                    best = at
            return best
        if state in (State.CONNECTING, State.DECIDING):
            return self._handshake_deadline
        if state is State.CLOSING:
            return self._close_deadline
        return None

    def handle_timer(self, now: float | None = None) -> None:
        """Act on every deadline that has passed at ``now`` (default: the clock)."""
        if now is None:
            now = self._clock()
        state = self._state
        if state in (State.CONNECTING, State.DECIDING):
            if self._handshake_deadline is not None and now >= self._handshake_deadline:
                self._handshake_timed_out()
        elif state is State.OPEN:
            idle = self.limits.idle_timeout
            if self._pong_deadline is not None and now >= self._pong_deadline:
                self._fail(1011, "keepalive ping timeout")
            elif idle is not None and now >= self._last_receive + idle:
                self.close(1001, "idle timeout")
            elif self._next_ping is not None and now >= self._next_ping:
                self._ping_payload = self._random(4)
                self._queue_message(self._frame(Opcode.PING, self._ping_payload))
                self._next_ping = None
                self._pong_deadline = now + self.limits.ping_timeout
        elif (
            state is State.CLOSING
            and self._close_deadline is not None
            and now >= self._close_deadline
        ):
            self._close_transport = True
            self._finish(Closed(code=1006, reason="close timed out", initiator=Side.LOCAL))

    # -- subclass hooks --------------------------------------------------

    def _receive_handshake(self, data: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _handshake_timed_out(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- internals -------------------------------------------------------

    def _frame(self, opcode: Opcode, payload: bytes) -> bytes:
        rsv1 = False
        if self._deflate is not None and opcode in (Opcode.TEXT, Opcode.BINARY):
            payload = compress_message(payload, self._deflate, client=self.is_client)
            rsv1 = True
        mask = self._random(4) if self.is_client else None
        return encode_frame(opcode, payload, rsv1=rsv1, mask=mask)

    def _queue_message(self, data: bytes) -> bool:
        """Append to the outbox unless that overflows it (then fail with 1013).

        Only messages count against the cap, and only messages are dropped on
        overflow: the handshake response queued just before must still reach
        the peer, or the close frame that follows would be unreadable.
        """
        if self._msg_size and self._msg_size + len(data) > self.limits.max_outbox_size:
            kept = [self._out[i] for i in self._raw_idx]
            self._out = kept
            self._raw_idx = list(range(len(kept)))
            self._out_size = sum(len(d) for d in kept)
            self._msg_size = 0
            self._fail(1013, "slow consumer")
            return False
        self._out.append(data)
        self._out_size += len(data)
        self._msg_size += len(data)
        self.bytes_queued += len(data)
        return True

    def _queue_raw(self, data: bytes) -> None:
        """Handshake bytes and close frames: never refused by the outbox cap."""
        self._raw_idx.append(len(self._out))
        self._out.append(data)
        self._out_size += len(data)
        self.bytes_queued += len(data)

    def _queue_close_frame(self, code: int | None, reason: bytes = b"") -> None:
        payload = b"" if code is None else code.to_bytes(2, "big") + reason
        mask = self._random(4) if self.is_client else None
        self._queue_raw(encode_frame(Opcode.CLOSE, payload, mask=mask))

    def _finish(self, event: Closed) -> None:
        """Report the one Closed event and stop every timer."""
        self._transition(State.CLOSED)
        self._handshake_deadline = self._next_ping = self._pong_deadline = None
        self._close_deadline = None
        self._reset_input()
        self._events.append(event)

    def _ping_allowed(self) -> bool:
        """Take one token of the peer's ping bucket (``Limits.ping_rate``)."""
        rate = self.limits.ping_rate
        if rate is None:
            return True
        if self._ping_bucket is None:
            self._ping_bucket = TokenBucket(rate, self.limits.ping_burst)
        return self._ping_bucket.take(self._clock())

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 §7.1.7): close frame if open, then drop."""
        # Only OPEN and CLOSING connections read frames, answer pings and
        # queue messages, the things that fail: a CLOSED one is never failed.
        assert self._state is not State.CLOSED, "a closed connection cannot fail"
        if self._state is State.OPEN:
            self._queue_close_frame(code, truncate_reason(reason))
        self._close_transport = True
        self._finish(Closed(code=code, reason=reason, initiator=Side.LOCAL))

    def _open(self, trailing: bytes, extensions: tuple[str, ...]) -> None:
        # wsproto's parser is created by the first frame the fast path cannot
        # take (``_frame_protocol``): most connections never need one.
        self._transition(State.OPEN)
        self._handshake_deadline = None
        if self.limits.ping_interval is not None:
            self._next_ping = self._clock() + self.limits.ping_interval
        self._events.append(Opened(subprotocol=self.subprotocol, extensions=extensions))
        if trailing:
            self._receive_frames(trailing)

    def _on_ping(self, payload: bytes) -> None:
        """Answer a ping while open (§5.5.2), within the peer's ping budget."""
        if self._state is State.OPEN:
            if not self._ping_allowed():
                self._fail(1008, "too many pings")
                return
            self._queue_message(self._frame(Opcode.PONG, payload))

    def _on_pong(self, payload: bytes) -> None:
        """The answer to our keepalive ping (schedule the next one) or to one of
        the application's (report its round trip)."""
        if self._pong_deadline is not None and payload == self._ping_payload:
            self._pong_deadline = None
            interval = self.limits.ping_interval
            assert interval is not None  # keepalive pings are sent only with an interval
            self._next_ping = self._clock() + interval
            return
        pings = self._pings
        if pings and payload in pings:
            sent = pings[payload]
            order = list(pings)  # oldest first: settled by this later pong
            for earlier in order[: order.index(payload) + 1]:
                del pings[earlier]
            if not pings:
                self._pings = None  # an idle connection keeps no empty dict
            self._events.append(Pong(payload=payload, rtt=self._clock() - sent))

    def _on_close_frame(self, code: int, reason: str) -> None:
        self._close_transport = True
        self._closed_cleanly = self._state in (State.OPEN, State.CLOSING)
        if self._state is State.OPEN:
            # RFC 6455 §5.5.1: echo the status code; no code received means none sent.
            self._queue_close_frame(None if code == 1005 else code)
            self._finish(Closed(code=code, reason=reason, clean=True, initiator=Side.REMOTE))
        else:  # frames are read only while OPEN or CLOSING
            assert self._state is State.CLOSING, self._state
            self._finish(Closed(code=code, reason=reason, clean=True, initiator=Side.LOCAL))
