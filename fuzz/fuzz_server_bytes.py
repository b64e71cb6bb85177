"""Fuzz a ServerConnection with arbitrary bytes, before and after the handshake.

Input layout:

* byte 0, the scenario: bits 0-2 pick a prefix fed before the fuzzed bytes
  (none, so the fuzzer writes the request itself; valid upgrade requests
  with and without deflate and subprotocol offers; plain GET and HEAD);
  bit 3 enables compression on the server; bits 4-5 the application's
  decision on a request (accept at once, accept one read later so frames
  arrive before the 101, reject, never decide); bit 6 echoes every message
  back; bit 7 has the application close as soon as the connection opens.
* byte 1, the pace: the prefix comes in one read, then bits 0-4 give the
  size of the reads of the rest (0: everything in one read);
  bit 5 a slow writer (output taken every fourth read only), bits 6-7 how far
  the clock moves after each read (0, 1, 6 or 25 s), so timers fire.
* the rest: bytes from the peer, after the prefix.

The application (``_App``) answers every request it is shown, so fuzzed
frames reach the frame parser. ``ServerMonitor`` checks the contract after
every call (see ``_contract``): legal transitions only, the event grammar,
one ``Closed``, misuse refused without effect, and every byte written
parsing as one HTTP response followed by valid server frames carrying
exactly the messages the application sent.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _common import FakeClock, chunked, main
from _contract import ServerMonitor

from wshub.core import (
    BinaryMessage,
    Event,
    HandshakeRequest,
    HttpRequest,
    Limits,
    Opened,
    ServerConnection,
    State,
    TextMessage,
)

_KEY = b"AAECAwQFBgcICQoLDA0ODw=="
UPGRADE = (
    b"GET /ws?x=1 HTTP/1.1\r\nHost: fuzz.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + _KEY + b"\r\nSec-WebSocket-Version: 13\r\n"
)
DEFLATE = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
PROTOCOLS = b"Sec-WebSocket-Protocol: chat, wshub.v1\r\n"
PREFIXES = (
    b"",
    UPGRADE + b"\r\n",
    UPGRADE + DEFLATE + b"\r\n",
    UPGRADE + PROTOCOLS + b"\r\n",
    UPGRADE + DEFLATE + PROTOCOLS + b"Origin: http://localhost:5173\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: fuzz.test\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: fuzz.test\r\n\r\n",
    UPGRADE
    + b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10; "
    + b"client_no_context_takeover, permessage-deflate\r\n\r\n",
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
STEPS = (0.0, 1.0, 6.0, 25.0)
ACCEPT, ACCEPT_LATER, REJECT, UNDECIDED = range(4)


def _random(n: int) -> bytes:
    return b"\x5a" * n


class _App:
    """What an application does with the events: decide, echo, close."""

    def __init__(self, monitor: ServerMonitor, options: int) -> None:
        self.monitor = monitor
        self.decision = (options >> 4) & 3
        self.echo = bool(options & 0x40)
        self.close_at_open = bool(options & 0x80)
        self.deferred: HandshakeRequest | None = None

    def react(self, events: list[Event]) -> None:
        todo = list(events)
        while todo:
            todo += self._one(todo.pop(0))

    def later(self) -> None:
        """The deferred accept, one read after the request."""
        request, self.deferred = self.deferred, None
        if request is not None:
            self.react(self._accept(request))

    def _accept(self, request: HandshakeRequest) -> list[Event]:
        if self.monitor.conn.state is not State.DECIDING:
            return []
        offered = request.subprotocols
        return self.monitor.accept(offered[-1] if offered else None)

    def _one(self, event: Event) -> list[Event]:
        monitor = self.monitor
        deciding = monitor.conn.state is State.DECIDING
        if isinstance(event, HandshakeRequest) and deciding:
            if self.decision == ACCEPT:
                return self._accept(event)
            if self.decision == ACCEPT_LATER:
                self.deferred = event
            elif self.decision == REJECT:
                return monitor.reject(403, "forbidden")
        elif isinstance(event, HttpRequest) and deciding:
            if self.decision in (ACCEPT, ACCEPT_LATER):
                return monitor.respond(200, b"ok\n")
            if self.decision == REJECT:
                return monitor.reject(404, "not found")
        elif isinstance(event, Opened) and self.close_at_open:
            monitor.close(1000, "bye")
        elif isinstance(event, TextMessage | BinaryMessage) and self.echo:
            monitor.send(event.data)
        return []


def test_one_input(data: bytes) -> None:
    """One run: the body behind atheris, the corpus replay and the hypothesis test."""
    run(data, ServerConnection)


def run(data: bytes, make: Callable[..., ServerConnection]) -> None:
    """``test_one_input`` with the connection class as a parameter, so the
    tests can check that the oracles catch a connection that breaks the rules."""
    if len(data) < 2:
        return
    options, pace = data[0], data[1]
    compression = bool(options & 0x08)
    clock = FakeClock()
    conn = make(limits=LIMITS, compression=compression, clock=clock, random=_random)
    monitor = ServerMonitor(conn, compression=compression)
    app = _App(monitor, options)
    step = STEPS[pace >> 6]
    slow = bool(pace & 0x20)
    prefix = PREFIXES[options & 7]
    pieces = [prefix] if prefix else []
    for i, piece in enumerate([*pieces, *chunked(data[2:], pace & 0x1F)]):
        app.later()
        app.react(monitor.receive(piece))
        monitor.probe_misuse()
        if not slow or i % 4 == 3:
            monitor.drain()
        clock.now += step
        app.react(monitor.timers(clock.now))
    app.later()
    for _ in range(3 if step else 0):  # let the timers run out
        clock.now += step
        app.react(monitor.timers(clock.now))
        monitor.drain()
    monitor.receive_eof()
    monitor.receive_eof()
    monitor.finish()


def masked(opcode: int, payload: bytes, *, first: int | None = None) -> bytes:
    """A client frame (mask 01 02 03 04, length < 126) for seeds."""
    mask = b"\x01\x02\x03\x04"
    head = bytes([0x80 | opcode if first is None else first, 0x80 | len(payload)])
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def seeds() -> dict[str, bytes]:
    """Named seed inputs: each prefix and decision, valid and broken frames."""
    hello = masked(1, b"hello")
    deflated = masked(1, b"\xf2\x48\xcd\xc9\xc9\x07\x00", first=0xC1)  # "Hello"
    upgrade = UPGRADE + b"\r\n"
    return {
        "raw_upgrade_echo": b"\x40\x00" + upgrade + hello + masked(2, b"\x00\x01"),
        "raw_upgrade_split": b"\x40\x07" + upgrade + hello,
        "raw_upgrade_pipelined_close": b"\x40\x00" + upgrade + hello + masked(8, b"\x03\xe8"),
        "raw_garbage": b"\x00\x03" + b"\x16\x03\x01garbage\r\n\r\n",
        "raw_http": b"\x00\x05GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "raw_http10": b"\x20\x00GET /a HTTP/1.0\r\n\r\n",
        "raw_http2": b"\x00\x00PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "raw_bad_key": b"\x00\x00" + upgrade.replace(_KEY, b"short"),
        "raw_bad_version": b"\x00\x00" + upgrade.replace(b"Version: 13", b"Version: 8"),
        "raw_post": b"\x00\x00" + upgrade.replace(b"GET", b"POST"),
        "raw_huge_head": b"\x00\x00" + UPGRADE + b"X-Big: " + b"a" * 2100 + b"\r\n\r\n",
        "raw_slow_head": b"\x00\x81" + UPGRADE,
        "open_text": b"\x41\x00" + hello + masked(9, b"ping"),
        "open_fragments": b"\x41\x05" + masked(1, b"a", first=0x01) + masked(0, b"b"),
        "open_fragment_ping": b"\x41\x00"
        + masked(1, b"a", first=0x01)
        + masked(9, b"p")
        + masked(0, b"b"),
        "open_bad_utf8": b"\x01\x00" + masked(1, b"\xff"),
        "open_close": b"\x01\x00" + masked(8, b"\x03\xe8bye"),
        "open_close_empty": b"\x01\x00" + masked(8, b""),
        "open_close_bad_code": b"\x01\x00" + masked(8, b"\x03\xed"),
        "open_unmasked": b"\x01\x00\x81\x02hi",
        "open_rsv2": b"\x01\x00" + masked(1, b"x", first=0xA1),
        "open_huge_header": b"\x01\x00\x82\xff\x7f\xff\xff\xff\xff\xff\xff\xff",
        "open_too_big": b"\x01\x00\x82\xfe\x04\x01" + b"\x00" * 4 + b"a" * 1025,
        "open_big_ping": b"\x01\x00\x89\xfe\x00\x7e" + b"\x00" * 4 + b"p" * 126,
        "deflate_echo": b"\x4a\x00" + deflated + hello,
        "deflate_bad_stream": b"\x4a\x00" + masked(1, b"\xff\xff\xff", first=0xC1),
        "deflate_params": b"\x4f\x03" + deflated,
        "deflate_off_rsv1": b"\x42\x00" + deflated,
        "subprotocols": b"\x44\x00" + hello,
        "origin_all": b"\x4c\x02" + deflated,
        "accept_later_pipelined": b"\x51\x00" + hello + masked(8, b"\x03\xe8"),
        "accept_later_split": b"\x51\x03" + hello + hello,
        "reject": b"\x21\x00" + hello,
        "undecided_timeout": b"\x31\x80" + hello,
        "handshake_timeout": b"\x00\xc1" + UPGRADE,
        "http_health": b"\x05\x00",
        "http_head": b"\x06\x00",
        "http_not_found": b"\x25\x00",
        "http_more": b"\x05\x01more bytes",
        "close_at_open": b"\xc1\x00" + hello + masked(8, b"\x03\xe8"),
        "close_timeout": b"\x81\x40",
        "close_answered": b"\x81\x00" + masked(8, b"\x03\xe8"),
        "keepalive": b"\x41\x4b" + hello * 6 + masked(10, b"\x5a\x5a\x5a\x5a") + hello * 3,
        "keepalive_lost": b"\x41\x8b" + hello * 3,
        "idle": b"\x41\xc0" + hello,
        "slow_writer": b"\x41\x23" + hello * 12,
        "slow_consumer": b"\x41\x20" + masked(1, b"x" * 100) * 30,
    }


def run_corpus(paths: list[str] | list[Path]) -> int:
    """Replay files (or folders of files) without atheris; return how many ran."""
    return _common.run_corpus(test_one_input, paths)


if __name__ == "__main__":
    main(test_one_input)

__all__ = ["masked", "run", "run_corpus", "seeds", "test_one_input"]
