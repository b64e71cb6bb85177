"""The hub client's reconnection policy, without sockets: full-jitter backoff
bounds, jitter range, reset after success, give-up, Retry-After, and what
each refusal means."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wshub.adapters.reconnect import (
    Backoff,
    Ending,
    Retry,
    classify_close,
    classify_status,
    parse_retry_after,
)

policies = st.builds(
    lambda base, extra, factor, attempts: Backoff(
        base=base, cap=base + extra, factor=factor, max_attempts=attempts
    ),
    base=st.floats(0.001, 10.0),
    extra=st.floats(0.0, 100.0),
    factor=st.floats(1.0, 4.0),
    attempts=st.none() | st.integers(1, 20),
)
unit = st.floats(0.0, 1.0, exclude_max=True)


@given(policies, st.lists(unit, min_size=1, max_size=40))
def test_every_delay_lies_between_zero_and_its_ceiling_and_never_above_cap(
    policy: Backoff, draws: list[float]
) -> None:
    values = iter(draws)
    retry = Retry(policy, random=lambda: next(values))
    for n, r in enumerate(draws):
        delay = retry.next_delay()
        assert delay is not None  # no failed attempt counted: never exhausted
        ceiling = min(policy.cap, policy.base * policy.factor**n)
        assert delay == pytest.approx(r * ceiling)
        assert 0.0 <= delay <= policy.cap


@given(policies, st.integers(0, 2000))
def test_ceilings_grow_to_cap_and_never_overflow(policy: Backoff, n: int) -> None:
    assert policy.ceiling(n) <= policy.ceiling(n + 1) <= policy.cap
    assert policy.ceiling(0) == policy.base
    if policy.factor >= 1.1:
        assert policy.ceiling(10_000) == policy.cap  # 1.1**10000 overflows a float
    else:
        assert policy.ceiling(10_000) <= policy.cap


@given(st.integers(0, 30), st.integers(0, 2**32 - 1))
def test_jitter_spans_the_whole_range_from_zero_to_the_ceiling(level: int, seed: int) -> None:
    policy = Backoff(base=0.5, cap=30.0)
    rng = random.Random(seed)
    delays = []
    for _ in range(400):
        retry = Retry(policy, random=rng.random)
        retry.retries = level
        delay = retry.next_delay()
        assert delay is not None
        delays.append(delay)
    ceiling = policy.ceiling(level)
    assert min(delays) < 0.1 * ceiling  # full jitter: not "ceiling +- a little"
    assert max(delays) > 0.9 * ceiling


@given(policies, st.integers(1, 30))
def test_success_resets_the_growth_and_the_failures(policy: Backoff, failures: int) -> None:
    retry = Retry(policy, random=lambda: 0.999)
    for _ in range(failures):
        retry.failed()
        if retry.exhausted:
            break
        assert retry.next_delay() is not None
    retry.succeeded()
    assert (retry.failures, retry.retries) == (0, 0)
    delay = retry.next_delay()
    assert delay is not None
    assert delay <= policy.base  # the first delay after a success is back at base


@given(st.integers(1, 20))
def test_gives_up_after_max_attempts_consecutive_failures(limit: int) -> None:
    retry = Retry(Backoff(max_attempts=limit), random=lambda: 0.5)
    for _ in range(limit - 1):
        retry.failed()
        assert retry.next_delay() is not None
    retry.failed()
    assert retry.exhausted
    assert retry.next_delay() is None


def test_without_max_attempts_it_never_gives_up() -> None:
    retry = Retry(Backoff(), random=lambda: 0.5)
    for _ in range(10_000):
        retry.failed()
        delay = retry.next_delay()
        assert delay is not None
        assert delay <= 30.0


@given(st.floats(0.0, 3600.0), unit)
def test_retry_after_is_a_floor_with_jitter_on_top(retry_after: float, r: float) -> None:
    retry = Retry(Backoff(base=1.0, cap=8.0), random=lambda: r)
    delay = retry.next_delay(retry_after)
    assert delay is not None
    assert retry_after <= delay <= retry_after + 1.0
    assert delay == pytest.approx(retry_after + r)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 0.0},
        {"base": -1.0},
        {"base": 2.0, "cap": 1.0},
        {"factor": 0.5},
        {"max_attempts": 0},
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"backoff|max_attempts"):
        Backoff(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "ending"),
    [
        (4401, Ending.REFUSED),
        (4403, Ending.REFUSED),
        (1008, Ending.REFUSED),
        (4429, Ending.THROTTLED),
        (1000, Ending.RETRY),
        (1001, Ending.RETRY),
        (1006, Ending.RETRY),
        (1011, Ending.RETRY),
        (1013, Ending.RETRY),
    ],
)
def test_close_codes(code: int, ending: Ending) -> None:
    assert classify_close(code) is ending


@pytest.mark.parametrize(
    ("status", "ending"),
    [
        (401, Ending.REFUSED),
        (403, Ending.REFUSED),
        (429, Ending.THROTTLED),
        (503, Ending.THROTTLED),
        (400, Ending.RETRY),
        (404, Ending.RETRY),
        (500, Ending.RETRY),
    ],
)
def test_http_statuses(status: int, ending: Ending) -> None:
    assert classify_status(status) is ending


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((("Retry-After", "5"),), 5.0),
        ((("retry-after", " 12 "),), 12.0),
        ((("Content-Type", "text/plain"), ("RETRY-AFTER", "0")), 0.0),
        ((("Retry-After", "99999999"),), 3600.0),  # capped: a hostile server cannot park us
        ((("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT"),), None),
        ((("Retry-After", "-3"),), None),
        ((("Retry-After", "1.5"),), None),
        ((("Retry-After", "٣"),), None),  # a non-ASCII digit
        ((), None),
    ],
)
def test_retry_after_header(headers: tuple[tuple[str, str], ...], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected
