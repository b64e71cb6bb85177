"""Every size limit of the core, crossed once: message size (plain, fragmented,
compressed), announced frame length, decompressed size, outbox."""

from __future__ import annotations

import os
import zlib
from typing import Any

import pytest
from helpers import ConnectionPair, FakeClock, client_frame, open_server
from test_core_framing import failed_with, parse_frames

from wshub.core import BinaryMessage, Limits, PreparedMessage, State, TextMessage
from wshub.core import deflate as deflate_module
from wshub.core.deflate import DeflateParams, compress_message

LIMIT = 4096
TEXT, BINARY, CONT = 0x1, 0x2, 0x0


def limited(**kwargs: Any) -> Limits:
    return Limits(max_message_size=LIMIT, **kwargs)


def deflated(payload: bytes) -> bytes:
    return compress_message(payload, DeflateParams(), client=True)


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1])
def test_single_frame_message_size(size: int) -> None:
    conn = open_server(limits=limited())
    conn.receive_data(client_frame(BINARY, b"x" * size))
    if size <= LIMIT:
        assert conn.events_received() == [BinaryMessage(data=b"x" * size)]
    else:
        failed_with(conn, 1009)


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1])
def test_fragmented_message_size(size: int) -> None:
    conn = open_server(limits=limited())
    third = size // 3
    parts = [b"a" * third, b"b" * third, b"c" * (size - 2 * third)]
    conn.receive_data(
        client_frame(TEXT, parts[0], fin=False)
        + client_frame(CONT, parts[1], fin=False)
        + client_frame(CONT, parts[2])
    )
    if size <= LIMIT:
        assert conn.events_received() == [TextMessage(data=b"".join(parts).decode())]
    else:
        failed_with(conn, 1009)


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1])
@pytest.mark.parametrize("compressible", [True, False])
def test_compressed_message_size(size: int, compressible: bool) -> None:
    conn = open_server(limits=limited(), compression=True, extensions="permessage-deflate")
    payload = b"z" * size if compressible else os.urandom(size)
    conn.receive_data(client_frame(BINARY, deflated(payload), rsv1=True))
    if size <= LIMIT:
        assert conn.events_received() == [BinaryMessage(data=payload)]
    else:
        failed_with(conn, 1009)


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1])
def test_compressed_fragmented_message_size(size: int) -> None:
    conn = open_server(limits=limited(), compression=True, extensions="permessage-deflate")
    payload = os.urandom(size)
    data = deflated(payload)
    cut = len(data) // 2
    conn.receive_data(
        client_frame(BINARY, data[:cut], fin=False, rsv1=True) + client_frame(CONT, data[cut:])
    )
    if size <= LIMIT:
        assert conn.events_received() == [BinaryMessage(data=payload)]
    else:
        failed_with(conn, 1009)


def test_huge_announced_length_fails_before_any_payload() -> None:
    conn = open_server(limits=limited())
    header = bytes([0x82, 0x80 | 127]) + (2**63 - 1).to_bytes(8, "big")
    conn.receive_data(header)  # not even the mask yet
    failed_with(conn, 1009)


def test_announced_length_over_remaining_budget_fails_at_header() -> None:
    conn = open_server(limits=limited())
    conn.receive_data(client_frame(TEXT, b"a" * (LIMIT - 10), fin=False))
    header = bytes([0x80, 0x80 | 11])
    conn.receive_data(header)
    failed_with(conn, 1009)


class _SpyInflater:
    def __init__(self, inner: Any, log: list[int]) -> None:
        self._inner = inner
        self._log = log

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        out: bytes = self._inner.decompress(data, max_length)
        self._log.append(len(out))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _SpyZlib:
    """zlib with every inflater's output sizes recorded."""

    def __init__(self) -> None:
        self.outputs: list[int] = []

    def decompressobj(self, *args: Any) -> _SpyInflater:
        return _SpyInflater(zlib.decompressobj(*args), self.outputs)

    def __getattr__(self, name: str) -> Any:
        return getattr(zlib, name)


@pytest.mark.parametrize("fragmented", [False, True])
def test_deflate_bomb_is_1009_with_bounded_inflation(
    monkeypatch: pytest.MonkeyPatch, fragmented: bool
) -> None:
    spy = _SpyZlib()
    monkeypatch.setattr(deflate_module, "zlib", spy)
    limit = 64 * 1024
    conn = open_server(
        limits=Limits(max_message_size=limit), compression=True, extensions="permessage-deflate"
    )
    bomb = deflated(bytes(16 * 1024 * 1024))  # 16 MiB of zeros, ~16 KiB compressed
    assert len(bomb) < limit
    if fragmented:
        chunks = [bomb[i : i + 1000] for i in range(0, len(bomb), 1000)]
        data = client_frame(BINARY, chunks[0], fin=False, rsv1=True)
        data += b"".join(client_frame(CONT, c, fin=False) for c in chunks[1:])
    else:
        data = client_frame(BINARY, bomb, rsv1=True)
    conn.receive_data(data)
    failed_with(conn, 1009)
    assert spy.outputs, "the inflater was not used"
    assert sum(spy.outputs) <= limit + 1
    assert max(spy.outputs) <= limit + 1


def test_bad_deflate_data_is_1007() -> None:
    conn = open_server(compression=True, extensions="permessage-deflate")
    conn.receive_data(client_frame(BINARY, b"\xff\xff\xff\xff", rsv1=True))
    failed_with(conn, 1007)


def test_rsv1_on_continuation_is_1002() -> None:
    conn = open_server(compression=True, extensions="permessage-deflate")
    data = deflated(b"hello")
    conn.receive_data(
        client_frame(TEXT, data[:2], fin=False, rsv1=True) + client_frame(CONT, data[2:], rsv1=True)
    )
    failed_with(conn, 1002)


def test_rsv1_without_negotiated_deflate_is_1002() -> None:
    conn = open_server(compression=False, extensions="permessage-deflate")
    conn.receive_data(client_frame(TEXT, deflated(b"hello"), rsv1=True))
    failed_with(conn, 1002)


def test_outbox_overflow_is_1013() -> None:
    conn = open_server(limits=Limits(max_outbox_size=1000))
    assert conn.send_binary(b"a" * 600)
    assert conn.outbox_size > 600
    assert not conn.send_binary(b"b" * 600)
    closed = failed_with(conn, 1013)
    assert closed.reason == "slow consumer"


def test_outbox_accepts_one_big_message_when_empty() -> None:
    conn = open_server(limits=Limits(max_outbox_size=1000))
    assert conn.send_binary(b"a" * 5000)
    assert conn.state is State.OPEN
    assert parse_frames(conn.data_to_send()) == [(BINARY, b"a" * 5000)]
    assert conn.outbox_size == 0
    assert conn.send_prepared(PreparedMessage.binary(b"c" * 5000))
    assert conn.state is State.OPEN


def test_outbox_drained_between_sends_never_overflows() -> None:
    conn = open_server(limits=Limits(max_outbox_size=1000))
    for _ in range(50):
        assert conn.send_text("x" * 900)
        conn.data_to_send()
    assert conn.state is State.OPEN


def test_handshake_response_is_not_counted_nor_dropped_by_outbox_cap() -> None:
    pair = ConnectionPair(limits=Limits(max_outbox_size=1000), accept=False)
    pair.server.accept()
    # The 101 is still in the outbox: a first big message is still allowed,
    # and an overflow must not swallow the handshake response.
    assert pair.server.send_binary(b"a" * 1500)
    assert not pair.server.send_binary(b"b" * 10)
    client_events, _ = pair.pump()
    names = [type(e).__name__ for e in client_events]
    assert names[0] == "Opened", client_events
    assert client_events[-1].code == 1013  # type: ignore[union-attr]


def test_ping_flood_against_full_outbox_is_1013() -> None:
    conn = open_server(limits=Limits(max_outbox_size=200))
    conn.send_binary(b"x" * 150)
    conn.receive_data(b"".join(client_frame(0x9, b"p" * 100) for _ in range(5)))
    failed_with(conn, 1013)


def test_ping_flood_beyond_the_burst_is_1008() -> None:
    clock = FakeClock()
    conn = open_server(limits=Limits(ping_rate=10, ping_burst=5), clock=clock)
    conn.receive_data(b"".join(client_frame(0x9, b"p") for _ in range(5)))
    assert conn.events_received() == []
    assert [op for op, _ in parse_frames(conn.data_to_send())] == [0xA] * 5
    clock.advance(0.15)  # one more ping's worth
    conn.receive_data(client_frame(0x9, b"q"))
    assert parse_frames(conn.data_to_send()) == [(0xA, b"q")]
    conn.receive_data(client_frame(0x9, b"r"))
    closed = failed_with(conn, 1008)
    assert closed.reason == "too many pings"


def test_pings_at_the_allowed_rate_never_fail() -> None:
    clock = FakeClock()
    conn = open_server(limits=Limits(ping_rate=10, ping_burst=1), clock=clock)
    for _ in range(100):
        clock.advance(0.1)
        conn.receive_data(client_frame(0x9, b"k"))
    assert conn.state is State.OPEN
    assert len(parse_frames(conn.data_to_send())) == 100


def test_ping_rate_can_be_disabled() -> None:
    conn = open_server(limits=Limits(ping_rate=None, ping_burst=1))
    conn.receive_data(b"".join(client_frame(0x9, b"p") for _ in range(200)))
    assert conn.state is State.OPEN


@pytest.mark.parametrize(("opcode", "text"), [(0x1, True), (0x2, False)])
def test_many_tiny_fragments_are_held_as_few_objects(opcode: int, text: bool) -> None:
    conn = open_server()
    count = 20_000
    frames = [client_frame(opcode, b"a", fin=False)]
    frames += [client_frame(0x0, b"b", fin=False) for _ in range(count - 2)]
    frames.append(client_frame(0x0, b"c"))
    conn.receive_data(b"".join(frames[:-1]))
    # One object per fragment would be 20 000; runs are joined as they come.
    assert len(conn._parts) <= 256 + count // 256
    conn.receive_data(frames[-1])
    [message] = conn.events_received()
    expected = "a" + "b" * (count - 2) + "c"
    assert message.data == (expected if text else expected.encode())
