"""Fuzz a ClientConnection with arbitrary server bytes, before and after the 101.

Input layout:

* byte 0, the scenario: bits 0-2 pick a prefix (none, so the fuzzer writes
  the response itself; valid 101s with and without deflate or a
  subprotocol; a 403; a 100 Continue before the 101); bit 3 makes the client
  offer permessage-deflate; bit 4 offer the subprotocols ``chat`` and
  ``wshub.v1``; bit 5 echoes every message back; bit 6 has the application
  close as soon as the connection opens; bit 7 a slow writer (output taken
  every fourth read only).
* byte 1, the pace: the prefix comes in one read, then bits 0-4 give the size
  of the reads of the rest (0: everything in one read); bits 6-7 how far the
  clock moves after each read (0, 1, 6 or 25 s), so timers fire.
* the rest: bytes from the server, after the prefix.

``ClientMonitor`` checks the contract after every call (see ``_contract``),
including that everything the client writes parses as one upgrade request
followed, once opened, by masked frames carrying exactly the messages sent.
The client opens only on a valid 101 with the right accept token.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _checks import check_switch
from _common import FakeClock, chunked, main
from _contract import ClientMonitor

from wshub.core import (
    BinaryMessage,
    ClientConnection,
    Event,
    Limits,
    Opened,
    State,
    TextMessage,
)

LIMITS = Limits(
    max_message_size=1024,
    max_head_size=2048,
    max_outbox_size=2048,
    handshake_timeout=10.0,
    ping_interval=5.0,
    ping_timeout=5.0,
    close_timeout=3.0,
    idle_timeout=20.0,
)
_KEY = base64.b64encode(b"\x33" * 16)
ACCEPT = base64.b64encode(hashlib.sha1(_KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n"
)
_DEFLATE = b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover"
PREFIXES = (
    b"",
    SWITCH + b"\r\n",
    SWITCH + _DEFLATE + b"\r\n\r\n",
    SWITCH + _DEFLATE + b"; client_no_context_takeover; client_max_window_bits=9\r\n\r\n",
    SWITCH + b"Sec-WebSocket-Protocol: chat\r\n\r\n",
    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!",
    b"HTTP/1.1 100 Continue\r\n\r\n" + SWITCH + b"\r\n",
    SWITCH + b"Sec-WebSocket-Protocol: wshub.v1\r\n" + _DEFLATE + b"\r\n\r\n",
)
SUBPROTOCOLS = ("chat", "wshub.v1")
STEPS = (0.0, 1.0, 6.0, 25.0)


def _random(n: int) -> bytes:
    return b"\x33" * n


def _react(monitor: ClientMonitor, events: list[Event], *, echo: bool, close: bool) -> None:
    for event in events:
        if isinstance(event, Opened) and close:
            monitor.close(1001, "going away")
        elif isinstance(event, TextMessage | BinaryMessage) and echo:
            monitor.send(event.data)


def test_one_input(data: bytes) -> None:
    """One run: the body behind atheris, the corpus replay and the hypothesis test."""
    run(data, ClientConnection)


def run(data: bytes, make: Callable[..., ClientConnection]) -> None:
    """``test_one_input`` with the connection class as a parameter, so the
    tests can check that the oracles catch a connection that breaks the rules."""
    if len(data) < 2:
        return
    options, pace = data[0], data[1]
    offered = SUBPROTOCOLS if options & 0x10 else ()
    clock = FakeClock()
    conn = make(
        host="fuzz.test",
        target="/ws?room=1",
        subprotocols=offered,
        compression=bool(options & 0x08),
        limits=LIMITS,
        clock=clock,
        random=_random,
    )
    monitor = ClientMonitor(conn, offered=offered)
    monitor.drain()  # the request
    echo, close, slow = bool(options & 0x20), bool(options & 0x40), bool(options & 0x80)
    step = STEPS[pace >> 6]
    prefix = PREFIXES[options & 7]
    received = b""  # what the client read before it opened
    checked = False
    pieces = [prefix] if prefix else []
    for i, piece in enumerate([*pieces, *chunked(data[2:], pace & 0x1F)]):
        if conn.state is State.CONNECTING:
            received += piece
        _react(monitor, monitor.receive(piece), echo=echo, close=close)
        if monitor.opened is not None and not checked:
            check_switch(received, _KEY.decode())
            checked = True
        monitor.probe_misuse()
        if not slow or i % 4 == 3:
            monitor.drain()
        clock.now += step
        _react(monitor, monitor.timers(clock.now), echo=echo, close=close)
    for _ in range(3 if step else 0):  # let the timers run out
        clock.now += step
        monitor.timers(clock.now)
        monitor.drain()
    monitor.receive_eof()
    monitor.receive_eof()
    monitor.finish()


def seeds() -> dict[str, bytes]:
    """Named seed inputs: each prefix, valid and broken server frames."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = (squeeze.compress(bytes(4000)) + squeeze.flush(zlib.Z_SYNC_FLUSH))[:-4]
    return {
        "raw_101": b"\x20\x00" + SWITCH + b"\r\n\x81\x02hi",
        "raw_101_split": b"\x20\x03" + SWITCH + b"\r\n\x81\x02hi\x89\x00",
        "raw_rejected_no_length": b"\x00\x00HTTP/1.1 500 Oops\r\n\r\nbody",
        "raw_garbage": b"\x00\x00\xffgarbage\r\n\r\n",
        "raw_bad_accept": b"\x00\x00" + SWITCH.replace(b"Accept: ", b"Accept: x") + b"\r\n",
        "raw_no_upgrade": b"\x00\x00" + SWITCH.replace(b"Upgrade: websocket\r\n", b"") + b"\r\n",
        "raw_head_too_large": b"\x00\x00" + SWITCH + b"X-Big: " + b"a" * 2100 + b"\r\n\r\n",
        "raw_1xx_then_200": b"\x00\x04HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
        "open_text_ping": b"\x21\x00\x81\x05hello\x89\x00",
        "open_fragments": b"\x21\x01\x01\x01a\x89\x01p\x80\x01b",
        "open_masked": b"\x01\x00\x81\x82abcdxy",
        "open_close": b"\x01\x00\x88\x02\x03\xe8",
        "open_close_reason": b"\x01\x00\x88\x05\x03\xe9bye",
        "open_close_bad_utf8": b"\x01\x00\x88\x03\x03\xe8\xff",
        "open_binary_big": b"\x21\x00\x82\x7e\x01\x00" + bytes(256),
        "open_too_big": b"\x01\x00\x82\x7e\x04\x01" + bytes(1025),
        "open_reserved_opcode": b"\x01\x00\x83\x00",
        "deflate_text": b"\x2a\x00\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00",
        "deflate_fragments": b"\x2a\x00\x41\x03\xf2\x48\xcd\x80\x04\xc9\xc9\x07\x00",
        "deflate_not_offered": b"\x02\x00\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00",
        "deflate_client_params": b"\x2b\x00\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00\x81\x01a",
        "deflate_bomb": b"\x0a\x00\xc2" + bytes([len(bomb)]) + bomb,
        "subprotocol_offered": b"\x34\x00\x81\x01a",
        "subprotocol_not_offered": b"\x24\x00\x81\x01a",
        "subprotocol_and_deflate": b"\x3f\x00\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00",
        "rejected": b"\x05\x00",
        "continue_then_101": b"\x26\x00\x81\x01a",
        "close_at_open": b"\x41\x00\x88\x02\x03\xe8",
        "close_timeout": b"\x41\x40",
        "keepalive": b"\x21\x45"
        + b"\x81\x01a" * 8
        + b"\x8a\x04\x33\x33\x33\x33"
        + b"\x81\x01a" * 4,
        "keepalive_lost": b"\x21\x81" + b"\x81\x01a" * 3,
        "handshake_timeout": b"\x00\xc1" + SWITCH,
        "slow_writer": b"\xa1\x00" + b"\x81\x64" + b"x" * 100,
        "slow_consumer": b"\xa1\x00" + (b"\x81\x64" + b"x" * 100) * 30,
    }


def run_corpus(paths: list[str] | list[Path]) -> int:
    """Replay files (or folders of files) without atheris; return how many ran."""
    return _common.run_corpus(test_one_input, paths)


if __name__ == "__main__":
    main(test_one_input)

__all__ = ["run", "run_corpus", "seeds", "test_one_input"]
