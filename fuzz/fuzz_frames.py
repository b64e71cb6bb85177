"""Fuzz frame streams into an accepted ServerConnection.

The input describes frames rather than raw bytes, so most of them get past
the frame header checks: byte 0 holds the options (bit 0 compression, bit 1
unmasked frames, bits 2-7 the read size of the second run); then each
frame is ``first-byte, length-byte, payload`` where the first byte is the
wire's FIN/RSV/opcode byte, and a length byte with its top bit set asks for
the payload to be deflated (so compressed messages inflate for real).

Oracles: ``ServerMonitor``'s contract after every call (legal transitions,
event grammar, one ``Closed``, output parsing as a 101 then valid server
frames); every pong answers a ping that was sent; and the same events and
the same output bytes whether the stream arrives in one read or in many
(the echoing application is exercised by fuzz_server_bytes).
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _checks import ContractError
from _common import chunked, main
from _contract import ServerMonitor

from wshub.core import Event, Limits, ServerConnection
from wshub.core.frames import encode_frame

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: fuzz.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\nSec-WebSocket-Version: 13\r\n"
)
DEFLATE = b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
LIMITS = Limits(max_message_size=2048, max_outbox_size=8192, max_head_size=4096)
MASK = b"\x9e\x01\x7c\x33"


def _clock() -> float:
    return 0.0


def _random(n: int) -> bytes:
    return b"\xa5" * n


def build_stream(spec: bytes, *, masked: bool) -> bytes:
    """Wire bytes for the frame descriptions in ``spec``."""
    out = bytearray()
    i = 0
    while i + 1 < len(spec):
        first, length_byte = spec[i], spec[i + 1]
        length = length_byte & 0x7F
        payload = spec[i + 2 : i + 2 + length]
        i += 2 + length
        if length_byte & 0x80:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            payload = compressor.compress(payload * 8) + compressor.flush(zlib.Z_SYNC_FLUSH)
            payload = payload[:-4]
        frame = encode_frame(
            first & 0x0F, payload, fin=bool(first & 0x80), mask=MASK if masked else None
        )
        # Put the fuzzer's RSV bits in place (encode_frame only knows RSV1).
        out += bytes([first & 0xF0 | frame[0] & 0x0F]) + frame[1:]
    if i < len(spec):
        out += spec[i:]  # a trailing odd byte goes raw: partial headers
    return bytes(out)


def _run(
    stream: bytes, make: Callable[..., ServerConnection], *, compression: bool, chunk: int
) -> tuple[list[Event], bytes]:
    conn = make(limits=LIMITS, compression=compression, clock=_clock, random=_random)
    monitor = ServerMonitor(conn, compression=compression)
    monitor.receive(UPGRADE + (DEFLATE if compression else b"") + b"\r\n")
    monitor.accept(None)
    out = monitor.drain()
    for piece in chunked(stream, chunk):
        monitor.receive(piece)
        out += monitor.drain()
    monitor.receive_eof()
    monitor.finish()
    frames = monitor.output.frames
    assert frames is not None
    pings = _pings(stream)
    for pong in frames.pongs:
        if pong not in pings:
            raise ContractError(f"pong {pong!r} answers no ping")
    return monitor.events, out


def _pings(stream: bytes) -> set[bytes]:
    """Payloads of the (masked or not) ping frames in a well-formed prefix of ``stream``."""
    found: set[bytes] = set()
    i = 0
    while i + 2 <= len(stream):
        first, second = stream[i], stream[i + 1]
        length, pos = second & 0x7F, i + 2
        if length >= 126:  # extended length: skip the frame whole
            size = 2 if length == 126 else 8
            if pos + size > len(stream):
                break
            length = int.from_bytes(stream[pos : pos + size], "big")
            pos += size
        mask = stream[pos : pos + 4] if second & 0x80 else b""
        pos += len(mask)
        payload = stream[pos : pos + length]
        if mask:
            payload = bytes(b ^ mask[j % 4] for j, b in enumerate(payload))
        if first & 0x0F == 0x9:
            found.add(payload)
        i = pos + length
    return found


def test_one_input(data: bytes) -> None:
    """One run: the body behind atheris, the corpus replay and the hypothesis test."""
    run(data, ServerConnection)


def run(data: bytes, make: Callable[..., ServerConnection]) -> None:
    """``test_one_input`` with the connection class as a parameter, so the
    tests can check that the oracles catch a connection that breaks the rules."""
    if not data:
        return
    options = data[0]
    compression = bool(options & 1)
    stream = build_stream(data[1:], masked=not options & 2)
    whole = _run(stream, make, compression=compression, chunk=0)
    split = _run(stream, make, compression=compression, chunk=(options >> 2) + 1)
    if split != whole:
        raise ContractError(f"the read size changed the outcome:\n{whole!r}\n{split!r}")


def seeds() -> dict[str, bytes]:
    return {
        "text": b"\x00" + b"\x81\x05hello",
        "fragments_with_ping": b"\x04" + b"\x01\x02ab" + b"\x89\x01p" + b"\x80\x01c",
        "binary_then_close": b"\x08" + b"\x82\x03\x00\x01\x02" + b"\x88\x02\x03\xe8",
        "deflated": b"\x05" + b"\xc1\x85hello",
        "deflated_fragments": b"\x09" + b"\x42\x84abcd" + b"\x80\x00",
        "bad_utf8_split": b"\x00" + b"\x01\x02a\xe2" + b"\x80\x02\x82z",
        "unmasked": b"\x02" + b"\x81\x02hi",
        "reserved_opcode": b"\x00" + b"\x83\x01x",
        "rsv2": b"\x00" + b"\xa1\x01x",
        "bad_close": b"\x00" + b"\x88\x01\x03",
        "pong": b"\x00" + b"\x8a\x04\xa5\xa5\xa5\xa5",
        "too_big": b"\x01" + b"\xc2\xff" + bytes(127),
    }


def run_corpus(paths: list[str] | list[Path]) -> int:
    """Replay files (or folders of files) without atheris; return how many ran."""
    return _common.run_corpus(test_one_input, paths)


if __name__ == "__main__":
    main(test_one_input)

__all__ = ["build_stream", "run", "run_corpus", "seeds", "test_one_input"]
