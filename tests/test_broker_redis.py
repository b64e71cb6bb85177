"""The Redis broker with real servers: two hub nodes in one process on a private Redis.

Each test starts its own ``redis-server`` (``redis_server`` fixture: free
port, no persistence) and two ``HubServer``s with a ``RedisBroker`` each, on
both anyio backends, and checks what real clients receive.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from redis_support import RedisServer

from wshub.adapters import BrokerUnavailable, Gap, HubClient, HubServer, Unrecovered, connect
from wshub.adapters.broker_redis import RedisBroker
from wshub.core.auth import SUBPROTOCOL, AccessPolicy, Principal, StaticTokens
from wshub.core.hub_config import HubConfig
from wshub.core.hub_events import HubEvent, PresenceChanged
from wshub.core.topics import TopicPolicy

pytestmark = pytest.mark.anyio

TOKENS = StaticTokens({"ta": Principal("alice"), "tb": Principal("bob")})


def make_node(url: str, name: str, **kwargs: Any) -> HubServer:
    return HubServer(
        AccessPolicy(tokens=TOKENS),
        default_topic=TopicPolicy(publish="all"),
        config=HubConfig(history_size=50),
        metrics=True,
        broker=RedisBroker(url, node=name, presence_ttl=1.0, heartbeat=0.25, **kwargs),
    )


@asynccontextmanager
async def running(*servers: HubServer) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        for server in servers:
            await tg.start(server.serve)
        yield
        tg.cancel_scope.cancel()


class Client:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.conn_id = ""

    async def send(self, **envelope: Any) -> None:
        await self.ws.send(json.dumps(envelope))

    async def recv(self, kind: str | None = None) -> dict[str, Any]:
        """The next envelope (of ``kind``, skipping others)."""
        with anyio.fail_after(10):
            while True:
                value: dict[str, Any] = json.loads(await self.ws.recv())
                if kind is None or value["message_type"] == kind:
                    return value

    async def subscribe(self, topic: str, since: tuple[int, str] | None = None) -> dict[str, Any]:
        payload = None if since is None else {"since": {"seq": since[0], "epoch": since[1]}}
        await self.send(message_type="subscribe", topic=topic, id="s", payload=payload)
        reply = await self.recv("reply")
        return reply["payload"]  # type: ignore[no-any-return]


@asynccontextmanager
async def client(server: HubServer, token: str = "ta") -> AsyncIterator[Client]:
    async with connect(server.url, token=token, subprotocols=(SUBPROTOCOL,)) as ws:
        c = Client(ws)
        welcome = await c.recv()
        c.conn_id = welcome["payload"]["conn_id"]
        yield c


async def test_publications_cross_nodes_once_in_order(redis_server: RedisServer) -> None:
    a, b = make_node(redis_server.url, "a"), make_node(redis_server.url, "b")
    async with running(a, b), client(a) as alice, client(b, "tb") as bob:
        reply_a = await alice.subscribe("news")
        reply_b = await bob.subscribe("news")
        assert reply_a["epoch"] == reply_b["epoch"]
        await bob.send(message_type="publish", topic="news", payload="from bob", id=1)
        ack = await bob.recv("reply")
        assert ack["payload"] == {"topic": "news", "seq": 1, "epoch": reply_a["epoch"]}
        seq, epoch = await a.publish_async("news", "from a")
        assert (seq, epoch) == (2, reply_a["epoch"])
        assert a.publish("news", "third") == 0
        for c in (alice, bob):
            got = [await c.recv("message") for _ in range(3)]
            assert [(m["seq"], m["payload"]) for m in got] == [
                (1, "from bob"),
                (2, "from a"),
                (3, "third"),
            ]
        assert 'wshub_broker_up{node="a"} 1' in a.broker.metrics_text()  # type: ignore[union-attr]


async def test_recovery_from_the_stream_on_another_node(redis_server: RedisServer) -> None:
    a, b = make_node(redis_server.url, "a"), make_node(redis_server.url, "b")
    async with running(a, b):
        for i in range(5):
            await a.publish_async("t", i)
        async with client(b, "tb") as bob:
            epoch = a.hub.outgoing("t", None).topic and (await a.publish_async("t", 5))[1]
            reply = await bob.subscribe("t", since=(2, epoch))
            assert reply == {"topic": "t", "seq": 6, "epoch": epoch, "recovered": True}
            got = [await bob.recv("message") for _ in range(4)]
            assert [m["payload"] for m in got] == [2, 3, 4, 5]
            await bob.send(message_type="history", topic="t", id="h", payload={"limit": 2})
            page = await bob.recv("reply")
            assert [m["seq"] for m in page["payload"]["messages"]] == [5, 6]


async def test_direct_sends_and_disconnect_reach_other_nodes(redis_server: RedisServer) -> None:
    a, b = make_node(redis_server.url, "a"), make_node(redis_server.url, "b")
    async with running(a, b), client(a) as alice, client(b, "tb") as bob, client(b) as alice2:
        assert a.broadcast("hello", 1) == 1
        assert (await bob.recv())["message_type"] == "hello"
        assert (await alice2.recv())["message_type"] == "hello"
        assert a.send_to_principal("alice", "mail", 2) == 1
        assert (await alice2.recv())["payload"] == 2
        assert a.send_to(bob.conn_id, "direct", 3) == 0  # not here: relayed
        assert (await bob.recv())["payload"] == 3
        assert a.disconnect(bob.conn_id, 4000, "bye") is False
        with anyio.fail_after(10):
            with pytest.raises(Exception, match="4000"):
                await bob.recv()
        await alice.send(message_type="publish", topic="x", payload=0)  # alice is still served


async def test_presence_spans_nodes_and_a_dead_node_leaves(redis_server: RedisServer) -> None:
    a, b = make_node(redis_server.url, "a"), make_node(redis_server.url, "b")
    events: list[HubEvent] = []
    a.handler.on_event = events.append
    for node in (a, b):
        node.configure_topic("room", presence=True)
    async with running(a), client(a) as alice:
        await alice.subscribe("room")
        assert (await alice.recv("presence"))["payload"]["principal"] == "alice"  # its own
        async with anyio.create_task_group() as tg:
            await tg.start(b.serve)
            async with client(b, "tb") as bob:
                reply = await bob.subscribe("room")
                assert {m["principal"] for m in reply["present"]} == {"alice", "bob"}
                joined = await alice.recv("presence")
                assert joined["payload"]["principal"] == "bob"
                tg.cancel_scope.cancel()  # node b stops without a word (as if killed)
        # b's heartbeat stops: a sweeps it within presence_ttl + heartbeat
        with anyio.fail_after(5):
            left = await alice.recv("presence")
        assert left["payload"]["event"] == "leave"
        assert left["payload"]["principal"] == "bob"
        gone = PresenceChanged(
            topic="room", conn_id=left["payload"]["conn_id"], principal_id="bob", joined=False
        )
        with anyio.fail_after(5):  # the sweeping node's on_event hears of it (a's sweep)
            while gone not in events:
                await anyio.sleep(0.01)


async def test_a_node_restarted_at_once_under_its_name_drops_its_old_members(
    redis_server: RedisServer,
) -> None:
    """A node killed and started again at once under the same name (before any
    survivor could declare it dead): its earlier members leave, announced to
    the other nodes, within the documented bound (presence_ttl + 1 s)."""
    a, b = make_node(redis_server.url, "a"), make_node(redis_server.url, "b")
    again = make_node(redis_server.url, "b")
    events: list[HubEvent] = []
    again.handler.on_event = events.append
    for node in (a, b, again):
        node.configure_topic("room", presence=True)
    async with running(a), client(a) as alice:
        await alice.subscribe("room")
        await alice.recv("presence")  # its own join
        async with anyio.create_task_group() as tg:
            await tg.start(b.serve)
            async with client(b, "tb") as bob:
                await bob.subscribe("room")
                assert (await alice.recv("presence"))["payload"]["principal"] == "bob"
                tg.cancel_scope.cancel()  # node b stops without a word (as if killed)
        stopped = anyio.current_time()
        async with running(again):  # at once, same name: b's deadline has not passed
            bound = 1.0 + 1.0  # presence_ttl + 1 s
            with anyio.fail_after(max(0.0, stopped + bound - anyio.current_time())):
                left = await alice.recv("presence")
            assert left["payload"] == {"event": "leave", "conn_id": bob.conn_id, "principal": "bob"}
            gone = PresenceChanged(
                topic="room", conn_id=bob.conn_id, principal_id="bob", joined=False
            )
            with anyio.fail_after(5):  # the node that removed them hears of it, as a sweeper
                while gone not in events:
                    await anyio.sleep(0.01)
            async with client(again, "tb") as bob2:
                reply = await bob2.subscribe("room")
                assert {m["conn_id"] for m in reply["present"]} == {alice.conn_id, bob2.conn_id}
                joined = await alice.recv("presence")
                assert joined["payload"]["conn_id"] == bob2.conn_id
                await anyio.sleep(1.0 + 0.25 + 0.25)  # past a deadline and a sweep
                kept = redis_server.command("HKEYS", "wshub:p:room")
                assert isinstance(kept, list)
                assert {k.decode() for k in kept} == {alice.conn_id, bob2.conn_id}
                assert redis_server.command("SISMEMBER", "wshub:nm:b", f"room\n{bob.conn_id}") == 0


async def test_redis_unreachable_at_start_is_a_clear_error(redis_server: RedisServer) -> None:
    url = redis_server.url
    redis_server.stop()
    node = make_node(url, "a", connect_timeout=0.5)
    with pytest.raises(BrokerUnavailable, match=r"redis unavailable at redis://.*: \S"):
        await node.serve()


async def test_redis_lost_then_back_without_its_data(redis_server: RedisServer) -> None:
    a, b = make_node(redis_server.url, "a"), make_node(redis_server.url, "b")
    async with running(a, b), client(a) as alice, client(b, "tb") as bob:
        old = (await bob.subscribe("t"))["epoch"]
        await alice.subscribe("t")
        await a.publish_async("t", "before")
        assert (await bob.recv("message"))["payload"] == "before"
        redis_server.kill()
        with anyio.fail_after(10):
            while a.broker is not None and a.broker.up:
                await anyio.sleep(0.05)
        with pytest.raises(BrokerUnavailable):
            a.publish("t", "lost")
        await alice.send(message_type="publish", topic="t", payload="lost", id="p")
        refused = await alice.recv("reply")
        assert refused["error"]["code"] == "unavailable"
        redis_server.start()
        with anyio.fail_after(15):
            while not (
                a.broker is not None and a.broker.up and b.broker is not None and b.broker.up
            ):
                await anyio.sleep(0.05)
        seq, new = await a.publish_async("t", "after")
        assert new != old
        for c in (alice, bob):
            reset = await c.recv("reset")
            assert reset["payload"]["epoch"] == new
            message = await c.recv("message")
            assert (message["seq"], message["payload"]) == (seq, "after")


def command_stats(redis_server: RedisServer) -> dict[str, int]:
    """Calls per command so far, from Redis (INFO commandstats)."""
    info = redis_server.command("INFO", "commandstats")
    assert isinstance(info, bytes)
    calls: dict[str, int] = {}
    for line in info.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_") :].split(":", 1)
            calls[name] = int(rest.split("calls=")[1].split(",")[0])
    return calls


async def test_a_burst_of_publishes_costs_one_round_trip(redis_server: RedisServer) -> None:
    a = make_node(redis_server.url, "a")
    broker = a.broker
    assert isinstance(broker, RedisBroker)
    async with running(a), client(a) as alice:
        await alice.subscribe("burst")
        await a.publish_async("burst", -1)
        before = broker.counters.pipelines
        stats = command_stats(redis_server)
        for i in range(200):  # no await between: one batch for the writer
            a.publish("burst", i)
        got = [await alice.recv("message") for _ in range(201)]
        assert [m["payload"] for m in got] == [-1, *range(200)]
        assert broker.counters.pipelines - before == 1
        after = command_stats(redis_server)
        # Redis's own count: 200 script calls and no SCRIPT EXISTS (nothing but
        # the scripts went out with them; heartbeats use EVALSHA too, at most a few)
        assert 200 <= after.get("evalsha", 0) - stats.get("evalsha", 0) <= 210
        assert after.get("script|exists", 0) == stats.get("script|exists", 0)
        assert "wshub_broker_pipelines_total" in broker.metrics_text()


async def test_hub_client_is_told_of_a_new_epoch_by_reset(redis_server: RedisServer) -> None:
    a, b = make_node(redis_server.url, "a"), make_node(redis_server.url, "b")
    gaps: list[Gap] = []
    async with (
        running(a, b),
        HubClient(b.url, token="tb", on_gap=gaps.append) as hub_client,
        hub_client.subscribe("t") as sub,
    ):
        await a.publish_async("t", "old")
        first = await sub.__anext__()
        assert first.payload == "old"
        redis_server.restart()  # same port, no data
        with anyio.fail_after(15):
            while True:  # until both nodes are back and the publish goes through
                try:
                    seq, epoch = await a.publish_async("t", "new")
                    break
                except BrokerUnavailable:
                    await anyio.sleep(0.1)
        with anyio.fail_after(10), pytest.raises(Unrecovered) as lost:
            await sub.__anext__()
        assert lost.value.gap.epoch_changed
        assert lost.value.gap.epoch == epoch
        with anyio.fail_after(10):
            message = await sub.__anext__()
        assert (message.seq, message.epoch, message.payload) == (seq, epoch, "new")
        assert [g.epoch for g in gaps] == [epoch]


async def test_a_node_whose_link_drops_catches_up_from_the_stream(
    redis_server: RedisServer,
) -> None:
    """Node b's connections to Redis are killed while node a publishes: b
    reconnects, listens again and gives its subscriber what it missed from the
    stream, in order, each message once."""
    a, b = make_node(redis_server.url, "a"), make_node(redis_server.url, "b")
    async with running(a, b), client(b, "tb") as bob:
        await bob.subscribe("t")
        await a.publish_async("t", 0)
        assert (await bob.recv("message"))["payload"] == 0
        kill_links(redis_server, "b")
        for i in range(1, 31):
            await a.publish_async("t", i)
            await anyio.sleep(0.005)
        got = [await bob.recv("message") for _ in range(30)]
        assert [(m["seq"], m["payload"]) for m in got] == [(i + 1, i) for i in range(1, 31)]
        assert b.broker is not None
        assert isinstance(b.broker, RedisBroker)
        assert b.broker.counters.reconnects >= 1
        # b's own channel brought 21-22 of the 31 here (runs of 2026-12-06): the
        # others came from the stream, not from its link (not asserted: timing).


def kill_links(redis_server: RedisServer, node: str) -> None:
    """Close every connection of ``node``'s broker, from the Redis side."""
    listing = redis_server.command("CLIENT", "LIST")
    assert isinstance(listing, bytes)
    ids = [
        line.split(b"id=")[1].split()[0]
        for line in listing.splitlines()
        if f"name=wshub:{node} ".encode() in line + b" "
    ]
    assert ids
    for client_id in ids:
        redis_server.command("CLIENT", "KILL", "ID", client_id)


async def test_a_node_back_after_being_swept_records_its_members_again(
    redis_server: RedisServer,
) -> None:
    a, b = make_node(redis_server.url, "a"), make_node(redis_server.url, "b")
    for node in (a, b):
        node.configure_topic("room", presence=True)
    async with running(a, b), client(a) as alice, client(b, "tb") as bob:
        await alice.subscribe("room")
        await alice.recv("presence")  # its own join
        await bob.subscribe("room")
        assert (await bob.recv())["payload"]["principal"] == "bob"  # its own join
        assert (await alice.recv("presence"))["payload"]["principal"] == "bob"
        # as a survivor's sweep would, while b's link was down
        assert redis_server.command("HDEL", "wshub:p:room", bob.conn_id) == 1
        kill_links(redis_server, "b")
        joined = await alice.recv("presence")
        assert joined["payload"] == {"event": "join", "conn_id": bob.conn_id, "principal": "bob"}
        assert redis_server.command("HEXISTS", "wshub:p:room", bob.conn_id) == 1
        # nothing else reaches bob meanwhile: no presence repeated, no replay
        await a.publish_async("room", "marker")
        marker = await bob.recv()
        assert (marker["message_type"], marker["payload"]) == ("message", "marker")


async def test_server_side_history_reads_redis(redis_server: RedisServer) -> None:
    a, b = make_node(redis_server.url, "a"), make_node(redis_server.url, "b")
    async with running(a, b):
        for i in range(4):
            _, epoch = await a.publish_async("t", i)
        page = await b.history_async("t", since=(1, epoch), limit=2)
        assert (page.seq, page.epoch, page.recovered, page.start) == (4, epoch, True, 2)
        assert [json.loads(e)["payload"] for e in page.envelopes] == [1, 2]
        newest = await b.history_async("t")
        assert [json.loads(e)["payload"] for e in newest.envelopes] == [0, 1, 2, 3]
        redis_server.kill()
        with anyio.fail_after(10):
            while b.broker is not None and b.broker.up:
                await anyio.sleep(0.05)
        with pytest.raises(BrokerUnavailable):
            await b.history_async("t")


async def test_history_forgets_entries_older_than_the_topics_age(redis_server: RedisServer) -> None:
    """Each entry ages on its own: "old" is past the topic's 2 s while "mid",
    published later, keeps the stream itself alive."""
    a, b = make_node(redis_server.url, "a"), make_node(redis_server.url, "b")
    for node in (a, b):
        node.configure_topic("brief", publish="all", history_size=10, history_ttl=2.0)
    async with running(a, b), client(b, "tb") as bob:
        _, epoch = await a.publish_async("brief", "old")
        await anyio.sleep(1.2)
        await a.publish_async("brief", "mid")
        await anyio.sleep(1.2)
        page = await b.history_async("brief")
        assert [json.loads(e)["payload"] for e in page.envelopes] == ["mid"]
        reply = await bob.subscribe("brief", since=(0, epoch))
        assert reply["recovered"] is False  # "old" is past its age: a gap, said so
        reply = await bob.subscribe("brief", since=(1, epoch))
        assert reply["recovered"] is True
        assert (await bob.recv("message"))["payload"] == "mid"
