"""Commands as events with exactly one reply; error accounting and the 1008 close."""

from __future__ import annotations

from typing import Any

import pytest
from hub_helpers import HubHarness, Peer

from wshub.core.auth import Principal
from wshub.core.hub_config import HubConfig
from wshub.core.hub_events import CommandExpired, CommandRequest


def call(h: HubHarness, peer: Peer, name: str, request_id: Any, payload: Any = None) -> list[Any]:
    return h.send(peer, {"message_type": name, "id": request_id, "payload": payload})


def last_error(peer: Peer) -> tuple[Any, str]:
    reply = peer.receive()[-1]
    assert reply["message_type"] == "reply"
    assert reply["ok"] is False
    return reply["id"], reply["error"]["code"]


def test_command_request_and_single_reply() -> None:
    h = HubHarness()
    h.hub.register_command("add", timeout=3.0)
    peer = h.connect(Principal("alice", frozenset({"x"})))
    [event] = call(h, peer, "add", "r1", [1, 2])
    assert event == CommandRequest(
        conn_id=peer.conn_id,
        request_id="r1",
        name="add",
        payload=[1, 2],
        principal=Principal("alice", frozenset({"x"})),
        deadline=h.clock.now + 3.0,
    )
    assert h.hub.pending_commands(peer.conn_id) == ["r1"]
    assert h.hub.stats().pending_commands == 1
    assert h.hub.reply(peer.conn_id, "r1", 3) is True
    assert h.hub.reply(peer.conn_id, "r1", 4) is False
    assert h.hub.reply_error(peer.conn_id, "r1", "command_failed", "late") is False
    [reply] = peer.receive()
    assert reply == {
        "message_type": "reply",
        "id": "r1",
        "ok": True,
        "payload": 3,
        "timestamp": reply["timestamp"],
    }
    assert h.hub.footprint()["deadlines"] == 0


def test_reply_error_shape_and_counters() -> None:
    h = HubHarness()
    h.hub.register_command("fail")
    peer = h.connect()
    call(h, peer, "fail", 1)
    assert h.hub.reply_error(peer.conn_id, 1, "command_failed", "boom") is True
    [reply] = peer.receive()
    assert reply["error"] == {"code": "command_failed", "message": "boom"}
    assert reply["payload"] is None
    stats = h.hub.stats()
    assert (stats.command_errors, stats.errors_by_code["command_failed"]) == (1, 1)
    with pytest.raises(ValueError, match="code"):
        h.hub.reply_error(peer.conn_id, 1, "", "x")


def test_reply_payload_error_keeps_the_request_pending() -> None:
    h = HubHarness()
    h.hub.register_command("c")
    peer = h.connect()
    call(h, peer, "c", 1)
    with pytest.raises(TypeError):
        h.hub.reply(peer.conn_id, 1, {1, 2})
    assert h.hub.reply_error(peer.conn_id, 1, "command_failed", "bad result") is True


def test_unknown_command_and_scope() -> None:
    h = HubHarness()
    h.hub.register_command("admin.reset", scope="admin")
    user = h.connect("user")
    root = h.connect(Principal("root", frozenset({"admin"})))
    assert call(h, user, "nope", 1) == []
    assert last_error(user) == (1, "unknown_command")
    assert call(h, user, "admin.reset", 2) == []
    assert last_error(user) == (2, "forbidden")
    assert len(call(h, root, "admin.reset", 3)) == 1


def test_duplicate_ids_and_pending_cap() -> None:
    h = HubHarness(HubConfig(max_pending_commands=2))
    h.hub.register_command("slow")
    peer = h.connect()
    assert len(call(h, peer, "slow", 1)) == 1
    assert call(h, peer, "slow", 1) == []
    assert last_error(peer) == (1, "duplicate_id")
    assert len(call(h, peer, "slow", "1")) == 1  # "1" and 1 are different ids
    assert call(h, peer, "slow", 3) == []
    assert last_error(peer) == (3, "too_many_pending")
    h.hub.reply(peer.conn_id, 1, None)
    assert len(call(h, peer, "slow", 3)) == 1


def test_timeouts_answer_once_and_report_expiry() -> None:
    h = HubHarness(HubConfig(default_command_timeout=5.0))
    h.hub.register_command("a")
    h.hub.register_command("b", timeout=1.0)
    peer = h.connect()
    assert h.hub.next_deadline() is None
    call(h, peer, "a", 1)
    call(h, peer, "b", 2)
    start = h.clock.now
    assert h.hub.next_deadline() == start + 1.0
    assert h.hub.handle_timer(start + 0.5) == []
    h.clock.advance(1.0)
    assert h.hub.handle_timer() == [CommandExpired(conn_id=peer.conn_id, request_id=2, name="b")]
    assert last_error(peer) == (2, "command_timeout")
    assert h.hub.reply(peer.conn_id, 2, "late") is False
    assert h.hub.next_deadline() == start + 5.0
    assert h.hub.reply(peer.conn_id, 1, "in time") is True
    assert h.hub.next_deadline() is None
    assert h.hub.handle_timer(start + 100) == []
    assert h.hub.stats().errors_by_code["command_timeout"] == 1


def test_deadlines_of_answered_commands_do_not_accumulate() -> None:
    h = HubHarness(HubConfig(max_pending_commands=1))
    h.hub.register_command("c")
    peer = h.connect()
    call(h, peer, "keep", 0)  # unknown: does not count
    h.hub.register_command("keep")
    call(h, peer, "keep", 0)
    other = h.connect()
    for i in range(200):
        call(h, other, "c", i)
        h.hub.reply(other.conn_id, i, i)
    assert h.hub.footprint()["deadlines"] <= 2 * 1 + 32 + 1
    assert h.hub.pending_commands(peer.conn_id) == [0]


def test_next_deadline_skips_an_answered_command_at_the_top() -> None:
    """The earliest deadline belongs to an answered request: it is passed over, not reported."""
    h = HubHarness(HubConfig(default_command_timeout=5.0))
    h.hub.register_command("quick", timeout=1.0)
    h.hub.register_command("slow")
    peer = h.connect()
    call(h, peer, "quick", 1)
    call(h, peer, "slow", 2)
    start = h.clock.now
    assert h.hub.reply(peer.conn_id, 1, "done") is True
    # The answered request's heap entry is still there (no compaction at this size).
    assert h.hub.footprint()["deadlines"] == 2
    assert h.hub.next_deadline() == start + 5.0
    assert h.hub.footprint()["deadlines"] == 1
    assert h.hub.handle_timer(start + 1.0) == []


def test_register_command_validates() -> None:
    h = HubHarness()
    with pytest.raises(ValueError, match="reserved"):
        h.hub.register_command("subscribe")
    with pytest.raises(ValueError, match="timeout"):
        h.hub.register_command("x", timeout=0)


def test_too_many_errors_closes_with_1008() -> None:
    h = HubHarness(HubConfig(max_errors=3, error_window=10.0))
    bad, good = h.connect(), h.connect()
    for _ in range(3):
        h.hub.receive_text(bad.conn_id, "not json")
    bad.receive()
    assert bad.closed is None
    h.hub.receive_text(bad.conn_id, "not json")
    got = bad.receive()
    assert got[-1]["error"]["code"] == "invalid_json"
    assert bad.closed is not None
    assert (bad.closed.code, bad.closed.reason) == (1008, "too many invalid messages")
    assert h.hub.stats().policy_closes == 1
    assert good.closed is None
    h.reap()
    assert h.hub.footprint()["error_windows"] == 0


def test_error_window_slides() -> None:
    h = HubHarness(HubConfig(max_errors=2, error_window=10.0))
    peer = h.connect()
    for _ in range(10):
        h.hub.receive_text(peer.conn_id, "{")
        h.hub.receive_text(peer.conn_id, "{")
        h.clock.advance(10.0)
    peer.receive()
    assert peer.closed is None
    assert h.hub.stats().errors_by_code["invalid_json"] == 20


def test_command_errors_count_toward_the_limit() -> None:
    h = HubHarness(HubConfig(max_errors=1))
    peer = h.connect()
    call(h, peer, "nope", 1)
    call(h, peer, "nope", 2)
    peer.receive()
    assert peer.closed is not None
    assert peer.closed.code == 1008
