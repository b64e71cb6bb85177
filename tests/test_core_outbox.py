"""``OutboxConnection``: the bounded outbox of whole messages the ASGI app drains.

Without sockets: the slow-consumer rule, the close after the queued messages,
frame sizes, and the hub's encode-once through it (one ``str`` for everyone).
"""

from __future__ import annotations

import pytest
from hub_helpers import WALL_EPOCH, FakeClock
from hypothesis import example, given
from hypothesis import strategies as st

from wshub.core import ConnectionClosedError, Limits, State
from wshub.core.auth import Principal
from wshub.core.frames import Opcode, PreparedMessage, encode_frame
from wshub.core.hub import Hub
from wshub.core.outbox_connection import CloseRequest, OutboxConnection, TextCache, frame_size


def drain(conn: OutboxConnection) -> list[str | bytes | CloseRequest]:
    out: list[str | bytes | CloseRequest] = []
    while (item := conn.pop()) is not None:
        out.append(item)
    return out


@given(n=st.integers(0, 70_000))
@example(n=125)
@example(n=126)  # the first length with a 16-bit extended length
@example(n=65_535)
@example(n=65_536)  # the first length with a 64-bit extended length
def test_frame_size_is_the_length_of_the_frame(n: int) -> None:
    assert frame_size(n) == len(encode_frame(Opcode.TEXT, b"x" * n))


def test_messages_come_out_in_order_then_the_close() -> None:
    conn = OutboxConnection()
    assert conn.state is State.OPEN
    assert conn.deflate is None
    assert conn.send_prepared(PreparedMessage.text("one"))
    assert conn.send_prepared(PreparedMessage.binary(b"\x00two"))
    assert conn.outbox_size == frame_size(3) + frame_size(4)
    conn.close(1008, "bye")
    assert conn.state is State.CLOSING
    with pytest.raises(ConnectionClosedError):
        conn.send_prepared(PreparedMessage.text("late"))
    conn.close(1000)  # already closing: no change
    assert drain(conn) == ["one", b"\x00two", CloseRequest(1008, "bye")]
    assert conn.outbox_size == 0
    assert conn.close_request == CloseRequest(1008, "bye")
    assert conn.pop() is None  # the close is handed over once
    conn.transport_closed()
    assert conn.state is State.CLOSED


def test_invalid_close_codes_are_refused_before_any_change() -> None:
    conn = OutboxConnection()
    with pytest.raises(ValueError, match="invalid close code"):
        conn.close(1005)
    with pytest.raises(ValueError, match="123"):
        conn.close(1000, "x" * 124)
    assert conn.state is State.OPEN


def test_overflow_drops_the_queue_and_closes_1013() -> None:
    cap = 100
    conn = OutboxConnection(limits=Limits(max_outbox_size=cap))
    big = PreparedMessage.text("y" * 500)
    assert conn.send_prepared(big)  # an empty outbox takes any one message
    assert conn.outbox_size == frame_size(500)
    assert drain(conn) == ["y" * 500]
    assert conn.send_prepared(PreparedMessage.text("a" * 60))
    assert not conn.send_prepared(PreparedMessage.text("b" * 60))  # 62 + 62 > 100
    assert conn.state is State.CLOSING
    assert conn.outbox_size == 0
    assert drain(conn) == [CloseRequest(1013, "slow consumer")]


@given(
    sizes=st.lists(st.integers(0, 300), max_size=40),
    pops=st.lists(st.booleans(), max_size=40),
    cap=st.integers(1, 1000),
)
def test_the_outbox_never_holds_more_than_the_cap_or_one_message(
    sizes: list[int], pops: list[bool], cap: int
) -> None:
    """Property: bytes held <= max(cap, largest message); FIFO; 1013 exactly on overflow."""
    conn = OutboxConnection(limits=Limits(max_outbox_size=cap))
    model: list[str] = []
    for i, size in enumerate(sizes):
        if i < len(pops) and pops[i] and model:
            assert conn.pop() == model.pop(0)
        if conn.state is not State.OPEN:
            break
        text = chr(ord("a") + i % 26) * size
        held = sum(frame_size(len(t)) for t in model)
        overflow = bool(model) and held + frame_size(size) > cap
        assert conn.send_prepared(PreparedMessage.text(text)) is not overflow
        if overflow:
            model.clear()
            assert conn.close_request == CloseRequest(1013, "slow consumer")
        else:
            model.append(text)
        assert conn.outbox_size == sum(frame_size(len(t)) for t in model)
        assert conn.outbox_size <= max(cap, *(frame_size(s) for s in sizes))
    assert [item for item in drain(conn) if not isinstance(item, CloseRequest)] == model


def test_the_text_cache_decodes_each_message_once() -> None:
    cache = TextCache(size=2)
    first, second, third = (PreparedMessage.text(t) for t in ("é1", "é2", "é3"))
    text = cache.text(first)
    assert text == "é1"
    assert cache.text(first) is text
    cache.text(second)
    cache.text(third)  # first leaves the cache: decoded again, equal, new object
    again = cache.text(first)
    assert again == text
    assert again is not text  # the cache holds two messages, not every one


def test_a_hub_broadcast_queues_one_str_for_every_connection() -> None:
    clock, wall = FakeClock(100.0), FakeClock(WALL_EPOCH)
    hub = Hub(clock=clock, wall_clock=wall)
    texts = TextCache()
    conns = [OutboxConnection(texts=texts) for _ in range(3)]
    for i, conn in enumerate(conns):
        hub.add(f"c{i}", conn, principal=Principal("p"))
        drain(conn)  # the welcome
    assert hub.broadcast("news", {"n": 1}) == 3
    [first], [second], [third] = (drain(conn) for conn in conns)
    assert isinstance(first, str)
    assert first is second is third  # encoded once, decoded once, shared
    assert '"message_type":"news"' in first


def test_a_slow_connection_is_closed_1013_by_the_hub_and_others_get_everything() -> None:
    hub = Hub(clock=FakeClock(100.0), wall_clock=FakeClock(WALL_EPOCH))
    slow = OutboxConnection(limits=Limits(max_outbox_size=4096))
    fast = OutboxConnection(limits=Limits(max_outbox_size=4096))
    hub.add("slow", slow, principal=Principal("p"))
    hub.add("fast", fast, principal=Principal("p"))
    drain(fast)
    for i in range(100):
        hub.broadcast("bulk", {"i": i, "pad": "x" * 100})
        assert len(drain(fast)) == 1
    assert slow.close_request == CloseRequest(1013, "slow consumer")
    assert hub.stats().slow_consumer_closes == 1
    assert hub.broadcast("after", None) == 1
