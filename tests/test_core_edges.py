"""Rules of the core at its edges: the cases branch coverage found no other
core test stating (tools/core_coverage.sh). Each test states a rule; where
inputs are open-ended, a property does."""

from __future__ import annotations

import pytest
from helpers import KEY, FakeClock, client_frame, open_server, upgrade_request
from hypothesis import given, settings
from hypothesis import strategies as st
from test_core_client import aborted, client, switching
from test_core_framing import failed_with, parse_frames
from test_core_handshake import refused

from wshub.core import (
    BinaryMessage,
    Limits,
    LocalProtocolError,
    PreparedMessage,
    ServerConnection,
    State,
    TextMessage,
)
from wshub.core.deflate import negotiate_server, parse_server_response
from wshub.core.handshake import (
    decode_headers,
    is_upgrade_request,
    parse_upgrade_request,
    upgrade_fields,
)
from wshub.core.http_head import RequestHead
from wshub.core.outbox_connection import OutboxConnection

# -- the client's handshake ----------------------------------------------------------


def test_a_101_without_connection_upgrade_is_not_an_upgrade() -> None:
    """RFC 6455 §4.1 (client step 3): the 101 must carry ``Connection: Upgrade``."""
    conn, key = client()
    conn.receive_data(switching(key).replace(b"Connection: Upgrade\r\n", b""))
    assert "Connection: Upgrade" in aborted(conn).reason


def test_a_client_cannot_send_prepared_messages() -> None:
    """Prepared messages are unmasked server frames: a client refuses them and
    stays open."""
    conn, key = client()
    conn.receive_data(switching(key))
    conn.events_received()
    with pytest.raises(LocalProtocolError, match="server side only"):
        conn.send_prepared(PreparedMessage.text("hi"))
    assert conn.state is State.OPEN
    assert conn.send_text("hi")


# -- timers ----------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    ping=st.one_of(st.none(), st.floats(min_value=0.5, max_value=100)),
    idle=st.one_of(st.none(), st.floats(min_value=0.5, max_value=100)),
)
def test_an_open_connection_wakes_at_its_first_timer(
    ping: float | None, idle: float | None
) -> None:
    """Open, a connection's next deadline is the earlier of its keepalive ping
    and its idle timeout (None when it has neither)."""
    clock = FakeClock()
    conn = open_server(limits=Limits(ping_interval=ping, idle_timeout=idle), clock=clock)
    timers = [clock.now + t for t in (ping, idle) if t is not None]
    assert conn.next_deadline() == (min(timers) if timers else None)


# -- the frame reader's fast path ----------------------------------------------------


@pytest.mark.parametrize("size", [126, 300, 70_000])
def test_a_frame_header_cut_after_a_whole_message_waits_for_the_rest(size: int) -> None:
    """A read that ends inside the next frame's header (its 16- or 64-bit
    length, its mask) delivers the whole message before it, then the next
    one once its bytes come: the same messages as from one read."""
    frame = client_frame(0x2, b"m" * size)
    for cut in range(1, 14):
        conn = open_server(limits=Limits(max_message_size=1 << 20))
        conn.receive_data(client_frame(0x1, b"first") + frame[:cut])
        assert conn.events_received() == [TextMessage(data="first")]
        conn.receive_data(frame[cut:])
        assert conn.events_received() == [BinaryMessage(data=b"m" * size)]


@pytest.mark.parametrize(
    "header",
    [
        bytes([0x82, 0x80 | 126]) + (5).to_bytes(2, "big"),  # 5 in 16 bits
        bytes([0x82, 0x80 | 127]) + (200).to_bytes(8, "big"),  # 200 in 64 bits
        bytes([0x82, 0x80 | 127]) + (1 << 63).to_bytes(8, "big"),  # top bit set
    ],
)
def test_a_length_not_in_its_shortest_form_or_with_the_top_bit_is_1002(header: bytes) -> None:
    """RFC 6455 §5.2: "the minimal number of bytes MUST be used to encode the
    length", and a 64-bit length has its most significant bit 0."""
    conn = open_server()
    conn.receive_data(header + b"\x00\x00\x00\x00" + b"x" * 5)
    failed_with(conn, 1002)


# -- permessage-deflate ---------------------------------------------------------------


def test_empty_parameters_of_an_offer_are_ignored() -> None:
    """``permessage-deflate;;client_max_window_bits`` is the offer without the
    empty element (RFC 9110 §5.6.1: empty list elements do not count)."""
    assert negotiate_server(["permessage-deflate;; client_max_window_bits ;"]) == (
        negotiate_server(["permessage-deflate; client_max_window_bits"])
    )


def test_a_server_response_may_turn_off_the_clients_context_takeover() -> None:
    params = parse_server_response(["permessage-deflate; client_no_context_takeover"])
    assert params is not None
    assert params.client_no_context_takeover
    assert not params.server_no_context_takeover


def test_an_uncompressed_message_on_a_deflate_connection_has_the_same_size_limit() -> None:
    """With permessage-deflate negotiated, an uncompressed (RSV1 clear) message
    is still bounded by ``max_message_size`` across its fragments (1009)."""
    conn = open_server(
        limits=Limits(max_message_size=100), compression=True, extensions="permessage-deflate"
    )
    assert conn.deflate is not None
    conn.receive_data(client_frame(0x1, b"a" * 60, fin=False))
    conn.receive_data(client_frame(0x0, b"a" * 40, fin=False))
    assert conn.events_received() == []
    conn.receive_data(client_frame(0x0, b"a", fin=True))
    failed_with(conn, 1009)


def test_an_uncompressed_message_within_the_limit_passes_on_a_deflate_connection() -> None:
    conn = open_server(
        limits=Limits(max_message_size=100), compression=True, extensions="permessage-deflate"
    )
    conn.receive_data(client_frame(0x1, b"a" * 60, fin=False) + client_frame(0x0, b"a" * 40))
    assert conn.events_received() == [TextMessage(data="a" * 100)]
    assert parse_frames(conn.data_to_send()) == []


# -- the handshake's helpers ------------------------------------------------------------

header_names = st.sampled_from(
    ["Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version", "X-Other"]
)
header_values = st.sampled_from(
    ["example.com", "websocket", "Upgrade", "keep-alive, upgrade", KEY, "13", "", "h2c"]
)


@settings(max_examples=100, deadline=None)
@given(
    headers=st.lists(st.tuples(header_names, header_values), max_size=8),
    method=st.sampled_from(["GET", "POST"]),
)
def test_the_upgrade_rules_give_one_answer_with_or_without_the_fields_at_hand(
    headers: list[tuple[str, str]], method: str
) -> None:
    """``is_upgrade_request`` and ``parse_upgrade_request`` compute the fields
    they need when the caller has not: the answer is the same either way."""
    lowered = tuple((name.lower(), value) for name, value in headers)
    fields = upgrade_fields(lowered)
    assert is_upgrade_request(lowered) == is_upgrade_request(lowered, fields)
    head = RequestHead(method=method, target="/", http_version="1.1", headers=lowered)
    assert parse_upgrade_request(head) == parse_upgrade_request(head, fields)


def test_raw_header_pairs_decode_as_latin_1_as_given() -> None:
    """Header bytes are latin-1 (RFC 9110 §5.5); raw pairs keep their case."""
    assert decode_headers([(b"X-Name", b"caf\xe9"), (b"a", b"")]) == (
        ("X-Name", "café"),
        ("a", ""),
    )


def test_an_empty_host_is_400() -> None:
    """RFC 9112 §3.2: a Host field with no value is refused, as a missing one."""
    request = upgrade_request(omit=["Host"], extra=[("Host", " ")])
    status, body, _closed = refused(request)
    assert status == 400
    assert body.endswith(b"missing or repeated Host header")


# -- the hub's outbox connection ------------------------------------------------------


def test_an_outbox_connection_shows_its_state_and_queue_in_its_repr() -> None:
    conn = OutboxConnection()
    conn.send_prepared(PreparedMessage.text("abc"))
    assert repr(conn) == "<OutboxConnection OPEN 1 queued, 5 B>"
    conn.close(1000)
    assert repr(conn).startswith("<OutboxConnection CLOSING 1 queued")


def test_a_server_connection_refuses_input_after_a_failed_handshake_silently() -> None:
    """After the machine refused a handshake, more bytes change nothing."""
    conn = ServerConnection(clock=FakeClock())
    conn.receive_data(upgrade_request(omit=["Sec-WebSocket-Key"]))
    conn.events_received()
    conn.data_to_send()
    conn.receive_data(b"more")
    assert conn.events_received() == []
    assert conn.data_to_send() == b""
