"""History, epochs and recovery through the hub: subscribe with ``since``,
``history`` requests, ``Hub.history``, topic lifetime, stats and bad input."""

from __future__ import annotations

import base64
import json
import math
import random
from typing import Any

import pytest
from hub_helpers import HubHarness, Peer

from wshub.core import Limits, LocalProtocolError, State
from wshub.core.hub_config import HubConfig
from wshub.core.hub_stats import prometheus_text
from wshub.core.topics import TopicPolicy


def harness(config: HubConfig | None = None, **kwargs: Any) -> HubHarness:
    return HubHarness(config, random=random.Random(7).randbytes, **kwargs)


def sub(h: HubHarness, peer: Peer, topic: str, since: Any = None, rid: int | None = 1) -> Any:
    message: dict[str, Any] = {"message_type": "subscribe", "topic": topic}
    if since is not None:
        message["payload"] = {"since": since}
    if rid is not None:
        message["id"] = rid
    h.send(peer, message)
    return peer.receive()


def history(h: HubHarness, peer: Peer, topic: str | None, payload: Any, rid: Any = 5) -> Any:
    message: dict[str, Any] = {"message_type": "history", "payload": payload}
    if topic is not None:
        message["topic"] = topic
    if rid is not None:
        message["id"] = rid
    h.send(peer, message)
    return peer.receive()


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in messages if m["message_type"] == "message"]


def test_epochs_come_from_the_injected_random_source() -> None:
    h = harness()
    h.hub.configure_topic("a")
    expected = base64.urlsafe_b64encode(random.Random(7).randbytes(6)).decode()
    assert h.hub.topic_epoch("a") == expected
    assert len(expected) == 8
    assert h.hub.topic_epoch("nothing") is None


def test_recovery_replays_the_exact_envelopes_after_the_reply() -> None:
    h = harness()
    h.hub.configure_topic("t", history_size=10)
    alice = h.connect()
    [reply] = sub(h, alice, "t")
    epoch = reply["payload"]["epoch"]
    assert reply["payload"] == {"topic": "t", "seq": 0, "epoch": epoch}
    for i in range(5):
        h.wall.advance(1.0)
        h.hub.publish("t", {"n": i})
    originals = alice.receive()
    h.wall.advance(60.0)
    bob = h.connect("bob")
    got = sub(h, bob, "t", {"seq": 2, "epoch": epoch}, rid=9)
    assert got[0]["payload"] == {"topic": "t", "seq": 5, "epoch": epoch, "recovered": True}
    assert got[1:] == originals[2:]  # same seq, payload and original timestamp
    h.hub.publish("t", "live")
    assert seqs(bob.receive()) == [6]


@pytest.mark.parametrize(
    ("since", "why"),
    [
        ({"seq": 9, "epoch": "E"}, "ahead of the topic"),
        ({"seq": 1, "epoch": "other"}, "another stream"),
        ({"seq": 0, "epoch": "E"}, "history no longer reaches back"),
    ],
)
def test_unrecoverable_positions_get_recovered_false_and_nothing(
    since: dict[str, Any], why: str
) -> None:
    h = harness()
    h.hub.configure_topic("t", history_size=2)
    epoch = h.hub.topic_epoch("t")
    for i in range(3):
        h.hub.publish("t", i)
    peer = h.connect()
    position = {**since, "epoch": epoch if since["epoch"] == "E" else since["epoch"]}
    got = sub(h, peer, "t", position)
    assert got == [
        {
            "message_type": "reply",
            "id": 1,
            "ok": True,
            "payload": {"topic": "t", "seq": 3, "epoch": epoch, "recovered": False},
            "timestamp": got[0]["timestamp"],
        }
    ], why
    assert h.hub.subscribers("t") == [peer.conn_id]  # subscribed all the same


def test_a_topic_without_history_recovers_only_an_up_to_date_client() -> None:
    h = harness()
    h.hub.configure_topic("t")
    epoch = h.hub.topic_epoch("t")
    h.hub.publish("t", 1)
    peer = h.connect()
    assert sub(h, peer, "t", {"seq": 1, "epoch": epoch})[0]["payload"]["recovered"] is True
    other = h.connect("bob")
    assert sub(h, other, "t", {"seq": 0, "epoch": epoch})[0]["payload"]["recovered"] is False


@pytest.mark.parametrize(
    "payload",
    [
        {"since": 5},
        {"since": []},
        {"since": {"seq": "1", "epoch": "e"}},
        {"since": {"seq": -1, "epoch": "e"}},
        {"since": {"seq": True, "epoch": "e"}},
        {"since": {"seq": 1}},
        {"since": {"seq": 1, "epoch": 5}},
        {"since": {"seq": 1, "epoch": "e" * 65}},
    ],
)
def test_a_since_of_the_wrong_shape_is_invalid_envelope(payload: dict[str, Any]) -> None:
    h = harness()
    peer = h.connect()
    h.send(peer, {"message_type": "subscribe", "topic": "t", "id": 3, "payload": payload})
    [reply] = peer.receive()
    assert (reply["ok"], reply["error"]["code"]) == (False, "invalid_envelope")
    assert h.hub.subscribers("t") == []
    h.send(peer, {"message_type": "subscribe", "topic": "t", "payload": payload})
    assert peer.receive()[0]["error"]["code"] == "invalid_envelope"


@pytest.mark.parametrize("payload", [None, "x", 3, {}, {"since": None}, {"other": 1}])
def test_subscribe_payloads_without_since_subscribe_plainly(payload: Any) -> None:
    h = harness()
    peer = h.connect()
    h.send(peer, {"message_type": "subscribe", "topic": "t", "id": 1, "payload": payload})
    [reply] = peer.receive()
    assert "recovered" not in reply["payload"]
    assert h.hub.subscribers("t") == [peer.conn_id]


def test_recovery_without_an_id_replays_without_a_reply() -> None:
    h = harness()
    h.hub.configure_topic("t", history_size=5)
    for i in range(3):
        h.hub.publish("t", i)
    peer = h.connect()
    got = sub(h, peer, "t", {"seq": 1, "epoch": h.hub.topic_epoch("t")}, rid=None)
    assert seqs(got) == [2, 3]
    assert len(got) == 2


def test_a_replay_that_does_not_fit_the_outbox_is_not_recovered() -> None:
    h = harness(limits=Limits(max_outbox_size=600))
    h.hub.configure_topic("t", history_size=20)
    for _ in range(10):
        h.hub.publish("t", "x" * 80)  # ~150 bytes each: 1.5 KB missed
    epoch = h.hub.topic_epoch("t")
    peer = h.connect()
    got = sub(h, peer, "t", {"seq": 0, "epoch": epoch})
    assert got[0]["payload"]["recovered"] is False
    assert len(got) == 1
    assert sub(h, peer, "t", {"seq": 8, "epoch": epoch}, rid=2)[0]["payload"]["recovered"]
    assert peer.server.state is State.OPEN


def test_the_replay_budget_counts_the_clients_own_presence_join() -> None:
    h = harness(limits=Limits(max_outbox_size=700))
    h.hub.configure_topic("room", history_size=20, presence=True)
    for _ in range(3):
        h.hub.publish("room", "y" * 100)
    epoch = h.hub.topic_epoch("room")
    peer = h.connect()
    # Reply (~190) + 3 messages (~3 x 190) fit 700 alone, not with the join (~120).
    got = sub(h, peer, "room", {"seq": 0, "epoch": epoch})
    assert got[0]["payload"]["recovered"] is False
    assert [m["message_type"] for m in got] == ["reply", "presence"]
    assert peer.server.state is State.OPEN


def test_dropped_messages_are_recovered_while_in_history() -> None:
    h = harness(limits=Limits(max_outbox_size=1000))
    h.hub.configure_topic("feed", history_size=50, slow_consumer="drop")
    peer = h.connect()
    epoch = sub(h, peer, "feed")[0]["payload"]["epoch"]
    for _ in range(7):
        h.hub.publish("feed", "z" * 100, droppable=True)  # the reader does not read
    have = seqs(peer.receive())
    assert have == list(range(1, len(have) + 1))
    assert len(have) < 7  # the rest was dropped
    last = have[-1]
    got = sub(h, peer, "feed", {"seq": last, "epoch": epoch}, rid=2)
    assert got[0]["payload"]["recovered"] is True
    assert seqs(got) == list(range(last + 1, 8))
    h.hub.publish("feed", "after", droppable=True)
    [message] = peer.receive()  # no dropped notice: recovery settled it
    assert (message["message_type"], message["seq"]) == ("message", 8)


def test_publishes_with_nobody_subscribed_are_numbered_and_kept() -> None:
    h = harness(HubConfig(history_size=3, history_ttl=30.0))
    assert h.hub.publish("news", 1) == 0
    assert h.hub.publish("news", 2) == 0
    assert (h.hub.topic_seq("news"), h.hub.stats().history_entries) == (2, 2)
    epoch = h.hub.topic_epoch("news")
    peer = h.connect()
    got = sub(h, peer, "news", {"seq": 0, "epoch": epoch})
    assert got[0]["payload"]["recovered"] is True
    assert seqs(got) == [1, 2]
    h.send(peer, {"message_type": "unsubscribe", "topic": "news"})
    assert h.hub.topic_seq("news") == 2  # its history keeps it
    assert h.hub.next_deadline() == h.clock.now + 30.0
    h.clock.advance(30.0)
    h.hub.handle_timer()
    assert (h.hub.topic_seq("news"), h.hub.topic_epoch("news")) == (0, None)
    assert h.hub.footprint()["live_topics"] == 0
    h.hub.publish("news", 3)  # a new stream
    assert h.hub.topic_seq("news") == 1
    assert h.hub.topic_epoch("news") not in (None, epoch)


def test_client_publishes_to_a_new_topic_are_kept() -> None:
    h = harness(HubConfig(history_size=3), default_topic=TopicPolicy(publish="all"))
    peer = h.connect()
    h.send(peer, {"message_type": "publish", "topic": "t", "id": 1, "payload": 1})
    assert peer.receive()[0]["payload"] == {"topic": "t", "seq": 1, "delivered": 0}
    assert h.hub.history("t").envelopes[0].startswith(b'{"message_type":"message"')


def test_configure_topic_history_overrides_and_reconfiguration() -> None:
    h = harness(HubConfig(history_size=10))
    h.hub.configure_topic("a", history_size=2, history_ttl=math.inf)
    for i in range(5):
        h.hub.publish("a", i)
    assert h.hub.history("a").start == 4
    assert h.hub.next_deadline() is None  # no age bound
    h.hub.configure_topic("a", history_size=1)
    assert (h.hub.history("a").start, len(h.hub.history("a").envelopes)) == (5, 1)
    h.hub.configure_topic("a", history_size=0)
    assert h.hub.stats().history_entries == 0
    h.hub.publish("a", 9)
    assert h.hub.history("a", since=(5, h.hub.topic_epoch("a") or "")).envelopes == ()
    with pytest.raises(ValueError, match="history_size"):
        h.hub.configure_topic("b", history_size=-1)
    with pytest.raises(ValueError, match="history_ttl"):
        h.hub.configure_topic("b", history_ttl=0)


def test_a_topic_configured_later_keeps_its_history() -> None:
    h = harness(HubConfig(history_size=5))
    h.hub.publish("t", 1)
    h.hub.configure_topic("t", history_size=3, history_ttl=5.0)
    assert h.hub.history("t").start == 1
    h.clock.advance(5.0)
    h.hub.handle_timer()
    assert h.hub.topic_seq("t") == 1  # configured: it stays, its history is gone
    assert h.hub.history("t").envelopes == ()


def test_turning_default_history_off_drops_kept_logs_at_the_next_publish() -> None:
    h = harness(HubConfig(history_size=5))
    peer = h.connect()
    sub(h, peer, "t")
    h.hub.publish("t", 1)
    h.hub.config = HubConfig(history_size=0)
    h.hub.publish("t", 2)
    assert h.hub.stats().history_entries == 0
    h.hub.config = HubConfig(history_size=5)
    h.hub.publish("t", 3)
    page = h.hub.history("t")
    assert (page.start, len(page.envelopes)) == (3, 1)  # no gap claimed


def test_history_requests() -> None:
    h = harness(HubConfig(history_size=50, max_history_page=4))
    h.hub.configure_topic("t")
    h.hub.configure_topic("secret", subscribe="none")
    epoch = h.hub.topic_epoch("t")
    for i in range(6):
        h.hub.publish("t", i)
    peer = h.connect()
    [reply] = history(h, peer, "t", {"since": {"seq": 1, "epoch": epoch}, "limit": 2})
    body = reply["payload"]
    assert body["topic"] == "t"
    assert body["seq"] == 6
    assert body["recovered"] is True
    assert [m["seq"] for m in body["messages"]] == [2, 3]
    assert body["messages"][0]["payload"] == 1
    [reply] = history(h, peer, "t", {"since": {"seq": 0, "epoch": epoch}, "limit": 99})
    assert [m["seq"] for m in reply["payload"]["messages"]] == [1, 2, 3, 4]  # capped
    [reply] = history(h, peer, "t", None)
    assert "recovered" not in reply["payload"]
    assert [m["seq"] for m in reply["payload"]["messages"]] == [3, 4, 5, 6]  # the newest
    [reply] = history(h, peer, "t", {"since": {"seq": 2, "epoch": "old"}})
    assert (reply["payload"]["recovered"], reply["payload"]["messages"]) == (False, [])
    [reply] = history(h, peer, "ghost", {"since": {"seq": 2, "epoch": "old"}})
    assert reply["payload"] == {
        "topic": "ghost",
        "seq": 0,
        "epoch": None,
        "recovered": False,
        "messages": [],
    }
    assert history(h, peer, "t", None, rid=None) == []  # nothing to answer without an id
    assert history(h, peer, "secret", None)[0]["error"]["code"] == "forbidden"
    assert history(h, peer, None, None)[0]["error"]["code"] == "invalid_envelope"
    for bad in ("x", {"limit": 0}, {"limit": True}, {"limit": "3"}, {"since": 1}):
        assert history(h, peer, "t", bad)[0]["error"]["code"] == "invalid_envelope", bad


def test_history_answers_fit_the_outbox() -> None:
    h = harness(HubConfig(history_size=50), limits=Limits(max_outbox_size=1000))
    h.hub.configure_topic("t")
    epoch = h.hub.topic_epoch("t")
    for _ in range(20):
        h.hub.publish("t", "w" * 100)
    peer = h.connect()
    [reply] = history(h, peer, "t", {"since": {"seq": 0, "epoch": epoch}})
    got = [m["seq"] for m in reply["payload"]["messages"]]
    assert 1 < len(got) < 20
    assert got == list(range(1, len(got) + 1))
    [reply] = history(h, peer, "t", None)
    got = [m["seq"] for m in reply["payload"]["messages"]]
    assert 1 < len(got) < 20
    assert got == list(range(21 - len(got), 21))
    # An outbox holding something: no message past the room.
    h.hub.send_to(peer.conn_id, "filler", "f" * 700)
    [reply] = history(h, peer, "t", None)[1:]
    assert reply["payload"]["messages"] == []
    assert peer.server.state is State.OPEN
    # An empty outbox takes one message, however large.
    h.hub.configure_topic("big", history_size=5)
    h.hub.publish("big", "b" * 3000)
    [reply] = history(h, peer, "big", None)
    assert len(reply["payload"]["messages"]) == 1


def test_history_server_api() -> None:
    h = harness()
    h.hub.configure_topic("t", history_size=5)
    for i in range(3):
        h.hub.publish("t", i)
    epoch = h.hub.topic_epoch("t")
    assert epoch is not None
    page = h.hub.history("t", since=(1, epoch), limit=1)
    assert (page.seq, page.epoch, page.recovered, page.start) == (3, epoch, True, 2)
    assert [json.loads(d)["payload"] for _, d in page.entries()] == [1]
    assert [s for s, _ in h.hub.history("t").entries()] == [1, 2, 3]
    assert h.hub.history("t", since=(3, epoch)).envelopes == ()
    assert h.hub.history("none").epoch is None
    assert h.hub.history("none", since=(0, "x")).recovered is False
    for kwargs in (
        {"limit": -1},
        {"limit": True},
        {"since": (1,)},
        {"since": (-1, "e")},
        {"since": (1, 2)},
        {"since": "1:e"},
    ):
        with pytest.raises(ValueError, match=r"since|limit"):
            h.hub.history("t", **kwargs)  # type: ignore[arg-type]


def test_stats_and_metrics_show_history() -> None:
    h = harness(HubConfig(history_size=5))
    h.hub.publish("a", "x")
    stats = h.hub.stats()
    size = len(h.hub.history("a").envelopes[0])
    assert (stats.history_entries, stats.history_bytes) == (1, size)
    text = prometheus_text(stats)
    assert "wshub_history_entries 1\n" in text
    assert f"wshub_history_bytes {size}\n" in text


def test_the_global_cap_applies_across_topics() -> None:
    h = harness(HubConfig(history_size=100, max_history_bytes=1000))
    for i in range(40):
        h.hub.publish(f"t{i % 4}", "v" * 50)
    assert h.hub.stats().history_bytes <= 1000
    assert h.hub.stats().history_entries < 40


@pytest.mark.parametrize(
    "kwargs",
    [
        {"history_size": -1},
        {"history_size": 1.5},
        {"history_ttl": 0},
        {"history_topic_bytes": 0},
        {"max_history_bytes": 0},
        {"max_history_page": 0},
    ],
)
def test_bad_history_config_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="history"):
        HubConfig(**kwargs)


def test_history_is_a_reserved_message_type() -> None:
    h = harness()
    with pytest.raises(ValueError, match="reserved"):
        h.hub.register_command("history")


def test_reconfiguring_and_server_side_subscriptions_keep_the_stream() -> None:
    h = harness()
    h.hub.configure_topic("t", history_size=3)
    epoch = h.hub.topic_epoch("t")
    h.hub.configure_topic("t", history_size=3, slow_consumer="drop")
    assert h.hub.topic_epoch("t") == epoch  # same stream, new policy
    peer = h.connect()
    assert h.hub.subscribe(peer.conn_id, "t") == []
    assert h.hub.subscribe(peer.conn_id, "t") == []  # already subscribed: nothing
    assert h.hub.subscribers("t") == [peer.conn_id]
    with pytest.raises(LocalProtocolError):
        h.hub.subscribe("ghost", "t")
