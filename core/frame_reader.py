"""The receiving side of a connection: frames in, messages and control frames out.

Whole, unfragmented, uncompressed frames (nearly all traffic: JSON messages,
keepalive pings and pongs, the closing frame) are decoded here directly; a
large frame is collected across reads and unmasked once. Everything else
(fragments, permessage-deflate, protocol errors) goes to wsproto's
``FrameProtocol``, with our ``InboundGuard`` as its only extension (size
limit, bounded inflation); the events are the same either way, for any split
of the input (``test_core_fastpath``). wsproto's parser exists only while it
holds something: between messages of an uncompressed stream it is dropped.

``FrameReader`` is a mixin of ``Connection``: it holds no state of its own
(the connection's slots do) and calls back into the connection for what
receiving causes: answers, failures, the closing handshake.
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING, ClassVar

from wsproto.frame_protocol import CloseReason, Frame, FrameProtocol, ParseFailed
from wsproto.frame_protocol import Opcode as WsOpcode

from .close_codes import GENERIC_REASONS, receivable_code
from .deflate import DeflateParams, InboundGuard
from .events import BinaryMessage, Event, TextMessage
from .frames import mask_payload
from .limits import Limits
from .state import State

__all__ = ["FrameReader", "GuardedFrameProtocol", "PartialFrame"]

_COALESCE_PARTS = 256  # fragments kept apart before being joined


class GuardedFrameProtocol(FrameProtocol):
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
        if not receivable_code(code):
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


class PartialFrame:
    """A one-frame data message whose payload is still arriving (fast path)."""

    __slots__ = ("decoder", "mask", "need", "offset", "parts")

    def __init__(self, text: bool, mask: bytes | None, length: int) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")() if text else None
        self.mask = mask
        self.need = length
        self.offset = 0
        self.parts: list[str | bytes] = []


class FrameReader:
    """Decoding of received frames, for ``Connection`` (see the module docstring)."""

    __slots__ = ("_partial", "_parts", "_proto", "_run")

    if TYPE_CHECKING:  # what this part reads of the connection, and calls back
        is_client: ClassVar[bool]
        limits: Limits
        _deflate: DeflateParams | None
        _events: list[Event]
        _state: State

        def _fail(self, code: int, reason: str) -> None: ...
        def _on_ping(self, payload: bytes) -> None: ...
        def _on_pong(self, payload: bytes) -> None: ...
        def _on_close_frame(self, code: int, reason: str) -> None: ...

    def _reset_input(self) -> None:
        """Nothing received is pending: no partial frame, fragment or parser."""
        self._proto: GuardedFrameProtocol | None = None
        self._parts: list[str | bytes] = []
        self._run = 0  # fragments at the end of _parts not yet joined
        self._partial: PartialFrame | None = None

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
                self._partial = PartialFrame(first == 0x81, mask, length)
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
            if not receivable_code(code):
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
                self._fail(1007, GENERIC_REASONS[1007])
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

    def _frame_protocol(self) -> GuardedFrameProtocol:
        """wsproto's parser, with our guard (size limit, bounded inflation)."""
        proto = self._proto
        if proto is None:
            guard = InboundGuard(self.limits.max_message_size, self._deflate, client=self.is_client)
            proto = self._proto = GuardedFrameProtocol(self.is_client, [guard])
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
                else:  # wsproto gives continuations their message's opcode
                    assert opcode is WsOpcode.CLOSE, opcode
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
                message = GENERIC_REASONS.get(code, "protocol error")
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
