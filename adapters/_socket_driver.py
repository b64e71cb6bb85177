"""Drive one sans-IO connection over a plain non-blocking TCP socket, cheaply.

The fast path of the server (TLS connections use ``Driver`` over a stream).
One task per connection, the reader: it waits until the socket is readable,
feeds the core and dispatches its events in order, one read per turn (after
a read that filled ``READ_SIZE`` it yields before reading again, so a peer
that keeps its socket full cannot hold the loop). Writing needs no task:
``notify()`` asks the shared ``Scheduler`` for a flush once the current task
yields, and the flush hands everything queued to ``socket.send`` at once (one
system call for all the messages of one read, or of a burst of publishes);
an outbox past 64 KiB is written at once, before the turn ends, so it only
overflows when the peer's socket truly cannot take more.
Only when the socket cannot take all of it does a writer task start; it waits
until the socket is writable, sends the rest and everything queued meanwhile,
in order, then ends. Timers are entries in the scheduler's heap.

Once the core asks to close the transport, everything left (flushing the
outbox, waiting for the peer's FIN) must finish within ``close_timeout``;
after that the socket is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from typing import Any

import anyio

from ..core import Connection, State
from ._clock import current_time
from ._driver import (
    READ_SIZE,
    Dispatch,
    DispatchNowait,
    dispatch_events,
    dispatch_nothing,
    dispatch_received,
)
from ._scheduler import Scheduler
from ._turns import Handoff, dispatch_within_turn, next_turn

__all__ = ["SocketDriver"]

_WAIT_ERRORS = (anyio.ClosedResourceError, anyio.BusyResourceError, OSError)
_FLUSH_AT = 64 * 1024  # a write this large gains nothing from waiting to coalesce more


class SocketDriver:
    """Runs a core ``Connection`` on a connected non-blocking socket until both ends are done."""

    __slots__ = (
        "_armed",
        "_close_by",
        "_closed_dispatched",
        "_dirty",
        "_dispatch",
        "_dispatch_nowait",
        "_eof",
        "_finished",
        "_flush_at",
        "_half_closed",
        "_inline",
        "_interrupted",
        "_log",
        "_loop",
        "_name",
        "_pending",
        "_progress",
        "_recv_scope",
        "_registered",
        "_scheduler",
        "_send_scope",
        "_stop_reading",
        "_timer",
        "_waiter",
        "_waiting",
        "_writer_done",
        "_writing",
        "core",
        "sock",
    )

    def __init__(
        self,
        core: Connection,
        sock: socket.socket,
        dispatch: Dispatch,
        *,
        scheduler: Scheduler,
        logger: logging.Logger,
        name: str = "",
        dispatch_nowait: DispatchNowait | None = None,
    ) -> None:
        self.core = core
        self.sock = sock
        self._dispatch = dispatch
        self._dispatch_nowait = dispatch_nowait
        self._scheduler = scheduler
        self._log = logger
        self._name = name
        self._timer: list[Any] | None = None
        self._armed = math.inf  # the deadline of ``_timer``
        self._close_by = math.inf  # set once the core asks to close the transport
        self._recv_scope: anyio.CancelScope | None = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # trio
            self._loop = None
        self._waiter: asyncio.Future[bytes | Handoff | None] | None = None
        self._waiting = False  # the reader waits for the socket
        self._registered = False  # asyncio: the socket is in the loop's selector
        self._send_scope: anyio.CancelScope | None = None
        self._pending = b""  # bytes the socket did not take yet (the writer owns them)
        self._writing = False  # a writer task is running
        self._writer_done: anyio.Event | None = None
        self._progress: anyio.Event | None = None
        self._dirty = False  # a flush is scheduled
        self._half_closed = False
        self._interrupted = False
        self._closed_dispatched = False
        self._eof = False
        self._stop_reading = False
        self._finished = False  # the socket is closed
        self._inline = False  # messages are being handled in the read callback
        # Outbox bytes past which ``notify`` writes at once (see ``notify``).
        self._flush_at = max(1, min(_FLUSH_AT, core.limits.max_outbox_size // 2))

    # -- called from anywhere in the event loop --------------------------

    def notify(self) -> None:
        """React to a change made to the core: write soon, re-arm timers, report closing."""
        core = self.core
        if core.outbox_size >= self._flush_at and not self._writing and not self._finished:
            # Write now rather than when the loop gets to the flush: a burst
            # handled in one turn would otherwise fill the outbox past its cap
            # while the peer's socket had room for all of it.
            self.flush()
        if self._inline:
            return  # the read callback notifies once it is done
        closing = core.should_close_transport()
        if (
            not self._dirty
            and not self._writing
            and not self._inline  # the read callback writes when it is done
            and (core.outbox_size or (closing and not self._half_closed))
        ):
            self._dirty = True
            self._scheduler.flush_soon(self)
        if closing and self._close_by == math.inf:
            self._set_close_by(current_time() + core.limits.close_timeout)
        deadline = core.next_deadline()
        if deadline is not None and deadline < self._armed:
            self._arm(deadline)
        if (
            self._waiting  # first: false whenever the reader itself is running
            and core.state is State.CLOSED
            and not self._closed_dispatched
            and not self._interrupted
        ):
            self._interrupted = True
            self._wake_reader()

    def abort(self) -> None:
        """Give up on flushing and on the peer: close the transport now."""
        self._set_close_by(current_time())
        self._pending = b""

    async def wait_room(self, size: int, high_water: int) -> None:
        """Wait until ``size`` more bytes fit the outbox (see ``Driver.wait_room``)."""
        core = self.core
        limit = core.limits.max_outbox_size
        while (
            core.state is State.OPEN
            and core.outbox_size
            and (core.outbox_size > high_water or core.outbox_size + size > limit)
        ):
            if self._progress is None:
                self._progress = anyio.Event()
            await self._progress.wait()

    # -- scheduler callbacks ---------------------------------------------

    def on_timer(self) -> None:
        self._timer = None
        self._armed = math.inf
        self.core.handle_timer()
        self.notify()
        if self._close_by != math.inf:
            if self._close_by <= current_time():
                if self._waiting:
                    self._wake_reader()
            elif self._close_by < self._armed:
                self._arm(self._close_by)

    def flush(self) -> None:
        """Write what the core queued; start the writer if the socket is full."""
        self._dirty = False
        if self._writing or self._finished:
            return
        core = self.core
        data = core.data_to_send()
        if data:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._broken()
                return
            if sent < len(data):
                self._pending = data[sent:]
                self._writing = True
                self._scheduler.spawn(self._write_rest)
                return
            self._made_progress()
        if core.should_close_transport() and not self._half_closed:
            self._half_close()

    # -- internals -------------------------------------------------------

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._scheduler.cancel(self._timer)
        self._armed = deadline
        self._timer = self._scheduler.schedule(self, deadline)

    def _set_close_by(self, when: float) -> None:
        if when >= self._close_by:
            return
        self._close_by = when
        if when < self._armed:
            self._arm(when)  # on_timer then wakes the reader, which gives up on the peer
        if self._send_scope is not None:
            self._send_scope.deadline = when
        if self._recv_scope is not None:
            self._recv_scope.deadline = when
        elif self._waiting and when <= current_time():
            self._wake_reader()

    def _made_progress(self) -> None:
        if self._progress is not None:
            self._progress.set()
            self._progress = None

    def _broken(self) -> None:
        """The socket failed (reset, broken pipe): the peer is gone."""
        self._pending = b""
        self.core.receive_eof()
        self._made_progress()
        self.notify()

    def _half_close(self) -> None:
        """Send FIN and let the reader wait for the peer's (or stop it, when the
        core says the transport closes at once: ``run`` then closes the socket)."""
        self._half_closed = True
        if self.core.should_drain_before_close() and self._close_by > current_time():
            try:
                self.sock.shutdown(socket.SHUT_WR)
                return
            except OSError:
                pass
        self._stop_reading = True
        if self._waiting and self._closed_dispatched:
            self._wake_reader()

    async def _write_rest(self) -> None:
        """The socket was full: wait until it takes the rest, and what comes meanwhile."""
        core = self.core
        sock = self.sock
        try:
            while self._pending:
                with anyio.CancelScope(deadline=self._close_by) as scope:
                    self._send_scope = scope
                    try:
                        await anyio.wait_writable(sock)
                    except _WAIT_ERRORS:
                        self._pending = b""
                self._send_scope = None
                if scope.cancelled_caught:
                    self._pending = b""  # flush deadline passed: give up
                    return
                try:
                    sent = sock.send(self._pending)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    self._broken()
                    return
                self._pending = self._pending[sent:]
                if not self._pending:
                    self._made_progress()
                    self._pending = core.data_to_send()
        finally:
            self._send_scope = None
            self._writing = False
            if self._writer_done is not None:
                self._writer_done.set()
        if core.should_close_transport() and not self._half_closed:
            self._half_close()

    # -- the reader ------------------------------------------------------

    async def run(self) -> None:
        """Drive the connection until the Closed event is handled and the transport is done."""
        try:
            self.notify()  # arm the first deadline (the handshake's)
            await self._read_loop()
            if self._dirty:
                self.flush()  # now: the socket is about to close
            if self._writing:
                self._writer_done = anyio.Event()
                await self._writer_done.wait()
        finally:
            if self._writing:  # cancelled: stop the writer before closing its socket
                with anyio.CancelScope(shield=True):
                    if self._writer_done is None:
                        self._writer_done = anyio.Event()
                    if self._send_scope is not None:
                        self._send_scope.cancel()
                    await self._writer_done.wait()
            if self._timer is not None:
                self._scheduler.cancel(self._timer)
                self._timer = None
            self._armed = -math.inf  # never re-armed
            self._finished = True
            self._dispatch = dispatch_nothing
            self._dispatch_nowait = None
            self._unregister()
            self.sock.close()

    def _wake_reader(self) -> None:
        """End the reader's wait now (it then re-checks the state and the deadline)."""
        if self._recv_scope is not None:
            self._recv_scope.cancel()
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _receive(self) -> bytes | None:
        """Trio: the next bytes (b"" at EOF or on error), or None if woken or past the deadline."""
        self._waiting = True
        try:
            with anyio.CancelScope(deadline=self._close_by) as scope:
                self._recv_scope = scope
                with contextlib.suppress(*_WAIT_ERRORS):
                    await anyio.wait_readable(self.sock)
            self._recv_scope = None
            if scope.cancelled_caught:
                return None
            try:
                return self._recv()
            except (BlockingIOError, InterruptedError):
                return None  # nothing after all: the caller waits again
            except OSError:
                return b""
        finally:
            self._recv_scope = None
            self._waiting = False

    def _recv(self) -> bytes:
        """Read up to ``READ_SIZE`` bytes into the loop's shared buffer; a copy of
        exactly what came.

        ``socket.recv(65536)`` allocates 64 KiB for every read and shrinks it
        to what arrived: under churn those blocks, shrunk and kept alive by
        partial frames while other connections allocate around them,
        fragmented the heap (RSS grew with every 1,000 connections though
        nothing leaked).
        """
        view = self._scheduler.read_buffer
        return view[: self.sock.recv_into(view)].tobytes()

    def _on_readable(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Nobody is waiting (a handler is busy): stop watching, as a
            # transport pauses reading, until the reader waits again.
            self._unregister()
            return
        try:
            data = self._recv()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        core = self.core
        if not data or self._dispatch_nowait is None or core.state is not State.OPEN:
            waiter.set_result(data)
            return
        # The common case, handled here without waking the reader task: the
        # read's messages go to the handler at once, its answers are written
        # before this callback returns. Anything that must wait (a handler's
        # awaitable, a close, more than a turn's worth of messages) is handed
        # to the reader with the events that follow it.
        self._waiting = False  # nothing may wake the reader meanwhile: it gets the handoff
        self._inline = True
        try:
            core.receive_data(data)
            handoff = dispatch_within_turn(core, core.events_received(), self._dispatch_nowait)
        except Exception:  # a bug: lose this connection, not the loop's callback
            self._log.exception("connection %s: handling a read failed; aborting", self._name)
            handoff = Handoff(None, [])
            self.abort()
        finally:
            self._inline = False
            self._waiting = True
        if handoff is not None:
            waiter.set_result(handoff)
        if core.outbox_size and not self._writing:
            self.flush()
        self.notify()

    async def _take_over(self, handoff: Handoff) -> None:
        """The reader finishes what the read callback could not."""
        if handoff.pending is not None:
            await handoff.pending
        await dispatch_events(handoff.events, self._dispatch, self.notify)

    def _unregister(self) -> None:
        if self._registered and self._loop is not None:
            self._registered = False
            self._loop.remove_reader(self.sock.fileno())

    async def _read_loop(self) -> None:
        core = self.core
        sock = self.sock
        ready = True  # data may be waiting: try reading before waiting
        full = False  # the last read filled READ_SIZE: yield before the next
        while True:
            if await dispatch_received(core, self._dispatch, self.notify):
                self._closed_dispatched = True
                if self._eof or self._stop_reading or not core.should_drain_before_close():
                    return  # run() writes what is left, then closes
            if full:
                # One read per turn: a peer that keeps the socket full must not
                # keep the loop from other connections' reads, writes and
                # timers (our flush among them).
                full = False
                await next_turn()
                continue  # something may have happened meanwhile: dispatch it first
            data: bytes | None
            if self._close_by != math.inf and self._close_by <= current_time():
                data = b""  # the close deadline passed: give up on the peer
            elif ready:
                try:
                    data = self._recv()
                except (BlockingIOError, InterruptedError):
                    ready = False
                    continue
                except OSError:
                    data = b""
            elif self._loop is not None:
                # asyncio: the socket stays registered between waits and the loop's
                # callback reads it, as asyncio's own transports do (no selector
                # change per message); the close deadline is a scheduler timer.
                waiter: asyncio.Future[bytes | Handoff | None] = self._loop.create_future()
                self._waiter = waiter
                if not self._registered:
                    self._loop.add_reader(sock.fileno(), self._on_readable)
                    self._registered = True
                self._waiting = True
                try:
                    outcome = await waiter
                finally:
                    self._waiting = False
                    self._waiter = None
                if outcome is None:
                    continue  # woken: a Closed event to dispatch, or the deadline set
                if isinstance(outcome, Handoff):
                    await self._take_over(outcome)
                    continue
                data = outcome
            else:
                data = await self._receive()
                if data is None:
                    continue  # woken (Closed to dispatch, deadline set) or nothing to read
            ready = full = len(data) == READ_SIZE
            if data:
                core.receive_data(data)
            else:
                # EOF, a broken socket, or the close deadline passed.
                self._eof = True
                self._unregister()
                core.receive_eof()
            if core.outbox_size:
                # What the core answered by itself (pongs, close echoes) leaves
                # before the handlers run. Anything else that changed comes
                # with events, and dispatch_received notifies after them.
                self.notify()
