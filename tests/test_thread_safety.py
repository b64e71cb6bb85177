"""Thread safety that cannot be misused: a running hub's operations belong to
its event loop's thread, other threads get ``WrongThreadError`` (never a
silent data race), and ``threadsafe()`` / ``ctx.threadsafe_hub`` carry calls
into the loop from anywhere. Also: operations on a connection that just left
answer falsy, and a server-side subscribe reports presence to ``on_event``.

On the native server (asyncio, trio) and behind one ASGI server (Hypercorn on
trio), since ``HubApp`` shares the runtime.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest
from hub_fronts import FRONTS, Front, Served, front_params, serve
from test_adapter_hub import ALICE, BOB, client, policy

from wshub.adapters import (
    CommandContext,
    HubServer,
    HubStoppedError,
    LoopBoundHub,
    WrongThreadError,
)
from wshub.core.hub_events import HubEvent, PresenceChanged

pytestmark = pytest.mark.anyio

SOME_FRONTS = tuple(f for f in FRONTS if f.native or f.id == "hypercorn-trio")


@pytest.fixture(params=front_params(SOME_FRONTS))
def front(request: pytest.FixtureRequest) -> Front:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(front: Front) -> str:
    return front.backend


@pytest.fixture
def running(front: Front) -> Callable[..., AbstractAsyncContextManager[Served]]:
    def start(**kwargs: Any) -> AbstractAsyncContextManager[Served]:
        return serve(front, policy(), **kwargs)

    return start


def in_thread(func: Callable[[], Any]) -> Any:
    """Run ``func`` in a plain thread (not one of anyio's); its result or exception."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(func())
        except BaseException as exc:  # handed back to the caller
            outcome.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return outcome[0]


#: Every loop-only operation, called with harmless arguments.
OPERATIONS: dict[str, Callable[[Any], Any]] = {
    "broadcast": lambda hub: hub.broadcast("note", 1),
    "publish": lambda hub: hub.publish("room", 1),
    "send_to": lambda hub: hub.send_to("nobody", "note", 1),
    "send_to_principal": lambda hub: hub.send_to_principal("nobody", "note", 1),
    "disconnect": lambda hub: hub.disconnect("nobody"),
    "subscribe": lambda hub: hub.subscribe("nobody", "room"),
    "unsubscribe": lambda hub: hub.unsubscribe("nobody", "room"),
    "configure_topic": lambda hub: hub.configure_topic("room"),
    "connections": lambda hub: hub.connections(),
    "stats": lambda hub: hub.stats(),
}


async def test_every_operation_refuses_other_threads_while_running(running: Any) -> None:
    with anyio.fail_after(20):
        async with running() as server:
            for name, operation in OPERATIONS.items():
                error = await anyio.to_thread.run_sync(in_thread, lambda op=operation: op(server))
                assert isinstance(error, WrongThreadError), (name, error)
                assert isinstance(error, RuntimeError)
                assert f"{name}() was called from a thread other than the hub's event loop" in (
                    str(error)
                )
                operation(server)  # in the loop: fine


def test_operations_before_and_after_running_are_not_refused(anyio_backend: str) -> None:
    """No loop owns the hub before it runs or after it stopped: configuring it
    from the thread that builds it (or any other) is safe then."""
    server = HubServer(policy())
    assert in_thread(lambda: server.configure_topic("room", publish="all")) is None
    assert in_thread(server.stats).connections == 0

    async def serve_once() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            assert server.loop.running
            server.shutdown()

    anyio.run(serve_once, backend=anyio_backend)
    assert not server.loop.running
    assert in_thread(lambda: server.publish("room", 1)) == 0


async def test_threadsafe_handle_from_plain_threads_and_the_loop(running: Any) -> None:
    with anyio.fail_after(20):
        async with running() as server, client(server, ALICE) as alice:
            await alice.request("subscribe", 1, topic="room")
            handle = server.threadsafe()
            assert handle.running

            def from_a_plain_thread() -> int:
                return int(handle.publish("room", "from a thread"))

            assert await anyio.to_thread.run_sync(in_thread, from_a_plain_thread) == 1
            message = await alice.recv()
            assert (message["topic"], message["payload"]) == ("room", "from a thread")
            assert handle.publish("room", "from the loop") == 1  # direct, no deadlock
            assert (await alice.recv())["payload"] == "from the loop"
            snapshot = await anyio.to_thread.run_sync(in_thread, handle.connections)
            assert [info.conn_id for info in snapshot] == [alice.conn_id]
        if server.front.native:  # HubApp's own handle says so through its lifespan
            stopped = in_thread(lambda: handle.publish("room", 1))
            assert isinstance(stopped, HubStoppedError)
            assert not handle.running


async def test_sync_handlers_use_ctx_threadsafe_hub_and_ctx_hub_refuses(running: Any) -> None:
    refused: list[BaseException] = []
    threads: list[int] = []

    def shout(ctx: CommandContext, payload: Any) -> int:
        threads.append(threading.get_ident())
        try:
            ctx.hub.publish("room", "unsafe")
        except WrongThreadError as exc:
            refused.append(exc)
        assert isinstance(ctx.threadsafe_hub, LoopBoundHub)
        ctx.threadsafe_hub.send_to(ctx.conn_id, "note", "direct")
        return int(ctx.threadsafe_hub.publish("room", str(payload).upper()))

    with anyio.fail_after(20):
        async with running() as server, client(server, ALICE) as alice:
            server.add_command("shout", shout)
            await alice.request("subscribe", 1, topic="room")
            await alice.send(message_type="shout", id=2, payload="hi")
            received = [await alice.recv() for _ in range(3)]
    assert threads
    assert threads[0] != threading.get_ident()  # it did run in a worker thread
    assert len(refused) == 1
    assert "ctx.threadsafe_hub" in str(refused[0])
    by_type = {m["message_type"]: m for m in received}
    assert by_type["note"]["payload"] == "direct"
    assert by_type["message"]["payload"] == "HI"
    assert (by_type["reply"]["ok"], by_type["reply"]["payload"]) == (True, 1)


async def test_async_handlers_keep_using_ctx_hub(running: Any) -> None:
    async def echo_to_room(ctx: CommandContext, payload: Any) -> int:
        assert ctx.threadsafe_hub.publish("room", payload) == 1  # in the loop: direct
        return ctx.hub.publish("room", payload)

    with anyio.fail_after(20):
        async with running() as server, client(server, ALICE) as alice:
            server.add_command("echo_to_room", echo_to_room)
            await alice.request("subscribe", 1, topic="room")
            await alice.send(message_type="echo_to_room", id=2, payload=7)
            received = [await alice.recv() for _ in range(3)]
    assert [m["message_type"] for m in received] == ["message", "message", "reply"]
    assert received[2]["payload"] == 1


async def test_subscribe_and_unsubscribe_of_a_departed_connection_answer_false(
    running: Any,
) -> None:
    with anyio.fail_after(20):
        async with running() as server:
            async with client(server, ALICE) as alice:
                conn_id = alice.conn_id
                assert server.subscribe(conn_id, "room") is True
                assert server.subscribe(conn_id, "room") is True  # already: still subscribed
                assert server.unsubscribe(conn_id, "room") is True
                assert server.unsubscribe(conn_id, "room") is False  # was not subscribed
                assert server.subscribe(conn_id, "room") is True
            while server.connections():  # its close is being handled
                await anyio.sleep(0.01)
            assert server.subscribe(conn_id, "room") is False
            assert server.unsubscribe(conn_id, "room") is False
            assert server.send_to(conn_id, "note", 1) == 0  # the same convention
            assert server.subscribe("never-was", "room") is False
            with pytest.raises(ValueError, match="topic"):
                server.subscribe(conn_id, "")  # a bad topic name is still a bug


async def test_server_side_subscribe_reports_presence(running: Any) -> None:
    events: list[HubEvent] = []
    with anyio.fail_after(20):
        async with (
            running(on_event=events.append) as server,
            client(server, ALICE) as alice,
            client(server, BOB) as bob,
        ):
            server.configure_topic("lobby", presence=True)
            await alice.request("subscribe", 1, topic="lobby")
            own = await alice.recv()
            assert (own["message_type"], own["payload"]["principal"]) == ("presence", "alice")
            assert server.subscribe(bob.conn_id, "lobby") is True
            joined = await alice.recv()
            assert joined["message_type"] == "presence"
            assert (joined["payload"]["principal"], joined["payload"]["event"]) == ("bob", "join")
            assert server.unsubscribe(bob.conn_id, "lobby") is True
            left = await alice.recv()
            assert left["message_type"] == "presence"
            assert (left["payload"]["principal"], left["payload"]["event"]) == ("bob", "leave")
    presence = [e for e in events if isinstance(e, PresenceChanged)]
    assert [(e.conn_id, e.joined) for e in presence][:3] == [
        (alice.conn_id, True),
        (bob.conn_id, True),
        (bob.conn_id, False),
    ]
