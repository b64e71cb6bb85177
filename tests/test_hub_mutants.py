"""Hub behaviours that surviving mutants showed no test stated
(tools/mutate_core.py finds them; issue 15 lists the first ones). Each test
says what the hub must do, not how it does it."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from broker_fake import FakeBroker
from hub_helpers import HubHarness
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hub_auth import expiring, waiting

from wshub.core import events, hub_events
from wshub.core.deflate import DeflateParams
from wshub.core.frames import PreparedMessage
from wshub.core.hub_broker import Fetch
from wshub.core.hub_config import HubConfig
from wshub.core.hub_events import BinaryReceived, PresenceChanged
from wshub.core.hub_recovery import frame_bound

# -- what the application sends is checked before anything is delivered --------------

bad_message_types = st.one_of(
    st.just(""), st.none(), st.integers(), st.binary(max_size=4), st.lists(st.text(), max_size=1)
)


@settings(max_examples=30, deadline=None)
@given(message_type=bad_message_types)
def test_every_server_side_send_refuses_a_message_type_that_is_not_a_name(
    message_type: Any,
) -> None:
    """publish, broadcast, send_to and send_to_principal raise ValueError for a
    message type that is not a non-empty string, and deliver nothing: a
    client could not route such an envelope (docs/protocol.md)."""
    h = HubHarness()
    peer = h.connect("alice")
    h.send(peer, {"message_type": "subscribe", "topic": "news"})
    peer.receive()
    sends = [
        lambda: h.hub.publish("news", 1, message_type=message_type),
        lambda: h.hub.broadcast(message_type, 1),
        lambda: h.hub.send_to(peer.conn_id, message_type, 1),
        lambda: h.hub.send_to_principal("alice", message_type, 1),
    ]
    for send in sends:
        with pytest.raises(ValueError, match="message_type"):
            send()
    assert peer.receive() == []
    assert h.hub.topic_seq("news") == 0  # the refused publish used no number
    h.hub.publish("news", 1, message_type="update")
    [update] = peer.receive()
    assert (update["message_type"], update["seq"]) == ("update", 1)


# -- presence ----------------------------------------------------------------------


def test_a_server_side_subscribe_is_a_join_like_any_other() -> None:
    """hub.subscribe (the application subscribing a connection) tells the
    topic's members and the application, exactly as a client's subscribe;
    a repeated one joins nothing."""
    h = HubHarness()
    h.hub.configure_topic("room", presence=True)
    alice, bob = h.connect("alice"), h.connect("bob")
    h.send(alice, {"message_type": "subscribe", "topic": "room"})
    alice.receive()
    joined = PresenceChanged(topic="room", conn_id=bob.conn_id, principal_id="bob", joined=True)
    assert h.hub.subscribe(bob.conn_id, "room") == [joined]
    [(kind, payload)] = [(m["message_type"], m["payload"]) for m in alice.receive()]
    assert (kind, payload) == (
        "presence",
        {"event": "join", "conn_id": bob.conn_id, "principal": "bob"},
    )
    assert h.hub.subscribe(bob.conn_id, "room") == []
    assert alice.receive() == []
    left = PresenceChanged(topic="room", conn_id=bob.conn_id, principal_id="bob", joined=False)
    assert h.hub.unsubscribe(bob.conn_id, "room") == [left]


# -- timers ------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    auth=st.floats(min_value=0.5, max_value=100),
    command=st.floats(min_value=0.5, max_value=100),
    ttl=st.floats(min_value=0.5, max_value=100),
)
def test_next_deadline_is_the_earliest_of_every_kind_of_timer(
    auth: float, command: float, ttl: float
) -> None:
    """With an auth deadline, a command deadline and a history entry's expiry
    pending at once, the hub asks to be woken at the first of them, whichever
    kind it is, and each firing moves it on to the next."""
    h = HubHarness(HubConfig(auth_timeout=auth, history_size=5, history_ttl=ttl))
    h.hub.register_command("slow", timeout=command)
    start = h.clock.now
    member = h.connect("alice")
    h.send(member, {"message_type": "subscribe", "topic": "log"})
    h.hub.publish("log", "kept")
    h.send(member, {"message_type": "slow", "id": 1})
    waiting(h)  # a connection that must authenticate by message within ``auth``
    expected = sorted({start + auth, start + command, start + ttl})
    seen = []
    while (deadline := h.hub.next_deadline()) is not None:
        seen.append(deadline)
        h.clock.now = deadline
        h.hub.handle_timer()
    assert seen == expected


# -- statistics ----------------------------------------------------------------------


def test_footprint_counts_each_live_topic_and_subscription_once() -> None:
    """footprint() sizes what the hub holds: two live (unconfigured) topics
    with three subscriptions between them are 2 and 3; a configured topic is
    not live; leaving empties them."""
    h = HubHarness()
    h.hub.configure_topic("configured")
    a, b = h.connect("a"), h.connect("b")
    for peer, topic in ((a, "x"), (b, "x"), (b, "y"), (a, "configured")):
        h.send(peer, {"message_type": "subscribe", "topic": topic})
    footprint = h.hub.footprint()
    assert (footprint["live_topics"], footprint["subscriptions"]) == (2, 4)
    assert footprint["connections"] == 2
    for peer in (a, b):
        h.hub.remove(peer.conn_id)
    footprint = h.hub.footprint()
    assert (footprint["live_topics"], footprint["subscriptions"]) == (0, 0)


# -- binary messages ---------------------------------------------------------------


def test_binary_messages_share_the_inbound_rate_and_its_flood_close() -> None:
    """A binary message takes a token of the same bucket as text ones: past
    the burst it is not reported but answered with rate_limited, and a
    sustained binary flood is closed with 1008 like a text one."""
    h = HubHarness(HubConfig(accept_binary=True, message_rate=10, message_burst=3, max_errors=2))
    peer = h.connect()
    got = [h.hub.receive_binary(peer.conn_id, bytes([i])) for i in range(3)]
    assert got == [[BinaryReceived(conn_id=peer.conn_id, data=bytes([i]))] for i in range(3)]
    assert h.hub.receive_binary(peer.conn_id, b"over") == []
    [error] = peer.receive()
    assert error["error"] == {"code": "rate_limited", "message": "message rate exceeded"}
    h.clock.advance(0.1)  # one token back
    assert h.hub.receive_binary(peer.conn_id, b"ok") == [
        BinaryReceived(conn_id=peer.conn_id, data=b"ok")
    ]
    for _ in range(3):
        assert h.hub.receive_binary(peer.conn_id, b"flood") == []
    peer.receive()
    assert peer.closed is not None
    assert (peer.closed.code, peer.closed.reason) == (1008, "message rate exceeded")
    assert h.hub.stats().messages_in == 4  # refused messages are not counted as taken in


# -- documented defaults, statistics at rest, immutable events ------------------------

#: HubConfig's defaults as its docstring documents them (README's tables too).
DOCUMENTED_HUB_DEFAULTS: dict[str, object] = {
    "max_connections": None,
    "max_per_principal": 100,
    "max_per_host": 200,
    "retry_after": 5,
    "max_envelope_size": 256 * 1024,
    "max_depth": 32,
    "max_errors": 10,
    "error_window": 60.0,
    "max_pending_commands": 16,
    "default_command_timeout": 10.0,
    "max_subscriptions": 256,
    "accept_binary": False,
    "send_welcome": True,
    "auth_timeout": 10.0,
    "message_rate": 1000.0,
    "message_burst": 2000,
    "auth_failure_rate": 1.0,
    "auth_failure_burst": 100,
    "history_size": 0,
    "history_ttl": 300.0,
    "history_topic_bytes": 1 << 20,
    "max_history_bytes": 64 << 20,
    "max_history_page": 1000,
}


def test_hub_config_defaults_are_the_documented_ones() -> None:
    """Applications size their deployments from the documented defaults: a
    change must be made in the docs too (this test then changes with them)."""
    config = HubConfig()
    assert {f.name: getattr(config, f.name) for f in dataclasses.fields(config)} == (
        DOCUMENTED_HUB_DEFAULTS
    )


def test_a_new_hub_has_counted_nothing() -> None:
    stats = HubHarness().hub.stats()
    numbers = {
        f.name: getattr(stats, f.name)
        for f in dataclasses.fields(stats)
        if isinstance(getattr(stats, f.name), int)
    }
    assert numbers == dict.fromkeys(numbers, 0)
    assert not stats.errors_by_code


@pytest.mark.parametrize("module", [hub_events, events], ids=["hub_events", "events"])
def test_every_event_is_an_immutable_keyword_only_value(module: Any) -> None:
    """Events are values: handed to application code, logged, compared; no
    consumer may change one another consumer sees (frozen dataclasses). They
    are built by keyword only, so fields can be added without breaking
    anyone's code (h11's habit, STYLE.md)."""
    classes = [
        getattr(module, name)
        for name in module.__all__
        if dataclasses.is_dataclass(getattr(module, name))
    ]
    assert len(classes) >= 5
    for cls in classes:
        first = dataclasses.fields(cls)[0].name
        example = cls.__new__(cls)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(example, first, None)
        with pytest.raises(TypeError, match="positional argument"):
            cls(*[None] * len(dataclasses.fields(cls)))
        assert not hasattr(example, "__dict__")  # slotted: many are made, each small


@pytest.mark.parametrize(("history", "asked"), [(0, 1), (1, 1), (7, 7)])
def test_a_subscriber_with_since_asks_the_broker_for_all_that_is_kept(
    history: int, asked: int
) -> None:
    """With a broker, a subscribe with ``since`` fetches every entry the topic
    keeps here, and at least one (the stream may keep history configured on
    another node); a plain subscribe fetches only the stream's position."""
    for since, limit in (({"seq": 0, "epoch": "e"}, asked), (None, 0)):
        node = FakeBroker().node("n0", HubConfig(history_size=history))
        peer = node.connect()
        message: dict[str, Any] = {"message_type": "subscribe", "topic": "t", "id": 1}
        if since is not None:
            message["payload"] = {"since": since}
        node.send(peer, message)
        fetches = [c for c in node.hub.broker_commands() if isinstance(c, Fetch)]
        assert [f.limit for f in fetches] == [limit]


def test_history_reads_check_the_topic_and_place_an_empty_page_after_the_last_seq() -> None:
    """``Hub.history`` refuses a name no topic can have, like every topic
    operation; a topic that keeps nothing gives an empty page that starts
    after its last seq, so the reader knows where the stream stands."""
    h = HubHarness()
    with pytest.raises(ValueError, match="topic"):
        h.hub.history("")
    peer = h.connect()
    h.send(peer, {"message_type": "subscribe", "topic": "t"})
    for n in range(3):
        h.hub.publish("t", n)
    page = h.hub.history("t")
    assert (page.seq, page.start, page.envelopes) == (3, 4, ())


@pytest.mark.parametrize(
    "settings",
    [{"history_size": -1}, {"history_size": 1.5}, {"history_ttl": 0}, {"history_ttl": True}],
)
def test_configure_topic_refuses_impossible_history_and_changes_nothing(
    settings: dict[str, Any],
) -> None:
    """A topic's history settings are checked as HubConfig's are; a refused
    configuration leaves the hub without that topic."""
    h = HubHarness()
    with pytest.raises(ValueError, match="history_"):
        h.hub.configure_topic("t", **settings)
    assert h.hub.topic_epoch("t") is None


def test_commands_and_their_timeouts_are_counted() -> None:
    """stats() counts each command started, and a timed-out one as a command
    error under its code; a closed waiting connection as a policy close."""
    h = HubHarness(HubConfig(auth_timeout=5))
    h.hub.register_command("slow", timeout=1)
    peer = h.connect()
    for request_id in (1, 2):
        h.send(peer, {"message_type": "slow", "id": request_id})
    h.hub.reply(peer.conn_id, 1, "done")
    h.clock.advance(1)
    h.hub.handle_timer()
    stats = h.hub.stats()
    assert (stats.commands, stats.command_errors) == (2, 1)
    assert dict(stats.errors_by_code) == {"command_timeout": 1}
    assert stats.policy_closes == 0
    waiting(h)
    h.clock.advance(5)
    h.hub.handle_timer()
    assert h.hub.stats().policy_closes == 1  # the auth timeout


def test_timers_left_by_removed_connections_stay_within_twice_the_live_ones() -> None:
    """Removing a connection leaves its expiry timer in the heap (cheap);
    the heap is compacted once it holds more than twice the live connections
    plus 64, with many connections live as with none."""
    h = HubHarness()
    for _ in range(100):
        expiring(h, 3600)
    worst = 0
    for _ in range(400):
        peer = expiring(h, 3600)
        h.hub.remove(peer.conn_id)
        del h.peers[peer.conn_id]
        worst = max(worst, len(h.hub._conns.timers) - 2 * len(h.hub.connections()))
    assert worst <= 66  # 2 * (live + 1) + 64: the bound is kept while the newest is live


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(0, 200_000),
    seed=st.integers(0, 2**32 - 1),
    bits=st.integers(9, 15),
)
def test_frame_bound_is_an_upper_bound_on_any_connection(size: int, seed: int, bits: int) -> None:
    """History pages are fitted to an outbox with ``frame_bound``: no frame of
    a message of that size, plain or compressed with any window a client may
    ask for (incompressible data is the worst case), may be larger."""
    payload = random.Random(seed).randbytes(size)
    message = PreparedMessage(payload, text=True)
    deflate = DeflateParams(server_max_window_bits=bits)
    assert len(message.frame()) <= frame_bound(size)
    assert len(message.frame(deflate)) <= frame_bound(size)


# -- fan-out: every subscriber's writer woken, the outbox high water exact -----------


def test_a_publication_wakes_each_subscribers_writer_once() -> None:
    h = HubHarness()
    peers = [h.connect(f"p{i}") for i in range(3)]
    for peer in peers[:2]:
        h.hub.subscribe(peer.conn_id, "t")
    h.outputs.clear()
    assert h.hub.publish("t", "x") == 2
    assert sorted(h.outputs) == sorted(peer.conn_id for peer in peers[:2])


def test_the_outbox_high_water_is_the_largest_outbox_a_fan_out_left() -> None:
    """Nothing is read in between: each subscriber's outbox holds the same
    publication, larger than anything queued before, and that is the mark."""
    h = HubHarness()
    peers = [h.connect(f"p{i}") for i in range(3)]
    for peer in peers:
        h.hub.subscribe(peer.conn_id, "t")
        peer.server.data_to_send()  # the subscribe's presence and replies, read
    assert h.hub.publish("t", "y" * 2000) == 3
    sizes = {peer.server.outbox_size for peer in peers}
    assert len(sizes) == 1
    assert h.hub.stats().outbox_high_water == sizes.pop()


def test_closing_a_connection_wakes_its_writer_and_is_no_policy_close_unless_it_is() -> None:
    """A close the application asks for is queued and its writer woken; only
    the hub's own policy closes (auth expiry, too many errors) count as such."""
    h = HubHarness()
    peer = h.connect()
    h.outputs.clear()
    assert h.hub.disconnect(peer.conn_id, 1000, "bye") is True
    assert h.outputs == [peer.conn_id]
    assert h.hub.stats().policy_closes == 0
    peer.receive()
    assert peer.closed is not None
    assert (peer.closed.code, peer.closed.reason) == (1000, "bye")
