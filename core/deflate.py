"""permessage-deflate (RFC 7692): negotiation, compression, bounded inflation.

Two choices keep memory flat and broadcasts cheap:

* Outgoing messages are compressed without context takeover on both sides:
  the server always answers ``server_no_context_takeover`` (§7.1.1.1), and a
  client may always choose not to use its context (§7.1.1.2). So a message's
  compressed form is the same for every connection with the same window, and
  no compressor lives between messages.
* Inflation is bounded: the decompressor is told how many bytes the message
  may still grow by, so a small "zip bomb" frame costs at most the message
  limit, never the 512 MB that an unbounded ``decompress`` call produces.
"""

from __future__ import annotations

import codecs
import zlib
from dataclasses import dataclass

from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

__all__ = [
    "EXTENSION_NAME",
    "DeflateParams",
    "InboundGuard",
    "client_offer",
    "compress_message",
    "deflate_bound",
    "negotiate_server",
    "parse_server_response",
]

EXTENSION_NAME = "permessage-deflate"
_SYNC_TAIL = b"\x00\x00\xff\xff"
_COMPRESSION_LEVEL = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class DeflateParams:
    """The agreed permessage-deflate parameters of one connection."""

    server_no_context_takeover: bool = True
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15

    def response_value(self, *, client_bits_offered: bool) -> str:
        parts = [EXTENSION_NAME, "server_no_context_takeover"]
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits != 15:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if client_bits_offered and self.client_max_window_bits != 15:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


def deflate_bound(n: int) -> int:
    """An upper bound of the deflated size of ``n`` bytes (zlib's compressBound)."""
    return n + (n >> 12) + (n >> 14) + (n >> 25) + 13


def compress_message(payload: bytes, params: DeflateParams, *, client: bool = False) -> bytes:
    """Compress one message with a fresh context (RFC 7692 §7.2.1)."""
    bits = params.client_max_window_bits if client else params.server_max_window_bits
    compressor = zlib.compressobj(_COMPRESSION_LEVEL, zlib.DEFLATED, -bits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_SYNC_TAIL) else data


def _split_offers(values: list[str]) -> list[list[tuple[str, str | None]]]:
    """Parse Sec-WebSocket-Extensions values into offers of (name, value) params."""
    offers: list[list[tuple[str, str | None]]] = []
    for value in values:
        for element in value.split(","):
            parts = [p.strip() for p in element.split(";")]
            if not parts[0]:
                continue
            params: list[tuple[str, str | None]] = [(parts[0].lower(), None)]
            for part in parts[1:]:
                if not part:
                    continue
                name, sep, raw = part.partition("=")
                arg = raw.strip().strip('"') if sep else None
                params.append((name.strip().lower(), arg))
            offers.append(params)
    return offers


def _window_bits(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 2:
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def negotiate_server(values: list[str]) -> tuple[DeflateParams, str] | None:
    """Pick the first acceptable permessage-deflate offer (RFC 7692 §7.1).

    Returns the agreed parameters and the response header value, or None to
    decline. Offers with unknown or repeated parameters or invalid values are
    declined (§7.1). Window size 8 is declined for our own compressor, because
    zlib cannot produce raw deflate with a 256-byte window.
    """
    for offer in _split_offers(values):
        if offer[0][0] != EXTENSION_NAME:
            continue
        seen: set[str] = set()
        ok = True
        client_no_ctx = False
        server_bits = 15
        client_bits = 15
        client_bits_offered = False
        for name, arg in offer[1:]:
            if name in seen:
                ok = False
                break
            seen.add(name)
            if name == "server_no_context_takeover" and arg is None:
                continue
            if name == "client_no_context_takeover" and arg is None:
                client_no_ctx = True
            elif name == "server_max_window_bits":
                bits = _window_bits(arg)
                if bits is None or bits == 8:
                    ok = False
                    break
                server_bits = bits
            elif name == "client_max_window_bits":
                client_bits_offered = True
                if arg is not None:
                    bits = _window_bits(arg)
                    if bits is None:
                        ok = False
                        break
                    client_bits = bits
            else:
                ok = False
                break
        if ok:
            params = DeflateParams(
                client_no_context_takeover=client_no_ctx,
                server_max_window_bits=server_bits,
                client_max_window_bits=client_bits,
            )
            return params, params.response_value(client_bits_offered=client_bits_offered)
    return None


def client_offer() -> str:
    """The offer our client sends."""
    return f"{EXTENSION_NAME}; client_max_window_bits"


def parse_server_response(values: list[str]) -> DeflateParams | None:
    """Validate the server's extension response; None if it is not acceptable.

    An empty response (no extension) is acceptable and gives no parameters;
    callers distinguish it by passing only non-empty values.
    """
    offers = _split_offers(values)
    if len(offers) != 1 or offers[0][0][0] != EXTENSION_NAME:
        return None
    seen: set[str] = set()
    server_ctx = False
    client_ctx = False
    server_bits = 15
    client_bits = 15
    for name, arg in offers[0][1:]:
        if name in seen:
            return None
        seen.add(name)
        if name == "server_no_context_takeover" and arg is None:
            server_ctx = True
        elif name == "client_no_context_takeover" and arg is None:
            client_ctx = True
        elif name == "server_max_window_bits" and _window_bits(arg) is not None:
            server_bits = _window_bits(arg) or 15
        elif name == "client_max_window_bits" and _window_bits(arg) not in (None, 8):
            client_bits = _window_bits(arg) or 15
        else:
            return None
    return DeflateParams(
        server_no_context_takeover=server_ctx,
        client_no_context_takeover=client_ctx,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
    )


class InboundGuard(Extension):
    """Size limit, bounded inflation and message order for wsproto's decoder.

    Installed as the decoder's only extension (never negotiated by name). It
    sees each frame header before the payload is read, so a declared length
    beyond what the message may still hold is refused at once (1009), and it
    inflates compressed payloads with a budget, so decompressed size is bounded
    by the same limit, incrementally.

    wsproto checks message order and UTF-8 only *after* an extension has
    processed a payload chunk, so an inflate error or the size limit could win
    or lose against them depending on how the bytes were split. The guard
    therefore checks continuation order at the header, and UTF-8 of inflated
    text as it comes out, before the size limit: the first error in stream
    order is the one reported, whatever the chunking.
    """

    name = "wshub-inbound-guard"

    def __init__(self, max_size: int, deflate: DeflateParams | None, *, client: bool) -> None:
        self._max = max_size
        self._deflate = deflate
        self._reset_context = deflate is not None and (
            deflate.server_no_context_takeover if client else deflate.client_no_context_takeover
        )
        self._inflater: zlib._Decompress | None = None
        self._used = 0
        self._control = False
        self._compressed = False
        self._expect_continuation = False  # changed only when a frame completes
        self._utf8: codecs.IncrementalDecoder | None = None

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:  # pragma: no cover - abstract in wsproto, called by its handshake only
        return False

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,  # noqa: ARG002 - wsproto interface
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        # wsproto may call this twice for one header (when the mask has not
        # arrived yet), so it must not change anything a second call reads.
        if opcode.iscontrol():
            self._control = True
            return RsvBits(False, False, False)
        self._control = False
        if opcode is Opcode.CONTINUATION:
            if not self._expect_continuation:
                return CloseReason.PROTOCOL_ERROR  # RFC 6455 §5.4: nothing to continue
            if rsv.rsv1 and self._deflate is not None:
                return CloseReason.PROTOCOL_ERROR  # RFC 7692 §6.1: RSV1 on first frame only
        else:
            if self._expect_continuation:
                return CloseReason.PROTOCOL_ERROR  # RFC 6455 §5.4: no interleaving
            self._used = 0
            self._compressed = rsv.rsv1 and self._deflate is not None
            text = opcode is Opcode.TEXT and self._compressed
            self._utf8 = codecs.getincrementaldecoder("utf-8")() if text else None
        budget = self._max - self._used
        limit = deflate_bound(budget) if self._compressed else budget
        if payload_length > limit:
            return CloseReason.MESSAGE_TOO_BIG
        return RsvBits(
            self._deflate is not None and opcode is not Opcode.CONTINUATION, False, False
        )

    def _inflate(self, data: bytes, *, final: bool) -> bytes | CloseReason:
        if self._inflater is None:
            self._inflater = zlib.decompressobj(-15)
        budget = self._max - self._used
        try:
            # At most one byte past the budget: enough to know it is exceeded.
            out = self._inflater.decompress(data, budget + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if self._utf8 is not None:
            try:
                self._utf8.decode(out, final and len(out) <= budget)
            except UnicodeDecodeError:
                return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(out) > budget:
            return CloseReason.MESSAGE_TOO_BIG
        self._used += len(out)
        return out

    def frame_inbound_payload_data(
        self,
        proto: FrameDecoder | FrameProtocol,  # noqa: ARG002 - wsproto interface
        data: bytes,
    ) -> bytes | CloseReason:
        if self._control:
            return data
        if self._compressed:
            return self._inflate(data, final=False)
        self._used += len(data)
        # Uncompressed, a frame carries what its header declared, and
        # frame_inbound_header refused any frame longer than the room left.
        assert self._used <= self._max, (self._used, self._max)
        return data

    def frame_inbound_complete(
        self,
        proto: FrameDecoder | FrameProtocol,  # noqa: ARG002 - wsproto interface
        fin: bool,
    ) -> bytes | CloseReason | None:
        if self._control:
            return None
        self._expect_continuation = not fin
        if not fin:
            return None
        result: bytes | None = None
        if self._compressed:
            out = self._inflate(_SYNC_TAIL, final=True)
            if isinstance(out, CloseReason):
                return out
            result = out
            if self._reset_context:
                self._inflater = None
        self._used = 0
        self._compressed = False
        self._utf8 = None
        return result
