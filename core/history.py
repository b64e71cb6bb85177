"""Per-topic history: the exact envelopes published, bounded, in memory.

Each topic with history has a ``TopicLog``: the encoded envelopes of its last
messages (bytes as sent, so a replay costs no encoding) and the monotonic time
each was kept. Its seqs are contiguous, ``first`` .. ``first + len - 1``:
entries only ever leave from the oldest end, whichever bound removes them, so
no seq is stored per entry.

A log is bounded by count, envelope bytes and age (``HistoryBounds``); all
logs together by ``max_bytes`` (``HubConfig.max_history_bytes``), enforced
by evicting the oldest entry of all topics first. That global order is a
deque holding, per entry, a reference to its log; entries a log already
evicted by its own bounds are skipped when they reach the front (``stale``
counts them per log) and the deque is compacted when stale references
outnumber live ones. Ages expire through ``next_deadline``/``expire``: a
heap keyed by expiry times, where the item of a log is valid while it equals
``log.due`` (an item made invalid by a new age bound is skipped), and a due
item whose log lost its oldest entries since is moved to the new oldest.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["History", "HistoryBounds", "TopicLog", "check_history_settings"]


def check_history_settings(size: object, ttl: object) -> None:
    """Raise ValueError unless ``size`` is None or an integer >= 0 and ``ttl``
    None or a positive number of seconds (``math.inf`` allowed)."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ValueError(f"history_size must be an integer >= 0, got {size!r}")
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0
    ):
        raise ValueError(f"history_ttl must be positive, got {ttl!r}")


@dataclass(frozen=True, slots=True)
class HistoryBounds:
    """How much of one topic is kept: ``size`` entries (0: none), ``max_bytes``
    of envelopes, each for ``ttl`` seconds (``math.inf``: no age bound)."""

    size: int
    max_bytes: int
    ttl: float


class TopicLog:
    """The kept envelopes of one topic, oldest first (see the module docstring)."""

    __slots__ = ("data", "due", "first", "name", "nbytes", "stale", "times", "ttl")

    def __init__(self, name: str, first: int) -> None:
        self.name = name
        self.first = first  # seq of data[0]; of the next entry while empty
        self.data: deque[bytes] = deque()
        self.times: deque[float] = deque()
        self.nbytes = 0
        self.stale = 0  # references in History.order to entries already evicted
        self.due: float | None = None  # its valid item in History's expiry heap
        self.ttl = math.inf

    def __len__(self) -> int:
        return len(self.data)

    @property
    def last(self) -> int:
        """Seq of the newest entry (``first - 1`` while empty)."""
        return self.first + len(self.data) - 1

    def since(self, seq: int, limit: int) -> list[bytes]:
        """Up to ``limit`` entries after ``seq`` (which must be >= first - 1)."""
        start = seq + 1 - self.first
        stop = min(len(self.data), start + limit)
        data = self.data
        return [data[i] for i in range(start, stop)]


class History:
    """Every topic's log, with the global byte cap and age expiry."""

    __slots__ = ("_heap", "_on_empty", "_order", "_tick", "entries", "max_bytes", "nbytes")

    def __init__(self, max_bytes: int, on_empty: Callable[[TopicLog], None]) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.entries = 0
        self._on_empty = on_empty
        self._order: deque[TopicLog] = deque()
        self._heap: list[tuple[float, int, TopicLog]] = []
        self._tick = 0

    def append(self, log: TopicLog, data: bytes, now: float, bounds: HistoryBounds) -> None:
        """Keep the envelope of ``log``'s next seq, then enforce every bound.

        An envelope larger than the topic's or the global byte bound is not
        kept (the log then restarts after it: it would be evicted at once).
        """
        size = len(data)
        log.ttl = bounds.ttl
        if size > bounds.max_bytes or size > self.max_bytes or bounds.size <= 0:
            self.clear(log)
            log.first += 1
            self._on_empty(log)
            return
        log.data.append(data)
        log.times.append(now)
        log.nbytes += size
        self.nbytes += size
        self.entries += 1
        self._order.append(log)
        while len(log.data) > bounds.size or log.nbytes > bounds.max_bytes:
            self._evict(log)
            log.stale += 1
        while self.nbytes > self.max_bytes:
            self._evict_oldest()
        self._arm_if_sooner(log)
        self._compact()

    def trim(self, log: TopicLog, now: float, bounds: HistoryBounds) -> None:
        """Apply new bounds (``configure_topic``) to one log."""
        log.ttl = bounds.ttl
        evicted = False
        while log.data and (
            len(log.data) > bounds.size
            or log.nbytes > bounds.max_bytes
            or now >= log.times[0] + log.ttl
        ):
            self._evict(log)
            log.stale += 1
            evicted = True
        if log.data:
            self._arm_if_sooner(log)
        elif evicted:
            self._on_empty(log)
        self._compact()

    def clear(self, log: TopicLog) -> None:
        """Drop every entry of ``log`` (its topic is forgotten or keeps no history)."""
        count = len(log.data)
        log.first += count
        log.stale += count
        self.nbytes -= log.nbytes
        self.entries -= count
        log.nbytes = 0
        log.data.clear()
        log.times.clear()
        log.due = None
        self._compact()

    def next_deadline(self) -> float | None:
        """When the oldest kept entry of some topic reaches its age bound."""
        heap = self._heap
        while heap:
            when, _, log = heap[0]
            if log.due != when or not log.data:
                heapq.heappop(heap)  # replaced by a sooner item, or emptied
                if log.due == when:
                    log.due = None
                continue
            if when == log.times[0] + log.ttl:
                return when
            heapq.heappop(heap)  # its oldest entries were evicted since
            self._arm(log)
        return None

    def expire(self, now: float) -> None:
        """Evict every entry whose age bound has passed at ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, log = heapq.heappop(heap)
            if log.due != when:
                continue
            log.due = None
            if not log.data:
                continue  # emptied since it was armed: already reported
            while log.data and now >= log.times[0] + log.ttl:
                self._evict(log)
                log.stale += 1
            if not log.data:
                self._on_empty(log)
            else:
                self._arm(log)
        self._compact()

    # -- internals -------------------------------------------------------------------

    def _arm_if_sooner(self, log: TopicLog) -> None:
        """Make sure ``log``'s oldest entry is due no later than its heap item."""
        if not math.isfinite(log.ttl):
            log.due = None
            return
        when = log.times[0] + log.ttl
        if log.due is None or when < log.due:
            self._arm(log)

    def _arm(self, log: TopicLog) -> None:
        due = log.times[0] + log.ttl
        self._tick += 1
        heapq.heappush(self._heap, (due, self._tick, log))
        log.due = due

    def _evict(self, log: TopicLog) -> None:
        """Drop ``log``'s oldest entry (the caller accounts for its global reference)."""
        size = len(log.data.popleft())
        log.times.popleft()
        log.first += 1
        log.nbytes -= size
        self.nbytes -= size
        self.entries -= 1

    def _evict_oldest(self) -> None:
        """Drop the oldest entry of all topics."""
        order = self._order
        while True:
            log = order.popleft()
            if log.stale:
                log.stale -= 1
                continue
            self._evict(log)
            if not log.data:
                self._on_empty(log)
            return

    def _compact(self) -> None:
        """Drop stale references and expiry items once they outnumber live entries."""
        bound = 2 * self.entries + 64
        order = self._order
        if len(order) > bound:
            kept: deque[TopicLog] = deque()
            for log in order:
                if log.stale:
                    log.stale -= 1
                else:
                    kept.append(log)
            self._order = kept
        if len(self._heap) > bound:
            live = []
            for item in self._heap:
                log = item[2]
                if log.due == item[0]:
                    if log.data:
                        live.append(item)
                    else:
                        log.due = None
            heapq.heapify(live)
            self._heap = live
