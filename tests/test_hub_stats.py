"""Hub statistics snapshots and their Prometheus text rendering."""

from __future__ import annotations

import re
from types import MappingProxyType

import pytest
from hub_helpers import HubHarness

from wshub.core.hub_stats import Counters, HubStats, prometheus_text


def test_counters_follow_traffic() -> None:
    h = HubHarness()
    a, b = h.connect(), h.connect()
    h.hub.subscribe(a.conn_id, "t")
    h.hub.subscribe(b.conn_id, "t")
    h.hub.subscribe(b.conn_id, "u")
    welcome_bytes = h.hub.stats().bytes_out
    h.hub.publish("t", "é")
    text = '{"message_type":"nope","payload":"é"}'
    h.hub.receive_text(a.conn_id, a.raw_frame(text))
    stats = h.hub.stats()
    assert stats.connections == 2
    assert dict(stats.subscriptions) == {"t": 2, "u": 1}
    assert stats.messages_in == 1
    assert stats.bytes_in == len(text.encode())
    # two welcomes, the publish to two, one error envelope
    assert stats.messages_out == 5
    published = len(b'{"message_type":"message","topic":"t","seq":1,"payload":"\xc3\xa9",')
    published += len(b'"timestamp":1700000000000}')
    error = b'{"message_type":"error","payload":null,"error":{"code":"unknown_message_type",'
    error += b'"message":"unknown message type \'nope\'"},"timestamp":1700000000000}'
    assert stats.bytes_out == welcome_bytes + 2 * published + len(error)
    assert dict(stats.errors_by_code) == {"unknown_message_type": 1}
    assert stats.outbox_high_water >= max(a.server.outbox_size, b.server.outbox_size) > 0


def test_snapshot_is_immutable_and_detached() -> None:
    h = HubHarness()
    peer = h.connect()
    h.hub.subscribe(peer.conn_id, "t")
    stats = h.hub.stats()
    assert isinstance(stats.subscriptions, MappingProxyType)
    with pytest.raises(AttributeError):
        stats.connections = 5  # type: ignore[misc]
    h.hub.remove(peer.conn_id)
    assert dict(stats.subscriptions) == {"t": 1}
    assert dict(h.hub.stats().subscriptions) == {}


def test_prometheus_text_format() -> None:
    counters = Counters(messages_in=3, drops=2)
    counters.error("invalid_json")
    counters.error("invalid_json")
    stats = HubStats.snapshot(
        counters, connections=4, subscriptions={'we"ird\\topic\n': 2, "a": 1}, pending_commands=1
    )
    text = prometheus_text(stats, prefix="app")
    assert text.endswith("\n")
    lines = text.splitlines()
    assert "app_connections 4" in lines
    assert "# TYPE app_messages_received_total counter" in lines
    assert "app_messages_received_total 3" in lines
    assert "app_dropped_messages_total 2" in lines
    assert 'app_errors_total{code="invalid_json"} 2' in lines
    assert 'app_topic_subscribers{topic="a"} 1' in lines
    assert "app_subscriptions 3" in lines
    assert 'app_topic_subscribers{topic="we\\"ird\\\\topic\\n"} 2' in lines
    sample = re.compile(r'^[a-z_]+(\{[a-z]+="(?:[^"\\]|\\.)*"\})? -?\d+$')
    for line in lines:
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    # every metric is declared exactly once
    types = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(types) == len(set(types))
