"""Hub-level authentication: first-message auth, credential expiry and refresh,
the inbound message rate, and topic scopes -- on real in-memory connections."""

from __future__ import annotations

from typing import Any

from hub_helpers import WALL_EPOCH, HubHarness, Peer, open_pair
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.core import Closed
from wshub.core.auth import Principal
from wshub.core.hub_config import HubConfig
from wshub.core.hub_events import AuthRequest

TOKEN = {"message_type": "auth", "id": 1, "payload": {"token": "t0k"}}


def waiting(h: HubHarness, conn_id: str = "w1", remote: Any = ("10.0.0.1", 1)) -> Peer:
    """A connection accepted without credentials, registered to auth by message."""
    server, client = open_pair(h.clock, limits=h.limits)
    h.hub.add_unauthenticated(conn_id, server, remote=remote)
    peer = Peer(conn_id, Principal(""), server, client)
    h.peers[conn_id] = peer
    return peer


def closed_with(peer: Peer) -> tuple[int, str] | None:
    peer.receive()
    return None if peer.closed is None else (peer.closed.code, peer.closed.reason)


# -- first-message auth ---------------------------------------------------------


def test_waiting_connection_gets_nothing_until_it_authenticates() -> None:
    h = HubHarness()
    other = h.connect("bob")
    peer = waiting(h)
    assert h.hub.broadcast("news", 1) == 1  # bob only
    assert h.hub.send_to("w1", "direct", 1) == 0
    assert h.hub.send_to_principal("alice", "direct", 1) == 0
    assert peer.receive() == []
    [request] = h.send(peer, TOKEN)
    assert request == AuthRequest(
        conn_id="w1", token="t0k", request_id=1, refresh=False, deadline=110.0
    )
    assert h.hub.authenticate("w1", Principal("alice"), request.request_id)
    reply, welcome = peer.receive()
    assert reply["message_type"] == "reply"
    assert reply["ok"] is True
    assert reply["payload"] == {"principal": "alice", "expires_at": None}
    assert welcome["payload"] == {"conn_id": "w1", "principal": "alice"}
    assert h.hub.broadcast("news", 2) == 2
    assert [m["payload"] for m in peer.receive()] == [2]
    assert [m["payload"] for m in other.receive()] == [1, 2]


def test_any_other_first_message_closes_1008() -> None:
    for first in (
        {"message_type": "subscribe", "topic": "t"},
        {"message_type": "auth", "payload": {"token": ""}},
        {"message_type": "auth", "payload": "t0k"},
        "not json",
    ):
        h = HubHarness()
        peer = waiting(h)
        assert h.send(peer, first) == []
        assert closed_with(peer) == (1008, "authentication required")
        assert h.hub.footprint()["awaiting_auth"] == 0


def test_binary_before_auth_closes_1008() -> None:
    h = HubHarness(HubConfig(accept_binary=True))
    peer = waiting(h)
    assert h.hub.receive_binary("w1", b"x") == []
    assert closed_with(peer) == (1008, "authentication required")


def test_a_second_message_while_the_first_is_verified_closes() -> None:
    h = HubHarness()
    peer = waiting(h)
    assert len(h.send(peer, TOKEN)) == 1
    assert h.send(peer, {"message_type": "subscribe", "topic": "t"}) == []
    assert closed_with(peer) == (1008, "authentication required")
    assert not h.hub.authenticate("w1", Principal("alice"), 1)


def test_auth_deadline_closes_1008_and_not_before() -> None:
    h = HubHarness(HubConfig(auth_timeout=5.0))
    peer = waiting(h)
    assert h.hub.next_deadline() == 105.0
    h.clock.advance(4.99)
    h.hub.handle_timer()
    assert closed_with(peer) is None
    h.clock.advance(0.01)
    h.hub.handle_timer()
    assert closed_with(peer) == (1008, "authentication timeout")
    assert h.hub.footprint()["awaiting_auth"] == 0


def test_authenticated_in_time_is_not_closed_by_the_old_deadline() -> None:
    h = HubHarness(HubConfig(auth_timeout=5.0))
    peer = waiting(h)
    h.send(peer, TOKEN)
    h.hub.authenticate("w1", Principal("alice"), 1)
    h.clock.advance(60)
    h.hub.handle_timer()
    peer.receive()
    assert peer.closed is None


def test_rejected_token_closes_with_the_reason() -> None:
    h = HubHarness()
    peer = waiting(h)
    h.send(peer, TOKEN)
    h.hub.reject_auth("w1", 1, "invalid bearer token")
    assert closed_with(peer) == (1008, "invalid bearer token")


def test_waiting_connections_count_toward_total_and_host_limits() -> None:
    h = HubHarness(HubConfig(max_connections=3, max_per_host=1))
    waiting(h, "w1", ("10.0.0.1", 1))
    assert h.hub.admit(None, "10.0.0.1").status == 429
    assert h.hub.admit(None, "10.0.0.2").ok
    waiting(h, "w2", ("10.0.0.2", 1))
    h.connect("carol", remote=("10.0.0.3", 1))
    assert h.hub.admit(None, "10.0.0.9").status == 503
    h.hub.remove("w1")
    assert h.hub.admit(None, "10.0.0.1").ok


def test_principal_limit_is_checked_when_the_auth_message_succeeds() -> None:
    h = HubHarness(HubConfig(max_per_principal=1))
    h.connect("alice")
    peer = waiting(h)
    h.send(peer, TOKEN)
    assert not h.hub.authenticate("w1", Principal("alice"), 1)
    assert closed_with(peer) == (1013, "too many connections for this user")
    assert h.hub.connection("w1") is None


def test_removing_a_waiting_connection_leaves_nothing_behind() -> None:
    h = HubHarness()
    waiting(h)
    h.hub.remove("w1")
    assert all(value == 0 for value in h.hub.footprint().values())
    assert h.hub._registry.is_empty()


# -- expiry and refresh -----------------------------------------------------------


def expiring(h: HubHarness, seconds: float, name: str = "alice") -> Peer:
    return h.connect(Principal(name, expires_at=h.wall() + seconds))


def test_expired_credentials_close_1008_at_expiry() -> None:
    h = HubHarness()
    peer = expiring(h, 30)
    assert h.hub.next_deadline() == 130.0
    h.clock.advance(29.9)
    h.wall.advance(29.9)
    h.hub.handle_timer()
    assert closed_with(peer) is None
    h.clock.advance(0.1)
    h.hub.handle_timer()
    assert closed_with(peer) == (1008, "token expired")


def test_refresh_extends_expiry_and_scopes() -> None:
    h = HubHarness()
    peer = expiring(h, 30)
    [request] = h.send(peer, {"message_type": "auth", "id": "r", "payload": {"token": "new"}})
    assert isinstance(request, AuthRequest)
    assert request.refresh
    renewed = Principal("alice", frozenset({"admin"}), expires_at=WALL_EPOCH + 90)
    assert h.hub.authenticate(peer.conn_id, renewed, "r")
    [reply] = peer.receive()
    assert reply["payload"] == {"principal": "alice", "expires_at": WALL_EPOCH + 90}
    info = h.hub.connection(peer.conn_id)
    assert info is not None
    assert info.principal.scopes == frozenset({"admin"})
    h.clock.advance(60)
    h.hub.handle_timer()
    assert closed_with(peer) is None  # the old expiry no longer applies
    h.clock.advance(30)
    h.hub.handle_timer()
    assert closed_with(peer) == (1008, "token expired")


def test_refresh_as_another_principal_is_forbidden() -> None:
    h = HubHarness()
    peer = expiring(h, 30)
    h.send(peer, {"message_type": "auth", "id": 7, "payload": {"token": "x"}})
    assert not h.hub.authenticate(peer.conn_id, Principal("mallory"), 7)
    [reply] = peer.receive()
    assert (reply["ok"], reply["error"]["code"]) == (False, "forbidden")
    info = h.hub.connection(peer.conn_id)
    assert info is not None
    assert info.principal.id == "alice"


def test_failed_refresh_answers_unauthorized_and_keeps_the_connection() -> None:
    h = HubHarness()
    peer = expiring(h, 30)
    h.send(peer, {"message_type": "auth", "id": 7, "payload": {"token": "x"}})
    h.hub.reject_auth(peer.conn_id, 7, "token expired")
    [reply] = peer.receive()
    assert reply["error"] == {"code": "unauthorized", "message": "token expired"}
    assert peer.closed is None
    h.clock.advance(30)
    h.hub.handle_timer()
    assert closed_with(peer) == (1008, "token expired")


def test_auth_message_without_token_is_an_invalid_envelope() -> None:
    h = HubHarness()
    peer = h.connect()
    assert h.send(peer, {"message_type": "auth", "id": 1, "payload": {}}) == []
    [reply] = peer.receive()
    assert reply["error"]["code"] == "invalid_envelope"


def test_stale_timers_of_removed_connections_stay_bounded() -> None:
    h = HubHarness()
    for _ in range(500):
        peer = expiring(h, 3600)
        h.hub.remove(peer.conn_id)
        del h.peers[peer.conn_id]
    assert len(h.hub._conns.timers) <= 2 * len(h.hub.connections()) + 65


# -- inbound message rate -----------------------------------------------------------


def test_messages_beyond_the_burst_are_refused_then_the_flood_is_closed() -> None:
    h = HubHarness(HubConfig(message_rate=10, message_burst=5, max_errors=3))
    peer = h.connect()
    ping = {"message_type": "subscribe", "topic": "t"}
    for _ in range(5):
        h.send(peer, ping)
    assert peer.receive() == []
    h.send(peer, ping)
    [error] = peer.receive()
    assert error["error"] == {"code": "rate_limited", "message": "message rate exceeded"}
    h.clock.advance(0.15)  # one token back
    h.send(peer, {"message_type": "subscribe", "topic": "u", "id": 1})
    [reply] = peer.receive()
    assert reply["ok"] is True
    for _ in range(3):
        h.send(peer, ping)
    assert closed_with(peer) == (1008, "message rate exceeded")


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0, max_value=0.05), min_size=1, max_size=300),
    rate=st.floats(min_value=1, max_value=200),
    burst=st.integers(min_value=1, max_value=50),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    gaps: list[float], rate: float, burst: int
) -> None:
    h = HubHarness(HubConfig(message_rate=rate, message_burst=burst, max_errors=10_000))
    peer = h.connect()
    start = h.clock.now
    accepted = 0
    for gap in gaps:
        h.clock.advance(gap)
        h.send(peer, {"message_type": "unsubscribe", "topic": "t", "id": 1})
        [answer] = peer.receive()
        accepted += answer["message_type"] == "reply"
    assert accepted <= burst + rate * (h.clock.now - start) + 1e-6
    # And a patient client is never refused: one message per 1/rate seconds.
    h.clock.advance(burst / rate + 1)
    for _ in range(20):
        h.clock.advance(1 / rate)
        h.send(peer, {"message_type": "unsubscribe", "topic": "t", "id": 2})
        [answer] = peer.receive()
        assert answer["message_type"] == "reply"


def test_rate_limit_can_be_disabled() -> None:
    h = HubHarness(HubConfig(message_rate=None, message_burst=1))
    peer = h.connect()
    for _ in range(50):
        h.send(peer, {"message_type": "unsubscribe", "topic": "t", "id": 1})
    assert all(m["ok"] for m in peer.receive())


# -- topic scopes ---------------------------------------------------------------------


def test_topic_scopes_gate_subscribe_and_publish() -> None:
    h = HubHarness()
    h.hub.configure_topic("ops", publish="all", subscribe_scope="ops", publish_scope="ops:write")
    reader = h.connect(Principal("r", frozenset({"ops"})))
    writer = h.connect(Principal("w", frozenset({"ops", "ops:write"})))
    nobody = h.connect("n")
    for peer in (reader, writer, nobody):
        h.send(peer, {"message_type": "subscribe", "topic": "ops", "id": 1})
    assert [m["ok"] for m in reader.receive()] == [True]
    assert [m["ok"] for m in writer.receive()] == [True]
    [refused] = nobody.receive()
    assert refused["error"]["code"] == "forbidden"
    h.send(reader, {"message_type": "publish", "topic": "ops", "id": 2, "payload": 1})
    [refused] = reader.receive()
    assert refused["error"]["code"] == "forbidden"
    h.send(writer, {"message_type": "publish", "topic": "ops", "id": 3, "payload": 2})
    assert [m["payload"] for m in reader.receive()] == [2]


def test_disconnect_closes_a_waiting_connection() -> None:
    h = HubHarness()
    peer = waiting(h)
    assert h.hub.disconnect("w1", 1008, "go away")
    assert closed_with(peer) == (1008, "go away")
    assert isinstance(peer.closed, Closed)
