"""When a hub client tries again: full-jitter exponential backoff, and what
each way a connection can end means for the next attempt.

Pure (no clock, no I/O; randomness is a parameter), so the policy is
property-tested without sockets. Full jitter (a uniform delay between 0 and
an exponentially growing ceiling) spreads clients that lost the same server at
the same moment, so a restarted server is not hit by all of them at once.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "Backoff",
    "Ending",
    "Retry",
    "classify_close",
    "classify_status",
    "parse_retry_after",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """How long to wait before reconnecting.

    The n-th delay after a success (n = 0, 1, ...) is uniform in
    ``[0, min(cap, base * factor**n)]``. ``max_attempts``: consecutive
    connection attempts that may fail before the client gives up (None:
    never give up); an opened connection resets the count.
    """

    base: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not self.base > 0 or not self.cap >= self.base:
            raise ValueError("backoff needs 0 < base <= cap")
        if not self.factor >= 1:
            raise ValueError("backoff factor must be >= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1 (or None)")

    def ceiling(self, retries: int) -> float:
        """The largest delay of the ``retries``-th retry since the last success."""
        try:
            raw = self.base * self.factor**retries
        except OverflowError:
            return self.cap
        return min(self.cap, raw)


class Retry:
    """The state of one client's reconnection: failures so far, next delay.

    ``random`` returns floats in ``[0, 1)`` (``random.random`` by default;
    tests pass their own).
    """

    __slots__ = ("_random", "failures", "policy", "retries")

    def __init__(self, policy: Backoff, random: Callable[[], float] = _random.random) -> None:
        self.policy = policy
        self._random = random
        self.failures = 0  # consecutive failed attempts since the last success
        self.retries = 0  # delays handed out since the last success

    def failed(self) -> None:
        """A connection attempt failed (refused, unreachable, handshake error)."""
        self.failures += 1

    def succeeded(self) -> None:
        """A connection opened: the next loss starts again from ``base``."""
        self.failures = 0
        self.retries = 0

    @property
    def exhausted(self) -> bool:
        limit = self.policy.max_attempts
        return limit is not None and self.failures >= limit

    def next_delay(self, retry_after: float | None = None) -> float | None:
        """Seconds to wait before the next attempt; None once attempts are exhausted.

        A server's ``Retry-After`` is a floor: the jittered delay is added to
        it, so clients told the same value do not all come back together.
        """
        if self.exhausted:
            return None
        jitter = self._random() * self.policy.ceiling(self.retries)
        self.retries += 1
        return jitter + max(0.0, retry_after or 0.0)


class Ending(Enum):
    """What the end of an attempt or a connection means for the next one."""

    RETRY = "retry"  # lost, unreachable, server error: back off and reconnect
    THROTTLED = "throttled"  # 429 / 503 / 4429: reconnect, not before Retry-After
    REFUSED = "refused"  # credentials or policy refused: only a new token helps


#: Close codes after which reconnecting with the same credentials would be
#: refused again: 4401/4403 (close-code refusals) and 1008 (policy: invalid or
#: expired token, kicked, too many invalid messages).
REFUSAL_CLOSE_CODES = frozenset({1008, 4401, 4403})
THROTTLE_CLOSE_CODES = frozenset({4429})
REFUSAL_STATUSES = frozenset({401, 403})
THROTTLE_STATUSES = frozenset({429, 503})


def classify_close(code: int) -> Ending:
    """The meaning of the close code of a connection that was open."""
    if code in REFUSAL_CLOSE_CODES:
        return Ending.REFUSED
    if code in THROTTLE_CLOSE_CODES:
        return Ending.THROTTLED
    return Ending.RETRY


def classify_status(status: int) -> Ending:
    """The meaning of an HTTP status that refused the upgrade."""
    if status in REFUSAL_STATUSES:
        return Ending.REFUSED
    if status in THROTTLE_STATUSES:
        return Ending.THROTTLED
    return Ending.RETRY


def parse_retry_after(headers: Iterable[tuple[str, str]], *, limit: float = 3600.0) -> float | None:
    """Seconds of a ``Retry-After: <seconds>`` header (RFC 9110 §10.2.3), capped at ``limit``.

    HTTP dates and malformed values are ignored (None): the backoff applies.
    """
    for name, value in headers:
        if name.lower() != "retry-after":
            continue
        text = value.strip()
        if text.isascii() and text.isdigit():
            return min(float(int(text)), limit)
        return None
    return None
