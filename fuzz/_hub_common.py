"""Shared plumbing of the hub harnesses: in-memory connection pairs under
contract monitors, and a byte reader that turns fuzz input into choices.

``ByteReader`` follows the shape of ``atheris.FuzzedDataProvider`` (consume
ints in a range, bools, bytes, text) but is plain Python: a corpus file must
mean the same operations whether it is replayed with atheris installed or
not, and atheris' provider exists only where atheris does. Running out of
bytes is never an error: every read then returns its smallest value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from _common import FakeClock
from _contract import ClientMonitor, ServerMonitor

from wshub.core import ClientConnection, HandshakeRequest, Limits, Opened, ServerConnection
from wshub.core.auth import Principal

T = TypeVar("T")

__all__ = ["ByteReader", "FakeClock", "open_pair", "zeros"]


def zeros(n: int) -> bytes:
    return b"\x00" * n


def open_pair(
    clock: FakeClock, *, limits: Limits, compression: bool, principal: Principal
) -> tuple[ServerMonitor, ClientMonitor]:
    """A server and a client connection that completed the handshake in
    memory, each under its contract monitor."""
    server = ServerMonitor(
        ServerConnection(limits=limits, compression=compression, clock=clock, random=zeros),
        compression=compression,
    )
    server.track_sent = False  # the hub sends, not the monitor
    client = ClientMonitor(
        ClientConnection(
            host="hub.test",
            compression=compression,
            limits=Limits(max_message_size=1 << 24, max_outbox_size=1 << 24, ping_interval=None),
            clock=clock,
            random=zeros,
        ),
        offered=(),
    )
    events = server.receive(client.drain())
    if [type(e) for e in events] != [HandshakeRequest]:
        raise AssertionError(f"in-memory handshake failed on the server: {events!r}")
    if [type(e) for e in server.accept(None, principal)] != [Opened]:
        raise AssertionError("server did not open")
    if [type(e) for e in client.receive(server.drain())] != [Opened]:
        raise AssertionError("client did not open")
    return server, client


class ByteReader:
    """Consume fuzz input front to back as typed choices."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def byte(self) -> int:
        if self._pos >= len(self._data):
            return 0
        value = self._data[self._pos]
        self._pos += 1
        return value

    def int_in_range(self, low: int, high: int) -> int:
        """An int in ``[low, high]``, from as few bytes as the range needs (at
        least one, so inputs keep their layout whatever the range)."""
        span = high - low
        if span <= 0:
            self.byte()
            return low
        value = 0
        while span:
            value = value << 8 | self.byte()
            span >>= 8
        return low + value % (high - low + 1)

    def boolean(self) -> bool:
        return bool(self.byte() & 1)

    def pick(self, choices: Sequence[T]) -> T:
        return choices[self.int_in_range(0, len(choices) - 1)]

    def bytes(self, max_len: int) -> bytes:
        """A length byte (capped at ``max_len``), then that many bytes."""
        size = min(self.int_in_range(0, 255), max_len, self.remaining())
        chunk = self._data[self._pos : self._pos + size]
        self._pos += size
        return chunk

    def text(self, max_len: int, *, surrogates: bool = False) -> str:
        """Text as a peer could send it (UTF-8 with replacement); with
        ``surrogates``, code points may also be lone UTF-16 surrogates, which
        JSON can carry as ``\\ud800`` escapes."""
        raw = self.bytes(max_len)
        if not surrogates:
            return raw.decode("utf-8", "replace")
        # Two bytes per code point, in the BMP (surrogates included).
        return "".join(chr(raw[i] << 8 | raw[i + 1]) for i in range(0, len(raw) - 1, 2))
