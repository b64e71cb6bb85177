"""permessage-deflate (RFC 7692): negotiation rules and compressed traffic."""

from __future__ import annotations

import zlib

import pytest
from helpers import ConnectionPair, client_frame, open_server
from test_core_framing import parse_frames

from wshub.core import BinaryMessage, TextMessage
from wshub.core.deflate import (
    DeflateParams,
    client_offer,
    deflate_bound,
    negotiate_server,
    parse_server_response,
)

BINARY, TEXT = 0x2, 0x1


def inflate(data: bytes, bits: int = 15) -> bytes:
    return zlib.decompressobj(-bits).decompress(data + b"\x00\x00\xff\xff")


def test_plain_offer_is_accepted_with_server_no_context_takeover() -> None:
    agreed = negotiate_server(["permessage-deflate"])
    assert agreed is not None
    params, response = agreed
    assert response == "permessage-deflate; server_no_context_takeover"
    assert params == DeflateParams()


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; unknown",
        "permessage-deflate; x=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=abc",
        "permessage-deflate; client_max_window_bits=100",
        "permessage-deflate; client_max_window_bits=-9",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=yes",
        "x-webkit-deflate-frame",
        "",
    ],
)
def test_unacceptable_offers_are_declined(offer: str) -> None:
    assert negotiate_server([offer]) is None


def test_first_acceptable_offer_wins() -> None:
    agreed = negotiate_server(
        ["x-other, permessage-deflate; bogus", "permessage-deflate; server_max_window_bits=10"]
    )
    assert agreed is not None
    params, response = agreed
    assert params.server_max_window_bits == 10
    assert response == "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"


def test_client_max_window_bits_without_value_is_not_echoed() -> None:
    agreed = negotiate_server([client_offer()])
    assert agreed is not None
    assert agreed[1] == "permessage-deflate; server_no_context_takeover"


def test_client_max_window_bits_value_is_echoed() -> None:
    agreed = negotiate_server(['permessage-deflate; client_max_window_bits="10"'])
    assert agreed is not None
    params, response = agreed
    assert params.client_max_window_bits == 10
    assert response.endswith("; client_max_window_bits=10")


def test_client_no_context_takeover_is_echoed() -> None:
    agreed = negotiate_server(["permessage-deflate; client_no_context_takeover"])
    assert agreed is not None
    assert agreed[0].client_no_context_takeover
    assert "client_no_context_takeover" in agreed[1]


def test_server_response_is_parsed_by_our_client() -> None:
    for offer in (
        "permessage-deflate",
        client_offer(),
        "permessage-deflate; server_max_window_bits=9",
    ):
        agreed = negotiate_server([offer])
        assert agreed is not None
        params = parse_server_response([agreed[1]])
        assert params is not None
        assert params.server_no_context_takeover
        assert params.server_max_window_bits == agreed[0].server_max_window_bits


def test_deflate_bound_covers_incompressible_data() -> None:
    import os

    for n in (0, 1, 100, 5000, 70000):
        data = os.urandom(n)
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        assert len(c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)) <= deflate_bound(n)


def test_server_declines_when_compression_disabled() -> None:
    conn = open_server(compression=False, extensions="permessage-deflate")
    assert conn.deflate is None
    conn.send_text("plain")
    assert parse_frames(conn.data_to_send()) == [(TEXT, b"plain")]


def test_server_frames_use_negotiated_window_and_fresh_context() -> None:
    conn = open_server(compression=True, extensions="permessage-deflate; server_max_window_bits=9")
    payload = b"abcabcabc" * 100
    conn.send_binary(payload)
    conn.send_binary(payload)
    data = conn.data_to_send()
    assert data[0] == 0xC2  # FIN + RSV1 + binary
    frames = parse_frames(data)
    assert frames[0] == frames[1]  # no context carried between messages
    assert inflate(frames[0][1], 9) == payload


@pytest.mark.parametrize("reads", ["one read", "a read each"])
def test_server_inflates_client_context_takeover(reads: str) -> None:
    """The inflater's window carries over between messages, also when they come
    in separate reads (the parser holding it must not be dropped between them)."""
    conn = open_server(compression=True, extensions="permessage-deflate")
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    messages = [b"hello hello hello", b"hello hello hello", b"world"]
    frames = []
    for message in messages:
        out = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        frames.append(client_frame(BINARY, out[:-4], rsv1=True))
    for data in [b"".join(frames)] if reads == "one read" else frames:
        conn.receive_data(data)
    assert conn.events_received() == [BinaryMessage(data=m) for m in messages]


def test_uncompressed_message_on_deflate_connection() -> None:
    conn = open_server(compression=True, extensions="permessage-deflate")
    conn.receive_data(client_frame(TEXT, b"plain"))
    assert conn.events_received() == [TextMessage(data="plain")]


def test_round_trip_with_compression() -> None:
    pair = ConnectionPair(compression=True)
    assert pair.client.deflate is not None
    assert pair.server.deflate is not None
    messages = ["a" * 1000, "é" * 10, ""]
    for text in messages:
        pair.client.send_text(text)
        pair.server.send_text(text[::-1])
    client_events, server_events = pair.pump()
    assert server_events == [TextMessage(data=t) for t in messages]
    assert client_events == [TextMessage(data=t[::-1]) for t in messages]
