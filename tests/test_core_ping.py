"""Application pings: ``send_ping`` and the ``Pong`` event with the round-trip time."""

from __future__ import annotations

import pytest
from helpers import ConnectionPair, CountingRandom, FakeClock, client_frame, open_server
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.core import (
    ConnectionClosedError,
    Limits,
    LocalProtocolError,
    Pong,
    ServerConnection,
)
from wshub.core.connection import MAX_PINGS_OUTSTANDING

QUIET = Limits(ping_interval=None)


def test_a_ping_is_sent_and_its_pong_reports_the_round_trip() -> None:
    clock = FakeClock()
    server = open_server(limits=QUIET, clock=clock, random=CountingRandom(5))
    payload = server.send_ping()
    assert payload == CountingRandom(5)(4)  # four bytes of the injected random source
    assert server.data_to_send() == b"\x89\x04" + payload
    clock.advance(0.25)
    server.receive_data(client_frame(0xA, payload))
    assert server.events_received() == [Pong(payload=payload, rtt=0.25)]


def test_a_chosen_payload_and_its_bounds() -> None:
    server = open_server(limits=QUIET)
    assert server.send_ping(b"x" * 125) == b"x" * 125
    assert server.data_to_send() == b"\x89\x7d" + b"x" * 125
    with pytest.raises(LocalProtocolError, match="125"):
        server.send_ping(b"y" * 126)
    with pytest.raises(LocalProtocolError, match="outstanding"):
        server.send_ping(b"x" * 125)  # the same payload is still waiting for its pong
    assert server.data_to_send() == b""  # refused pings send nothing


def test_at_most_so_many_pings_wait_for_their_pongs() -> None:
    server = open_server(limits=QUIET)
    for i in range(MAX_PINGS_OUTSTANDING):
        server.send_ping(bytes([i]))
    with pytest.raises(LocalProtocolError, match="outstanding"):
        server.send_ping(b"one too many")
    server.receive_data(client_frame(0xA, bytes([0])))
    assert [type(e) for e in server.events_received()] == [Pong]
    server.send_ping(b"room again")


def test_a_pong_settles_the_pings_sent_before_it() -> None:
    """RFC 6455 §5.5.3: a peer may answer only the latest of several pings."""
    clock = FakeClock()
    server = open_server(limits=QUIET, clock=clock)
    server.send_ping(b"first")
    clock.advance(1.0)
    server.send_ping(b"second")
    clock.advance(1.0)
    server.send_ping(b"third")
    server.receive_data(client_frame(0xA, b"second"))
    assert server.events_received() == [Pong(payload=b"second", rtt=1.0)]
    server.receive_data(client_frame(0xA, b"first"))  # settled already: nothing
    assert server.events_received() == []
    server.receive_data(client_frame(0xA, b"third"))
    assert server.events_received() == [Pong(payload=b"third", rtt=0.0)]
    assert server._pings is None


def test_keepalive_pongs_and_unsolicited_pongs_report_nothing() -> None:
    clock = FakeClock()
    limits = Limits(ping_interval=5.0, ping_timeout=3.0)
    server = open_server(limits=limits, clock=clock, random=CountingRandom(9))
    clock.advance(5.0)
    server.handle_timer()
    keepalive = server.data_to_send()[2:]
    with pytest.raises(LocalProtocolError, match="outstanding"):
        server.send_ping(keepalive)  # its pong would be taken for the keepalive's
    server.receive_data(client_frame(0xA, keepalive) + client_frame(0xA, b"nobody asked"))
    assert server.events_received() == []


def test_no_ping_before_the_handshake_or_after_the_close() -> None:
    fresh = ServerConnection(clock=FakeClock())
    with pytest.raises(LocalProtocolError):
        fresh.send_ping()
    server = open_server(limits=QUIET)
    server.close(1000)
    with pytest.raises(ConnectionClosedError):
        server.send_ping()


def test_a_client_pings_the_server_through_the_real_handshake() -> None:
    pair = ConnectionPair(limits=QUIET, client_limits=QUIET)
    payload = pair.client.send_ping(b"rtt?")
    pair.clock.advance(0.5)  # before the pump: the round trip is measured on the shared clock
    client_events, server_events = pair.pump(eof=False)
    assert client_events == [Pong(payload=payload, rtt=0.5)]
    assert server_events == []  # the server answered by itself


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("ping"), st.integers(0, 20)),
            st.tuples(st.just("pong"), st.integers(0, 20)),
            st.tuples(st.just("wait"), st.integers(1, 3)),
        ),
        max_size=60,
    )
)
def test_every_pong_event_answers_an_outstanding_ping(steps: list[tuple[str, int]]) -> None:
    """Against a model: which pings wait, in order; a pong for one of them
    reports its rtt and settles it and all older ones; nothing else reports."""
    clock = FakeClock()
    server = open_server(limits=QUIET, clock=clock)
    waiting: dict[bytes, float] = {}  # the model: payload -> sent at, oldest first
    for action, n in steps:
        payload = bytes([n])
        if action == "ping":
            if payload in waiting or len(waiting) >= MAX_PINGS_OUTSTANDING:
                with pytest.raises(LocalProtocolError):
                    server.send_ping(payload)
            else:
                server.send_ping(payload)
                waiting[payload] = clock.now
        elif action == "pong":
            server.receive_data(client_frame(0xA, payload))
            expected = []
            if payload in waiting:
                for earlier in list(waiting):
                    sent = waiting.pop(earlier)
                    if earlier == payload:
                        break
                expected = [Pong(payload=payload, rtt=clock.now - sent)]
            assert server.events_received() == expected
        else:
            clock.advance(n)
    assert (server._pings or {}) == waiting
