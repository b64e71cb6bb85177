"""The history store alone: bounds by count, bytes, age and the global cap.

Properties run random sequences of appends, clock steps, expiries, trims and
clears over a few logs against a plain reference: per log, the list of
(seq, bytes, time) it must still hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.core.history import History, HistoryBounds, TopicLog, check_history_settings


@dataclass
class Ref:
    """The reference of one log: what it must hold, oldest first."""

    first: int
    entries: list[tuple[int, bytes, float]]


def reference_append(
    refs: dict[str, Ref], name: str, data: bytes, now: float, *, bounds: HistoryBounds, cap: int
) -> None:
    ref = refs[name]
    seq = ref.first + len(ref.entries)
    if len(data) > bounds.max_bytes or len(data) > cap or not bounds.size:
        ref.entries.clear()
        ref.first = seq + 1
        return
    ref.entries.append((seq, data, now))
    while len(ref.entries) > bounds.size or sum(len(e[1]) for e in ref.entries) > bounds.max_bytes:
        ref.entries.pop(0)
    ref.first = ref.entries[0][0]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 2), st.integers(1, 40)),
        st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 3.0]), st.just(0)),
        st.tuples(st.just("clear"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("trim"), st.integers(0, 2), st.integers(0, 5)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=ops,
    size=st.integers(1, 6),
    topic_bytes=st.integers(20, 120),
    cap=st.integers(30, 200),
    ttl=st.sampled_from([1.0, 2.5, math.inf]),
)
def test_bounds_hold_against_a_reference(
    ops: list[tuple[str, object, int]], size: int, topic_bytes: int, cap: int, ttl: float
) -> None:
    names = ["a", "b", "c"]
    emptied: list[str] = []
    history = History(cap, lambda log: emptied.append(log.name))
    logs = {name: TopicLog(name, 1) for name in names}
    refs = {name: Ref(1, []) for name in names}
    order: list[tuple[str, int]] = []  # (log, seq) in order of keeping, for the global cap
    bounds = {name: HistoryBounds(size=size, max_bytes=topic_bytes, ttl=ttl) for name in names}
    now = 0.0
    counter = 0
    for op, arg, n in ops:
        if op == "append":
            name = names[int(str(arg))]
            counter += 1
            data = bytes([65 + counter % 26]) * n
            ref = refs[name]
            seq = ref.first + len(ref.entries)
            history.append(logs[name], data, now, bounds[name])
            reference_append(refs, name, data, now, bounds=bounds[name], cap=cap)
            if any(e[0] == seq for e in ref.entries):
                order.append((name, seq))
            # global cap: the oldest kept entries of all logs go first
            while sum(len(e[1]) for r in refs.values() for e in r.entries) > cap:
                victim, vseq = order.pop(0)
                vref = refs[victim]
                if vref.entries and vref.entries[0][0] == vseq:
                    vref.entries.pop(0)
                    vref.first = vseq + 1
        elif op == "tick":
            now += float(str(arg))
            deadline = history.next_deadline()
            due = [r.entries[0][2] + ttl for r in refs.values() if r.entries]
            assert deadline == (min(due) if due and math.isfinite(ttl) else None)
            history.expire(now)
            for ref in refs.values():
                while ref.entries and now >= ref.entries[0][2] + ttl:
                    seq = ref.entries.pop(0)[0]
                    ref.first = seq + 1
        elif op == "clear":
            name = names[int(str(arg))]
            history.clear(logs[name])
            ref = refs[name]
            ref.first += len(ref.entries)
            ref.entries.clear()
        else:
            name = names[int(str(arg))]
            bounds[name] = HistoryBounds(size=n, max_bytes=topic_bytes, ttl=ttl)
            history.trim(logs[name], now, bounds[name])
            ref = refs[name]
            while ref.entries and (
                len(ref.entries) > n or sum(len(e[1]) for e in ref.entries) > topic_bytes
            ):
                ref.first = ref.entries.pop(0)[0] + 1
        # Every log holds exactly its reference, contiguous from ``first``.
        for name in names:
            log, ref = logs[name], refs[name]
            assert list(log.data) == [e[1] for e in ref.entries], name
            if ref.entries:
                assert log.first == ref.entries[0][0]
            assert log.last == log.first + len(log) - 1
            assert len(log) <= bounds[name].size or not len(log)
            assert log.nbytes == sum(len(d) for d in log.data) <= topic_bytes
            assert log.since(log.first - 1, len(log)) == list(log.data)
        assert history.nbytes == sum(log.nbytes for log in logs.values()) <= cap
        assert history.entries == sum(len(log) for log in logs.values())


def test_the_global_cap_evicts_the_oldest_of_all_topics_first() -> None:
    emptied: list[str] = []
    history = History(100, lambda log: emptied.append(log.name))
    a, b = TopicLog("a", 1), TopicLog("b", 1)
    bounds = HistoryBounds(size=10, max_bytes=1000, ttl=math.inf)
    history.append(a, b"a" * 40, 0.0, bounds)
    history.append(b, b"b" * 40, 1.0, bounds)
    history.append(a, b"A" * 40, 2.0, bounds)  # 120 > 100: a's first goes
    assert (list(a.data), a.first, list(b.data)) == ([b"A" * 40], 2, [b"b" * 40])
    history.append(a, b"x" * 30, 3.0, bounds)  # 110: b's only entry goes, b is emptied
    assert (len(b), b.first, emptied) == (0, 2, ["b"])
    assert history.next_deadline() is None  # no age bound


def test_an_envelope_larger_than_a_bound_is_not_kept_and_breaks_no_seq() -> None:
    emptied: list[str] = []
    history = History(1000, lambda log: emptied.append(log.name))
    log = TopicLog("t", 1)
    bounds = HistoryBounds(size=5, max_bytes=50, ttl=10.0)
    history.append(log, b"1" * 10, 0.0, bounds)
    history.append(log, b"2" * 60, 0.0, bounds)  # too large: seq 2 is not kept, nor seq 1
    assert (len(log), log.first, emptied) == (0, 3, ["t"])
    history.append(log, b"3" * 10, 0.0, bounds)
    assert (log.first, log.last) == (3, 3)
    small = History(20, lambda log: None)
    other = TopicLog("o", 1)
    small.append(other, b"x" * 30, 0.0, bounds)  # larger than the global cap
    assert (len(other), other.first, small.nbytes) == (0, 2, 0)


def test_expiry_follows_the_oldest_entry_after_count_evictions() -> None:
    emptied: list[str] = []
    history = History(1000, lambda log: emptied.append(log.name))
    log = TopicLog("t", 1)
    bounds = HistoryBounds(size=2, max_bytes=1000, ttl=5.0)
    for now in (0.0, 1.0, 2.0):
        history.append(log, b"m", now, bounds)
    assert history.next_deadline() == 6.0  # the entry kept at 0.0 was evicted by count
    history.expire(5.9)
    assert len(log) == 2
    history.expire(6.0)
    assert (len(log), log.first) == (1, 3)
    assert history.next_deadline() == 7.0
    history.trim(log, 6.0, HistoryBounds(size=2, max_bytes=1000, ttl=math.inf))
    assert history.next_deadline() is None  # no age bound any more: disarmed lazily
    history.trim(log, 6.0, HistoryBounds(size=2, max_bytes=1000, ttl=0.5))
    assert (len(log), emptied) == (0, ["t"])  # trimmed by its new age bound
    history.expire(100.0)
    assert emptied == ["t"]  # an emptied log is reported once


def test_stale_references_and_expiry_items_stay_bounded() -> None:
    history = History(1 << 20, lambda log: None)
    bounds = HistoryBounds(size=1, max_bytes=1000, ttl=1.0)
    keep = TopicLog("keep", 1)
    for i in range(1000):
        history.append(keep, b"k", float(i), bounds)  # each append evicts the previous
        log = TopicLog(f"t{i}", 1)
        history.append(log, b"x", float(i), bounds)
        history.clear(log)  # forgotten: its expiry item is left behind
    assert history.entries == 1
    assert len(history._order) <= 2 * history.entries + 65
    assert len(history._heap) <= 2 * history.entries + 65


@pytest.mark.parametrize(
    ("size", "ttl"), [(-1, None), (True, None), (1.5, None), (None, 0), (None, -1.0), (None, True)]
)
def test_bad_history_settings_are_refused(size: object, ttl: object) -> None:
    with pytest.raises(ValueError, match="history_"):
        check_history_settings(size, ttl)


def test_good_history_settings_pass() -> None:
    check_history_settings(None, None)
    check_history_settings(0, math.inf)
    check_history_settings(10, 0.5)


def test_logs_emptied_by_the_global_cap_leave_no_live_deadline() -> None:
    emptied: list[str] = []
    history = History(100, lambda log: emptied.append(log.name))
    bounds = HistoryBounds(size=5, max_bytes=100, ttl=10.0)
    a, b = TopicLog("a", 1), TopicLog("b", 1)
    history.append(a, b"a" * 60, 0.0, bounds)
    history.append(b, b"b" * 60, 1.0, bounds)  # the cap empties a: its deadline item is void
    assert emptied == ["a"]
    assert history.next_deadline() == 11.0  # a's item at 10.0 is skipped
    assert a.due is None
    history.append(a, b"a" * 30, 2.0, bounds)
    history.append(b, b"c" * 30, 3.0, bounds)  # 120 > 100: b's first entry goes
    history.append(a, b"a" * 75, 4.0, bounds)  # a's 30 by its own bound, then b's 30
    assert (len(b), emptied) == (0, ["a", "b"])
    history.expire(20.0)  # b's valid item finds it empty: reported once only
    assert emptied == ["a", "b", "a"]


def test_a_shorter_age_bound_replaces_the_pending_deadline() -> None:
    emptied: list[str] = []
    history = History(1000, lambda log: emptied.append(log.name))
    log = TopicLog("t", 1)
    history.append(log, b"x", 0.0, HistoryBounds(size=5, max_bytes=100, ttl=10.0))
    history.trim(log, 0.0, HistoryBounds(size=5, max_bytes=100, ttl=2.0))
    assert history.next_deadline() == 2.0
    history.expire(10.0)  # the old item at 10.0 is void
    assert (len(log), emptied, history.next_deadline()) == (0, ["t"], None)


def test_the_global_order_skips_entries_a_topic_evicted_itself() -> None:
    history = History(100, lambda log: None)
    a, b = TopicLog("a", 1), TopicLog("b", 1)
    one = HistoryBounds(size=1, max_bytes=100, ttl=math.inf)
    history.append(a, b"1" * 30, 0.0, one)
    history.append(a, b"2" * 30, 0.0, one)  # a keeps only its newest: one stale reference
    history.append(b, b"3" * 60, 0.0, one)
    history.append(b, b"4" * 50, 0.0, one)  # 80 <= 100
    history.append(a, b"5" * 40, 0.0, one)  # 90
    history.append(b, b"6" * 60, 0.0, one)  # 100: b's "4" goes by count
    history.append(a, b"7" * 45, 0.0, one)  # a's "5" by count; 105: skips stale refs to b's "6"
    assert (list(a.data), list(b.data), history.nbytes) == ([b"7" * 45], [], 45)


def test_heap_compaction_voids_the_deadlines_of_emptied_logs() -> None:
    history = History(50, lambda log: None)
    bounds = HistoryBounds(size=5, max_bytes=50, ttl=5.0)
    logs = [TopicLog(f"t{i}", 1) for i in range(200)]
    for i, log in enumerate(logs):
        history.append(log, b"x" * 50, float(i), bounds)  # each empties the previous one
    assert history.entries == 1
    assert len(history._heap) <= 2 * history.entries + 65
    assert history.next_deadline() == 199.0 + 5.0
