"""Bounded outboxes: slow consumers are closed with 1013 or lose droppable messages."""

from __future__ import annotations

from typing import Any

from hub_helpers import HubHarness, Peer

from wshub.core import Limits, PreparedMessage, State
from wshub.core.envelope import encode_envelope
from wshub.core.hub_stats import prometheus_text

CAP = 400
PAD = "x" * 100  # each envelope is a little under 200 bytes: two fit, three do not


def topic_items(peer: Peer) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for m in peer.receive():
        if m["message_type"] == "dropped":
            out.append(("dropped", m["payload"]["count"]))
        elif m["message_type"] == "message":
            out.append(("seq", m["seq"]))
    return out


def harness() -> HubHarness:
    return HubHarness(limits=Limits(max_outbox_size=CAP))


def test_slow_consumer_is_closed_and_others_unaffected() -> None:
    h = harness()
    slow, fast = h.connect(), h.connect()
    for peer in (slow, fast):
        h.hub.subscribe(peer.conn_id, "t")
    delivered = []
    for _ in range(3):
        delivered.append(h.hub.publish("t", PAD))
        fast.receive()
    assert delivered == [2, 2, 1]
    assert slow.server.state is State.CLOSED
    assert h.hub.stats().slow_consumer_closes == 1
    assert h.hub.publish("t", "after") == 1  # never sent to a closed connection
    slow.receive()
    fast.receive()
    assert slow.closed is not None
    assert (slow.closed.code, slow.closed.reason) == (1013, "slow consumer")
    assert [m["seq"] for m in fast.received] == [1, 2, 3, 4]
    h.reap()
    assert h.hub.subscribers("t") == [fast.conn_id]


def test_broadcast_to_a_slow_consumer_also_closes_it() -> None:
    h = harness()
    slow = h.connect()
    results = [h.hub.broadcast("tick", PAD) for _ in range(3)]
    assert results == [1, 1, 0]
    assert slow.server.state is State.CLOSED
    stats = h.hub.stats()
    assert stats.slow_consumer_closes == 1
    assert stats.outbox_high_water <= CAP


def test_drop_policy_skips_and_then_announces_the_count() -> None:
    h = harness()
    h.hub.configure_topic("ticks", slow_consumer="drop")
    slow = h.connect()
    h.hub.subscribe(slow.conn_id, "ticks")
    results = [h.hub.publish("ticks", PAD, droppable=True) for _ in range(5)]
    assert results == [1, 1, 0, 0, 0]
    assert slow.server.state is State.OPEN
    assert slow.server.outbox_size <= CAP
    assert topic_items(slow) == [("seq", 1), ("seq", 2)]
    assert h.hub.publish("ticks", PAD, droppable=True) == 1
    assert topic_items(slow) == [("dropped", 3), ("seq", 6)]
    stats = h.hub.stats()
    assert (stats.drops, stats.slow_consumer_closes) == (3, 0)
    assert "wshub_dropped_messages_total 3\n" in prometheus_text(stats)


def test_a_clients_publish_on_a_drop_topic_is_droppable() -> None:
    """What a client publishes to a "drop" topic is skipped for a full
    subscriber (and announced later), as the server's droppable publishes are."""
    h = harness()
    h.hub.configure_topic("ticks", slow_consumer="drop", publish="all")
    slow, publisher = h.connect(), h.connect()
    h.hub.subscribe(slow.conn_id, "ticks")
    for _ in range(4):
        h.send(publisher, {"message_type": "publish", "topic": "ticks", "payload": PAD})
    assert slow.server.state is State.OPEN
    assert topic_items(slow) == [("seq", 1), ("seq", 2)]
    h.send(publisher, {"message_type": "publish", "topic": "ticks", "payload": "small"})
    assert topic_items(slow) == [("dropped", 2), ("seq", 5)]


def test_subscribers_owed_the_same_count_each_get_their_notice() -> None:
    """One prepared notice per count serves every subscriber owed that count."""
    h = harness()
    h.hub.configure_topic("ticks", slow_consumer="drop")
    slow = [h.connect() for _ in range(3)]
    for peer in slow:
        h.hub.subscribe(peer.conn_id, "ticks")
    assert [h.hub.publish("ticks", PAD, droppable=True) for _ in range(5)] == [3, 3, 0, 0, 0]
    for peer in slow:
        assert topic_items(peer) == [("seq", 1), ("seq", 2)]
    assert h.hub.publish("ticks", PAD, droppable=True) == 3
    for peer in slow:
        assert topic_items(peer) == [("dropped", 3), ("seq", 6)]
    assert h.hub.stats().drops == 9


def test_a_closing_subscriber_is_passed_over_while_another_is_owed_a_notice() -> None:
    h = harness()
    h.hub.configure_topic("ticks", slow_consumer="drop")
    slow, leaving = h.connect(), h.connect()
    for peer in (slow, leaving):
        h.hub.subscribe(peer.conn_id, "ticks")
    assert [h.hub.publish("ticks", PAD, droppable=True) for _ in range(4)] == [2, 2, 0, 0]
    leaving.server.close(1000, "bye")  # closing, not yet removed from the hub
    assert topic_items(slow) == [("seq", 1), ("seq", 2)]
    assert h.hub.publish("ticks", PAD, droppable=True) == 1
    assert topic_items(slow) == [("dropped", 2), ("seq", 5)]
    assert h.hub.publish("ticks", "plain") == 1  # not droppable: the same pass over
    assert topic_items(slow) == [("seq", 6)]


def test_a_message_that_is_not_droppable_brings_the_owed_notice_first() -> None:
    """Only the subscriber owed a notice gets one; the other gets the message alone."""
    h = harness()
    h.hub.configure_topic("ticks", slow_consumer="drop")
    slow, fast = h.connect(), h.connect()
    for peer in (slow, fast):
        h.hub.subscribe(peer.conn_id, "ticks")
    for _ in range(3):
        h.hub.publish("ticks", PAD, droppable=True)
        fast.receive()
    assert topic_items(slow) == [("seq", 1), ("seq", 2)]
    assert h.hub.publish("ticks", "plain") == 2
    assert topic_items(slow) == [("dropped", 1), ("seq", 4)]
    assert topic_items(fast) == [("seq", 4)]
    assert h.hub.publish("ticks", "again") == 2
    assert topic_items(slow) == [("seq", 5)]


def test_pending_notice_must_fit_with_the_next_message() -> None:
    h = harness()
    h.hub.configure_topic("ticks", slow_consumer="drop")
    slow = h.connect()
    h.hub.subscribe(slow.conn_id, "ticks")
    h.hub.publish("ticks", PAD, droppable=True)
    h.hub.publish("ticks", PAD, droppable=True)
    h.hub.publish("ticks", PAD, droppable=True)  # dropped: outbox full
    slow.server.data_to_send()  # the client reads, but loses these bytes for the test
    h.hub.publish("ticks", PAD, droppable=True)  # notice + message fit
    h.hub.publish("ticks", PAD, droppable=True)  # dropped again
    h.hub.publish("ticks", PAD, droppable=True)
    assert h.hub.stats().drops == 3
    assert topic_items(slow) == [("dropped", 1), ("seq", 4)]
    assert h.hub.publish("ticks", "small", droppable=True) == 1
    assert topic_items(slow) == [("dropped", 2), ("seq", 7)]


def test_non_droppable_messages_on_a_drop_topic_still_disconnect() -> None:
    h = harness()
    h.hub.configure_topic("mixed", slow_consumer="drop")
    slow = h.connect()
    h.hub.subscribe(slow.conn_id, "mixed")
    h.hub.publish("mixed", PAD, droppable=True)
    h.hub.publish("mixed", PAD, droppable=True)
    assert h.hub.publish("mixed", PAD, droppable=True) == 0
    assert h.hub.publish("mixed", PAD) == 0
    assert slow.server.state is State.CLOSED
    assert h.hub.stats().slow_consumer_closes == 1


def test_droppable_on_a_disconnect_topic_is_not_dropped() -> None:
    h = harness()
    slow = h.connect()
    h.hub.subscribe(slow.conn_id, "t")
    for _ in range(3):
        h.hub.publish("t", PAD, droppable=True)
    assert slow.server.state is State.CLOSED
    assert h.hub.stats().drops == 0


def test_oversized_message_goes_alone_into_an_empty_outbox() -> None:
    h = harness()
    h.hub.configure_topic("big", slow_consumer="drop")
    peer = h.connect()
    h.hub.subscribe(peer.conn_id, "big")
    h.hub.publish("big", PAD, droppable=True)
    h.hub.publish("big", PAD, droppable=True)
    h.hub.publish("big", PAD, droppable=True)  # dropped
    peer.server.data_to_send()
    huge = "y" * (CAP - 120)  # fits an empty outbox alone, not with the notice
    assert h.hub.publish("big", huge, droppable=True) == 1
    assert topic_items(peer) == [("seq", 4)]
    assert h.hub.publish("big", "small", droppable=True) == 1
    assert topic_items(peer) == [("dropped", 1), ("seq", 5)]
    assert peer.server.state is State.OPEN


def test_reconfiguring_to_disconnect_forgets_owed_notices() -> None:
    h = harness()
    h.hub.configure_topic("t", slow_consumer="drop")
    peer = h.connect()
    h.hub.subscribe(peer.conn_id, "t")
    for _ in range(3):
        h.hub.publish("t", PAD, droppable=True)
    assert h.hub.footprint()["dropped_counters"] == 1
    h.hub.configure_topic("t")
    assert h.hub.footprint()["dropped_counters"] == 0


def test_compressed_slow_consumer_uses_its_compressed_frame_size() -> None:
    h = harness()
    h.hub.configure_topic("z", slow_consumer="drop")
    peer = h.connect(compression=True)
    h.hub.subscribe(peer.conn_id, "z")
    # Highly compressible: many fit although each is larger than CAP uncompressed.
    results = [h.hub.publish("z", "a" * 1000, droppable=True) for _ in range(5)]
    assert results == [1] * 5
    assert [seq for kind, seq in topic_items(peer) if kind == "seq"] == [1, 2, 3, 4, 5]


def test_a_message_that_fits_only_without_its_notice_is_dropped() -> None:
    h = harness()
    h.hub.configure_topic("ticks", slow_consumer="drop")
    peer = h.connect()
    h.hub.subscribe(peer.conn_id, "ticks")
    for _ in range(3):
        h.hub.publish("ticks", PAD, droppable=True)
    assert h.hub.stats().drops == 1
    peer.server.data_to_send()  # read and lost: the outbox is empty, one drop is owed

    ts = int(h.wall() * 1000)

    def frame_size(message_type: str, payload: Any, **fields: Any) -> int:
        data = encode_envelope(message_type, payload, timestamp=ts, **fields)
        return len(PreparedMessage(data, text=True).frame())

    message = frame_size("message", PAD, topic="ticks", seq=4)
    notice = frame_size("dropped", {"count": 1}, topic="ticks")
    filler = next(k for k in range(CAP) if frame_size("f", "z" * k) + message + notice > CAP)
    queued = frame_size("f", "z" * filler)
    assert queued + message <= CAP  # the message alone would fit, not with its notice
    assert h.hub.send_to(peer.conn_id, "f", "z" * filler) == 1
    assert h.hub.publish("ticks", PAD, droppable=True) == 0
    assert peer.server.state is State.OPEN
    assert h.hub.stats().drops == 2
    peer.receive()
    assert h.hub.publish("ticks", "small", droppable=True) == 1
    assert topic_items(peer) == [("dropped", 2), ("seq", 5)]
