"""Token buckets (core/ratelimit.py): the admission bound, refill, bounded memory."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wshub.core.ratelimit import KeyedLimiter, TokenBucket

EPS = 1e-9

rates = st.floats(0.1, 100)
bursts = st.integers(1, 20)
# (seconds since the previous request, units asked)
requests = st.lists(
    st.tuples(st.floats(0, 3, allow_subnormal=False), st.integers(1, 3)), max_size=60
)


@settings(max_examples=300, deadline=None)
@given(rates, bursts, requests)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket(rate, burst)
    now = 0.0
    admitted: list[tuple[float, int]] = []
    for gap, n in steps:
        now += gap
        if bucket.take(now, n):
            admitted.append((now, n))
    for i, j in itertools.combinations_with_replacement(range(len(admitted)), 2):
        elapsed = admitted[j][0] - admitted[i][0]
        units = sum(n for _, n in admitted[i : j + 1])
        assert units <= burst + rate * elapsed + EPS, (i, j, units, elapsed)


@settings(max_examples=200, deadline=None)
@given(rates, bursts, requests)
def test_retry_after_is_when_the_units_are_there(
    rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket(rate, burst)
    now = 0.0
    for gap, n in steps:
        now += gap
        wait = bucket.retry_after(now, n)
        if n > burst:
            assert wait == math.inf
            assert not bucket.take(now, n)
            continue
        assert wait >= 0
        # within take's rounding tolerance (1e-9): a client exactly at the rate gets in
        assert (wait == 0) == (bucket.level(now) >= n - 1e-9)
        if wait > 0:
            assert not bucket.take(now, n)
            assert bucket.take(now + wait + 1e-6, n)
            now += wait + 1e-6
        else:
            assert bucket.take(now, n)


def test_starts_full_spends_and_refills() -> None:
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.take(10.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after(10.0) == pytest.approx(0.5)
    assert not bucket.take(10.4)
    assert bucket.take(10.5)
    assert bucket.level(100.0) == 3  # capped at burst
    assert bucket.is_full(100.0)
    assert bucket.retry_after(100.0, 4) == math.inf
    assert not bucket.take(100.0, 4)  # more than burst: never, and nothing taken
    assert bucket.level(100.0) == 3


def test_a_clock_stepping_back_refills_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.take(100.0)
    assert not bucket.take(50.0)
    assert not bucket.take(100.5)  # measured from 100, not from 50
    assert bucket.take(101.0)


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(0, 1), (-1, 1), (math.inf, 1), (math.nan, 1), (1, 0), (1, 0.5), (1, math.inf)],
)
def test_bad_parameters(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match=r"rate|burst"):
        TokenBucket(rate, burst)
    with pytest.raises(ValueError, match=r"rate|burst"):
        KeyedLimiter(rate, burst)


@pytest.mark.parametrize("n", [0, -1])
def test_take_needs_a_positive_amount(n: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(1, 1).take(0.0, n)


@pytest.mark.parametrize("max_keys", [0, -5, 1.5])
def test_max_keys_must_be_positive(max_keys: object) -> None:
    with pytest.raises(ValueError, match="max_keys"):
        KeyedLimiter(1, 1, max_keys=max_keys)  # type: ignore[arg-type]


# -- keyed -------------------------------------------------------------------------


def test_keys_have_separate_buckets() -> None:
    limiter = KeyedLimiter(rate=1, burst=2)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.take("b", 0.0)
    assert limiter.retry_after("a", 0.0) == pytest.approx(1.0)
    assert limiter.retry_after("unknown", 0.0) == 0.0
    assert limiter.retry_after("unknown", 0.0, 3) == math.inf
    assert "a" in limiter
    assert len(limiter) == 2


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.floats(0, 2, allow_subnormal=False)), max_size=150),
    st.integers(1, 8),
)
def test_memory_stays_bounded(ops: list[tuple[int, float]], max_keys: int) -> None:
    limiter = KeyedLimiter(rate=0.5, burst=3, max_keys=max_keys)
    now = 0.0
    for key, gap in ops:
        now += gap
        limiter.take(key, now)
        assert len(limiter) <= max_keys


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.floats(0, 2, allow_subnormal=False)), max_size=80),
    rates,
    bursts,
)
def test_per_key_bound_holds_while_keys_fit(
    ops: list[tuple[int, float]], rate: float, burst: int
) -> None:
    limiter = KeyedLimiter(rate, burst, max_keys=6)
    now = 0.0
    admitted: dict[int, list[float]] = {}
    for key, gap in ops:
        now += gap
        if limiter.take(key, now):
            admitted.setdefault(key, []).append(now)
    for times in admitted.values():
        for i, j in itertools.combinations_with_replacement(range(len(times)), 2):
            assert j - i + 1 <= burst + rate * (times[j] - times[i]) + EPS


def test_full_buckets_are_evicted_before_a_drained_one() -> None:
    limiter = KeyedLimiter(rate=1, burst=2, max_keys=3)
    for _ in range(2):
        limiter.take("attacker", 0.0)  # drained
    limiter.take("a", 0.0)
    limiter.take("b", 0.0)
    # By t=4.5 "a" and "b" have refilled; "attacker" was drained, but it has too.
    # Drain it again so it is the one bucket with state worth keeping.
    assert limiter.take("attacker", 4.0)
    assert limiter.take("attacker", 4.0)
    assert not limiter.take("attacker", 4.0)
    limiter.take("new", 4.5)
    assert "attacker" in limiter
    assert "a" not in limiter
    assert "b" not in limiter
    assert not limiter.take("attacker", 4.5)  # its debt is remembered


def test_without_full_buckets_the_least_recently_used_goes() -> None:
    limiter = KeyedLimiter(rate=0.001, burst=1, max_keys=2)
    limiter.take("a", 0.0)
    limiter.take("b", 1.0)
    limiter.take("a", 2.0)  # a is now the most recently used
    limiter.take("c", 3.0)
    assert "b" not in limiter
    assert "a" in limiter
    assert "c" in limiter


def test_prune_drops_only_full_buckets() -> None:
    limiter = KeyedLimiter(rate=1, burst=1)
    limiter.take("a", 0.0)
    limiter.take("b", 0.5)
    assert limiter.prune(1.0) == 1
    assert "a" not in limiter
    assert "b" in limiter
