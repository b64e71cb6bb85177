"""The hub with a broker: several nodes on one set of streams (``tests/broker_fake.py``).

What a client sees must not depend on which node it is connected to: every
publication once, in ``seq`` order, numbered per topic across nodes; a
subscribe with ``since`` recovers from the broker's stream or says
``recovered: false``; a node that missed publications (link lost) brings its
subscribers back in step from the stream, or tells them with ``reset``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from broker_fake import FakeBroker, FakeNode
from hub_helpers import WALL_EPOCH, HubHarness, Peer
from hypothesis import given
from hypothesis import strategies as st

from wshub.core import Limits
from wshub.core.envelope import encode_envelope, encode_topic_parts
from wshub.core.errors import LocalProtocolError
from wshub.core.hub_broker import Fetch, Listen, Outgoing, PresenceOut, Unlisten
from wshub.core.hub_config import HubConfig
from wshub.core.hub_events import PresenceChanged, Published
from wshub.core.hub_stream import page_of
from wshub.core.topics import TopicPolicy

TS = int(WALL_EPOCH * 1000)
OPEN = TopicPolicy(publish="all")


def nodes(count: int = 2, *, history: int = 10, **kwargs: Any) -> tuple[FakeBroker, list[FakeNode]]:
    broker = FakeBroker()
    config = HubConfig(history_size=history)
    made = [broker.node(f"n{i}", config, default_topic=OPEN, **kwargs) for i in range(count)]
    return broker, made


def sub(node: FakeNode, peer: Peer, topic: str = "t", since: Any = None, id: int = 1) -> None:
    message: dict[str, Any] = {"message_type": "subscribe", "topic": topic, "id": id}
    if since is not None:
        message["payload"] = {"since": {"seq": since[0], "epoch": since[1]}}
    node.send(peer, message)
    node.pump()


def pub(node: FakeNode, topic: str, payload: object) -> None:
    node.hub.publish(topic, payload)
    node.pump()


def messages(peer: Peer) -> list[tuple[int, object]]:
    return [(m["seq"], m["payload"]) for m in peer.receive() if m["message_type"] == "message"]


def kinds(peer: Peer) -> list[str]:
    return [m["message_type"] for m in peer.receive()]


@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ),
    seq=st.integers(1, 2**53),
    topic=st.text(min_size=1, max_size=8),
)
def test_topic_parts_are_the_envelope_split_at_its_seq(
    payload: object, seq: int, topic: str
) -> None:
    head, tail = encode_topic_parts("message", topic, payload, timestamp=TS)
    whole = encode_envelope("message", payload, timestamp=TS, topic=topic, seq=seq)
    assert head + str(seq).encode() + tail == whole


def test_a_publication_reaches_every_node_once_numbered_by_the_broker() -> None:
    broker, (a, b) = nodes()
    alice, bob = a.connect("alice"), b.connect("bob")
    sub(a, alice)
    sub(b, bob)
    [reply_a] = alice.receive()
    [reply_b] = bob.receive()
    assert reply_a["payload"]["epoch"] == reply_b["payload"]["epoch"] == broker.streams["t"].epoch
    assert a.listening == b.listening == {"t"}
    assert a.hub.publish("t", "one") == 0  # numbered and delivered as it comes back
    a.pump()
    b.send(bob, {"message_type": "publish", "topic": "t", "payload": "two", "id": 9})
    events = b.hub.broker_commands()
    [outgoing] = events
    assert isinstance(outgoing, Outgoing)
    seq, epoch = broker.publish(b, outgoing)
    assert b.hub.published(outgoing.ref, seq, epoch) == [
        Published(conn_id=bob.conn_id, topic="t", seq=2, payload="two", delivered=0)
    ]
    assert b.hub.published(outgoing.ref, seq, epoch) == []  # answered once
    [reply] = bob.receive()
    assert reply["payload"] == {"topic": "t", "seq": 2, "epoch": epoch}
    assert a.deliver() == 2
    assert b.deliver() == 2
    assert messages(alice) == messages(bob) == [(1, "one"), (2, "two")]


def test_publish_without_broker_is_refused_and_outgoing_is_not_queued() -> None:
    plain = HubHarness()
    with pytest.raises(LocalProtocolError):
        plain.hub.broker_commands()
    _, (a,) = nodes(1)
    outgoing = a.hub.outgoing("t", {"x": 1})
    assert outgoing.envelope(7) == encode_envelope(
        "message", {"x": 1}, timestamp=TS, topic="t", seq=7
    )
    assert (outgoing.history_size, outgoing.droppable) == (10, False)
    assert a.hub.broker_commands() == []
    a.hub.configure_topic("h", history_size=3, history_ttl=60.0)
    configured = a.hub.outgoing("h", None, message_type="note", droppable=True)
    assert (configured.history_size, configured.history_ttl, configured.droppable) == (
        3,
        60.0,
        True,
    )
    with pytest.raises(ValueError, match="topic"):
        a.hub.outgoing("", None)


def test_subscribe_with_since_recovers_from_the_stream_on_another_node() -> None:
    broker, (a, b) = nodes()
    for i in range(1, 6):
        pub(a, "t", i)
    epoch = broker.streams["t"].epoch
    bob = b.connect("bob")
    sub(b, bob, since=(2, epoch))
    got = bob.receive()
    assert got[0]["payload"] == {"topic": "t", "seq": 5, "epoch": epoch, "recovered": True}
    assert [(m["seq"], m["payload"]) for m in got[1:]] == [(3, 3), (4, 4), (5, 5)]
    pub(a, "t", 6)
    b.deliver()
    assert messages(bob) == [(6, 6)]


@pytest.mark.parametrize(
    ("since", "history"),
    [((2, "other"), 10), ((9, None), 10), ((1, None), 2)],
    ids=["epoch", "ahead", "history-too-short"],
)
def test_subscribe_with_since_not_recovered(since: tuple[int, str | None], history: int) -> None:
    broker, (a, b) = nodes(history=history)
    for i in range(1, 6):
        pub(a, "t", i)
    epoch = broker.streams["t"].epoch
    bob = b.connect("bob")
    sub(b, bob, since=(since[0], since[1] or epoch))
    [reply] = bob.receive()
    assert reply["payload"] == {"topic": "t", "seq": 5, "epoch": epoch, "recovered": False}


def test_subscribe_at_the_streams_end_recovers_nothing_to_replay() -> None:
    broker, (a,) = nodes(1, history=0)
    pub(a, "t", 1)
    alice = a.connect()
    sub(a, alice, since=(1, broker.streams["t"].epoch))
    [reply] = alice.receive()
    assert reply["payload"]["recovered"] is True


def test_plain_subscribe_on_a_node_in_step_answers_at_once() -> None:
    _, (a,) = nodes(1)
    alice, carol = a.connect("alice"), a.connect("carol")
    sub(a, alice)
    pub(a, "t", 1)
    a.deliver()
    a.send(carol, {"message_type": "subscribe", "topic": "t", "id": 3})
    assert a.hub.broker_commands() == []  # in step: no fetch
    [reply] = carol.receive()
    assert reply["payload"]["seq"] == 1
    a.send(carol, {"message_type": "subscribe", "topic": "t"})  # again, without id: silent
    assert carol.receive() == []
    pub(a, "t", 2)
    a.deliver()
    assert messages(carol) == [(2, 2)]


def test_arrivals_before_the_answer_are_held_no_gap_no_duplicate() -> None:
    broker, (a, b) = nodes()
    pub(a, "t", 1)
    broker.answer_fetches = False
    bob = b.connect("bob")
    sub(b, bob, since=(0, broker.streams["t"].epoch))
    pub(a, "t", 2)
    assert b.deliver() == 0  # held for bob
    pub(a, "t", 3)  # read by the answer, and in flight
    b.answer_all()
    got = bob.receive()
    assert got[0]["payload"]["recovered"] is True
    assert [m["seq"] for m in got[1:]] == [1, 2, 3]
    assert b.deliver() == 0  # 3 again: bob has it
    pub(a, "t", 4)
    assert b.deliver() == 1
    assert messages(bob) == [(4, 4)]
    assert b.hub.subscribers("t") == [bob.conn_id]


def test_a_node_that_missed_publications_fills_the_gap_from_the_stream() -> None:
    _broker, (a, b) = nodes()
    bob = b.connect("bob")
    sub(b, bob)
    bob.receive()
    pub(a, "t", 1)
    b.deliver()
    pub(a, "t", 2)
    pub(a, "t", 3)
    b.lose()  # 2 and 3 never arrive
    pub(a, "t", 4)
    b.deliver()
    assert messages(bob) == [(1, 1), (2, 2), (3, 3), (4, 4)]
    pub(a, "t", 4)
    b.deliver()
    b.deliver()
    assert messages(bob) == [(5, 4)]


def test_a_gap_the_stream_cannot_fill_is_a_reset() -> None:
    broker, (a, b) = nodes(history=1)
    bob = b.connect("bob")
    sub(b, bob)
    bob.receive()
    pub(a, "t", 1)
    b.deliver()
    pub(a, "t", 2)
    pub(a, "t", 3)
    b.lose()
    pub(a, "t", 4)
    b.deliver()
    epoch = broker.streams["t"].epoch
    got = bob.receive()
    assert [(m["message_type"], m.get("seq"), m["payload"]) for m in got] == [
        ("message", 1, 1),
        ("reset", None, {"epoch": epoch, "seq": 4}),
    ]
    pub(a, "t", 5)
    b.deliver()
    assert messages(bob) == [(5, 5)]


def test_a_broker_that_lost_its_streams_gives_a_new_epoch_and_a_reset() -> None:
    broker, (a, b) = nodes()
    bob = b.connect("bob")
    sub(b, bob)
    old = bob.receive()[0]["payload"]["epoch"]
    pub(a, "t", 1)
    b.deliver()
    broker.restart()
    pub(a, "t", "new")
    b.deliver()
    new = broker.streams["t"].epoch
    assert new != old
    got = bob.receive()
    assert [(m["message_type"], m.get("seq"), m["payload"]) for m in got] == [
        ("message", 1, 1),
        ("reset", None, {"epoch": new, "seq": 0}),
        ("message", 1, "new"),
    ]


def test_a_new_epoch_without_its_start_is_a_reset_at_its_position() -> None:
    broker, (a, b) = nodes(history=1)
    bob = b.connect("bob")
    sub(b, bob)
    bob.receive()
    broker.restart()
    pub(a, "t", "x")
    pub(a, "t", "y")
    b.lose()
    pub(a, "t", "z")
    b.deliver()
    epoch = broker.streams["t"].epoch
    got = bob.receive()
    assert [(m["message_type"], m["payload"]) for m in got] == [
        ("reset", {"epoch": epoch, "seq": 3}),
    ]


def test_client_publish_while_the_broker_is_unreachable_gets_unavailable() -> None:
    _, (a,) = nodes(1)
    alice = a.connect()
    a.failing = True
    a.send(alice, {"message_type": "publish", "topic": "t", "payload": 1, "id": 4})
    a.pump()
    a.send(alice, {"message_type": "publish", "topic": "t", "payload": 2})
    a.pump()
    got = alice.receive()
    assert [m["error"]["code"] for m in got] == ["unavailable", "unavailable"]
    assert [m["message_type"] for m in got] == ["reply", "error"]
    assert a.hub.stats().errors_by_code == {"unavailable": 2}
    a.hub.publish_failed(12345, "unknown ref")  # nothing pending: nothing happens


def test_a_publish_answered_after_its_client_left() -> None:
    _, (a,) = nodes(1)
    alice = a.connect()
    a.send(alice, {"message_type": "publish", "topic": "t", "payload": 1, "id": 4})
    a.send(alice, {"message_type": "publish", "topic": "t", "payload": 2, "id": 5})
    [first, second] = a.hub.broker_commands()
    assert isinstance(first, Outgoing)
    assert isinstance(second, Outgoing)
    a.hub.remove(alice.conn_id)
    [event] = a.hub.published(first.ref, 1, "e")
    assert isinstance(event, Published)
    a.hub.publish_failed(second.ref, "gone")  # nobody to tell


def test_publish_refused_by_policy_is_not_sent_to_the_broker() -> None:
    broker = FakeBroker()
    a = broker.node("a", None)  # default policy: only the server publishes
    alice = a.connect()
    a.send(alice, {"message_type": "publish", "topic": "t", "payload": 1, "id": 1})
    assert a.hub.broker_commands() == []
    assert alice.receive()[0]["error"]["code"] == "forbidden"


def test_presence_spans_the_nodes() -> None:
    broker, (a, b) = nodes()
    for node in (a, b):
        node.hub.configure_topic("room", presence=True, publish="all")
    alice, bob = a.connect("alice"), b.connect("bob")
    a.send(alice, {"message_type": "subscribe", "topic": "room", "id": 1})
    [listen, fetch, joined] = a.hub.broker_commands()
    assert isinstance(listen, Listen)
    assert isinstance(fetch, Fetch)
    assert fetch.presence
    assert isinstance(joined, PresenceOut)
    assert joined.joined
    a.hub.answered(broker.answer(fetch))  # read before alice's join was recorded
    [reply, join] = alice.receive()
    assert reply["payload"]["present"] == [{"conn_id": alice.conn_id, "principal": "alice"}]
    assert join["payload"]["event"] == "join"
    broker.presence["room"] = {alice.conn_id: "alice"}
    a.listening.add("room")
    sub(b, bob, "room")
    got = bob.receive()
    assert got[0]["payload"]["present"] == [
        {"conn_id": alice.conn_id, "principal": "alice"},
        {"conn_id": bob.conn_id, "principal": "bob"},
    ]
    assert got[1]["payload"]["event"] == "join"
    a.deliver()
    [join] = alice.receive()
    assert join["payload"] == {"event": "join", "conn_id": bob.conn_id, "principal": "bob"}
    events = b.hub.remove(bob.conn_id)
    assert events == [
        PresenceChanged(topic="room", conn_id=bob.conn_id, principal_id="bob", joined=False)
    ]
    b.pump()
    assert b.listening == set()
    a.deliver()
    [leave] = alice.receive()
    assert leave["payload"]["event"] == "leave"
    assert a.hub.presence_arrived("nobody-listens", b"{}") == 0


def test_history_requests_read_the_brokers_stream() -> None:
    broker, (a, b) = nodes()
    for i in range(1, 6):
        pub(a, "t", i)
    epoch = broker.streams["t"].epoch
    bob = b.connect("bob")
    b.send(bob, {"message_type": "history", "topic": "t", "id": 1, "payload": {"limit": 2}})
    b.pump()
    b.send(
        bob,
        {
            "message_type": "history",
            "topic": "t",
            "id": 2,
            "payload": {"since": {"seq": 1, "epoch": epoch}, "limit": 2},
        },
    )
    b.pump()
    b.send(
        bob,
        {
            "message_type": "history",
            "topic": "t",
            "id": 3,
            "payload": {"since": {"seq": 1, "epoch": "old"}},
        },
    )
    b.pump()
    b.send(bob, {"message_type": "history", "topic": "t"})  # no id: nothing to answer
    b.pump()
    newest, paged, lost = bob.receive()
    assert [m["payload"] for m in newest["payload"]["messages"]] == [4, 5]
    assert paged["payload"]["recovered"] is True
    assert [m["seq"] for m in paged["payload"]["messages"]] == [2, 3]
    assert lost["payload"]["recovered"] is False
    assert lost["payload"]["messages"] == []
    assert b.listening == set()  # reading history is not subscribing


def test_history_answer_for_a_client_that_left_or_fits_its_outbox() -> None:
    broker, (a, b) = nodes(history=50)
    for _i in range(40):
        pub(a, "t", "x" * 100)
    bob = b.connect("bob", limits=Limits(max_outbox_size=1024))
    broker.answer_fetches = False
    b.send(bob, {"message_type": "history", "topic": "t", "id": 1})
    b.pump()
    carol = b.connect("carol")
    b.send(carol, {"message_type": "history", "topic": "t", "id": 1})
    b.pump()
    b.hub.remove(carol.conn_id)
    b.answer_all()
    [page] = bob.receive()
    kept = page["payload"]["messages"]
    assert 0 < len(kept) < 40
    assert kept[-1]["seq"] == 40  # the newest that fit


def test_last_subscriber_leaving_stops_listening_and_late_arrivals_are_ignored() -> None:
    _, (a,) = nodes(1)
    alice = a.connect()
    sub(a, alice)
    pub(a, "t", 1)
    a.send(alice, {"message_type": "unsubscribe", "topic": "t"})
    a.pump()
    assert a.listening == set()
    assert a.deliver() == 0
    assert a.hub.publication("never", 1, "e", b"{}") == 0


def test_a_connection_that_leaves_while_waiting_is_forgotten() -> None:
    broker, (a,) = nodes(1)
    broker.answer_fetches = False
    alice = a.connect()
    sub(a, alice)
    a.hub.remove(alice.conn_id)
    a.pump()
    a.answer_all()
    assert a.hub.footprint()["subscriptions"] == 0
    a.hub.answered(
        broker.answer(Fetch(ref=999, topic="gone", after=None, epoch=None, limit=0, presence=False))
    )


def test_resync_after_a_lost_link_replays_what_was_missed() -> None:
    broker, (a, b) = nodes()
    bob, carol, dave = b.connect("bob"), b.connect("carol"), b.connect("dave")
    sub(b, bob)
    pub(a, "t", 1)
    b.deliver()
    broker.answer_fetches = False
    sub(b, carol, since=(0, broker.streams["t"].epoch))  # waiting, unanswered
    sub(b, dave, since=(1, broker.streams["t"].epoch))
    b.answer_all()  # dave answered and live... carol too
    broker.answer_fetches = False
    sub(b, carol, since=(1, broker.streams["t"].epoch), id=5)  # waiting again
    pub(a, "t", 2)
    b.lose()
    b.listening.clear()
    b.hub.resync()
    broker.answer_fetches = True
    b.pump()
    b.answer_all()
    assert b.listening == {"t"}
    assert messages(bob) == [(1, 1), (2, 2)]
    assert messages(carol)[-1] == (2, 2)
    pub(a, "t", 3)
    b.deliver()
    assert messages(bob) == messages(carol) == messages(dave)[-1:] == [(3, 3)]


def test_replay_that_does_not_fit_the_outbox_is_not_recovered() -> None:
    broker, (a, b) = nodes(history=50)
    for _ in range(30):
        pub(a, "t", "y" * 100)
    bob = b.connect("bob", limits=Limits(max_outbox_size=1024))
    sub(b, bob, since=(0, broker.streams["t"].epoch))
    [reply] = bob.receive()
    assert reply["payload"]["recovered"] is False


def test_encoded_sends_reach_local_connections() -> None:
    _, (a,) = nodes(1)
    alice, bob = a.connect("alice"), a.connect("bob")
    data = a.hub.encode("note", {"n": 1})
    assert json.loads(data)["payload"] == {"n": 1}
    assert json.loads(a.hub.encode("presence", None, topic="room"))["topic"] == "room"
    with pytest.raises(ValueError, match="message_type"):
        a.hub.encode("", None)
    assert a.hub.broadcast_encoded(data, exclude=bob.conn_id) == 1
    assert a.hub.send_encoded_to(bob.conn_id, data) == 1
    assert a.hub.send_encoded_to("nobody", data) == 0
    assert a.hub.send_encoded_to_principal("alice", data) == 1
    assert kinds(alice) == ["note", "note"]
    assert kinds(bob) == ["note"]


def test_server_side_subscribe_waits_for_the_stream_then_is_live() -> None:
    broker, (a,) = nodes(1)
    alice = a.connect()
    pub(a, "t", 1)
    a.hub.subscribe(alice.conn_id, "t")
    commands = a.hub.broker_commands()
    assert [type(c) for c in commands] == [Listen, Fetch]
    a.hub.answered(broker.answer(commands[1]))  # type: ignore[arg-type]
    assert alice.receive() == []  # no reply to a server-side subscribe
    assert a.hub.subscribers("t") == [alice.conn_id]
    a.hub.unsubscribe(alice.conn_id, "t")
    assert a.hub.broker_commands() == [Unlisten(topic="t")]


def waiting_ahead(history: int = 10) -> tuple[FakeBroker, FakeNode, FakeNode, Peer, Peer]:
    """Node b in step at seq 3 with bob live; carol answered at seq 5 (read from
    the stream) while 4 and 5 are still in flight to b."""
    broker, (a, b) = nodes(history=history)
    bob, carol = b.connect("bob"), b.connect("carol")
    sub(b, bob)
    for i in (1, 2, 3):
        pub(a, "t", i)
    b.deliver()
    pub(a, "t", 4)
    pub(a, "t", 5)
    sub(b, carol, since=(3, broker.streams["t"].epoch))
    assert [m["seq"] for m in carol.receive()[1:]] == [4, 5]
    assert b.hub.subscribers("t") == [bob.conn_id, carol.conn_id]
    return broker, a, b, bob, carol


def test_an_answered_waiter_ahead_of_the_node_joins_when_the_node_catches_up() -> None:
    _, a, b, bob, carol = waiting_ahead()
    assert b.deliver(1) == 1  # 4: bob only, carol has it
    assert b.hub.presence_arrived("t", b.hub.encode("presence", {"event": "join"})) == 2
    assert b.deliver(1) == 1  # 5: bob; now carol is live
    pub(a, "t", 6)
    assert b.deliver() == 2
    assert messages(bob) == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)]
    assert messages(carol) == [(6, 6)]


def test_an_answered_waiter_takes_the_next_arrival_after_a_node_gap() -> None:
    _, a, b, bob, carol = waiting_ahead()
    b.lose()  # 4 and 5 never arrive
    pub(a, "t", 6)
    b.deliver()  # bob catches up from the stream; carol gets 6 as her next
    assert messages(carol) == [(6, 6)]
    assert messages(bob)[-3:] == [(4, 4), (5, 5), (6, 6)]
    pub(a, "t", 7)
    b.deliver()
    assert messages(bob) == messages(carol) == [(7, 7)]


def test_an_answered_waiter_past_a_gap_catches_up_from_the_stream() -> None:
    _, a, b, bob, carol = waiting_ahead()
    b.lose()
    pub(a, "t", 6)
    pub(a, "t", 7)
    b.inbox.popleft()  # 6 lost too
    b.deliver()
    assert messages(carol) == [(6, 6), (7, 7)]
    assert messages(bob)[-4:] == [(4, 4), (5, 5), (6, 6), (7, 7)]


def test_a_duplicate_arrival_is_not_delivered_again() -> None:
    _, (a,) = nodes(1)
    alice = a.connect()
    sub(a, alice)
    pub(a, "t", 1)
    item = a.inbox[0]
    a.deliver()
    a.inbox.append(item)
    assert a.deliver() == 0
    assert messages(alice) == [(1, 1)]


def test_held_arrivals_of_a_new_epoch_go_with_the_waiter_to_its_next_fetch() -> None:
    broker, (a, b) = nodes()
    pub(a, "t", 1)
    old = broker.streams["t"].epoch
    broker.answer_fetches = False
    bob = b.connect("bob")
    sub(b, bob, since=(0, old))
    broker.restart()
    pub(a, "t", "x")
    pub(a, "t", "y")
    b.deliver()  # both held for bob
    [fetch] = b.unanswered
    b.unanswered = []
    stale = broker.answer(fetch)
    b.hub.answered(
        type(stale)(ref=stale.ref, topic="t", seq=1, epoch=old, entries=((1, b"{}"),))
    )  # an answer read before the restart
    broker.answer_fetches = True
    b.pump()
    got = bob.receive()
    assert got[0]["payload"]["recovered"] is True
    new = broker.streams["t"].epoch
    assert [(m["message_type"], m["payload"]) for m in got[2:]] == [
        ("reset", {"epoch": new, "seq": 0}),
        ("message", "x"),
        ("message", "y"),
    ]


def test_a_held_arrival_that_makes_the_waiter_live_ends_its_catch_up() -> None:
    broker, (a, b) = nodes()
    bob, carol = b.connect("bob"), b.connect("carol")
    sub(b, bob)
    pub(a, "t", 1)
    b.deliver()
    broker.answer_fetches = False
    sub(b, carol, since=(1, broker.streams["t"].epoch))
    pub(a, "t", 2)
    pub(a, "t", 3)
    b.deliver()  # held for carol: 2, 3
    [fetch] = b.unanswered
    b.unanswered = []
    answer = broker.answer(fetch)
    b.hub.answered(type(answer)(ref=answer.ref, topic="t", seq=1, epoch=answer.epoch))
    got = carol.receive()
    assert [m.get("seq") for m in got] == [None, 2, 3]
    assert b.hub.subscribers("t") == [bob.conn_id, carol.conn_id]


def test_recovery_with_presence_counts_the_join_in_the_outbox_room() -> None:
    broker, (a, b) = nodes(history=50)
    for node in (a, b):
        node.hub.configure_topic("room", presence=True, publish="all")
    for _ in range(3):
        pub(a, "room", "z")
    bob = b.connect("bob")
    sub(b, bob, "room", since=(0, broker.streams["room"].epoch))
    assert kinds(bob) == ["reply", "message", "message", "message", "presence"]


def test_resync_skips_topics_not_listened_to_and_refetches_answered_waiters() -> None:
    _, a, b, bob, carol = waiting_ahead()
    b.hub.configure_topic("quiet")
    b.lose()
    b.hub.resync()
    b.pump()
    assert [seq for seq, _ in messages(bob)] == [1, 2, 3, 4, 5]
    assert carol.receive() == []
    pub(a, "t", 6)
    b.deliver()
    assert messages(bob) == messages(carol) == [(6, 6)]


def test_subscribe_with_since_and_no_id_replays_without_a_reply() -> None:
    broker, (a,) = nodes(1)
    pub(a, "t", 1)
    pub(a, "t", 2)
    alice, bob = a.connect("alice"), a.connect("bob")
    a.send(
        alice,
        {
            "message_type": "subscribe",
            "topic": "t",
            "payload": {"since": {"seq": 0, "epoch": broker.streams["t"].epoch}},
        },
    )
    a.pump()
    assert [m["message_type"] for m in alice.receive()] == ["message", "message"]
    sub(a, bob)
    a.send(bob, {"message_type": "unsubscribe", "topic": "t"})
    a.pump()
    assert a.listening == {"t"}  # alice still subscribed


def test_presence_from_another_node_skips_subscribers_still_waiting() -> None:
    broker, (a,) = nodes(1)
    a.hub.configure_topic("room", presence=True)
    broker.answer_fetches = False
    alice = a.connect()
    sub(a, alice, "room")
    assert a.hub.presence_arrived("room", a.hub.encode("presence", {"event": "join"})) == 0
    a.answer_all()
    assert kinds(alice) == ["reply", "presence"]


def test_a_gap_in_what_a_waiter_held_sends_it_back_to_the_stream() -> None:
    broker, (a, b) = nodes()
    bob, carol = b.connect("bob"), b.connect("carol")
    sub(b, bob)
    pub(a, "t", 1)
    b.deliver()
    broker.answer_fetches = False
    sub(b, carol, since=(1, broker.streams["t"].epoch))
    pub(a, "t", 2)
    pub(a, "t", 3)
    b.inbox.popleft()  # 2 never reaches b
    b.deliver()  # 3: carol holds it, bob waits for the stream
    [carols, bobs] = b.unanswered
    b.unanswered = []
    answer = broker.answer(carols)
    b.hub.answered(type(answer)(ref=answer.ref, topic="t", seq=1, epoch=answer.epoch))
    assert [m.get("seq") for m in carol.receive()] == [None]  # the reply; 3 is past a gap
    broker.answer_fetches = True
    b.hub.answered(broker.answer(bobs))
    b.pump()
    assert messages(carol) == [(2, 2), (3, 3)]
    assert messages(bob) == [(1, 1), (2, 2), (3, 3)]
    assert b.hub.subscribers("t") == [bob.conn_id, carol.conn_id]


def test_server_side_history_reads_through_a_fetch() -> None:
    broker, (a, b) = nodes(history=3)
    for i in range(1, 6):
        pub(a, "t", i)
    epoch = broker.streams["t"].epoch
    fetch = b.hub.history_fetch("t")
    assert (fetch.after, fetch.limit, fetch.presence) == (None, 3, False)
    assert b.hub.broker_commands() == []  # not queued: the driver runs it
    page = page_of(broker.answer(fetch), None)
    assert (page.seq, page.epoch, page.recovered, page.start) == (5, epoch, None, 3)
    assert [json.loads(e)["payload"] for e in page.envelopes] == [3, 4, 5]
    since = (3, epoch)
    page = page_of(broker.answer(b.hub.history_fetch("t", since=since, limit=1)), since)
    assert (page.recovered, page.start, len(page.envelopes)) == (True, 4, 1)
    page = page_of(broker.answer(b.hub.history_fetch("t", since=(1, epoch))), (1, epoch))
    assert (page.recovered, page.start, page.envelopes) == (False, 6, ())
    assert fetch.max_age == HubConfig().history_ttl  # the hub's default age
    b.hub.configure_topic("kept", history_size=7, history_ttl=9.0)
    kept = b.hub.history_fetch("kept")
    assert (kept.limit, kept.max_age) == (7, 9.0)
    b.send(b.connect("dave"), {"message_type": "history", "topic": "kept", "id": 1})
    [read] = b.hub.broker_commands()
    assert isinstance(read, Fetch)
    assert read.max_age == 9.0
    with pytest.raises(ValueError, match="limit"):
        b.hub.history_fetch("t", limit=-1)
    assert b.hub.history("t").envelopes == ()  # this node holds no history


@pytest.mark.parametrize("command", [Fetch, Listen, Outgoing, PresenceOut, Unlisten])
def test_broker_commands_take_their_fields_by_name(command: Any) -> None:
    """A broker reads commands by field name; positional fields would let an
    adapter swap two of the same type unnoticed."""
    values = [f"v{i}" for i, _ in enumerate(dataclasses.fields(command))]
    with pytest.raises(TypeError, match="positional"):
        command(*values)
    fields = {f.name: v for f, v in zip(dataclasses.fields(command), values, strict=True)}
    assert dataclasses.asdict(command(**fields)) == fields
