"""One hub over several processes: ``wshub serve --redis`` nodes on one private Redis.

Three nodes (subprocesses, port 0, loopback), WebSocket clients spread over
them (the ``websockets`` library's client), and for the server API a fourth
node in this process (``HubServer`` with ``RedisBroker``). What must hold:
publications from every node and from the server API reach every subscriber
exactly once and in ``seq`` order; presence is the union of the nodes;
``send_to_principal`` reaches a user's connections on every node (and
``broadcast``, ``send_to`` and ``disconnect`` cross nodes too); a node
killed with ``kill -9`` mid-stream leaves the others serving and its members
leave presence within the documented bound; a Redis restarted without its
data mid-stream leaves every client with every confirmed message or told
(``reset`` or ``recovered: false``) that it cannot have them.

Counts are small and every wait has a deadline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from cluster_helpers import Client, Envelope, Keys, clients, cluster, kill_node, wait_until
from redis_support import RedisServer
from test_cli import serving

from wshub.adapters import HubServer
from wshub.adapters.broker_redis import RedisBroker
from wshub.core.auth import AccessPolicy
from wshub.core.topics import TopicPolicy

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

NODES = ("a", "b", "c")
#: The presence TTL the kill test runs with, and the bound the README gives:
#: a kill -9'd node's members leave within presence_ttl + 1 s.
PRESENCE_TTL = 2.0
PRESENCE_BOUND = PRESENCE_TTL + 1.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


def payload_order(got: list[Envelope]) -> list[Any]:
    return [m["payload"] for m in got]


async def publish_series(client: Client, topic: str, count: int, tag: str) -> dict[int, Any]:
    """``count`` publishes, each awaited; {seq: payload} from the replies."""
    confirmed: dict[int, Any] = {}
    for n in range(count):
        payload = {"from": tag, "n": n}
        reply = await client.request(message_type="publish", topic=topic, payload=payload)
        assert reply.get("ok") is True, reply
        confirmed[reply["payload"]["seq"]] = payload
    return confirmed


async def test_publishes_from_every_node_reach_every_subscriber_once_in_order(
    redis_server: RedisServer, keys: Keys
) -> None:
    per_node = 12
    async with (
        cluster(redis_server, keys, NODES) as nodes,
        anyio.create_task_group() as tg,
        clients(tg) as connect,
    ):
        subscribers = [
            await connect(n, nodes[n], keys.token(f"sub-{n}-{i}")) for n in NODES for i in range(2)
        ]
        for s in subscribers:
            await s.subscribe("t")
        publishers = [await connect(n, nodes[n], keys.token(f"pub-{n}")) for n in NODES]
        confirmed: dict[int, Any] = {}

        async def run(publisher: Client) -> None:
            confirmed.update(await publish_series(publisher, "t", per_node, publisher.node))

        async with anyio.create_task_group() as publishing:
            for p in publishers:
                publishing.start_soon(run, p)
        total = per_node * len(NODES)
        assert sorted(confirmed) == list(range(1, total + 1))  # one numbering for all nodes
        await wait_until(
            lambda: all(len(s.messages("t")) >= total for s in subscribers),
            30,
            "every subscriber got every publication",
        )
        await anyio.sleep(0.5)  # room for a duplicate to show up
        expected = [confirmed[seq] for seq in range(1, total + 1)]
        for s in subscribers:
            got = s.messages("t")
            assert [m["seq"] for m in got] == list(range(1, total + 1)), s.node
            assert payload_order(got) == expected, s.node
        for p in publishers:
            assert p.messages("t") == []  # not subscribed: nothing


async def test_presence_is_the_union_of_the_nodes(redis_server: RedisServer, keys: Keys) -> None:
    async with (
        cluster(redis_server, keys, NODES, "--demo") as nodes,
        anyio.create_task_group() as tg,
        clients(tg) as connect,
    ):
        members: list[Client] = []
        for n in NODES:
            client = await connect(n, nodes[n], keys.token(f"user-{n}"))
            reply = await client.subscribe("demo.chat")
            members.append(client)
            present = reply["payload"]["present"]
            assert [p["conn_id"] for p in present] == [m.conn_id for m in members], n
            assert [p["principal"] for p in present] == [m.principal for m in members]
        assert len({m.conn_id for m in members}) == len(NODES)  # distinct across nodes

        def joins(client: Client) -> list[str]:
            return [
                e["payload"]["conn_id"]
                for e in client.of_type("presence")
                if e["payload"]["event"] == "join"
            ]

        first = members[0]
        await wait_until(
            lambda: joins(first) == [m.conn_id for m in members], 10, "joins from other nodes"
        )
        leaving = members[1]
        await leaving.ws.close()

        def left(client: Client) -> list[str]:
            return [
                e["payload"]["conn_id"]
                for e in client.of_type("presence")
                if e["payload"]["event"] == "leave"
            ]

        for m in (members[0], members[2]):
            await wait_until(lambda m=m: left(m) == [leaving.conn_id], 10, f"leave on {m.node}")
        late = await connect("c", nodes["c"], keys.token("late"))
        present = (await late.subscribe("demo.chat"))["payload"]["present"]
        assert [p["conn_id"] for p in present] == [
            members[0].conn_id,
            members[2].conn_id,
            late.conn_id,
        ]


async def test_server_api_reaches_every_node(redis_server: RedisServer, keys: Keys) -> None:
    api = HubServer(
        AccessPolicy(tokens=keys.signer, clock=time.time),
        broker=RedisBroker(redis_server.url, node="api"),
        default_topic=TopicPolicy(publish="all", subscribe="all"),
    )
    async with (
        cluster(redis_server, keys, NODES) as nodes,
        anyio.create_task_group() as tg,
        clients(tg) as connect,
    ):
        await tg.start(api.serve)
        tabs = [await connect(n, nodes[n], keys.token("alice")) for n in NODES]
        other = await connect("a", nodes["a"], keys.token("bob"))
        for c in (*tabs, other):
            await c.subscribe("news")

        confirmed = {}
        for n in range(5):
            seq, _epoch = await api.publish_async("news", {"api": n})
            confirmed[seq] = {"api": n}
        assert sorted(confirmed) == [1, 2, 3, 4, 5]
        assert api.send_to_principal("alice", "note", {"to": "alice"}) == 0  # none of hers here
        await wait_until(
            lambda: (
                all(c.of_type("note") for c in tabs)
                and all(len(c.messages("news")) >= 5 for c in (*tabs, other))
            ),
            20,
            "server-side publish and send_to_principal",
        )
        await anyio.sleep(0.5)
        for c in (*tabs, other):
            got = c.messages("news")
            assert [m["seq"] for m in got] == [1, 2, 3, 4, 5], c.node
            assert payload_order(got) == [confirmed[s] for s in range(1, 6)]
        for c in tabs:
            assert [e["payload"] for e in c.of_type("note")] == [{"to": "alice"}], c.node
        assert other.of_type("note") == []

        everyone = (*tabs, other)
        assert api.broadcast("announce", {"all": True}) == 0  # nobody on the api node
        assert api.send_to(tabs[1].conn_id, "direct", {"to": "b"}) == 0  # it is on node b
        await wait_until(
            lambda: all(c.of_type("announce") for c in everyone) and tabs[1].of_type("direct"),
            20,
            "broadcast and send_to across nodes",
        )
        assert api.disconnect(tabs[2].conn_id, 4000, "bye") is False  # it is on node c
        await wait_until(lambda: tabs[2].closed, 20, "disconnect across nodes")
        assert (tabs[2].ws.close_code, tabs[2].ws.close_reason) == (4000, "bye")
        await anyio.sleep(0.5)
        for c in everyone:
            assert [e["payload"] for e in c.of_type("announce")] == [{"all": True}], c.node
            assert len(c.of_type("direct")) == (c is tabs[1])
        assert [c.closed for c in everyone] == [False, False, True, False]
        api.shutdown()


async def test_a_node_killed_mid_stream(redis_server: RedisServer, keys: Keys) -> None:
    count, kill_at = 60, 20
    async with (
        cluster(redis_server, keys, NODES, "--demo", "--presence-ttl", str(PRESENCE_TTL)) as nodes,
        anyio.create_task_group() as tg,
        clients(tg) as connect,
    ):
        subscribers = {n: await connect(n, nodes[n], keys.token(f"sub-{n}")) for n in NODES}
        for s in subscribers.values():
            await s.subscribe("t")
            await s.subscribe("demo.chat")
        publisher = await connect("a", nodes["a"], keys.token("pub"))
        confirmed: dict[int, Any] = {}
        victim = subscribers["c"]
        killed_at = 0.0
        for n in range(count):
            reply = await publisher.request(message_type="publish", topic="t", payload=n)
            assert reply.get("ok") is True, reply
            confirmed[reply["payload"]["seq"]] = n
            if n == kill_at:
                kill_node(nodes["c"])
                killed_at = time.monotonic()
            await anyio.sleep(0.02)
        survivors = [subscribers["a"], subscribers["b"]]
        await wait_until(
            lambda: all(len(s.messages("t")) >= count for s in survivors), 20, "the stream"
        )
        for s in survivors:
            got = s.messages("t")
            assert [m["seq"] for m in got] == list(range(1, count + 1)), s.node
            assert payload_order(got) == list(range(count))
        assert victim.closed

        def victim_left(client: Client) -> bool:
            return any(
                e["payload"] == {**e["payload"], "event": "leave", "conn_id": victim.conn_id}
                for e in client.of_type("presence")
            )

        for s in survivors:
            await wait_until(
                lambda s=s: victim_left(s),
                max(0.0, PRESENCE_BOUND - (time.monotonic() - killed_at)),
                f"leave of the killed node's member seen on {s.node}",
            )
        late = await connect("b", nodes["b"], keys.token("late"))
        present = (await late.subscribe("demo.chat"))["payload"]["present"]
        assert sorted(p["conn_id"] for p in present) == sorted(
            [subscribers["a"].conn_id, subscribers["b"].conn_id, late.conn_id]
        )
        after = await late.request(message_type="publish", topic="t", payload="after")
        assert after.get("ok") is True, after  # the survivors still serve
        await wait_until(
            lambda: all(s.messages("t")[-1]["payload"] == "after" for s in survivors),
            10,
            "a publication after the kill",
        )


def stream_of(client: Client) -> tuple[dict[tuple[str, int], Any], set[str], str | None]:
    """What ``client`` holds of topic ``t``: {(epoch, seq): payload}, the epochs it was
    told it cannot complete (a ``reset`` away from them, or ``recovered: false``),
    and the epoch it is in now. Checks on the way that the live stream never
    repeats a message nor goes back in ``seq`` within an epoch, and that an epoch
    never changes without a ``reset``. Markers the test inserts: ``subscribed``
    (a subscribe reply's position), ``recovering`` (replayed messages follow,
    which may repeat what the client has: it de-duplicates by seq)."""
    epoch: str | None = None
    have: dict[tuple[str, int], Any] = {}
    told: set[str] = set()
    last_seq = 0
    replaying = False
    for e in client.received:
        kind = e["message_type"]
        if kind == "subscribed":
            epoch, last_seq = e["payload"]["epoch"], e["payload"]["seq"]
        elif kind == "recovering":  # inserted before the request: replays follow its reply
            replaying = True
            if e["recovered"] is False:
                told.add(e["epoch"])
        elif kind == "reset" and e.get("topic") == "t":
            assert epoch is not None
            told.add(epoch)
            epoch, last_seq = e["payload"]["epoch"], e["payload"]["seq"]
        elif kind == "message" and e.get("topic") == "t":
            assert epoch is not None, "a message before the client knew its epoch"
            key = (epoch, e["seq"])
            if not replaying:
                assert e["seq"] > last_seq, f"{client.node}: seq {e['seq']} after {last_seq}"
                last_seq = e["seq"]
            if key in have:
                assert replaying, f"{client.node}: {key} twice"
                assert have[key] == e["payload"]
            have[key] = e["payload"]
    return have, told, epoch


async def test_redis_restarted_mid_stream(redis_server: RedisServer, keys: Keys) -> None:
    """Publishes alternate between nodes a and b; after 15 confirmed, Redis is
    killed and started empty on the same port; publishing goes on (refusals
    are ``unavailable``) until 15 more are confirmed. Then each subscriber,
    like a client that saw a gap, asks for what it misses of the new epoch."""
    before, after = 15, 15
    async with (
        cluster(redis_server, keys, ("a", "b"), "--history", "1000") as nodes,
        anyio.create_task_group() as tg,
        clients(tg) as connect,
    ):
        subscribers = [await connect(n, nodes[n], keys.token(f"sub-{n}")) for n in ("a", "b")]
        for s in subscribers:
            reply = await s.subscribe("t")
            s.received.append({"message_type": "subscribed", "payload": reply["payload"]})
        publishers = {n: await connect(n, nodes[n], keys.token(f"pub-{n}")) for n in ("a", "b")}
        confirmed: dict[tuple[str, int], Any] = {}
        order: list[tuple[str, int]] = []
        n = 0
        with anyio.fail_after(60):
            while len(confirmed) < before + after:
                node = "ab"[n % 2]
                reply = await publishers[node].request(message_type="publish", topic="t", payload=n)
                if reply.get("ok") is True:
                    key = (reply["payload"]["epoch"], reply["payload"]["seq"])
                    assert key not in confirmed
                    confirmed[key] = n
                    order.append(key)
                else:
                    assert reply["error"]["code"] == "unavailable", reply
                    await anyio.sleep(0.05)
                n += 1
                if len(confirmed) == before and redis_server.starts == 1:
                    redis_server.restart()  # kill -9, then an empty Redis on the same port
        first, current = order[0][0], order[-1][0]
        assert first != current  # the empty Redis began a new stream
        assert [q for e, q in order if e == first] == list(range(1, before + 1))
        assert [q for e, q in order if e == current] == list(range(1, after + 1))
        last = order[-1][1]
        for s in subscribers:
            await wait_until(
                lambda s=s: stream_of(s)[2] == current and (current, last) in stream_of(s)[0],
                15,
                f"{s.node} in the new epoch with the last publication",
            )
            have, _told, _ = stream_of(s)
            missing = [q for q in range(1, last + 1) if (current, q) not in have]
            if missing:
                since = {"seq": missing[0] - 1, "epoch": current}
                marker = {"message_type": "recovering", "recovered": None, "epoch": current}
                s.received.append(marker)
                reply = await s.request(
                    message_type="subscribe", topic="t", payload={"since": since}
                )
                marker["recovered"] = reply["payload"]["recovered"]
                assert marker["recovered"] in (True, False), reply
                if marker["recovered"]:
                    await wait_until(
                        lambda s=s, missing=missing: all(
                            (current, q) in stream_of(s)[0] for q in missing
                        ),
                        10,
                        f"{s.node}: the replay",
                    )
        for s in subscribers:
            have, told, _ = stream_of(s)
            for key, payload in confirmed.items():
                if key[0] not in told:
                    assert have.get(key) == payload, (s.node, key, payload)


async def test_a_node_restarted_at_once_under_its_name(
    redis_server: RedisServer, keys: Keys
) -> None:
    """``kill -9`` a node and start it again at once with the same ``--node``
    (before its deadline passes): its killed members leave (every other node
    is told) within the bound, and presence shows only live members after."""
    flags = ("--demo", "--presence-ttl", str(PRESENCE_TTL))
    async with (
        cluster(redis_server, keys, ("a", "b"), *flags) as nodes,
        anyio.create_task_group() as tg,
        clients(tg) as connect,
    ):
        watcher = await connect("a", nodes["a"], keys.token("watcher"))
        await watcher.subscribe("demo.chat")
        victim = await connect("b", nodes["b"], keys.token("victim"))
        await victim.subscribe("demo.chat")
        kill_node(nodes["b"])
        killed_at = time.monotonic()
        again = ("--redis", redis_server.url, "--node", "b", "--signing-key-file", str(keys.path))
        async with serving(*again, *flags) as restarted:

            def victim_left() -> bool:
                return any(
                    e["payload"] == {**e["payload"], "event": "leave", "conn_id": victim.conn_id}
                    for e in watcher.of_type("presence")
                )

            await wait_until(
                victim_left,
                max(0.0, PRESENCE_BOUND - (time.monotonic() - killed_at)),
                "leave of the killed run's member seen on a",
            )
            late = await connect("b", restarted, keys.token("late"))
            live = sorted([watcher.conn_id, late.conn_id])
            present = (await late.subscribe("demo.chat"))["payload"]["present"]
            assert sorted(p["conn_id"] for p in present) == live
            await anyio.sleep(PRESENCE_BOUND)  # past the old run's deadline and sweeps
            other = await connect("a", nodes["a"], keys.token("other"))
            present = (await other.subscribe("demo.chat"))["payload"]["present"]
            assert sorted(p["conn_id"] for p in present) == sorted([*live, other.conn_id])
