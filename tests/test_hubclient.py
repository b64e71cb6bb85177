"""``HubClient`` against a real ``HubServer`` on 127.0.0.1, on asyncio and trio:
calls and their error codes, timeouts, subscriptions, publish, presence,
broadcasts and direct messages, state changes."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.hubclient_helpers import ADMIN, FAST, TOKEN, States, no_jitter, proxied, running
from wshub.adapters import CommandContext, CommandError, HubServer
from wshub.adapters.hub_client import HubClient
from wshub.adapters.hub_client_types import (
    CallError,
    CallTimeout,
    ClientClosed,
    ConnectionLost,
    ConnectionState,
    Message,
    Presence,
    ServerMessage,
)

pytestmark = pytest.mark.anyio


def commands(server: HubServer) -> anyio.Event:
    """Register test commands; the event is set when ``block`` starts waiting."""
    blocked = anyio.Event()

    @server.command("add")
    async def add(ctx: CommandContext, payload: list[int]) -> int:
        return sum(payload)

    @server.command("fail")
    async def fail(ctx: CommandContext, payload: Any) -> None:
        raise CommandError("not_found", f"no item {payload}")

    @server.command("crash")
    async def crash(ctx: CommandContext, payload: Any) -> None:
        raise RuntimeError("boom")

    @server.command("secret", scope="admin")
    async def secret(ctx: CommandContext, payload: Any) -> str:
        return "s3cret"

    @server.command("block", timeout=60)
    async def block(ctx: CommandContext, payload: Any) -> None:
        blocked.set()
        await anyio.sleep_forever()

    return blocked


async def test_calls_return_payloads_or_raise_errors_with_stable_codes() -> None:
    with anyio.fail_after(10):
        async with running() as server:
            commands(server)
            async with HubClient(server.url, token=TOKEN) as client:
                assert await client.call("add", [1, 2, 39]) == 42
                cases = {
                    "nope": "unknown_command",
                    "fail": "not_found",  # the handler's own code
                    "crash": "command_failed",
                    "secret": "forbidden",  # alice lacks the admin scope
                }
                for command, code in cases.items():
                    with pytest.raises(CallError) as caught:
                        await client.call(command, 7)
                    assert caught.value.code == code
                with pytest.raises(CallError) as caught:
                    await client.call("fail", 7)
                assert caught.value.message == "no item 7"
                with pytest.raises(TypeError):  # not JSON: refused before sending
                    await client.call("add", {1, 2})
                assert client.state is ConnectionState.OPEN
            async with HubClient(server.url, token=ADMIN) as admin:
                assert await admin.call("secret") == "s3cret"
                assert admin.principal == "root"


async def test_a_call_without_reply_in_time_raises_call_timeout_and_the_client_goes_on() -> None:
    with anyio.fail_after(10):
        async with running() as server:
            blocked = commands(server)
            async with HubClient(server.url, token=TOKEN) as client:
                with pytest.raises(CallTimeout) as caught:
                    await client.call("block", timeout=0.2)
                assert blocked.is_set()  # it was sent and is running: only the reply is late
                assert caught.value.code == "timeout"
                assert isinstance(caught.value, TimeoutError)
                assert await client.call("add", [2, 3]) == 5


async def test_a_call_in_flight_when_the_connection_dies_is_lost_not_resent() -> None:
    with anyio.fail_after(10):
        async with proxied() as (server, proxy):
            blocked = commands(server)
            states = States()
            async with HubClient(
                proxy.url, token=TOKEN, backoff=FAST, random=no_jitter, on_state=states
            ) as client:
                first = client.conn_id

                async def kill() -> None:
                    await blocked.wait()
                    assert proxy.reset() == 1

                async with anyio.create_task_group() as tg:
                    tg.start_soon(kill)
                    with pytest.raises(ConnectionLost) as caught:
                        await client.call("block")
                assert caught.value.code == "connection_lost"
                await states.reach(ConnectionState.OPEN, 2)
                assert client.conn_id != first
                assert await client.call("add", [1]) == 1


async def test_calls_made_while_disconnected_wait_for_the_next_connection() -> None:
    with anyio.fail_after(10):
        async with proxied() as (server, proxy):
            commands(server)
            states = States()
            release = anyio.Event()

            async def token() -> str:
                if states.of(ConnectionState.OPEN):  # hold every reconnection until released
                    await release.wait()
                return TOKEN

            async with HubClient(
                proxy.url, token=token, backoff=FAST, random=no_jitter, on_state=states
            ) as client:
                assert proxy.reset() == 1
                await states.reach(ConnectionState.CONNECTING, 2)  # disconnected, held
                assert client.state is ConnectionState.CONNECTING
                result: list[int] = []
                async with anyio.create_task_group() as tg:

                    async def call() -> None:
                        result.append(await client.call("add", [20, 22]))

                    tg.start_soon(call)
                    await anyio.wait_all_tasks_blocked()
                    assert not result
                    release.set()
                assert result == [42]
                # Bounded: without a connection, the call's timeout still applies.
                release = anyio.Event()
                assert proxy.reset() == 1
                await states.reach(ConnectionState.CONNECTING, 3)
                with pytest.raises(CallTimeout):
                    await client.call("add", [1], timeout=0.1)
                release.set()
                await states.reach(ConnectionState.OPEN, 3)


async def test_subscribe_publish_and_every_message_once_in_order() -> None:
    with anyio.fail_after(10):
        async with running() as server:
            server.configure_topic("news", publish="subscribers")
            server.publish("news", "before")  # seq 1: published before we subscribe
            async with (
                HubClient(server.url, token=TOKEN) as client,
                client.subscribe("news") as sub,
                client.subscribe("news") as twin,  # a second block, same server subscription
            ):
                assert server.hub.subscribers("news") == [client.conn_id]
                for i in range(50):
                    server.publish("news", i, message_type="tick")
                reply = await client.publish("news", {"from": "client"})
                assert reply == {"topic": "news", "seq": 52, "delivered": 1}
                for feed in (sub, twin):
                    got: list[Message] = []
                    async for message in feed:
                        got.append(message)
                        if len(got) == 51:
                            break
                    assert [m.seq for m in got] == list(range(2, 53))
                    assert [m.payload for m in got] == [*range(50), {"from": "client"}]
                    assert {m.message_type for m in got[:50]} == {"tick"}
                    assert got[-1].message_type == "message"
                    assert all(m.topic == "news" and m.timestamp > 0 for m in got)
            assert server.hub.subscribers("news") == []


async def test_a_full_subscription_holds_the_reader_and_loses_nothing() -> None:
    with anyio.fail_after(10):
        async with running() as server:
            server.configure_topic("t")
            async with (
                HubClient(server.url, token=TOKEN, max_queue=2) as client,
                client.subscribe("t") as sub,
            ):
                for seq in range(1, 41):
                    server.publish("t", seq)
                while sub.queued < 2:  # the reader fills the queue, then waits for room
                    await anyio.sleep(0.01)
                await anyio.wait_all_tasks_blocked()
                assert sub.queued == 2
                assert [(await sub.__anext__()).seq for _ in range(40)] == list(range(1, 41))
                assert sub.queued == 0


async def test_leaving_the_last_block_unsubscribes() -> None:
    with anyio.fail_after(10):
        async with running() as server:
            server.configure_topic("a", publish="all")
            async with HubClient(server.url, token=TOKEN) as client:
                async with client.subscribe("a"):
                    async with client.subscribe("a"):
                        pass
                    assert server.hub.subscribers("a") == [client.conn_id]
                # the unsubscribe is sent without id: a call after it proves it was handled
                await client.call("publish", None, topic="a")
                assert server.hub.subscribers("a") == []
                assert client.topics() == {}


async def test_a_refused_subscription_raises_its_code() -> None:
    with anyio.fail_after(10):
        async with running() as server:
            server.configure_topic("admins", subscribe_scope="admin")
            async with HubClient(server.url, token=TOKEN) as client:
                with pytest.raises(CallError) as caught:
                    async with client.subscribe("admins"):
                        pass
                assert caught.value.code == "forbidden"
                assert client.topics() == {}
                with pytest.raises(CallError) as caught:
                    await client.publish("admins", 1)
                assert caught.value.code == "forbidden"


async def test_presence_members_and_events() -> None:
    with anyio.fail_after(10):
        async with running() as server:
            server.configure_topic("room", presence=True)
            seen: list[Presence] = []
            got_leave = anyio.Event()

            def on_presence(event: Presence) -> None:
                seen.append(event)
                if not event.joined:
                    got_leave.set()

            async with (
                HubClient(server.url, token=TOKEN, on_presence=on_presence) as alice,
                alice.subscribe("room") as sub,
            ):
                assert sub.present == {alice.conn_id: "alice"}
                async with (
                    HubClient(server.url, token=ADMIN) as root,
                    root.subscribe("room") as other,
                ):
                    assert other.present == {alice.conn_id: "alice", root.conn_id: "root"}
                    root_id = root.conn_id
                await got_leave.wait()
                assert sub.present == {alice.conn_id: "alice"}
                assert [(e.joined, e.principal) for e in seen] == [
                    (True, "alice"),
                    (True, "root"),
                    (False, "root"),
                ]
                assert seen[1] == Presence(
                    topic="room", joined=True, conn_id=str(root_id), principal="root"
                )


async def test_broadcasts_and_direct_messages_reach_inboxes_and_the_callback() -> None:
    with anyio.fail_after(10):
        async with running() as server:
            calls: list[ServerMessage] = []
            async with HubClient(server.url, token=TOKEN, on_message=calls.append) as client:
                async with client.messages() as inbox, client.messages() as second:
                    assert server.broadcast("status", {"up": True}) == 1
                    assert server.send_to(str(client.conn_id), "note", "hi") == 1
                    server.subscribe(str(client.conn_id), "server-side")  # not via the client
                    server.publish("server-side", 1)
                    for feed in (inbox, second):
                        got = [await feed.__anext__() for _ in range(3)]
                        assert [(m.message_type, m.payload) for m in got] == [
                            ("status", {"up": True}),
                            ("note", "hi"),
                            ("message", 1),
                        ]
                        assert got[2].envelope["topic"] == "server-side"
                assert len(calls) == 3
                assert server.broadcast("later", None) == 1  # no inbox open: the callback only
                await client.call("subscribe", None, topic="x")  # after the broadcast was read
                assert calls[-1].message_type == "later"


async def test_state_changes_and_the_ends_of_feeds_after_close() -> None:
    with anyio.fail_after(10):
        async with running() as server:
            states = States()
            server.configure_topic("t")
            client = HubClient(server.url, token=TOKEN, on_state=states)
            async with client:
                assert states.names == ["connecting", "open"]
                opened = states.changes[1]
                assert (opened.conn_id, opened.principal) == (client.conn_id, "alice")
                async with client.subscribe("t") as sub, client.messages() as inbox:
                    server.publish("t", 1)
                    assert (await sub.__anext__()).payload == 1
                    await client.aclose()
                    with pytest.raises(StopAsyncIteration):  # ended, not failed
                        await sub.__anext__()
                    with pytest.raises(StopAsyncIteration):
                        await inbox.__anext__()
            assert states.names == ["connecting", "open", "closed"]
            assert states.changes[-1].error is None
            assert client.state is ConnectionState.CLOSED
            with pytest.raises(ClientClosed):
                await client.call("x")
            with pytest.raises(ClientClosed):
                async with client.subscribe("t"):
                    pass
