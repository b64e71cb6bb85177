"""What an open, idle server connection keeps: nothing it no longer needs.

Idle memory per connection is a performance target (issue 5): these guard the
savings that are easy to undo by accident (an attribute outside ``__slots__``,
a handshake parser kept alive, an allow-list copied per connection).
"""

from __future__ import annotations

from helpers import CountingRandom, FakeClock, client_frame, open_server
from hub_helpers import HubHarness

from wshub.core import Limits, ServerConnection, TextMessage
from wshub.core.hosts import loopback_hosts, normalize_hosts
from wshub.core.hub_config import HubConfig


def test_an_open_connection_drops_its_handshake_parsers() -> None:
    server = open_server()
    assert server._h11 is None
    assert server._head is None


def test_every_attribute_of_a_server_connection_lives_in_a_slot() -> None:
    server = open_server()
    server.receive_data(client_frame(0x1, b"hello"))
    assert server.events_received() == [TextMessage(data="hello")]
    server.send_text("hi")
    assert vars(server) == {}  # no instance dict was needed


def test_wsproto_parser_only_while_the_fast_path_needs_it() -> None:
    server = open_server()
    server.receive_data(client_frame(0x1, b"a") + client_frame(0x2, b"b"))
    assert server._proto is None
    server.receive_data(client_frame(0x1, b"frag", fin=False))  # fragments: wsproto's job
    assert server._proto is not None
    server.receive_data(client_frame(0x0, b"ment"))
    assert server.events_received()[-1] == TextMessage(data="fragment")
    assert server._proto is None  # between messages it holds nothing: dropped


def test_keepalive_rounds_leave_no_parser_behind() -> None:
    """Issue 10: RSS per idle connection grew ~1.1 KiB at the first keepalive
    round, when the pong made a wsproto parser that stayed for good."""
    clock = FakeClock()
    limits = Limits(ping_interval=5.0, ping_timeout=3.0)
    server = open_server(limits=limits, clock=clock, random=CountingRandom(3))
    for _ in range(2):
        clock.advance(5.0)
        server.handle_timer()
        ping = server.data_to_send()
        assert ping[:2] == b"\x89\x04"
        server.receive_data(client_frame(0xA, ping[2:]))  # our ping answered
        server.receive_data(client_frame(0x9, b"you there?"))  # and the peer's own
        assert server.data_to_send() == b"\x8a\x0ayou there?"
        assert server.next_deadline() == clock.now + 5.0  # the next round, no pong timeout
        assert server._proto is None
    assert vars(server) == {}


def test_a_normalized_allow_list_is_shared_not_copied() -> None:
    hosts = loopback_hosts(8765)
    assert normalize_hosts(hosts) is hosts
    connections = [ServerConnection(clock=FakeClock(), allowed_hosts=hosts) for _ in range(3)]
    assert all(c.allowed_hosts is hosts for c in connections)


def test_an_allow_list_that_needs_normalizing_is_still_normalized() -> None:
    raw = frozenset({" LocalHost:80 "})
    assert normalize_hosts(raw) == {"localhost:80"}
    assert normalize_hosts(raw) is not raw


def test_a_connection_that_never_sends_holds_no_rate_bucket() -> None:
    h = HubHarness(HubConfig(message_rate=1.0, message_burst=2))
    quiet, talker = h.connect(), h.connect()
    entries = h.hub._registry.entries
    assert entries[quiet.conn_id].bucket is None
    for _ in range(3):  # the bucket, made at the first message, still holds the limit
        h.send(talker, {"message_type": "subscribe", "topic": "t", "id": 1})
    assert entries[talker.conn_id].bucket is not None
    errors = [m for m in talker.receive() if m.get("error")]
    assert [e["error"]["code"] for e in errors] == ["rate_limited"]
