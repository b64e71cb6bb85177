"""Work shared by every connection of a server: timers, deferred flushes, spawning.

One task sleeps until the earliest deadline of all connections (a heap of
deadlines) instead of one timer task per connection, which costs memory for
every idle connection. Writes are deferred to a callback the event loop runs
as soon as the current task yields, so that everything queued for a socket in
one go (the messages of one read, a burst of publishes to many subscribers)
leaves in one ``send`` per socket.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import anyio

from ._clock import current_time
from ._driver import READ_SIZE

__all__ = ["Scheduled", "Scheduler"]

logger = logging.getLogger("wshub.server")

_COMPACT_AT = 1024  # dead heap entries tolerated before the heap is rebuilt


class Scheduled(Protocol):
    """What the scheduler calls back: a connection's driver."""

    def on_timer(self) -> None: ...

    def flush(self) -> None: ...

    def abort(self) -> None: ...


# A heap entry: [deadline, tie-breaker, driver or None once cancelled].
_Entry = list[Any]


def _call_soon() -> Callable[[Callable[[], None]], object]:
    """The running loop's cheapest way to run a callback after the current task yields."""
    try:
        return asyncio.get_running_loop().call_soon
    except RuntimeError:  # not asyncio: anyio's other backend is trio
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon


class Scheduler:
    """Timers and deferred flushes of many drivers; ``run`` must run in a task group.

    ``spawn`` starts a background task (a task group's ``start_soon``); drivers
    use it for a writer only while a socket cannot take their bytes.
    """

    __slots__ = (
        "_armed",
        "_counter",
        "_dead",
        "_dirty",
        "_heap",
        "_scope",
        "_soon",
        "read_buffer",
        "spawn",
    )

    def __init__(self, spawn: Callable[[Callable[[], Coroutine[Any, Any, None]]], object]) -> None:
        self.spawn = spawn
        self._heap: list[_Entry] = []
        self._counter = itertools.count()
        self._armed = math.inf
        self._scope: anyio.CancelScope | None = None
        self._dead = 0
        self._dirty: list[Scheduled] = []
        self._soon = _call_soon()
        # Where the drivers of this loop read into (see ``SocketDriver``); one
        # per scheduler, since each event loop runs in a thread of its own.
        self.read_buffer = memoryview(bytearray(READ_SIZE))

    # -- timers --------------------------------------------------------------

    def schedule(self, driver: Scheduled, when: float) -> _Entry:
        """Call ``driver.on_timer()`` at ``when``; returns a handle for ``cancel``."""
        entry: _Entry = [when, next(self._counter), driver]
        heapq.heappush(self._heap, entry)
        if when < self._armed:
            self._armed = when
            if self._scope is not None:
                self._scope.deadline = when
        return entry

    def cancel(self, entry: _Entry) -> None:
        """Forget a timer (its connection is gone): the heap no longer holds the driver."""
        if entry[2] is not None:
            entry[2] = None
            self._dead += 1
            if self._dead > _COMPACT_AT and self._dead > len(self._heap) // 2:
                self._heap = [e for e in self._heap if e[2] is not None]
                heapq.heapify(self._heap)
                self._dead = 0

    async def run(self) -> None:
        """Sleep until the earliest deadline, fire what is due, repeat (until cancelled)."""
        heap = self._heap
        while True:
            with anyio.CancelScope(deadline=self._armed) as scope:
                self._scope = scope
                await anyio.sleep_forever()
            self._scope = None
            now = current_time()
            heap = self._heap
            while heap and heap[0][0] <= now:
                entry = heapq.heappop(heap)
                driver = entry[2]
                if driver is None:
                    self._dead -= 1
                else:
                    entry[2] = None
                    driver.on_timer()
            self._armed = heap[0][0] if heap else math.inf

    # -- deferred flushes ------------------------------------------------------

    def flush_soon(self, driver: Scheduled) -> None:
        """Have ``driver.flush()`` called once the current task yields."""
        dirty = self._dirty
        dirty.append(driver)
        if len(dirty) == 1:
            self._soon(self._flush_all)

    def _flush_all(self) -> None:
        dirty = self._dirty
        self._dirty = []
        for driver in dirty:
            try:
                driver.flush()
            except Exception:  # a bug: lose that connection, not the others' flushes
                logger.exception("flushing %r failed; aborting it", driver)
                driver.abort()
