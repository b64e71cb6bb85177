"""The server's socket fast path: direct writes, the writer fallback, the shared timers.

Plain TCP connections are driven by ``SocketDriver``: bytes go straight to the
socket when it takes them, and a writer task starts only when it does not.
These tests make the peer stop reading so that the fallback is really used
(checked on the driver), then resume, and check order, completeness and
closing. Both anyio backends.
"""

from __future__ import annotations

import gc
import struct
from typing import Any

import anyio
import pytest
from conftest import RawClient

from wshub.adapters import EchoHandler, HubServer, ServerSession, WebSocketServer
from wshub.adapters._scheduler import Scheduler
from wshub.adapters._socket_driver import SocketDriver
from wshub.core import Closed, Limits, ServerConnection, Side
from wshub.core.auth import AccessPolicy, StaticTokens

pytestmark = pytest.mark.anyio

CHUNK = 64 * 1024
COUNT = 96  # 6 MiB: far more than loopback socket buffers hold


def payload(i: int, size: int = CHUNK) -> bytes:
    return struct.pack("!I", i) * (size // 4)


class Burst(EchoHandler):
    """On "burst": queue COUNT numbered binary messages, yielding between them so
    that the socket fills; on "burst+close": the same, then close with 1000."""

    def __init__(self) -> None:
        super().__init__(AccessPolicy(require_auth=False))
        self.sessions: list[ServerSession] = []
        self.blocked = anyio.Event()  # the writer fallback is in use
        self.closed: list[Closed] = []

    async def on_open(self, session: ServerSession) -> None:
        self.sessions.append(session)

    async def on_close(self, session: ServerSession, event: Closed) -> None:
        self.closed.append(event)

    async def on_message(self, session: ServerSession, message: str | bytes) -> None:
        if message not in ("burst", "burst+close"):
            await super().on_message(session, message)
            return
        driver = session._driver
        assert isinstance(driver, SocketDriver)
        for i in range(COUNT):
            assert session.send_binary(payload(i))
            await anyio.sleep(0)
            if driver._writing:
                self.blocked.set()
        if message == "burst+close":
            session.close(1000, "done")


async def test_writer_fallback_delivers_every_message_in_order(
    running_server: Any, raw_client: Any
) -> None:
    handler = Burst()
    limits = Limits(max_outbox_size=16 << 20)
    with anyio.fail_after(30):
        async with running_server(handler, limits=limits) as server, raw_client(server.port) as raw:
            await raw.handshake()
            await raw.send_frame(0x1, b"burst")
            await handler.blocked.wait()  # we have not read a byte: the socket is full
            for i in range(COUNT):
                fin, _rsv1, opcode, data = await raw.recv_frame()
                assert (fin, opcode) == (True, 0x2)
                assert data == payload(i)
            # Drained: the direct path serves the next message again.
            await raw.send_frame(0x1, b"after")
            assert await raw.recv_frame() == (True, False, 0x1, b"after")
            assert not handler.sessions[0]._driver._writing  # type: ignore[union-attr]


async def test_close_after_a_partial_write_comes_after_every_message(
    running_server: Any, raw_client: Any
) -> None:
    handler = Burst()
    limits = Limits(max_outbox_size=16 << 20)
    with anyio.fail_after(30):
        async with running_server(handler, limits=limits) as server, raw_client(server.port) as raw:
            await raw.handshake()
            await raw.send_frame(0x1, b"burst+close")
            await handler.blocked.wait()
            code, reason, before = await raw.recv_close()
            assert (code, reason) == (1000, "done")
            assert [frame[3] for frame in before] == [payload(i) for i in range(COUNT)]
            await raw.send_frame(0x8, struct.pack("!H", 1000))
            assert await raw.read_to_eof() == b""
            event = await handler.sessions[0].wait_closed()
            assert (event.code, event.clean, event.initiator) == (1000, True, Side.LOCAL)


async def test_peer_vanishing_while_the_writer_waits_ends_the_session(
    running_server: Any, raw_client: Any
) -> None:
    handler = Burst()
    limits = Limits(max_outbox_size=16 << 20)
    with anyio.fail_after(30):
        async with running_server(handler, limits=limits) as server:
            async with raw_client(server.port) as raw:
                await raw.handshake()
                await raw.send_frame(0x1, b"burst")
                await handler.blocked.wait()
            # The client socket is closed with unread data: the server sees a reset or EOF.
            event = await handler.sessions[0].wait_closed()
            assert event.code == 1006


async def test_many_small_messages_keep_their_order(running_server: Any, raw_client: Any) -> None:
    count = 5000

    class Many(EchoHandler):
        async def on_message(self, session: ServerSession, message: str | bytes) -> None:
            for i in range(count):
                session.send_text(f"{i}")
                if i % 997 == 0:
                    await anyio.sleep(0)  # let some go out while more are queued

    with anyio.fail_after(30):
        async with (
            running_server(Many(AccessPolicy(require_auth=False))) as server,
            raw_client(server.port) as raw,
        ):
            await raw.handshake()
            await raw.send_frame(0x1, b"go")
            for i in range(count):
                assert await raw.recv_frame() == (True, False, 0x1, str(i).encode())


class _Probe:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.flushes = 0

    def on_timer(self) -> None:
        self.log.append(self.name)

    def flush(self) -> None:
        self.flushes += 1
        if self.name == "broken":
            raise RuntimeError("a bug in a flush")

    def abort(self) -> None:
        self.log.append(f"aborted {self.name}")


async def test_scheduler_fires_due_timers_in_deadline_order_and_skips_cancelled() -> None:
    log: list[str] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            scheduler = Scheduler(tg.start_soon)
            tg.start_soon(scheduler.run)
            now = anyio.current_time()
            scheduler.schedule(_Probe("late", log), now + 0.06)
            scheduler.schedule(_Probe("early", log), now + 0.02)
            gone = scheduler.schedule(_Probe("cancelled", log), now + 0.01)
            scheduler.cancel(gone)
            scheduler.cancel(gone)  # twice is harmless
            while len(log) < 2:
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert log == ["early", "late"]


async def test_scheduler_compacts_a_heap_of_cancelled_timers() -> None:
    log: list[str] = []
    async with anyio.create_task_group() as tg:
        scheduler = Scheduler(tg.start_soon)
        far = anyio.current_time() + 3600
        entries = [scheduler.schedule(_Probe(str(i), log), far + i) for i in range(3000)]
        for entry in entries[:2500]:
            scheduler.cancel(entry)
        assert len(scheduler._heap) < 3000  # rebuilt without the dead entries
        assert sum(1 for e in scheduler._heap if e[2] is not None) == 500
        tg.cancel_scope.cancel()


async def test_scheduler_flushes_each_marked_driver_once_the_task_yields() -> None:
    async with anyio.create_task_group() as tg:
        scheduler = Scheduler(tg.start_soon)
        a, b = _Probe("a", []), _Probe("b", [])
        scheduler.flush_soon(a)
        scheduler.flush_soon(b)
        assert (a.flushes, b.flushes) == (0, 0)  # deferred: nothing while we run
        await anyio.sleep(0.01)
        assert (a.flushes, b.flushes) == (1, 1)
        tg.cancel_scope.cancel()


async def test_shutdown_cancels_a_connection_stuck_in_its_handler() -> None:
    """Past ``shutdown_timeout`` a connection whose handler never returns is cancelled
    (on asyncio it is a plain task, not in a task group: serve must still wait for it)."""
    stuck = anyio.Event()
    finished: list[str] = []

    class Stuck(EchoHandler):
        async def on_message(self, session: ServerSession, message: str | bytes) -> None:
            stuck.set()
            try:
                await anyio.sleep_forever()
            finally:
                finished.append(session.id)

    server = WebSocketServer(Stuck(AccessPolicy(require_auth=False)), shutdown_timeout=0.2)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            async with RawClient.open(server.port) as raw:
                await raw.handshake()
                await raw.send_frame(0x1, b"hang")
                await stuck.wait()
                server.shutdown()
                code, _reason, _before = await raw.recv_close()
                assert code == 1001  # asked to close first
        # serve returned: the stuck task was cancelled and waited for
    assert len(finished) == 1
    assert not server._slots


async def test_a_failing_flush_aborts_its_driver_and_spares_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []
    async with anyio.create_task_group() as tg:
        scheduler = Scheduler(tg.start_soon)
        broken, fine = _Probe("broken", log), _Probe("fine", log)
        scheduler.flush_soon(broken)
        scheduler.flush_soon(fine)
        await anyio.sleep(0.01)
        assert (broken.flushes, fine.flushes) == (1, 1)
        assert log == ["aborted broken"]
        tg.cancel_scope.cancel()
    assert "flushing" in caplog.text


async def test_finished_connections_leave_no_reference_cycles() -> None:
    """A cycle per connection (session -> driver -> session) would keep every
    finished connection's objects alive until a garbage collection, which then
    has to walk them all: handshakes/s fell by several percent with it."""
    server = HubServer(AccessPolicy(tokens=StaticTokens(["t0k"])))
    ours = (ServerSession, SocketDriver, ServerConnection)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(5):
                async with RawClient.open(server.port) as raw:
                    await raw.handshake(headers=(("Authorization", "Bearer t0k"),))
                    _, _, _, welcome = await raw.recv_frame()
                    assert b'"welcome"' in welcome
                    await raw.send_frame(0x8, struct.pack("!H", 1000))
                    assert (await raw.recv_close())[0] == 1000
                    assert await raw.read_to_eof() == b""
            with anyio.fail_after(5):
                while server.server._slots:  # the server is done with every one
                    await anyio.sleep(0.01)
            gc.collect()
            leaked = [o for o in gc.garbage if isinstance(o, ours)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        server.shutdown()
    assert leaked == []


async def test_after_a_clean_close_the_server_closes_without_waiting_for_the_client(
    running_server: Any,
) -> None:
    """RFC 6455 §7.1.1: the server closes the TCP connection immediately; it
    used to wait (up to ``close_timeout``) for the client's FIN."""
    handler = EchoHandler(AccessPolicy(require_auth=False))
    async with running_server(handler) as server, RawClient.open(server.port) as raw:
        await raw.handshake()
        await raw.send_frame(0x8, struct.pack("!H", 1000))
        assert (await raw.recv_close())[0] == 1000
        assert await raw.read_to_eof() == b""
        # Our side is still open: the server did not wait for it.
        with anyio.fail_after(2):
            while server._slots:
                await anyio.sleep(0.01)
