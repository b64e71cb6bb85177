"""First-message auth racing the connection's end: the verifier's answer, a
rejection or the auth deadline may come after the peer has gone but before
the driver has called ``remove``. None of them may send, count or admit
anything then. Also: misuse of ``add_unauthenticated``, refreshes without a
request id, and timers of connections that authenticated."""

from __future__ import annotations

import pytest
from hub_helpers import HubHarness, Peer, open_pair
from test_hub_auth import TOKEN, waiting

from wshub.core import LocalProtocolError, State
from wshub.core.auth import Principal
from wshub.core.hub_config import HubConfig


def gone(peer: Peer) -> None:
    """The peer closes; the server's core answers and is CLOSED, but the
    driver has not yet told the hub (no ``remove``)."""
    peer.client.close(1000)
    peer.server.receive_data(peer.client.data_to_send())
    peer.server.events_received()
    peer.server.data_to_send()  # the close echo
    assert peer.server.state is State.CLOSED


def test_a_connection_is_added_once_and_only_open() -> None:
    h = HubHarness()
    waiting(h, "w1")
    member = h.connect("alice")
    for conn_id in ("w1", member.conn_id):
        server, _client = open_pair(h.clock)
        with pytest.raises(LocalProtocolError, match="already in the hub"):
            h.hub.add_unauthenticated(conn_id, server)
    server, client = open_pair(h.clock)
    client.close(1000)
    server.receive_data(client.data_to_send())
    with pytest.raises(LocalProtocolError, match="not open"):
        h.hub.add_unauthenticated("w2", server)
    assert h.hub.footprint()["awaiting_auth"] == 1


def test_credentials_accepted_after_the_peer_left_admit_nothing() -> None:
    h = HubHarness(HubConfig(max_per_principal=1))
    peer = waiting(h)
    [request] = h.send(peer, TOKEN)
    gone(peer)
    assert not h.hub.authenticate("w1", Principal("alice"), request.request_id)
    assert peer.server.data_to_send() == b""
    assert h.hub.connections() == []
    assert h.hub.footprint()["awaiting_auth"] == 0
    h.connect("alice")  # the one connection alice may have is still free


def test_credentials_refused_after_the_peer_left_send_nothing() -> None:
    h = HubHarness()
    peer = waiting(h)
    [request] = h.send(peer, TOKEN)
    gone(peer)
    h.hub.reject_auth("w1", request.request_id, "bad token")
    assert peer.server.data_to_send() == b""
    assert h.hub.footprint()["awaiting_auth"] == 0
    h.hub.reject_auth("w1", request.request_id, "bad token")  # and again: nothing
    h.hub.reject_auth("nobody", None, "bad token")


def test_an_auth_deadline_after_the_peer_left_closes_nothing() -> None:
    h = HubHarness(HubConfig(auth_timeout=5))
    peer = waiting(h)
    gone(peer)
    h.clock.advance(5)
    assert h.hub.handle_timer() == []
    assert peer.server.data_to_send() == b""
    assert h.hub.footprint()["awaiting_auth"] == 0
    assert h.hub.next_deadline() is None


def test_a_refresh_without_a_request_id_takes_the_new_scopes_silently() -> None:
    """``authenticate`` of an open connection without a request id (the
    application refreshing it) replies to nobody but applies the principal."""
    h = HubHarness()
    peer = h.connect("alice")
    assert h.hub.authenticate(peer.conn_id, Principal("alice", frozenset({"ops"})))
    assert peer.receive() == []
    info = h.hub.connection(peer.conn_id)
    assert info is not None
    assert info.principal.scopes == frozenset({"ops"})


def test_a_connection_that_authenticated_is_not_woken_at_its_auth_deadline() -> None:
    """Once a waiting connection authenticated, its auth deadline is no
    timer of the hub's any more: nothing is due, and when that time comes
    nothing happens to it."""
    h = HubHarness(HubConfig(auth_timeout=5))
    peer = waiting(h)
    assert h.hub.next_deadline() == h.clock.now + 5
    [request] = h.send(peer, TOKEN)
    assert h.hub.authenticate("w1", Principal("alice"), request.request_id)
    peer.receive()
    assert h.hub.next_deadline() is None
    h.clock.advance(5)
    assert h.hub.handle_timer() == []
    assert peer.receive() == []
    assert peer.closed is None
