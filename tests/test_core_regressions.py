"""Inputs that once broke the core (found by the fuzzers or the properties),
kept as plain tests so each fix stays fixed."""

from __future__ import annotations

import zlib

from helpers import client_frame, open_server
from test_core_framing import failed_with

from wshub.core import Limits

TEXT, BINARY, CONT = 0x1, 0x2, 0x0


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def _feed_both_ways(data: bytes, chunk: int, **kwargs: object) -> list[object]:
    outcomes = []
    for size in (len(data), chunk):
        conn = open_server(**kwargs)  # type: ignore[arg-type]
        for i in range(0, len(data), size):
            conn.receive_data(data[i : i + size])
        outcomes.append((conn.events_received(), conn.data_to_send()))
    return outcomes


def test_new_compressed_message_inside_fragmented_one_is_1002_at_once() -> None:
    # fuzz_frames: the interleaved frame's payload was inflated with the
    # unfinished message's context before wsproto noticed the interleaving,
    # so the code was 1007 or 1002 depending on the split.
    data = (
        client_frame(BINARY, _deflate(b"abcd" * 8), fin=False, rsv1=True)
        + client_frame(0x9, b"\x00\xd4" * 20)
        + client_frame(BINARY, b"b`\xc0\x05\x18\x0f\xfd\x07" * 4, rsv1=True)
    )
    whole, split = _feed_both_ways(data, 3, compression=True, extensions="permessage-deflate")
    assert whole == split
    conn = open_server(compression=True, extensions="permessage-deflate")
    conn.receive_data(data)
    failed_with(conn, 1002)


def test_continuation_without_message_is_1002_before_payload() -> None:
    conn = open_server(compression=True, extensions="permessage-deflate")
    conn.receive_data(client_frame(CONT, b"\xff" * 10)[:6])  # header and mask only
    failed_with(conn, 1002)


def test_compressed_invalid_utf8_before_size_limit_is_1007_for_any_split() -> None:
    payload = b"ok" + b"\xff" + b"a" * 5000
    data = client_frame(TEXT, _deflate(payload), rsv1=True)
    limits = Limits(max_message_size=1000)
    whole, split = _feed_both_ways(
        data, 2, compression=True, extensions="permessage-deflate", limits=limits
    )
    assert whole == split
    conn = open_server(compression=True, extensions="permessage-deflate", limits=limits)
    conn.receive_data(data)
    failed_with(conn, 1007)


def test_compressed_size_limit_before_invalid_utf8_is_1009_for_any_split() -> None:
    payload = b"a" * 5000 + b"\xff"
    data = client_frame(TEXT, _deflate(payload), rsv1=True)
    limits = Limits(max_message_size=1000)
    whole, split = _feed_both_ways(
        data, 1, compression=True, extensions="permessage-deflate", limits=limits
    )
    assert whole == split
    conn = open_server(compression=True, extensions="permessage-deflate", limits=limits)
    conn.receive_data(data)
    failed_with(conn, 1009)
