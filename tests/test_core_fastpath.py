"""The fast path for whole small data frames must be invisible.

``Connection._fast_messages`` decodes the common frames itself and hands
everything else to wsproto. These tests pin the wsproto internals it reads
and check, with hypothesis, that any mix of frames gives exactly the events
and output of wsproto's general parser, for any split of the input.
"""

from __future__ import annotations

from helpers import (
    FAST_PATH_LIMITS,
    KEEPALIVE_PING,
    MASK,
    ConnectionPair,
    client_frame,
    open_server,
    run_split,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.core import BinaryMessage, Closed, TextMessage
from wshub.core.connection import Connection


def _frames() -> st.SearchStrategy[bytes]:
    text = st.text(max_size=40).map(lambda t: client_frame(0x1, t.encode("utf-8")))
    binary = st.binary(max_size=400).map(lambda b: client_frame(0x2, b))
    bad_utf8 = st.just(client_frame(0x1, b"ok\xff"))
    medium = st.integers(126, 300).map(lambda n: client_frame(0x2, b"m" * n))
    medium_text = st.tuples(st.integers(40, 120), st.booleans()).map(
        # multi-byte characters, and maybe an invalid byte in the middle
        lambda a: client_frame(0x1, "é".encode() * a[0] + (b"\xc3(" if a[1] else b"") + b"z" * 50)
    )
    large = st.integers(1 << 16, (1 << 16) + 100).map(lambda n: client_frame(0x2, b"L" * n))
    oversized = st.just(client_frame(0x2, b"O" * 80_001))
    non_minimal_64 = st.just(bytes([0x82, 0xFF]) + (200).to_bytes(8, "big") + MASK + b"n" * 200)
    ping = st.binary(max_size=125).map(lambda b: client_frame(0x9, b))
    pong = st.one_of(
        st.just(client_frame(0xA, KEEPALIVE_PING)),  # the answer to our keepalive ping
        st.binary(max_size=10).map(lambda b: client_frame(0xA, b)),  # unsolicited
    )
    long_ping = st.just(client_frame(0x9, b"p" * 126))  # §5.5: control payloads <= 125
    unmasked_ping = st.just(client_frame(0x9, b"hi", mask=None))
    ping_without_fin = st.just(client_frame(0x9, b"hi", fin=False))
    fragment = st.tuples(st.binary(max_size=20), st.binary(max_size=20)).map(
        lambda ab: client_frame(0x2, ab[0], fin=False) + client_frame(0x0, ab[1])
    )
    unmasked = st.just(client_frame(0x2, b"no mask", mask=None))
    rsv = st.just(client_frame(0x2, b"rsv", rsv1=True))
    non_minimal = st.just(bytes([0x82, 0xFE, 0x00, 0x05]) + MASK + b"hello")
    close = st.just(client_frame(0x8, b"\x03\xe8bye"))
    return st.one_of(
        text,
        binary,
        bad_utf8,
        medium,
        medium_text,
        large,
        oversized,
        non_minimal_64,
        ping,
        pong,
        long_ping,
        unmasked_ping,
        ping_without_fin,
        fragment,
        unmasked,
        rsv,
        non_minimal,
        close,
    )


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(_frames(), max_size=6),
    cut_fractions=st.lists(st.floats(0, 1), max_size=8),
    pinged=st.booleans(),
)
def test_fast_path_matches_wsproto_for_any_split(
    frames: list[bytes], cut_fractions: list[float], pinged: bool
) -> None:
    stream = b"".join(frames)
    cuts = [int(f * len(stream)) for f in cut_fractions]
    reference = run_split(stream, [], fast=False, pinged=pinged)
    assert run_split(stream, [], fast=True, pinged=pinged) == reference
    assert run_split(stream, cuts, fast=True, pinged=pinged) == reference


@settings(max_examples=50, deadline=None)
@given(
    pings=st.integers(40, 70),
    between=st.sampled_from([b"", client_frame(0x1, b"x")]),
    cut_fractions=st.lists(st.floats(0, 1), max_size=8),
)
def test_a_ping_flood_fails_the_same_way_on_both_paths(
    pings: int, between: bytes, cut_fractions: list[float]
) -> None:
    """Past ``ping_burst`` (50) pings at once: 1008 "too many pings", and
    nothing after the failing ping is read, on the fast path as on wsproto's."""
    stream = (client_frame(0x9, b"p") + between) * pings
    cuts = [int(f * len(stream)) for f in cut_fractions]
    reference = run_split(stream, [], fast=False)
    assert run_split(stream, cuts, fast=True) == reference


def test_fast_path_reads_these_wsproto_internals() -> None:
    # If a wsproto release renames them, fail here rather than misparse.
    server = open_server()
    assert server._proto is None  # created by the first input the fast path leaves to it
    proto = server._frame_protocol()
    assert proto.idle()
    server.receive_data(client_frame(0x1, b"partial")[:5])
    assert not proto.idle()


def test_fast_path_takes_whole_frames() -> None:
    server = open_server()
    calls: list[int] = []
    original = Connection._fast_messages

    def spy(data: bytes) -> int:
        consumed = original(server, data)
        calls.append(consumed)
        return consumed

    server._fast_messages = spy  # type: ignore[method-assign]
    stream = client_frame(0x1, b"one") + client_frame(0x1, "two é".encode())
    server.receive_data(stream)
    assert calls == [len(stream)]
    assert server.events_received() == [TextMessage(data="one"), TextMessage(data="two é")]


def test_client_side_fast_path_reads_unmasked_frames() -> None:
    pair = ConnectionPair()
    pair.pump(eof=False)
    pair.server.send_text("from server")
    pair.server.send_binary(b"\x00\x01")
    client_events, _ = pair.pump(eof=False)
    assert client_events[-2:] == [TextMessage(data="from server"), BinaryMessage(data=b"\x00\x01")]


def test_large_frame_is_collected_across_reads_without_wsproto() -> None:
    server = open_server(limits=FAST_PATH_LIMITS)
    frame = client_frame(0x2, bytes(range(256)) * 300)  # 76 800 bytes: a 64-bit length
    for i in range(0, len(frame), 10_000):
        server.receive_data(frame[i : i + 10_000])
    assert server.events_received() == [BinaryMessage(data=bytes(range(256)) * 300)]
    assert server._proto is None  # wsproto's parser was never needed, so never created


def test_invalid_utf8_in_a_large_frame_fails_before_the_rest_arrives() -> None:
    server = open_server(limits=FAST_PATH_LIMITS)
    frame = client_frame(0x1, b"ok" + b"\xff" + b"x" * 60_000)
    server.receive_data(frame[:1000])
    [closed] = server.events_received()
    assert isinstance(closed, Closed)
    assert closed.code == 1007
    assert server.should_close_transport()
