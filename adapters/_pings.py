"""Pings the application awaits: ``ServerSession.ping`` and ``ClientSession.ping``.

The core reports the pong of an application ping as a ``Pong`` event with its
round-trip time. A peer may answer only the latest of several pings (RFC 6455
§5.5.3), so a pong also settles every ping sent before its own: those waiters
get the time from their own ping to this pong.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from ..core import Pong
from ._clock import current_time

__all__ = ["PongWaiters"]


class _Waiter:
    __slots__ = ("done", "error", "rtt", "sent")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.sent = current_time()
        self.rtt: float | None = None
        self.error: BaseException | None = None


class PongWaiters:
    """Waiters by ping payload, oldest first."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: dict[bytes, _Waiter] = {}

    async def wait(self, payload: bytes) -> float:
        """The round trip of the ping just sent with ``payload``, once its pong came."""
        waiter = self._waiting[payload] = _Waiter()
        try:
            await waiter.done.wait()
        finally:
            self._waiting.pop(payload, None)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.rtt is not None
        return waiter.rtt

    def resolve(self, pong: Pong) -> None:
        """A pong arrived: its ping's waiter, and every older one, are done."""
        if pong.payload not in self._waiting:
            return
        now = current_time()
        for payload in list(self._waiting):
            waiter = self._waiting.pop(payload)
            waiter.rtt = pong.rtt if payload == pong.payload else now - waiter.sent
            waiter.done.set()
            if payload == pong.payload:
                return

    def fail_all(self, error: Callable[[], BaseException]) -> None:
        """The connection ended: no pong will come."""
        for waiter in self._waiting.values():
            waiter.error = error()
            waiter.done.set()
        self._waiting.clear()
