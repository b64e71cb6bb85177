"""Fuzz a ClientConnection with arbitrary server responses.

Byte 0: bit 0 offers compression, bits 1-2 choose the prefix (none, a valid
101, a valid 101 with permessage-deflate, a 403), bits 3-7 the chunk size.
The rest follows the prefix as received data. No exception, and exactly one
final Closed after EOF.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _common import check_one_closed, chunked, main

from wshub.core import ClientConnection, Event, Limits

LIMITS = Limits(max_message_size=64 * 1024, max_head_size=4096)
_KEY_BYTES = b"\x33" * 16
_KEY = base64.b64encode(_KEY_BYTES)
_ACCEPT = base64.b64encode(hashlib.sha1(_KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: " + _ACCEPT + b"\r\n"
)
PREFIXES = (
    b"",
    SWITCH + b"\r\n",
    SWITCH + b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n",
    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\n",
)


def _clock() -> float:
    return 0.0


def _random(n: int) -> bytes:
    return b"\x33" * n


def test_one_input(data: bytes) -> None:
    if not data:
        return
    options = data[0]
    conn = ClientConnection(
        host="fuzz.test",
        compression=bool(options & 1),
        limits=LIMITS,
        clock=_clock,
        random=_random,
    )
    conn.data_to_send()
    events: list[Event] = []
    stream = PREFIXES[(options >> 1) & 3] + data[1:]
    for piece in chunked(stream, options >> 3):
        conn.receive_data(piece)
        events += conn.events_received()
        conn.data_to_send()
    conn.receive_eof()
    conn.receive_eof()
    events += conn.events_received()
    check_one_closed(events)


def seeds() -> dict[str, bytes]:
    return {
        "raw_101": b"\x00" + SWITCH + b"\r\n\x81\x02hi",
        "open_text": b"\x02" + b"\x81\x05hello\x89\x00",
        "open_deflate": b"\x05" + b"\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00",
        "open_close": b"\x0a" + b"\x88\x02\x03\xe8",
        "open_masked": b"\x02" + b"\x81\x82abcdxy",
        "rejected": b"\x06" + b"nope!",
        "rejected_no_length": b"\x00HTTP/1.1 500 Oops\r\n\r\nbody",
        "garbage": b"\x08\x00\xffgarbage\r\n\r\n",
        "continue_then_101": b"\x00HTTP/1.1 100 Continue\r\n\r\n" + SWITCH + b"\r\n",
        "bad_accept": b"\x00" + SWITCH.replace(b"Accept: ", b"Accept: x") + b"\r\n",
    }


def run_corpus(paths: list[str] | list[Path]) -> int:
    """Replay files (or folders of files) without atheris; return how many ran."""
    return _common.run_corpus(test_one_input, paths)


if __name__ == "__main__":
    main(test_one_input)

__all__ = ["run_corpus", "seeds", "test_one_input"]
