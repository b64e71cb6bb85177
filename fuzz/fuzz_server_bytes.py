"""Fuzz a ServerConnection with arbitrary bytes in every phase.

Input layout: byte 0 picks the phase and compression, byte 1 the chunk size;
the rest is fed as received data. Whatever the bytes, the machine must only
produce events, statuses and close codes: never raise, and end (after EOF)
with exactly one Closed event.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _common import check_one_closed, chunked, main

from wshub.core import Event, HandshakeRequest, Limits, ServerConnection, State

PHASES = ("fresh", "deciding", "open", "closing", "http", "fresh-accept")
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: fuzz.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\nSec-WebSocket-Version: 13\r\n"
)
DEFLATE = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
LIMITS = Limits(max_message_size=64 * 1024, max_head_size=4096, max_outbox_size=64 * 1024)


def _clock() -> float:
    return 0.0


def _random(n: int) -> bytes:
    return b"\x5a" * n


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    phase = PHASES[data[0] % len(PHASES)]
    compression = bool(data[0] & 0x80)
    chunk = data[1] % 64
    body = data[2:]
    conn = ServerConnection(limits=LIMITS, compression=compression, clock=_clock, random=_random)
    events: list[Event] = []
    if phase == "http":
        conn.receive_data(b"GET /health HTTP/1.1\r\nHost: fuzz.test\r\n\r\n")
    elif phase in ("deciding", "open", "closing"):
        conn.receive_data(UPGRADE + (DEFLATE if compression else b"") + b"\r\n")
        if phase != "deciding":
            conn.accept("fuzz")
        if phase == "closing":
            conn.close(1000, "bye")
    events += conn.events_received()
    for piece in chunked(body, chunk):
        conn.receive_data(piece)
        new = conn.events_received()
        events += new
        # "fresh-accept": accept whatever upgrade the fuzzer managed to write.
        if (
            phase == "fresh-accept"
            and conn.state is State.DECIDING
            and any(isinstance(e, HandshakeRequest) for e in new)
        ):
            conn.accept("fuzz")
            events += conn.events_received()
        conn.data_to_send()
    conn.receive_eof()
    conn.receive_eof()
    events += conn.events_received()
    check_one_closed(events)


def seeds() -> dict[str, bytes]:
    """Named seed inputs: one per phase, valid and broken."""
    mask = b"\x01\x02\x03\x04"

    def frame(opcode: int, payload: bytes, first: int | None = None) -> bytes:
        head = bytes([first if first is not None else 0x80 | opcode, 0x80 | len(payload)])
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    upgrade = UPGRADE + b"\r\n"
    return {
        "fresh_upgrade": b"\x00\x00" + upgrade + frame(1, b"hi"),
        "fresh_garbage": b"\x00\x03" + b"\x16\x03\x01garbage\r\n\r\n",
        "fresh_http": b"\x00\x07GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "deciding_pipelined": b"\x01\x00" + frame(1, b"early"),
        "open_text": b"\x02\x00" + frame(1, b"hello") + frame(9, b"ping"),
        "open_fragments": b"\x02\x05" + frame(1, b"a", 0x01) + frame(0, b"b"),
        "open_bad_utf8": b"\x02\x00" + frame(1, b"\xff"),
        "open_close": b"\x02\x00" + frame(8, b"\x03\xe8bye"),
        "open_deflate": b"\x82\x00" + frame(1, b"\xf2\x48\xcd\xc9\xc9\x07\x00", 0xC1),
        "open_huge": b"\x02\x00\x82\xff\x7f\xff\xff\xff\xff\xff\xff\xff",
        "closing_echo": b"\x03\x00" + frame(8, b"\x03\xe8"),
        "http_more": b"\x04\x01more bytes",
        "fresh_accept": b"\x05\x09" + UPGRADE + DEFLATE + b"\r\n" + frame(2, b"\x00\x01"),
    }


def run_corpus(paths: list[str] | list[Path]) -> int:
    """Replay files (or folders of files) without atheris; return how many ran."""
    return _common.run_corpus(test_one_input, paths)


if __name__ == "__main__":
    main(test_one_input)

__all__ = ["run_corpus", "seeds", "test_one_input"]
