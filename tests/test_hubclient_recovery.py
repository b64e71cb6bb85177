"""``HubClient`` recovering from the server's history, over real sockets on
asyncio and trio: a TCP reset mid-stream with publishing going on, a miss
larger than the outbox read in pages, history shorter than the absence,
messages dropped on a ``drop`` topic filled in, resuming a previous run's
position, and ``history`` requests."""

from __future__ import annotations

import math

import anyio
import pytest

from tests.hubclient_helpers import FAST, TOKEN, States, proxied, running
from tests.test_hubclient_reconnect import read_until
from wshub.adapters.hub_client import HubClient
from wshub.adapters.hub_client_types import (
    CallError,
    ConnectionState,
    Gap,
    GapReason,
    StreamPosition,
    Unrecovered,
)
from wshub.core import Limits
from wshub.core.hub_config import HubConfig

pytestmark = pytest.mark.anyio


async def test_tcp_reset_mid_stream_loses_nothing_when_history_covers_the_absence() -> None:
    with anyio.fail_after(20):
        async with proxied() as (server, proxy):
            server.configure_topic("t", history_size=100_000, history_ttl=math.inf)
            states = States()
            gaps: list[Gap] = []
            async with (
                HubClient(
                    proxy.url, token=TOKEN, backoff=FAST, on_state=states, on_gap=gaps.append
                ) as client,
                client.subscribe("t") as sub,
            ):
                for seq in range(1, 101):
                    server.publish("t", seq)
                early = [(await sub.__anext__()).seq for _ in range(50)]  # 51.. still in flight
                first = client.conn_id
                published = 100
                async with anyio.create_task_group() as tg:

                    async def keep_publishing() -> None:
                        nonlocal published
                        after_reopen = 0
                        while after_reopen < 50:
                            published += 1
                            server.publish("t", published)
                            if len(states.of(ConnectionState.OPEN)) >= 2:
                                after_reopen += 1
                            await anyio.sleep(0)

                    assert proxy.reset() == 1
                    tg.start_soon(keep_publishing)
                seqs, signalled = await read_until(sub, published)
                assert client.conn_id != first
                assert states.of(ConnectionState.DISCONNECTED)[0].code == 1006
                assert early + seqs == list(range(1, published + 1))  # each once, in order
                assert signalled == gaps == []
                assert sub.position == StreamPosition(published, str(server.hub.topic_epoch("t")))


async def test_a_miss_larger_than_the_outbox_is_read_in_pages() -> None:
    with anyio.fail_after(20):
        # 2000 missed envelopes of ~90 bytes: five times what the outbox holds.
        async with proxied(limits=Limits(max_outbox_size=32 * 1024)) as (server, proxy):
            server.configure_topic("t", history_size=10_000, history_ttl=math.inf)
            states = States()
            gaps: list[Gap] = []
            async with (
                HubClient(
                    proxy.url, token=TOKEN, backoff=FAST, on_state=states, on_gap=gaps.append
                ) as client,
                client.subscribe("t") as sub,
            ):
                server.publish("t", 1)
                assert (await sub.__anext__()).seq == 1
                assert proxy.reset() == 1
                await states.reach(ConnectionState.DISCONNECTED)
                for seq in range(2, 2002):
                    server.publish("t", seq)
                await states.reach(ConnectionState.OPEN, 2)
                server.publish("t", 2002)
                seqs, signalled = await read_until(sub, 2002)
                assert seqs == list(range(2, 2003))
                assert signalled == gaps == []


async def test_history_shorter_than_the_absence_is_an_explicit_gap() -> None:
    with anyio.fail_after(20):
        async with proxied() as (server, proxy):
            server.configure_topic("t", history_size=10, history_ttl=math.inf)
            states = States()
            async with (
                HubClient(proxy.url, token=TOKEN, backoff=FAST, on_state=states) as client,
                client.subscribe("t") as sub,
            ):
                server.publish("t", 1)
                assert (await sub.__anext__()).seq == 1
                assert proxy.reset() == 1
                await states.reach(ConnectionState.DISCONNECTED)
                for seq in range(2, 52):  # 50 missed, the last 10 kept
                    server.publish("t", seq)
                with pytest.raises(Unrecovered) as caught:
                    await sub.__anext__()
                gap = caught.value.gap
                assert gap.reason is GapReason.NOT_RECOVERED
                assert (gap.last_seq, gap.resumed_at, gap.missed) == (1, 51, 50)
                assert not gap.epoch_changed
                await states.reach(ConnectionState.OPEN, 2)
                server.publish("t", 52)
                assert (await sub.__anext__()).seq == 52


async def test_messages_dropped_on_a_drop_topic_are_filled_in_from_history() -> None:
    with anyio.fail_after(20):
        async with running(
            limits=Limits(max_outbox_size=8 * 1024),
            config=HubConfig(history_topic_bytes=32 << 20),
        ) as server:
            server.configure_topic(
                "t", slow_consumer="drop", history_size=10_000, history_ttl=math.inf
            )
            gaps: list[Gap] = []
            async with (
                HubClient(server.url, token=TOKEN, on_gap=gaps.append) as client,
                client.subscribe("t") as sub,
            ):
                # One burst in one step of the loop, so the client cannot read
                # meanwhile: 8 MB, more than loopback socket buffers take (the
                # server writes an outbox to its socket as it fills, and only
                # drops once the socket is full), so the rest is dropped.
                count = 4000
                for seq in range(1, count + 1):
                    server.publish("t", {"n": seq, "pad": "x" * 2000}, droppable=True)
                dropped = server.stats().drops
                assert dropped > 0
                got = [await sub.__anext__() for _ in range(count - dropped)]  # what was sent
                server.publish("t", {"n": count + 1, "pad": ""}, droppable=True)  # a `dropped`
                got += [await sub.__anext__() for _ in range(dropped + 1)]
                assert [m.seq for m in got] == list(range(1, count + 2))
                assert [m.payload["n"] for m in got] == list(range(1, count + 2))
                assert gaps == []


async def test_a_previous_runs_position_resumes_the_stream() -> None:
    with anyio.fail_after(20):
        async with running() as server:
            server.configure_topic("t", history_size=1000, history_ttl=math.inf)
            async with HubClient(server.url, token=TOKEN) as client, client.subscribe("t") as sub:
                server.publish("t", 1)
                assert (await sub.__anext__()).seq == 1
                saved = sub.position
            assert saved is not None
            for seq in range(2, 6):  # while no client runs
                server.publish("t", seq)
            async with (
                HubClient(server.url, token=TOKEN) as client,
                client.subscribe("t", since=saved) as sub,
            ):
                assert [(await sub.__anext__()).seq for _ in range(4)] == [2, 3, 4, 5]
                assert client.topics() == {"t": StreamPosition(5, saved.epoch)}
            stale = StreamPosition(3, "not-the-epoch")
            async with (
                HubClient(server.url, token=TOKEN) as client,
                client.subscribe("t", since=stale) as sub,
            ):
                with pytest.raises(Unrecovered) as caught:
                    await sub.__anext__()
                assert caught.value.epoch_changed
                assert caught.value.gap.epoch == saved.epoch


async def test_resuming_a_long_absence_does_not_wait_for_the_reader() -> None:
    with anyio.fail_after(20):
        async with running(limits=Limits(max_outbox_size=16 * 1024)) as server:
            server.configure_topic("t", history_size=10_000, history_ttl=math.inf)
            server.publish("t", 0)
            epoch = str(server.hub.topic_epoch("t"))
            for seq in range(2, 3002):  # far more than the outbox and the queue hold
                server.publish("t", seq)
            async with (
                HubClient(server.url, token=TOKEN, max_queue=8) as client,
                client.subscribe("t", since=StreamPosition(1, epoch), timeout=5) as sub,
            ):
                seqs, gaps = await read_until(sub, 3001)
                assert seqs == list(range(2, 3002))
                assert gaps == []


async def test_history_requests() -> None:
    with anyio.fail_after(20):
        async with running() as server:
            server.configure_topic("t", history_size=5, history_ttl=math.inf)
            server.configure_topic("secret", subscribe_scope="admin")
            for seq in range(1, 9):
                server.publish("t", seq)
            epoch = str(server.hub.topic_epoch("t"))
            async with HubClient(server.url, token=TOKEN) as client:
                newest = await client.history("t")
                assert (newest.seq, newest.epoch, newest.recovered) == (8, epoch, None)
                assert [(m.seq, m.payload, m.epoch) for m in newest.messages] == [
                    (s, s, epoch) for s in range(4, 9)
                ]
                page = await client.history("t", since=StreamPosition(5, epoch), limit=2)
                assert page.recovered is True
                assert [m.seq for m in page.messages] == [6, 7]
                assert page.messages[-1].position == StreamPosition(7, epoch)
                lost = await client.history("t", since=StreamPosition(1, epoch))
                assert (lost.recovered, lost.messages) == (False, ())
                for topic, payload_limit, code in [
                    ("secret", None, "forbidden"),
                    ("t", 0, "invalid_envelope"),
                ]:
                    with pytest.raises(CallError) as caught:
                        await client.history(topic, limit=payload_limit)
                    assert caught.value.code == code
