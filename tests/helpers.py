"""Shared test helpers: a fake clock, deterministic randomness, wire builders
and ``ConnectionPair``, which links a client and a server in memory.

Nothing here opens a socket or sleeps: time moves only when a test says so.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import replace

from wshub.core import (
    ClientConnection,
    Closed,
    Event,
    HandshakeRequest,
    Limits,
    ServerConnection,
    State,
)
from wshub.core.frames import encode_frame

__all__ = [
    "FAST_PATH_LIMITS",
    "KEEPALIVE_PING",
    "KEY",
    "MASK",
    "ConnectionPair",
    "CountingRandom",
    "FakeClock",
    "client_frame",
    "closed_events",
    "open_server",
    "run_split",
    "upgrade_request",
]

KEY = base64.b64encode(bytes(range(16))).decode("ascii")
MASK = b"\x37\xfa\x21\x3d"
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def expected_accept(key: str) -> str:
    """Sec-WebSocket-Accept computed independently of the code under test."""
    digest = hashlib.sha1((key + _GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


class FakeClock:
    """A clock that only moves when told to (``advance`` / ``now``)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class CountingRandom:
    """Deterministic ``random`` source: distinct, reproducible bytes per call."""

    def __init__(self, seed: int = 1) -> None:
        self.counter = seed

    def __call__(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            out += hashlib.sha256(self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        return bytes(out[:n])


def upgrade_request(
    *,
    method: str = "GET",
    target: str = "/chat",
    version: str = "1.1",
    headers: Iterable[tuple[str, str]] | None = None,
    extra: Iterable[tuple[str, str]] = (),
    omit: Iterable[str] = (),
) -> bytes:
    """A WebSocket upgrade request head; ``omit`` drops headers by name."""
    base = [
        ("Host", "example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
    ]
    dropped = {name.lower() for name in omit}
    fields = [(n, v) for n, v in (base if headers is None else headers) if n.lower() not in dropped]
    fields += list(extra)
    lines = [f"{method} {target} HTTP/{version}"] + [f"{n}: {v}" for n, v in fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = MASK,
) -> bytes:
    """A frame as a client would send it (masked unless ``mask=None``)."""
    return encode_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=mask)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


def closed_events(events: Iterable[Event]) -> list[Closed]:
    return [e for e in events if isinstance(e, Closed)]


def open_server(
    *,
    limits: Limits | None = None,
    compression: bool = False,
    extensions: str | None = None,
    clock: FakeClock | None = None,
    subprotocol: str | None = None,
    offered: str | None = None,
    random: CountingRandom | None = None,
) -> ServerConnection:
    """A server connection past a valid upgrade, events and output drained."""
    server = ServerConnection(
        limits=limits,
        compression=compression,
        clock=clock or FakeClock(),
        **({} if random is None else {"random": random}),
    )
    extra: list[tuple[str, str]] = []
    if extensions is not None:
        extra.append(("Sec-WebSocket-Extensions", extensions))
    if offered is not None:
        extra.append(("Sec-WebSocket-Protocol", offered))
    server.receive_data(upgrade_request(extra=extra))
    [request] = server.events_received()
    assert isinstance(request, HandshakeRequest)
    server.accept("tester", subprotocol=subprotocol)
    assert server.state is State.OPEN
    server.events_received()
    server.data_to_send()
    return server


class ConnectionPair:
    """A ClientConnection and a ServerConnection joined by an in-memory link.

    ``pump`` moves bytes both ways until neither side has anything to send,
    collecting the events each side reported. Transport closes are passed on
    as EOF once a side asks for them and its output has been delivered.
    """

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        client_limits: Limits | None = None,
        compression: bool = False,
        server_compression: bool | None = None,
        subprotocols: tuple[str, ...] = (),
        clock: FakeClock | None = None,
        accept: bool = True,
        subprotocol: str | None = None,
    ) -> None:
        self.clock = clock or FakeClock()
        self.client = ClientConnection(
            host="example.com",
            target="/ws",
            subprotocols=subprotocols,
            compression=compression,
            limits=client_limits or limits,
            clock=self.clock,
            random=CountingRandom(7),
        )
        self.server = ServerConnection(
            limits=limits,
            compression=compression if server_compression is None else server_compression,
            clock=self.clock,
            random=CountingRandom(99),
        )
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []
        self.transport_closed = False
        self.pump()
        request = self.server_events.pop(0)
        assert isinstance(request, HandshakeRequest), request
        self.request = request
        if accept:
            self.server.accept("tester", subprotocol=subprotocol)
            self.pump()

    def pump(self, *, eof: bool = True) -> tuple[list[Event], list[Event]]:
        """Exchange bytes until quiet; return the new (client, server) events."""
        new_client: list[Event] = []
        new_server: list[Event] = []
        for _ in range(1000):
            moved = False
            data = self.client.data_to_send()
            if data:
                self.server.receive_data(data)
                moved = True
            data = self.server.data_to_send()
            if data:
                self.client.receive_data(data)
                moved = True
            wants_close = (
                self.client.should_close_transport() or self.server.should_close_transport()
            )
            if eof and wants_close and not self.transport_closed and not moved:
                # Everything written has been delivered: now the TCP link goes.
                self.transport_closed = True
                self.server.receive_eof()
                self.client.receive_eof()
                moved = True
            new_client += self.client.events_received()
            new_server += self.server.events_received()
            if not moved:
                break
        else:  # pragma: no cover - a livelock is a bug in the code under test
            raise AssertionError("pump did not settle")
        self.client_events += new_client
        self.server_events += new_server
        return new_client, new_server


FAST_PATH_LIMITS = Limits(max_message_size=80_000, max_outbox_size=1 << 20)
"""Limits of the fast-path equivalence tests: room for their largest frames."""


KEEPALIVE_PING = CountingRandom(7)(4)
"""The payload of the keepalive ping a ``run_split(..., pinged=True)`` server sent."""


def run_split(
    stream: bytes, cuts: list[int], *, fast: bool, pinged: bool = False
) -> tuple[list[Event], bytes, float | None]:
    """An open server fed ``stream`` cut at ``cuts``: its events, its output and
    its next deadline (which pongs and pings move).

    ``fast=False`` turns off the core's whole-frame fast path, so everything
    goes through wsproto: the reference the fast path must equal.
    ``pinged=True``: the server sent a keepalive ping (payload
    ``KEEPALIVE_PING``) and waits for its pong.
    """
    clock = FakeClock()
    if pinged:
        limits = replace(FAST_PATH_LIMITS, ping_interval=5.0, ping_timeout=3.0)
    else:
        limits = FAST_PATH_LIMITS
    server = open_server(limits=limits, clock=clock, random=CountingRandom(7))
    if pinged:
        clock.advance(6.0)
        server.handle_timer()
        assert server.data_to_send() == b"\x89\x04" + KEEPALIVE_PING
    if not fast:
        server._fast_messages = lambda data: 0  # type: ignore[method-assign]
    out = b""
    events: list[Event] = []
    previous = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        server.receive_data(stream[previous:cut])
        previous = cut
        events.extend(server.events_received())
        out += server.data_to_send()
    return events, out, server.next_deadline()
