"""Hub connection lifecycle: welcome, admission limits, remove, disconnect, binary."""

from __future__ import annotations

import pytest
from hub_helpers import WALL_EPOCH, HubHarness, open_pair

from wshub.core import ClientConnection, LocalProtocolError, ServerConnection
from wshub.core.auth import Principal
from wshub.core.hub_config import HubConfig
from wshub.core.hub_events import BinaryReceived, PresenceChanged


def test_add_sends_welcome_and_registers() -> None:
    h = HubHarness()
    h.wall.advance(1.5)
    peer = h.connect(Principal("alice", frozenset({"admin"})), welcome=False)
    assert peer.receive() == [
        {
            "message_type": "welcome",
            "payload": {"conn_id": "c1", "principal": "alice"},
            "timestamp": int((WALL_EPOCH + 1.5) * 1000),
        }
    ]
    info = h.hub.connection("c1")
    assert info is not None
    assert info.principal.scopes == frozenset({"admin"})
    assert info.remote == ("127.0.0.1", 50000)
    assert info.host == "127.0.0.1"
    assert info.connected_at == WALL_EPOCH + 1.5
    assert [i.conn_id for i in h.hub.connections()] == ["c1"]
    assert h.outputs == ["c1"]


def test_welcome_can_be_disabled() -> None:
    h = HubHarness(HubConfig(send_welcome=False))
    peer = h.connect()
    assert peer.receive() == []


def test_add_refuses_duplicates_and_unopened_connections() -> None:
    h = HubHarness()
    peer = h.connect()
    with pytest.raises(LocalProtocolError, match="already"):
        h.hub.add(peer.conn_id, peer.server, principal=peer.principal)
    fresh = ServerConnection(clock=h.clock)
    with pytest.raises(LocalProtocolError, match="not open"):
        h.hub.add("new", fresh, principal=Principal("x"))
    assert h.hub.connection("new") is None


def test_metadata_is_the_applications() -> None:
    h = HubHarness()
    server, _ = open_pair(h.clock)
    given = {"tab": 1}
    info = h.hub.add("m", server, principal=Principal("p"), metadata=given)
    info.metadata["seen"] = True
    assert given == {"tab": 1}
    assert h.hub.connection("m") is info


def test_admission_total_is_503_with_retry_after() -> None:
    h = HubHarness(HubConfig(max_connections=2, retry_after=7))
    assert h.hub.admit("a", "10.0.0.1").ok
    h.connect("a", remote=("10.0.0.1", 1))
    h.connect("b", remote=("10.0.0.2", 1))
    refused = h.hub.admit("c", "10.0.0.3")
    assert (refused.ok, refused.status, refused.headers) == (False, 503, (("Retry-After", "7"),))


def test_admission_per_principal_and_per_host_are_429() -> None:
    h = HubHarness(HubConfig(max_per_principal=2, max_per_host=3))
    one = h.connect("alice", remote=("10.0.0.1", 1))
    h.connect("alice", remote=("10.0.0.2", 1))
    refused = h.hub.admit("alice", "10.0.0.9")
    assert (refused.ok, refused.status) == (False, 429)
    assert "user" in refused.reason
    assert h.hub.admit("bob", "10.0.0.1").ok
    h.connect("bob", remote="10.0.0.1")
    h.connect("carol", remote=("10.0.0.1", 2))
    by_host = h.hub.admit("dave", "10.0.0.1")
    assert (by_host.ok, by_host.status) == (False, 429)
    assert "address" in by_host.reason
    assert h.hub.admit("dave", None).ok
    h.hub.remove(one.conn_id)
    assert h.hub.admit("alice", "10.0.0.1").ok


def test_remove_is_idempotent_and_forgets_everything() -> None:
    h = HubHarness()
    h.hub.configure_topic("room", presence=True)
    a = h.connect("alice")
    b = h.connect("bob")
    h.hub.register_command("work")
    h.send(a, {"message_type": "subscribe", "topic": "room"})
    h.send(a, {"message_type": "subscribe", "topic": "free"})
    h.send(b, {"message_type": "subscribe", "topic": "room"})
    h.send(a, {"message_type": "work", "id": 1})
    h.send(a, {"message_type": "nope"})  # an error in a's window
    b.receive()
    events = h.hub.remove(a.conn_id)
    assert events == [
        PresenceChanged(topic="room", conn_id="c1", principal_id="alice", joined=False)
    ]
    assert h.hub.remove(a.conn_id) == []
    assert b.receive()[-1]["payload"] == {"event": "leave", "conn_id": "c1", "principal": "alice"}
    assert h.hub.reply(a.conn_id, 1, "late") is False
    assert h.hub.subscribers("free") == []
    h.hub.remove(b.conn_id)
    assert set(h.hub.footprint().values()) == {0}


def test_disconnect_closes_and_stops_delivery() -> None:
    h = HubHarness()
    a = h.connect()
    b = h.connect()
    assert h.hub.disconnect(a.conn_id, 4000, "bye") is True
    assert h.hub.disconnect(a.conn_id) is False
    assert h.hub.disconnect("nobody") is False
    assert h.hub.broadcast("note", 1) == 1
    a.receive()
    assert a.closed is not None
    assert (a.closed.code, a.closed.reason) == (4000, "bye")
    assert a.received == []
    assert [m["payload"] for m in b.receive()] == [1]
    assert h.reap() == []
    assert h.hub.connection(a.conn_id) is None


def test_close_all_for_shutdown() -> None:
    h = HubHarness()
    peers = [h.connect() for _ in range(3)]
    h.hub.disconnect(peers[0].conn_id)
    assert h.hub.close_all() == 2
    for peer in peers[1:]:
        peer.receive()
        assert peer.closed is not None
        assert peer.closed.code == 1001


def test_binary_is_refused_with_1003_by_default() -> None:
    h = HubHarness()
    peer = h.connect()
    assert h.hub.receive_binary(peer.conn_id, b"\x00\x01") == []
    peer.receive()
    assert peer.closed is not None
    assert peer.closed.code == 1003
    assert h.hub.stats().messages_in == 1


def test_binary_is_reported_when_accepted() -> None:
    h = HubHarness(HubConfig(accept_binary=True))
    peer = h.connect()
    assert h.hub.receive_binary(peer.conn_id, bytearray(b"ab")) == [
        BinaryReceived(conn_id=peer.conn_id, data=b"ab")
    ]


def test_input_for_unknown_or_closing_connections_is_ignored() -> None:
    h = HubHarness()
    peer = h.connect()
    assert h.hub.receive_text("ghost", '{"message_type":"x"}') == []
    frame = peer.text_frame({"message_type": "unknown"})
    h.hub.disconnect(peer.conn_id)
    assert h.hub.receive_text(peer.conn_id, frame) == []
    assert h.hub.receive_binary(peer.conn_id, b"x") == []
    assert h.hub.stats().messages_in == 0


def test_client_connections_work_as_hub_connections_only_if_open() -> None:
    h = HubHarness()
    client = ClientConnection(host="x", clock=h.clock)
    with pytest.raises(LocalProtocolError):
        h.hub.add("cl", client, principal=Principal("p"))


def test_loopback_clients_are_bounded_by_the_total_not_per_host() -> None:
    h = HubHarness(HubConfig(max_connections=5, max_per_host=2, max_per_principal=None))
    for i in range(5):
        assert h.hub.admit("alice", "127.0.0.1").ok
        h.connect("alice", remote=("127.0.0.1", 1000 + i))
    refused = h.hub.admit("alice", "::1")
    assert (refused.ok, refused.status) == (False, 503)


def test_limits_can_be_disabled() -> None:
    h = HubHarness(HubConfig(max_connections=None, max_per_principal=None, max_per_host=None))
    for i in range(300):
        assert h.hub.admit("alice", "10.0.0.1").ok
        h.connect("alice", remote=("10.0.0.1", i))


def test_adapter_bounds_the_total_by_the_descriptor_limit() -> None:
    import resource

    from wshub.adapters.hub import HubHandler, descriptor_budget
    from wshub.core.auth import AccessPolicy

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = descriptor_budget()
    assert 0 < budget < soft
    handler = HubHandler(AccessPolicy(require_auth=False))
    assert handler.hub.config.max_connections == budget
    explicit = HubHandler(AccessPolicy(require_auth=False), config=HubConfig(max_connections=7))
    assert explicit.hub.config.max_connections == 7
