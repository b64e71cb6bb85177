"""Drive one sans-IO connection over an anyio byte stream: reader, writer, timer.

Shared by the server and the client. Three tasks per connection:

* the reader feeds received bytes to the core and hands its events, in order,
  to an async ``dispatch`` callback (so one connection's messages are handled
  one at a time); it yields to the event loop after every ``READ_SIZE``
  bytes it read (a TLS stream may hand over buffered records without
  yielding) and every ``MESSAGES_PER_TURN`` messages, so one client's burst
  cannot hold the other connections' readers and writers back;
* the writer drains ``data_to_send()`` whenever it is woken, and half-closes
  the transport once the core asks for it;
* the timer sleeps until ``next_deadline()`` and calls ``handle_timer()``.

Anything that touches the core from outside these tasks (an application
``send``/``close``, a hub queueing bytes) calls ``notify()``: it wakes the
writer, pulls the timer's deadline forward when the new deadline is earlier,
and interrupts the reader when the core has closed so that the ``Closed``
event is dispatched at once. The timer may wake early (a later deadline is
not pushed back), which only costs one no-op ``handle_timer``.

Once the core asks to close the transport, everything left (flushing the
outbox, waiting for the peer's FIN) must finish within ``close_timeout``;
after that the transport is aborted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import ByteStream

from ..core import Connection, Event, State
from ._clock import current_time
from ._turns import MESSAGES_PER_TURN, next_turn

__all__ = [
    "READ_SIZE",
    "Dispatch",
    "DispatchNowait",
    "Driver",
    "dispatch_events",
    "dispatch_nothing",
    "dispatch_received",
]

READ_SIZE = 64 * 1024
"""Bytes asked of the transport per read: large enough for big messages,
small enough not to allocate much per read of a small one."""

_TRANSPORT_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)

Dispatch = Callable[[Event], Awaitable[None]]
#: Dispatch without waiting where possible: None when done, else what is left to await.
DispatchNowait = Callable[[Event], Awaitable[None] | None]


async def dispatch_nothing(event: Event) -> None:
    """A finished driver's handler. Drivers drop the session's once ``run``
    ends: the session holds its driver, and the cycle would keep every
    finished connection in memory until the garbage collector ran."""


async def dispatch_received(
    core: Connection, dispatch: Dispatch, notify: Callable[[], None]
) -> bool:
    """Hand every event the core has to ``dispatch``, in order; True once the
    connection is closed (its ``Closed`` event among those dispatched).

    Sends made by the handlers notified already; ``notify`` after each batch
    covers what the core did by itself (pongs, close echoes, failures). After
    every ``MESSAGES_PER_TURN`` events the connection yields (``next_turn``),
    so a read full of small messages does not hold the loop.
    """
    events = core.events_received()
    while events:
        await dispatch_events(events, dispatch, notify)
        events = core.events_received()
    return core.state is State.CLOSED


async def dispatch_events(
    events: list[Event], dispatch: Dispatch, notify: Callable[[], None]
) -> None:
    """Dispatch ``events`` in order, yielding every ``MESSAGES_PER_TURN``; notify after."""
    budget = MESSAGES_PER_TURN
    for event in events:
        await dispatch(event)
        budget -= 1
        if not budget:
            budget = MESSAGES_PER_TURN
            notify()
            await next_turn()
    notify()


class Driver:
    """Runs a core ``Connection`` on a stream until both ends are done."""

    def __init__(
        self,
        core: Connection,
        stream: ByteStream,
        dispatch: Dispatch,
        *,
        logger: logging.Logger,
        name: str = "",
    ) -> None:
        self.core = core
        self.stream = stream
        self._dispatch = dispatch
        self._log = logger
        self._name = name
        self._wake = anyio.Event()
        self._progress = anyio.Event()
        self._writer_done = anyio.Event()
        self._recv_scope: anyio.CancelScope | None = None
        self._send_scope: anyio.CancelScope | None = None
        self._timer_scope: anyio.CancelScope | None = None
        self._armed = math.inf  # the deadline the timer sleeps until
        self._close_by = math.inf  # set once the core asks to close the transport
        self._interrupted = False  # the reader was woken to dispatch a Closed event
        self._closed_dispatched = False
        self._eof = False  # nothing more will be read
        self._stop_reading = False  # no half-close possible: stop once Closed is handled

    # -- called from anywhere in the event loop --------------------------

    def notify(self) -> None:
        """React to a change made to the core: write, re-arm timers, report closing."""
        core = self.core
        self._wake.set()
        if self._close_by == math.inf and core.should_close_transport():
            self._set_close_by(current_time() + core.limits.close_timeout)
        scope = self._timer_scope
        if scope is not None:
            deadline = core.next_deadline()
            if deadline is not None and deadline < self._armed:
                self._armed = deadline
                scope.deadline = deadline
        if (
            core.state is State.CLOSED
            and not self._closed_dispatched
            and self._recv_scope is not None
            and not self._interrupted
        ):
            self._interrupted = True
            self._recv_scope.cancel()

    def abort(self) -> None:
        """Give up on flushing and on the peer: close the transport now."""
        self._set_close_by(current_time())
        self._wake.set()

    async def wait_room(self, size: int, high_water: int) -> None:
        """Wait until ``size`` more bytes fit the outbox without overflowing it.

        Used by clients whose ``send`` may wait (servers never wait: a slow
        consumer is closed with 1013 instead).
        """
        core = self.core
        limit = core.limits.max_outbox_size
        while (
            core.state is State.OPEN
            and core.outbox_size
            and (core.outbox_size > high_water or core.outbox_size + size > limit)
        ):
            await self._progress.wait()

    # -- the tasks -------------------------------------------------------

    async def run(self) -> None:
        """Drive the connection until the Closed event is handled and the transport is done."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_loop)
                tg.start_soon(self._timer_loop)
                await self._read_loop()
                await self._writer_done.wait()
                tg.cancel_scope.cancel()
        finally:
            self._dispatch = dispatch_nothing
            await anyio.aclose_forcefully(self.stream)

    def _set_close_by(self, when: float) -> None:
        if when >= self._close_by:
            return
        self._close_by = when
        for scope in (self._send_scope, self._recv_scope):
            if scope is not None:
                scope.deadline = when

    async def _read_loop(self) -> None:
        core = self.core
        stream = self.stream
        unyielded = 0  # bytes read since the reader last yielded on purpose
        while True:
            if await dispatch_received(core, self._dispatch, self.notify):
                self._closed_dispatched = True
                if self._eof or self._stop_reading or not core.should_drain_before_close():
                    return  # the writer flushes what is left, then run() closes
            if unyielded >= READ_SIZE:
                unyielded = 0
                await next_turn()
                continue  # something may have happened meanwhile: dispatch it first
            data = b""
            with anyio.CancelScope(deadline=self._close_by) as scope:
                self._recv_scope = scope
                try:
                    data = await stream.receive(READ_SIZE)
                except _TRANSPORT_ERRORS:
                    data = b""
            self._recv_scope = None
            if scope.cancelled_caught and self._interrupted and not self._closed_dispatched:
                continue  # woken to dispatch the Closed event; keep reading after
            if data:
                unyielded += len(data)
                core.receive_data(data)
            else:
                # EOF, a broken transport, or the close deadline passed.
                self._eof = True
                core.receive_eof()
            self.notify()

    async def _write_loop(self) -> None:
        core = self.core
        stream = self.stream
        try:
            while True:
                data = core.data_to_send()
                if data:
                    with anyio.CancelScope(deadline=self._close_by) as scope:
                        self._send_scope = scope
                        try:
                            await stream.send(data)
                        except _TRANSPORT_ERRORS:
                            core.receive_eof()
                            self.notify()
                            return
                    self._send_scope = None
                    if scope.cancelled_caught:
                        return  # flush deadline passed: abort
                    self._progress.set()
                    self._progress = anyio.Event()
                    continue
                if core.should_close_transport():
                    await self._half_close()
                    return
                if self._close_by <= current_time():
                    return
                self._progress.set()
                self._progress = anyio.Event()
                self._wake = anyio.Event()
                await self._wake.wait()
        finally:
            self._send_scope = None
            self._writer_done.set()
            self._progress.set()

    async def _half_close(self) -> None:
        """Send FIN and let the reader wait for the peer's; else stop reading
        (also when the core says the transport closes at once)."""
        if self.core.should_drain_before_close() and self._close_by > current_time():
            try:
                await self.stream.send_eof()
                return
            except NotImplementedError:
                pass  # TLS has no half-close
            except _TRANSPORT_ERRORS:
                pass
        self._stop_reading = True
        if self._recv_scope is not None and self._closed_dispatched:
            self._recv_scope.cancel()

    async def _timer_loop(self) -> None:
        core = self.core
        while core.state is not State.CLOSED:
            deadline = core.next_deadline()
            self._armed = math.inf if deadline is None else deadline
            with anyio.CancelScope(deadline=self._armed) as scope:
                self._timer_scope = scope
                await anyio.sleep_forever()
            self._timer_scope = None
            core.handle_timer()
            self.notify()
