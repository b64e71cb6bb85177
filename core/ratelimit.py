"""Token buckets, alone and one per key in bounded memory; time is an argument.

``TokenBucket`` admits at most ``burst + rate * t`` units over any span of
``t`` seconds. ``KeyedLimiter`` keeps one bucket per key (a remote address,
for failed authentications) and never more than ``max_keys`` of them: a full
bucket is the same as no bucket, so those go first, then the least recently
used. Forgetting a bucket only ever forgives, so the worst an attacker with
more than ``max_keys`` addresses gains is a fresh burst per address.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

__all__ = ["KeyedLimiter", "TokenBucket"]

_EPSILON = 1e-9


def _check_rate(rate: float, burst: float) -> None:
    if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive number per second, got {rate!r}")
    if not (isinstance(burst, int | float) and math.isfinite(burst) and burst >= 1):
        raise ValueError(f"burst must be a number >= 1, got {burst!r}")


class TokenBucket:
    """``rate`` units per second, up to ``burst`` saved; starts full.

    Times are any monotonic clock's seconds. A time earlier than one already
    seen refills nothing (a clock that steps back cannot mint tokens).
    """

    __slots__ = ("_tokens", "_updated", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        _check_rate(rate, burst)
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = self.burst
        self._updated: float | None = None

    def level(self, now: float) -> float:
        """Units available at ``now``."""
        if self._updated is None or now <= self._updated:
            return self._tokens
        return min(self.burst, self._tokens + (now - self._updated) * self.rate)

    def is_full(self, now: float) -> bool:
        """Would a fresh bucket behave the same from ``now`` on?"""
        return self.level(now) >= self.burst

    def take(self, now: float, n: float = 1) -> bool:
        """Take ``n`` units at ``now`` if they are all there; else take none."""
        if not n > 0:
            raise ValueError(f"n must be positive, got {n!r}")
        tokens = self.level(now)
        if self._updated is None or now > self._updated:
            self._updated = now
        if tokens + _EPSILON >= n:  # a client exactly at the rate must not lose to rounding
            self._tokens = max(0.0, tokens - n)
            return True
        self._tokens = tokens
        return False

    def retry_after(self, now: float, n: float = 1) -> float:
        """Seconds from ``now`` until ``n`` units are there (``inf`` if ``n > burst``)."""
        if n > self.burst:
            return math.inf
        missing = n - self.level(now)
        if missing <= _EPSILON:  # ``take`` would succeed now
            return 0.0
        return missing / self.rate


class KeyedLimiter:
    """A ``TokenBucket(rate, burst)`` per key, at most ``max_keys`` of them.

    For failed authentications per address: ``take(address, now)`` on each
    failure, and refuse (429) while it returns False. Memory is bounded: when
    a new key arrives at capacity, full buckets are dropped (at most once per
    refill time, so a flood of new keys costs O(1) amortized), then the least
    recently used one.
    """

    def __init__(self, rate: float, burst: float, *, max_keys: int = 10_000) -> None:
        _check_rate(rate, burst)
        if not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be a positive integer, got {max_keys!r}")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[Hashable, TokenBucket] = {}  # least recently used first
        self._prune_after: float | None = None

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._buckets

    def take(self, key: Hashable, now: float, n: float = 1) -> bool:
        """Take ``n`` units from ``key``'s bucket at ``now``; False if they are not there."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._make_room(now)
            bucket = TokenBucket(self.rate, self.burst)
        taken = bucket.take(now, n)
        self._buckets[key] = bucket  # now the most recently used
        return taken

    def retry_after(self, key: Hashable, now: float, n: float = 1) -> float:
        """Seconds from ``now`` until ``key`` may take ``n`` units."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0 if n <= self.burst else math.inf
        return bucket.retry_after(now, n)

    def prune(self, now: float) -> int:
        """Drop every full bucket (they hold no state); return how many went."""
        full = [key for key, bucket in self._buckets.items() if bucket.is_full(now)]
        for key in full:
            del self._buckets[key]
        # Every bucket kept now is full again within burst / rate seconds.
        self._prune_after = now + self.burst / self.rate
        return len(full)

    def _make_room(self, now: float) -> None:
        if self._prune_after is None or now >= self._prune_after:
            self.prune(now)
        if len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]
