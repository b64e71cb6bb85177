"""Fairness: one connection's burst never holds back the others.

DESIGN.md: a connection does a bounded amount of work per turn, then the
loop runs everyone else's reads and writes; an outbox overflows only when its
peer really is not reading. These tests count turns, never seconds: another
task increments a counter each time it gets the loop, and every piece of a
driver's work records the counter's value when it ran.

Both drivers: ``SocketDriver`` (plain TCP on both backends) over a socket
pair filled before the driver starts, so that every read it makes is full;
``Driver`` (TLS, clients) over a stream that hands out buffered data without
ever yielding, as a TLS stream does with records it already decrypted.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import sniffio
import trustme
from anyio.abc import ByteStream
from helpers import upgrade_request

from benchmarks.rawclient import RawClient as BlockingClient
from benchmarks.rawclient import frame as masked_frame
from wshub.adapters import HubServer
from wshub.adapters._driver import READ_SIZE, Driver
from wshub.adapters._scheduler import Scheduler
from wshub.adapters._socket_driver import SocketDriver
from wshub.adapters._turns import MESSAGES_PER_TURN
from wshub.core import Event, Limits, ServerConnection, TextMessage
from wshub.core.auth import AccessPolicy, StaticTokens
from wshub.core.topics import TopicPolicy

pytestmark = pytest.mark.anyio

LOG = logging.getLogger("wshub.test")
QUIET = Limits(ping_interval=None, max_outbox_size=1 << 20)


def open_core(limits: Limits = QUIET) -> ServerConnection:
    """A server core past its handshake, on the event loop's clock."""
    core = ServerConnection(limits=limits, clock=anyio.current_time)
    core.receive_data(upgrade_request())
    core.events_received()
    core.accept("tester")
    core.data_to_send()
    core.events_received()
    return core


class Turns:
    """Counts the turns another task gets: ``value`` grows by one per turn.

    ``slack``: asyncio runs ready tasks first in, first out, so between two
    turns of the driver the other task runs once. Trio runs every runnable
    task once per batch, in random order: two turns of the driver may touch
    across a batch boundary (never three).
    """

    def __init__(self) -> None:
        self.value = 0
        self.slack = 1 if sniffio.current_async_library() == "asyncio" else 2

    def check(self, seen: list[int], per_turn: int) -> None:
        """At most ``per_turn`` items of ``seen`` (turn values) in one turn."""
        assert max(Counter(seen).values()) <= self.slack * per_turn

    async def run(self) -> None:
        while True:
            await anyio.sleep(0)
            self.value += 1


class CountingSocket(socket.socket):
    """A socket that records the turn at which each read returned data."""

    turns: Turns
    reads: list[int]

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        count = super().recv_into(buffer, nbytes, flags)
        if count:
            self.reads.append(self.turns.value)
        return count


def socket_pair(turns: Turns) -> tuple[CountingSocket, socket.socket]:
    ours, theirs = socket.socketpair()
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    theirs.setblocking(False)
    driven = CountingSocket(fileno=ours.detach())
    driven.setblocking(False)
    driven.turns, driven.reads = turns, []
    return driven, theirs


def fill(theirs: socket.socket, message: bytes) -> int:
    """Write as many copies of the (masked) ``message`` frame as the pair
    takes: every read of the other end is then full. How many were written."""
    data = masked_frame(0x1, message)
    count = 0
    try:
        while True:
            theirs.send(data)  # a Unix stream socket takes whole writes or none
            count += 1
    except BlockingIOError:
        pass
    assert count * len(data) >= 4 * READ_SIZE, "the pair must hold several full reads"
    return count


def filled_pair(message: bytes, turns: Turns) -> tuple[CountingSocket, socket.socket, int]:
    """A socket pair whose driver end already holds as much as the pair takes."""
    driven, theirs = socket_pair(turns)
    return driven, theirs, fill(theirs, message)


@pytest.mark.parametrize("inline", [False, True], ids=["reader task", "read callback"])
async def test_a_socket_that_is_always_full_still_lets_others_run(inline: bool) -> None:
    """Today's bug: the reader read again at once after every full read, so a
    peer keeping its socket full kept the loop until it paused.

    "read callback": the driver is already waiting when the data comes, and
    handles messages without waiting (``dispatch_nowait``): on asyncio the
    loop's read callback does the work (on trio the reader task does)."""
    turns = Turns()
    sock, theirs = socket_pair(turns)
    count = 0 if inline else fill(theirs, b"x" * 1000)
    core = open_core()
    at_message: list[int] = []
    done = anyio.Event()

    def record(event: Event) -> None:
        if isinstance(event, TextMessage):
            at_message.append(turns.value)
            if len(at_message) == count:
                done.set()

    async def dispatch(event: Event) -> None:
        record(event)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            scheduler = Scheduler(tg.start_soon)
            tg.start_soon(scheduler.run)
            tg.start_soon(turns.run)
            driver = SocketDriver(
                core,
                sock,
                dispatch,
                scheduler=scheduler,
                logger=LOG,
                dispatch_nowait=record if inline else None,
            )
            tg.start_soon(driver.run)
            if inline:
                while not driver._waiting:
                    await anyio.sleep(0)
                count = fill(theirs, b"x" * 1000)
            await done.wait()
            tg.cancel_scope.cancel()
    theirs.close()
    # One read per turn, and never more than MESSAGES_PER_TURN messages
    # handled without the other task running in between.
    turns.check(sock.reads, 1)
    turns.check(at_message, MESSAGES_PER_TURN)


async def test_replies_leave_between_reads_and_the_outbox_stays_small() -> None:
    """Every message answered while the peer reads everything: the answers are
    written as the burst goes, so the outbox never nears its cap."""
    turns = Turns()
    sock, theirs, count = filled_pair(b"y" * 1000, turns)
    core = open_core()
    largest = 0
    answered = 0
    done = anyio.Event()
    driver: SocketDriver

    async def dispatch(event: Event) -> None:
        nonlocal largest, answered
        if isinstance(event, TextMessage):
            core.send_text(event.data)
            driver.notify()
            largest = max(largest, core.outbox_size)
            answered += 1

    async def drain() -> None:
        expected = count * (len(b"y" * 1000) + 4)  # server frames: 4-byte header
        received = 0
        while received < expected:
            await anyio.wait_readable(theirs)
            try:
                received += len(theirs.recv(1 << 20))
            except BlockingIOError:
                continue
        done.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            scheduler = Scheduler(tg.start_soon)
            tg.start_soon(scheduler.run)
            tg.start_soon(turns.run)
            driver = SocketDriver(core, sock, dispatch, scheduler=scheduler, logger=LOG)
            tg.start_soon(driver.run)
            tg.start_soon(drain)
            await done.wait()
            tg.cancel_scope.cancel()
    theirs.close()
    assert answered == count
    assert core.state.name == "OPEN"  # never failed 1013
    assert largest < 128 * 1024  # far below the 1 MiB cap the whole burst (> 4 MiB) would cross


class BufferedStream(ByteStream):
    """A stream that returns ``READ_SIZE`` bytes of ready data per receive and
    never yields while it has some (a TLS stream with decrypted records)."""

    def __init__(self, data: bytes, turns: Turns) -> None:
        self.data = memoryview(data)
        self.turns = turns
        self.reads: list[int] = []
        self.sent = bytearray()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self.data:
            await anyio.sleep_forever()
        chunk, self.data = bytes(self.data[:max_bytes]), self.data[max_bytes:]
        self.reads.append(self.turns.value)
        return chunk

    async def send(self, item: bytes) -> None:
        self.sent += item

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def test_the_stream_driver_yields_between_reads_of_buffered_data() -> None:
    turns = Turns()
    data = masked_frame(0x1, b"z" * 3000) * 200
    stream = BufferedStream(data, turns)
    core = open_core()
    at_message: list[int] = []
    done = anyio.Event()

    async def dispatch(event: Event) -> None:
        if isinstance(event, TextMessage):
            at_message.append(turns.value)
            if len(at_message) == 200:
                done.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(turns.run)
            tg.start_soon(Driver(core, stream, dispatch, logger=LOG).run)
            await done.wait()
            tg.cancel_scope.cancel()
    turns.check(stream.reads, 1)
    turns.check(at_message, MESSAGES_PER_TURN)


async def test_many_small_messages_in_one_read_are_handled_in_bounded_turns() -> None:
    turns = Turns()
    data = masked_frame(0x1, b"s") * (4 * MESSAGES_PER_TURN)  # well inside one read
    stream = BufferedStream(data, turns)
    core = open_core()
    at_message: list[int] = []
    done = anyio.Event()

    async def dispatch(event: Event) -> None:
        if isinstance(event, TextMessage):
            at_message.append(turns.value)
            if len(at_message) == 4 * MESSAGES_PER_TURN:
                done.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(turns.run)
            tg.start_soon(Driver(core, stream, dispatch, logger=LOG).run)
            await done.wait()
            tg.cancel_scope.cancel()
    assert len(stream.reads) == 1
    turns.check(at_message, MESSAGES_PER_TURN)


# -- a whole hub: one client's burst, subscribers whose buffers hold it ------------

TOKEN = "fairness-test-token"
BURST = 48  # publishes of SIZE characters, written by the publisher in one go
SIZE = 32_000


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


def burst_frames() -> bytes:
    return b"".join(
        masked_frame(
            0x1,
            json.dumps(
                {
                    "message_type": "publish",
                    "topic": "burst",
                    "payload": {"i": i, "pad": "p" * SIZE},
                }
            ).encode(),
        )
        for i in range(BURST)
    )


def subscriber(port: int, wrap: Callable[[socket.socket], socket.socket] | None) -> Any:
    client = BlockingClient("127.0.0.1", port, TOKEN, rcvbuf=4 << 20)
    if wrap is not None:
        client.sock = wrap(client.sock)
    client.upgrade()
    client.send_json({"message_type": "subscribe", "topic": "burst", "id": 1})
    while client.recv_json().get("id") != 1:
        pass
    return client


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_a_burst_the_subscribers_buffers_hold_closes_nobody(
    tls: bool, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """Issue 10, scenario 1: 1.5 MB of publishes in one write, two subscribers
    that do not read meanwhile but whose receive buffers (8 MiB) hold it all.
    With 512 KiB outboxes, the burst used to close them 1013 before a byte
    reached their sockets."""
    server_ctx, client_ctx = tls_contexts
    server = HubServer(
        AccessPolicy(tokens=StaticTokens([TOKEN])),
        ssl=server_ctx if tls else None,
        limits=Limits(max_outbox_size=512 * 1024),
        default_topic=TopicPolicy(publish="all"),
    )

    def wrap(sock: socket.socket) -> socket.socket:
        return client_ctx.wrap_socket(sock, server_hostname="127.0.0.1")

    def scenario(port: int) -> list[tuple[int, str]]:
        subs = [subscriber(port, wrap if tls else None) for _ in range(2)]
        publisher = BlockingClient("127.0.0.1", port, TOKEN)
        if tls:
            publisher.sock = wrap(publisher.sock)
        publisher.upgrade()
        publisher.send(burst_frames())  # one write
        publisher.send_json({"message_type": "publish", "topic": "burst", "id": 2})
        while publisher.recv_json().get("id") != 2:  # the server handled the whole burst
            pass
        outcome = []
        for sub in subs:  # only now do the subscribers read
            got, ended = 0, "open"
            try:
                while got < BURST:
                    if sub.recv_json().get("message_type") == "message":
                        got += 1
            except (ConnectionError, EOFError) as exc:
                ended = str(exc)
            outcome.append((got, ended))
            sub.close()
        publisher.close()
        return outcome

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            outcome = await anyio.to_thread.run_sync(scenario, server.port)
            server.shutdown()
    assert outcome == [(BURST, "open"), (BURST, "open")]
    assert server.stats().slow_consumer_closes == 0
