"""The hub client's per-topic bookkeeping, without sockets: what a subscribe
reply means (recovered, epoch changed, moved without recovery), and that any
stream of seqs, duplicated or with holes, is delivered once, in order, with
every hole signalled."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wshub.adapters.hub_client_topics import Cursor, Reply, Verdict, parse_subscribe_reply
from wshub.adapters.hub_client_types import GapReason, StreamPosition


def reply(seq: int, epoch: str | None = "e1", recovered: bool | None = None) -> Reply:
    return Reply(seq=seq, epoch=epoch, recovered=recovered, present=None)


def test_a_first_subscribe_starts_at_the_replys_seq() -> None:
    cursor = Cursor("t")
    assert cursor.since() is None
    assert cursor.resume(reply(41), asked=False) is None
    assert cursor.position == StreamPosition(41, "e1")
    assert cursor.since() == {"seq": 41, "epoch": "e1"}
    assert cursor.advance(42) == (Verdict.NEW, None)


def test_recovered_keeps_the_cursor_so_the_replay_is_delivered() -> None:
    cursor = Cursor("t", StreamPosition(41, "e1"))
    assert cursor.resume(reply(50, recovered=True), asked=True) is None
    assert cursor.seq == 41
    assert [cursor.advance(s)[0] for s in range(42, 51)] == [Verdict.NEW] * 9
    assert cursor.advance(50)[0] is Verdict.DUPLICATE


def test_not_recovered_in_the_same_epoch_is_a_gap_up_to_the_replys_seq() -> None:
    cursor = Cursor("t", StreamPosition(41, "e1"))
    gap = cursor.resume(reply(5000, recovered=False), asked=True)
    assert gap is not None
    assert gap.reason is GapReason.NOT_RECOVERED
    assert (gap.last_seq, gap.resumed_at, gap.missed, gap.epoch_changed) == (41, 5000, 4959, False)
    assert cursor.position == StreamPosition(5000, "e1")
    assert cursor.advance(5001) == (Verdict.NEW, None)


def test_a_new_epoch_is_an_epoch_change_whatever_the_seq() -> None:
    cursor = Cursor("t", StreamPosition(41, "e1"))
    gap = cursor.resume(reply(3, epoch="e2", recovered=False), asked=True)
    assert gap is not None
    assert gap.reason is GapReason.EPOCH_CHANGED
    assert gap.epoch_changed
    assert gap.missed is None  # unknowable across epochs
    assert (gap.last_epoch, gap.epoch, gap.resumed_at) == ("e1", "e2", 3)
    assert cursor.position == StreamPosition(3, "e2")
    assert cursor.advance(4) == (Verdict.NEW, None)


def test_a_server_without_recovery_is_checked_by_comparing_seqs() -> None:
    # No epoch: no since is sent, and the reply says nothing about recovery.
    cursor = Cursor("t")
    cursor.resume(reply(7, epoch=None), asked=False)
    assert cursor.since() is None
    assert cursor.resume(reply(7, epoch=None), asked=False) is None  # nothing published meanwhile
    gap = cursor.resume(reply(9, epoch=None), asked=False)
    assert gap is not None
    assert (gap.reason, gap.missed) == (GapReason.NO_RECOVERY, 2)
    gap = cursor.resume(reply(0, epoch=None), asked=False)  # an ad-hoc topic forgotten
    assert gap is not None
    assert gap.reason is GapReason.NO_RECOVERY


def test_a_reply_that_does_not_say_recovered_is_a_gap_when_the_seq_moved() -> None:
    # A plain (re)subscribe to a server with epochs: it keeps history when configured.
    cursor = Cursor("t", StreamPosition(10, "e1"))
    gap = cursor.resume(reply(12, recovered=None), asked=False)
    assert gap is not None
    assert (gap.reason, gap.missed) == (GapReason.NOT_RECOVERED, 2)
    assert Cursor("t", StreamPosition(10, "e1")).resume(reply(10), asked=True) is None


@given(
    n=st.integers(0, 60),
    extra=st.lists(st.tuples(st.integers(0, 80), st.integers(1, 60)), max_size=40),
)
def test_duplicates_anywhere_are_dropped_and_every_seq_comes_once_in_order(
    n: int, extra: list[tuple[int, int]]
) -> None:
    # The true stream 1..n, with old seqs sent again at arbitrary places (a
    # replay overlapping live messages, a subscribe sent twice).
    stream = list(range(1, n + 1))
    for at, seq in extra:
        position = min(at, len(stream))
        delivered_before = [s for s in stream[:position] if s]
        if delivered_before:
            stream.insert(position, min(seq, max(delivered_before)))
    cursor = Cursor("t")
    cursor.resume(reply(0), asked=False)
    out = []
    for seq in stream:
        verdict, gap = cursor.advance(seq)
        assert gap is None
        if verdict is Verdict.NEW:
            out.append(seq)
    assert out == list(range(1, n + 1))


@given(st.lists(st.booleans(), max_size=80))
def test_every_hole_is_signalled_once_and_covers_exactly_the_missing_seqs(
    received: list[bool],
) -> None:
    cursor = Cursor("t")
    cursor.resume(reply(0), asked=False)
    delivered: list[int] = []
    missing: list[int] = []
    for seq, arrives in enumerate(received, start=1):
        if not arrives:
            continue
        verdict, gap = cursor.advance(seq)
        if gap is not None:
            assert verdict is Verdict.AFTER_GAP
            assert gap.reason is GapReason.SEQ_GAP
            assert gap.last_seq is not None
            assert gap.missed == gap.resumed_at - gap.last_seq
            missing.extend(range(gap.last_seq + 1, gap.resumed_at + 1))
        else:
            assert verdict is Verdict.NEW
        delivered.append(seq)
    last = max(delivered, default=0)
    assert sorted(delivered + missing) == list(range(1, last + 1))  # no silent hole
    assert not set(delivered) & set(missing)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"topic": "t", "seq": 3}, reply(3, epoch=None)),
        ({"topic": "t", "seq": 3, "epoch": "x", "recovered": True}, reply(3, "x", True)),
        (
            {"seq": 0, "present": [{"conn_id": "c1", "principal": "alice"}, "junk"]},
            Reply(seq=0, epoch=None, recovered=None, present=(("c1", "alice"),)),
        ),
        ({"seq": True}, None),
        ({"seq": -1}, None),
        ({"seq": "3"}, None),
        ({"seq": 3, "epoch": 5}, None),
        ({"seq": 3, "recovered": "yes"}, None),
        ([], None),
        (None, None),
    ],
)
def test_subscribe_reply_payloads(payload: Any, expected: Reply | None) -> None:
    assert parse_subscribe_reply(payload) == expected
