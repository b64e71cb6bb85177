"""Hub routing: broadcast, send_to, send_to_principal, topics and their policies."""

from __future__ import annotations

from typing import Any

import pytest
from hub_helpers import HubHarness, Peer

from wshub.core.envelope import JsonCodec
from wshub.core.hub import Hub
from wshub.core.hub_config import HubConfig
from wshub.core.hub_events import PresenceChanged, Published
from wshub.core.registry import ConnectionInfo
from wshub.core.topics import TopicPolicy


class CountingCodec(JsonCodec):
    def __init__(self) -> None:
        super().__init__()
        self.dumps_calls = 0

    def dumps(self, value: object) -> bytes:
        self.dumps_calls += 1
        return super().dumps(value)


def payloads(peer: Peer) -> list[Any]:
    return [m["payload"] for m in peer.receive()]


def subscribe(h: HubHarness, peer: Peer, topic: str, request_id: int | None = None) -> Any:
    message: dict[str, Any] = {"message_type": "subscribe", "topic": topic}
    if request_id is not None:
        message["id"] = request_id
    h.send(peer, message)
    return peer.receive()


def test_a_hub_without_on_output_still_queues_for_every_subscriber() -> None:
    """``on_output`` is optional: a hub driven by hand reads each connection's bytes itself."""
    h = HubHarness()
    h.hub = Hub(clock=h.clock, wall_clock=h.wall)
    a, b = h.connect("a"), h.connect("b")
    for peer in (a, b):
        subscribe(h, peer, "t")
    before = h.hub.stats().messages_out
    assert h.hub.publish("t", {"n": 1}) == 2
    assert payloads(a) == payloads(b) == [{"n": 1}]
    assert h.hub.stats().messages_out == before + 2


def test_broadcast_encodes_once_and_reaches_all_but_excluded() -> None:
    codec = CountingCodec()
    h = HubHarness(codec=codec)
    a, b, c = h.connect("a"), h.connect("b"), h.connect("c")
    before = codec.dumps_calls
    h.outputs.clear()
    assert h.hub.broadcast("news", {"n": 1}, exclude=b.conn_id) == 2
    assert codec.dumps_calls == before + 1
    assert sorted(h.outputs) == ["c1", "c3"]
    got_a, got_c = a.receive(), c.receive()
    assert (
        got_a
        == got_c
        == [{"message_type": "news", "payload": {"n": 1}, "timestamp": got_a[0]["timestamp"]}]
    )
    assert b.receive() == []
    assert h.hub.broadcast("news", 2, exclude=[a.conn_id, c.conn_id]) == 1
    assert payloads(b) == [2]


def test_broadcast_frames_once_for_compressed_and_plain_peers() -> None:
    h = HubHarness()
    plain = h.connect()
    squeezed = h.connect(compression=True)
    assert squeezed.server.deflate is not None
    body = {"text": "abc" * 500}
    assert h.hub.broadcast("big", body) == 2
    assert payloads(plain) == payloads(squeezed) == [body]


def test_send_to_and_send_to_principal() -> None:
    h = HubHarness()
    tab1, tab2, bob = h.connect("alice"), h.connect("alice"), h.connect("bob")
    assert h.hub.send_to(bob.conn_id, "dm", "hi") == 1
    assert h.hub.send_to("ghost", "dm", "hi") == 0
    assert h.hub.send_to_principal("alice", "notice", 5) == 2
    assert h.hub.send_to_principal("nobody", "notice", 5) == 0
    assert payloads(tab1) == payloads(tab2) == [5]
    assert [m["message_type"] for m in bob.receive()] == ["dm"]


def test_send_validates_before_any_state_change() -> None:
    h = HubHarness()
    peer = h.connect()
    sent = h.hub.stats().messages_out  # the welcome
    with pytest.raises(TypeError):
        h.hub.broadcast("x", object())
    with pytest.raises(ValueError, match="message_type"):
        h.hub.send_to(peer.conn_id, "", 1)
    with pytest.raises(ValueError, match="topic"):
        h.hub.publish("", 1)
    assert peer.receive() == []
    assert h.hub.stats().messages_out == sent


def test_publish_sequences_per_topic_with_identical_bytes() -> None:
    h = HubHarness()
    a, b, c = h.connect(), h.connect(), h.connect()
    subscribe(h, a, "t")
    subscribe(h, b, "t")
    subscribe(h, c, "u")
    assert h.hub.publish("t", "one") == 2
    assert h.hub.publish("u", "other") == 1
    assert h.hub.publish("t", "two", message_type="update") == 2
    got_a, got_b = a.receive(), b.receive()
    assert got_a == got_b
    assert [(m["message_type"], m["topic"], m["seq"], m["payload"]) for m in got_a] == [
        ("message", "t", 1, "one"),
        ("update", "t", 2, "two"),
    ]
    assert [(m["topic"], m["seq"]) for m in c.receive()] == [("u", 1)]
    assert h.hub.topic_seq("t") == 2


def test_unconfigured_topic_lives_while_subscribed() -> None:
    h = HubHarness()
    peer = h.connect()
    assert h.hub.publish("free", 1) == 0
    assert h.hub.topic_seq("free") == 0
    subscribe(h, peer, "free")
    first_epoch = h.hub.topic_epoch("free")
    h.hub.publish("free", 1)
    h.send(peer, {"message_type": "unsubscribe", "topic": "free"})
    assert h.hub.subscribers("free") == []
    assert h.hub.topic_seq("free") == 0
    assert h.hub.topic_epoch("free") is None
    payload = subscribe(h, peer, "free", 1)[-1]["payload"]
    assert payload == {"topic": "free", "seq": 0, "epoch": h.hub.topic_epoch("free")}
    assert payload["epoch"] != first_epoch  # a new stream: seq restarted


def test_configured_topic_keeps_its_seq() -> None:
    h = HubHarness()
    h.hub.configure_topic("kept")
    assert h.hub.publish("kept", 1) == 0
    peer = h.connect()
    reply = subscribe(h, peer, "kept", 9)
    assert reply == [
        {
            "message_type": "reply",
            "id": 9,
            "ok": True,
            "payload": {"topic": "kept", "seq": 1, "epoch": h.hub.topic_epoch("kept")},
            "timestamp": reply[0]["timestamp"],
        }
    ]
    h.send(peer, {"message_type": "unsubscribe", "topic": "kept", "id": 10})
    assert peer.receive()[0]["payload"] == {"topic": "kept"}
    assert h.hub.publish("kept", 2) == 0
    assert h.hub.topic_seq("kept") == 2


def test_subscribe_twice_and_unsubscribe_unknown_are_not_errors() -> None:
    h = HubHarness()
    peer = h.connect()
    subscribe(h, peer, "t", 1)
    assert subscribe(h, peer, "t", 2)[0]["ok"] is True
    h.send(peer, {"message_type": "unsubscribe", "topic": "nothing", "id": 3})
    assert peer.receive()[0]["ok"] is True
    assert h.hub.subscribers("t") == [peer.conn_id]
    assert h.hub.stats().errors_by_code == {}


def test_topic_is_required_for_reserved_types() -> None:
    h = HubHarness()
    peer = h.connect()
    for kind in ("subscribe", "unsubscribe", "publish"):
        h.send(peer, {"message_type": kind, "id": kind})
        [reply] = peer.receive()
        assert (reply["id"], reply["ok"], reply["error"]["code"]) == (
            kind,
            False,
            "invalid_envelope",
        )
        h.send(peer, {"message_type": kind})
        assert peer.receive()[0]["message_type"] == "error"


def test_clients_may_not_publish_by_default() -> None:
    h = HubHarness()
    peer = h.connect()
    subscribe(h, peer, "t")
    assert h.send(peer, {"message_type": "publish", "topic": "t", "id": 1, "payload": 1}) == []
    [reply] = peer.receive()
    assert reply["error"]["code"] == "forbidden"
    assert h.hub.topic_seq("t") == 0


def test_publish_policy_subscribers() -> None:
    h = HubHarness()
    h.hub.configure_topic("chat", publish="subscribers")
    member, outsider = h.connect("m"), h.connect("o")
    subscribe(h, member, "chat")
    h.send(outsider, {"message_type": "publish", "topic": "chat", "id": 1, "payload": "x"})
    assert outsider.receive()[0]["error"]["code"] == "forbidden"
    events = h.send(member, {"message_type": "publish", "topic": "chat", "id": 2, "payload": "y"})
    assert events == [
        Published(conn_id=member.conn_id, topic="chat", seq=1, payload="y", delivered=1)
    ]
    got = member.receive()
    assert [(m["message_type"], m["payload"]) for m in got] == [
        ("message", "y"),
        ("reply", {"topic": "chat", "seq": 1, "delivered": 1}),
    ]


def test_client_publish_to_a_topic_nobody_holds() -> None:
    h = HubHarness(default_topic=TopicPolicy(publish="all"))
    peer = h.connect()
    events = h.send(peer, {"message_type": "publish", "topic": "void", "id": 1, "payload": 0})
    assert events == [Published(conn_id=peer.conn_id, topic="void", seq=0, payload=0, delivered=0)]
    assert peer.receive()[0]["payload"] == {"topic": "void", "seq": 0, "delivered": 0}


def test_callable_policies_see_the_connection() -> None:
    seen: list[tuple[str, str]] = []

    def only_admins(info: ConnectionInfo, topic: str) -> bool:
        seen.append((info.conn_id, topic))
        return "admin" in info.principal.scopes

    h = HubHarness()
    h.hub.configure_topic("ops", subscribe=only_admins, publish=only_admins)
    from wshub.core.auth import Principal

    admin, user = h.connect(Principal("root", frozenset({"admin"}))), h.connect("user")
    assert subscribe(h, user, "ops", 1)[0]["error"]["code"] == "forbidden"
    assert subscribe(h, admin, "ops", 2)[0]["ok"] is True
    h.send(admin, {"message_type": "publish", "topic": "ops", "payload": 1})
    assert seen == [(user.conn_id, "ops"), (admin.conn_id, "ops"), (admin.conn_id, "ops")]
    assert h.hub.subscribers("ops") == [admin.conn_id]


def test_subscribe_none_and_server_side_subscribe() -> None:
    h = HubHarness()
    h.hub.configure_topic("private", subscribe="none")
    peer = h.connect()
    assert subscribe(h, peer, "private", 1)[0]["error"]["code"] == "forbidden"
    assert h.hub.subscribe(peer.conn_id, "private") == []
    assert h.hub.publish("private", "secret") == 1
    assert payloads(peer) == ["secret"]
    assert h.hub.unsubscribe(peer.conn_id, "private") == []
    assert h.hub.unsubscribe(peer.conn_id, "private") == []
    assert h.hub.publish("private", "again") == 0


def test_max_subscriptions() -> None:
    h = HubHarness(HubConfig(max_subscriptions=2))
    peer = h.connect()
    subscribe(h, peer, "a")
    subscribe(h, peer, "b")
    assert subscribe(h, peer, "c", 1)[0]["error"]["code"] == "too_many_subscriptions"
    assert subscribe(h, peer, "a", 2)[0]["ok"] is True


def test_presence_join_and_leave() -> None:
    h = HubHarness()
    h.hub.configure_topic("room", presence=True)
    a, b = h.connect("alice"), h.connect("bob")
    assert h.send(a, {"message_type": "subscribe", "topic": "room"}) == [
        PresenceChanged(topic="room", conn_id=a.conn_id, principal_id="alice", joined=True)
    ]
    reply = subscribe(h, b, "room", 1)
    assert reply[0]["payload"]["present"] == [
        {"conn_id": a.conn_id, "principal": "alice"},
        {"conn_id": b.conn_id, "principal": "bob"},
    ]
    assert reply[1]["payload"] == {"event": "join", "conn_id": b.conn_id, "principal": "bob"}
    events = h.send(b, {"message_type": "unsubscribe", "topic": "room"})
    assert events == [
        PresenceChanged(topic="room", conn_id=b.conn_id, principal_id="bob", joined=False)
    ]
    got = a.receive()
    assert [(m["message_type"], m["topic"], m["payload"]["event"]) for m in got] == [
        ("presence", "room", "join"),
        ("presence", "room", "join"),
        ("presence", "room", "leave"),
    ]
    assert b.receive() == []


def test_unknown_message_type_without_id() -> None:
    h = HubHarness()
    peer = h.connect()
    h.send(peer, {"message_type": "hello"})
    [error] = peer.receive()
    assert error["message_type"] == "error"
    assert error["error"]["code"] == "unknown_message_type"
    assert error["payload"] is None


def test_one_bad_client_never_affects_another() -> None:
    h = HubHarness()
    bad, good = h.connect(), h.connect()
    subscribe(h, good, "t")
    for text in ["{", "[]", '{"message_type":1}', "\udcff", "x" * 300_000]:
        h.hub.receive_text(bad.conn_id, text)
    assert good.receive() == []
    assert h.hub.publish("t", 1) == 1
    assert payloads(good) == [1]
