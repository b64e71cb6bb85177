"""After any operations, removing every connection leaves the hub holding nothing."""

from __future__ import annotations

import json
from typing import Any

from hub_helpers import HubHarness
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wshub.core import Limits
from wshub.core.hub_config import HubConfig
from wshub.core.hub_stats import prometheus_text

TOPICS = ["a", "b", "drop", "room"]

client_messages = st.one_of(
    st.builds(lambda i: json.dumps({"message_type": "cmd", "id": i}), st.integers(0, 5)),
    st.fixed_dictionaries(
        {
            "message_type": st.sampled_from(["subscribe", "unsubscribe", "publish", "cmd", "x"]),
            "topic": st.sampled_from(TOPICS),
        },
        optional={"id": st.integers(0, 5), "payload": st.integers()},
    ).map(json.dumps),
    st.text(max_size=30),
)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("connect"), st.sampled_from(["p", "q"]), st.integers(1, 3)),
        st.tuples(st.just("text"), st.integers(0, 9), client_messages),
        st.tuples(st.just("text"), st.integers(0, 9), client_messages),
        st.tuples(st.just("publish"), st.sampled_from(TOPICS), st.integers(1, 8)),
        st.tuples(st.just("broadcast"), st.integers(0, 9), st.none()),
        st.tuples(st.just("reply"), st.integers(0, 9), st.integers(0, 5)),
        st.tuples(st.just("server_subscribe"), st.integers(0, 9), st.sampled_from(TOPICS)),
        st.tuples(st.just("time"), st.sampled_from([0.5, 6.0]), st.none()),
        st.tuples(st.just("drain"), st.integers(0, 9), st.none()),
        st.tuples(st.just("disconnect"), st.integers(0, 9), st.none()),
        st.tuples(st.just("remove"), st.integers(0, 9), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(operations, st.booleans())
@example([("connect", "p", 1), ("server_subscribe", 0, "drop"), ("publish", "drop", 8)], False)
@example([("connect", "p", 2), ("text", 1, '{"message_type": "cmd", "id": 1}')], False)
@example([("connect", "q", 1), ("text", 0, "{"), ("text", 0, "{")], True)
def test_hub_holds_nothing_after_everyone_leaves(
    ops: list[tuple[str, Any, Any]], reap: bool
) -> None:
    h = HubHarness(
        HubConfig(max_errors=8, max_pending_commands=2, default_command_timeout=5.0),
        limits=Limits(max_outbox_size=600),
    )
    hub = h.hub
    hub.configure_topic("drop", publish="all", slow_consumer="drop")
    hub.configure_topic("room", presence=True, publish="subscribers")
    hub.register_command("cmd")
    ids: list[str] = []
    for op, x, y in ops:
        if op == "connect":
            for _ in range(y):
                ids.append(h.connect(x, remote=("10.0.0.1", len(ids))).conn_id)
            continue
        if not ids:
            continue
        conn_id = ids[x % len(ids)] if isinstance(x, int) else ids[0]
        peer = h.peers.get(conn_id)
        if op == "text" and peer is not None and peer.client.state.name == "OPEN":
            hub.receive_text(conn_id, peer.text_frame(y) if y.startswith("{") else y)
        elif op == "publish":
            for _ in range(y):
                hub.publish(x, "p" * 50, droppable=True)
        elif op == "broadcast":
            hub.broadcast("note", "n" * 50, exclude=conn_id)
        elif op == "reply":
            hub.reply(conn_id, y, "ok")
        elif op == "server_subscribe" and hub.connection(conn_id) is not None:
            hub.subscribe(conn_id, y)
        elif op == "time":
            h.clock.advance(x)
            hub.handle_timer()
        elif op == "drain" and peer is not None:
            peer.receive()
        elif op == "disconnect":
            hub.disconnect(conn_id)
        elif op == "remove":
            hub.remove(conn_id)  # a driver may remove before the close completes
        if reap:
            h.reap()
    stats = hub.stats()
    assert stats.connections == len(hub.connections())
    assert prometheus_text(stats).endswith("\n")
    for conn_id in ids:
        hub.remove(conn_id)
    assert hub.connections() == []
    assert set(hub.footprint().values()) == {0}, hub.footprint()
    assert hub.next_deadline() is None
    assert hub.stats().subscriptions == {}
    assert all(hub.admit(p, "10.0.0.1").ok for p in ("p", "q"))
