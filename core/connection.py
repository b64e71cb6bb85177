"""The per-connection WebSocket state machine shared by server and client.

Sans-IO in the manner of h11: bytes in (``receive_data``), events out
(``events_received``), bytes to write out (``data_to_send``), timers driven by
the caller (``next_deadline`` / ``handle_timer``). The clock and the random
source are constructor parameters; nothing here reads the system clock.

Frames are parsed by wsproto's ``FrameProtocol`` with our ``InboundGuard``
as its only extension (size limit, bounded inflation). Frames are written by
``frames.encode_frame``. Because output is buffered here, the machine answers
pings, echoes closes and sends close frames on protocol errors by itself.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable
from enum import Enum, auto
from typing import ClassVar

from wsproto.frame_protocol import CloseReason, Frame, FrameProtocol, ParseFailed
from wsproto.frame_protocol import Opcode as WsOpcode

from .deflate import DeflateParams, InboundGuard, compress_message
from .errors import ConnectionClosedError, LocalProtocolError
from .events import BinaryMessage, Closed, Event, Opened, Side, TextMessage
from .frames import Opcode, PreparedMessage, encode_frame, mask_payload
from .limits import Limits
from .ratelimit import TokenBucket

__all__ = ["Clock", "Connection", "RandomSource", "State", "validate_close"]

_COALESCE_PARTS = 256  # fragments kept apart before being joined

Clock = Callable[[], float]
RandomSource = Callable[[int], bytes]


class State(Enum):
    """Lifecycle of a connection; transitions are listed in ``_TRANSITIONS``."""

    CONNECTING = auto()  # reading the opening handshake
    DECIDING = auto()  # server: request reported, waiting for accept / reject / respond
    OPEN = auto()
    CLOSING = auto()  # our close frame is sent, waiting for the peer's
    CLOSED = auto()

    # Members are singletons compared by identity: hash them the same way, in C
    # (Enum's own __hash__ is a Python function, run on every transition).
    __hash__ = object.__hash__


_TRANSITIONS: dict[State, frozenset[State]] = {
    State.CONNECTING: frozenset({State.DECIDING, State.OPEN, State.CLOSED}),
    State.DECIDING: frozenset({State.OPEN, State.CLOSED}),
    State.OPEN: frozenset({State.CLOSING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}

# RFC 6455 §7.4.1: codes an endpoint may put in a close frame it sends.
_SENDABLE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)
_GENERIC_REASONS = {
    1002: "protocol error",
    1007: "invalid payload data",
    1009: "message too big",
}
_MAX_REASON_BYTES = 123  # 125-byte control payload minus the 2-byte code (§5.5)


def validate_close(code: int, reason: str) -> bytes:
    """Check an application close code and reason; return the reason's bytes."""
    if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
        raise ValueError(f"invalid close code {code}: use 1000-1014 (not 1004-1006) or 3000-4999")
    encoded = reason.encode("utf-8")
    if len(encoded) > _MAX_REASON_BYTES:
        raise ValueError(f"close reason is {len(encoded)} bytes; the limit is 123")
    return encoded


def _receivable_code(code: int) -> bool:
    """RFC 6455 §7.4: what a peer may put in a close frame (1004-1006, 1015 are local)."""
    return code in _SENDABLE_CODES or 3000 <= code <= 4999


class _FrameProtocol(FrameProtocol):
    """wsproto's parser with our close-code rules.

    wsproto refuses 1012-1014 (registered with IANA after RFC 6455) as
    "unknown reserved" codes, though we send them ourselves (1013 for slow
    consumers); close payloads are checked here instead.
    """

    def _process_close(self, frame: Frame) -> Frame:
        data = frame.payload
        assert isinstance(data, bytes | bytearray)
        if not data:
            return frame._replace(payload=(CloseReason.NO_STATUS_RCVD, ""))
        if len(data) == 1:
            raise ParseFailed("close frame with a 1-byte payload")
        code = int.from_bytes(data[:2], "big")
        if not _receivable_code(code):
            raise ParseFailed(f"invalid close code {code}")
        try:
            reason = bytes(data[2:]).decode("utf-8")
        except UnicodeDecodeError:
            raise ParseFailed(
                "invalid UTF-8 in close reason", CloseReason.INVALID_FRAME_PAYLOAD_DATA
            ) from None
        return frame._replace(payload=(code, reason))

    def idle(self) -> bool:
        """No partial frame buffered and no message in progress.

        Reads wsproto's private decoder state (pinned by the version range in
        pyproject, and checked by ``test_core_fastpath``): the only way to know
        that the next byte starts a new message.
        """
        decoder = self._frame_decoder
        return (
            not len(decoder.buffer)
            and decoder.header is None
            and self._message_decoder.opcode is None
        )


def _truncate_reason(reason: str) -> bytes:
    encoded = reason.encode("utf-8")[:_MAX_REASON_BYTES]
    return encoded.decode("utf-8", "ignore").encode("utf-8")


class _PartialFrame:
    """A one-frame data message whose payload is still arriving (fast path)."""

    __slots__ = ("decoder", "mask", "need", "offset", "parts")

    def __init__(self, text: bool, mask: bytes | None, length: int) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")() if text else None
        self.mask = mask
        self.need = length
        self.offset = 0
        self.parts: list[str | bytes] = []


class Connection:
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
        "_partial",
        "_parts",
        "_ping_bucket",
        "_ping_payload",
        "_pong_deadline",
        "_proto",
        "_random",
        "_raw_idx",
        "_run",
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
        self._proto: _FrameProtocol | None = None
        self._parts: list[str | bytes] = []
        self._run = 0  # fragments at the end of _parts not yet joined
        self._partial: _PartialFrame | None = None
        self._deflate: DeflateParams | None = None
        now = clock()
        self._last_receive = now
        self._handshake_deadline: float | None = now + limits.handshake_timeout
        self._next_ping: float | None = None
        self._pong_deadline: float | None = None
        self._ping_payload = b""
        self._ping_bucket: TokenBucket | None = None  # the peer's ping budget, at its first ping
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
        self._parts.clear()
        self._run = 0
        self._partial = None
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
        if self._state is State.OPEN:
            self._queue_close_frame(code, _truncate_reason(reason))
        self._close_transport = True
        if self._state is not State.CLOSED:
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

    def _fast_messages(self, data: bytes) -> int:
        """Decode leading unfragmented, uncompressed data frames (one frame, one message).

        The common case (JSON messages, one frame each) costs a few
        microseconds here instead of wsproto's general parser, and a large
        frame is collected here across reads and unmasked once. Whole pings,
        pongs and valid close frames are handled here too (``_fast_control``,
        ``_fast_close``). Anything else (fragments, RSV bits, non-minimal
        lengths, oversized frames, invalid UTF-8 in a whole frame, incomplete
        control frames) stops the fast path, and the rest of the input goes to
        wsproto, which reports errors as usual; the events are the same either
        way, for any split of the input (``test_core_fastpath``). Returns how
        many bytes were consumed.
        """
        pos = 0
        end = len(data)
        client = self.is_client
        limit = self.limits.max_message_size
        events = self._events
        while end - pos >= 2:
            first = data[pos]
            if first == 0x88:  # FIN, no RSV, close
                return self._fast_close(data, pos)
            if first not in (0x81, 0x82):  # FIN, no RSV, text or binary
                if first not in (0x89, 0x8A):  # FIN, no RSV, ping or pong
                    break
                after = self._fast_control(data, pos, first == 0x89)
                if after == pos:
                    break
                if self._state is State.CLOSED:
                    return end  # failed (a ping flood): the rest is ignored
                pos = after
                continue
            second = data[pos + 1]
            if bool(second & 0x80) is client:  # RFC 6455 §5.1: clients mask, servers don't
                break
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if end - start < 2:
                    break
                length = int.from_bytes(data[start : start + 2], "big")
                start += 2
                if length < 126:
                    break  # non-minimal length: wsproto's error
            elif length == 127:
                if end - start < 8:
                    break
                length = int.from_bytes(data[start : start + 8], "big")
                start += 8
                if length < 1 << 16 or length >> 63:
                    break  # non-minimal or reserved length: wsproto's error
            if length > limit:
                break  # wsproto's guard answers 1009
            mask = None
            if not client:
                if end - start < 4:
                    break
                mask = data[start : start + 4]
                start += 4
            stop = start + length
            if stop > end:
                # The payload is still arriving: collect it here.
                self._partial = _PartialFrame(first == 0x81, mask, length)
                self._feed_partial(data[start:end])
                return end
            payload = data[start:stop]
            if mask is not None:
                payload = mask_payload(mask, payload)
            if first == 0x81:
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    break
                events.append(TextMessage(data=text))
            else:
                events.append(BinaryMessage(data=payload))
            pos = stop
        return pos

    def _fast_control(self, data: bytes, pos: int, ping: bool) -> int:
        """A whole ping or pong at ``pos``: answer or note it; the position after it.

        Keepalive pongs (and the peer's pings) arrive on every idle connection;
        leaving them to wsproto would give each connection a parser for good
        after its first keepalive round. An incomplete or invalid control
        frame (longer than 125 bytes, wrongly masked) is left to wsproto:
        returns ``pos`` then.
        """
        second = data[pos + 1]
        if bool(second & 0x80) is self.is_client:  # RFC 6455 §5.1
            return pos
        length = second & 0x7F
        if length > 125:  # §5.5: control payloads are at most 125 bytes
            return pos
        start = pos + 2 if self.is_client else pos + 6
        stop = start + length
        if stop > len(data):
            return pos
        payload = data[start:stop]
        if not self.is_client:
            payload = mask_payload(data[start - 4 : start], payload)
        if ping:
            self._on_ping(payload)
        else:
            self._on_pong(payload)
        return stop

    def _on_ping(self, payload: bytes) -> None:
        """Answer a ping while open (§5.5.2), within the peer's ping budget."""
        if self._state is State.OPEN:
            if not self._ping_allowed():
                self._fail(1008, "too many pings")
                return
            self._queue_message(self._frame(Opcode.PONG, payload))

    def _on_pong(self, payload: bytes) -> None:
        """The answer to our keepalive ping: schedule the next one."""
        if self._pong_deadline is not None and payload == self._ping_payload:
            self._pong_deadline = None
            if self.limits.ping_interval is not None:
                self._next_ping = self._clock() + self.limits.ping_interval

    def _fast_close(self, data: bytes, pos: int) -> int:
        """A whole, valid close frame at ``pos``: handle it (the connection is then
        closed, so the rest of ``data`` is ignored, as after wsproto's close).

        Anything else about it (incomplete, too long, a 1-byte payload, a code
        a peer may not send, a reason that is not UTF-8) is left to wsproto and
        ``_FrameProtocol._process_close``: returns ``pos`` then.
        """
        end = len(data)
        second = data[pos + 1]
        if bool(second & 0x80) is self.is_client:  # RFC 6455 §5.1
            return pos
        length = second & 0x7F
        if length > 125 or length == 1:  # §5.5: control payloads are at most 125 bytes
            return pos
        start = pos + 2
        if not self.is_client:
            start += 4
        if end - start < length:
            return pos
        payload = data[start : start + length]
        if not self.is_client:
            payload = mask_payload(data[start - 4 : start], payload)
        if not payload:
            code, reason = 1005, ""  # no status code received (§7.1.5)
        else:
            code = int.from_bytes(payload[:2], "big")
            if not _receivable_code(code):
                return pos
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                return pos
        self._on_close_frame(code, reason)
        return end

    def _feed_partial(self, chunk: bytes) -> int:
        """Add payload bytes to the frame being collected; return how many were used.

        Text is decoded chunk by chunk, as wsproto does, so invalid UTF-8
        fails the connection (1007) as soon as it arrives.
        """
        frame = self._partial
        assert frame is not None
        take = chunk[: frame.need]
        if frame.mask is not None and take:
            turn = frame.offset % 4
            take = mask_payload(frame.mask[turn:] + frame.mask[:turn], take)
        frame.offset += len(take)
        frame.need -= len(take)
        done = frame.need == 0
        if frame.decoder is not None:
            try:
                frame.parts.append(frame.decoder.decode(take, done))
            except UnicodeDecodeError:
                self._partial = None
                self._fail(1007, _GENERIC_REASONS[1007])
                return len(take)
        else:
            frame.parts.append(take)
        if done:
            self._partial = None
            if frame.decoder is not None:
                self._events.append(TextMessage(data="".join(frame.parts)))  # type: ignore[arg-type]
            else:
                self._events.append(BinaryMessage(data=b"".join(frame.parts)))  # type: ignore[arg-type]
        return len(take)

    def _frame_protocol(self) -> _FrameProtocol:
        """wsproto's parser, with our guard (size limit, bounded inflation)."""
        proto = self._proto
        if proto is None:
            guard = InboundGuard(self.limits.max_message_size, self._deflate, client=self.is_client)
            proto = self._proto = _FrameProtocol(self.is_client, [guard])
        return proto

    def _receive_frames(self, data: bytes) -> None:
        if self._partial is not None:
            used = self._feed_partial(data)
            if self._partial is not None or used == len(data) or self._state is State.CLOSED:
                return
            data = data[used:]
        proto = self._proto
        if proto is None or proto.idle():
            consumed = self._fast_messages(data)
            if consumed == len(data):
                return
            if consumed:
                data = data[consumed:]
        proto = self._frame_protocol()
        proto.receive_bytes(data)
        try:
            for frame in proto.received_frames():
                opcode = frame.opcode
                payload = frame.payload
                if opcode is WsOpcode.TEXT or opcode is WsOpcode.BINARY:
                    assert not isinstance(payload, tuple)
                    self._on_data(payload, frame.message_finished, opcode is WsOpcode.TEXT)
                elif opcode is WsOpcode.PING:
                    assert isinstance(payload, bytes)
                    self._on_ping(payload)
                elif opcode is WsOpcode.PONG:
                    assert isinstance(payload, bytes)
                    self._on_pong(payload)
                elif opcode is WsOpcode.CLOSE:
                    assert isinstance(payload, tuple)
                    code, reason = payload
                    self._on_close_frame(int(code), reason)
                if self._state is State.CLOSED:
                    return
            if self._deflate is None and proto.idle():
                # Between messages an uncompressed stream's parser holds nothing:
                # drop it (~1 KiB) rather than keep it for the connection's life.
                # (permessage-deflate keeps its inflater's state in it.)
                self._proto = None
        except ParseFailed as exc:
            code = int(exc.code)
            message = str(exc.args[0]) if exc.args else ""
            if not message or message == "error in extension" or "codec" in message:
                # Decoder messages carry byte positions, which depend on how
                # the input was split: report the same reason for any split.
                message = _GENERIC_REASONS.get(code, "protocol error")
            self._fail(code, message)

    def _on_data(self, payload: str | bytes, finished: bool, text: bool) -> None:
        parts = self._parts
        if not finished:
            parts.append(payload)
            self._run += 1
            if self._run == _COALESCE_PARTS:
                # Many tiny fragments: join each run of them into one object,
                # so memory follows the message's size, not its fragment count.
                run = parts[-_COALESCE_PARTS:]
                del parts[-_COALESCE_PARTS:]
                parts.append("".join(run) if text else b"".join(run))  # type: ignore[arg-type]
                self._run = 0
            return
        if parts:
            parts.append(payload)
            if text:
                payload = "".join(parts)  # type: ignore[arg-type]
            else:
                payload = b"".join(parts)  # type: ignore[arg-type]
            parts.clear()
            self._run = 0
        if text:
            assert isinstance(payload, str)
            self._events.append(TextMessage(data=payload))
        else:
            self._events.append(BinaryMessage(data=bytes(payload)))  # type: ignore[arg-type]

    def _on_close_frame(self, code: int, reason: str) -> None:
        self._close_transport = True
        self._closed_cleanly = self._state in (State.OPEN, State.CLOSING)
        if self._state is State.OPEN:
            # RFC 6455 §5.5.1: echo the status code; no code received means none sent.
            self._queue_close_frame(None if code == 1005 else code)
            self._finish(Closed(code=code, reason=reason, clean=True, initiator=Side.REMOTE))
        elif self._state is State.CLOSING:
            self._finish(Closed(code=code, reason=reason, clean=True, initiator=Side.LOCAL))
