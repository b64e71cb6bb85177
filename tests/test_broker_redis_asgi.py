"""The Redis broker behind an ASGI front door: a HubApp node and a native node share topics."""

from __future__ import annotations

import pytest
from hub_fronts import ASGI_FRONTS, QUIET_LEGACY, Front, serve
from redis_support import RedisServer
from test_broker_redis import TOKENS, Client, client, make_node, running

from wshub.adapters import connect
from wshub.adapters.broker_redis import RedisBroker
from wshub.core.auth import SUBPROTOCOL, AccessPolicy
from wshub.core.topics import TopicPolicy

pytestmark = [pytest.mark.anyio, *QUIET_LEGACY]

FRONTS = [f for f in ASGI_FRONTS if f.id in ("uvicorn-websockets-asyncio", "hypercorn-trio")]


@pytest.fixture(params=FRONTS, ids=lambda f: f.id)
def front(request: pytest.FixtureRequest) -> Front:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(front: Front) -> str:
    return front.backend


async def test_an_asgi_node_and_a_native_node_share_topics(
    redis_server: RedisServer, front: Front
) -> None:
    native = make_node(redis_server.url, "native")
    broker = RedisBroker(redis_server.url, node="asgi", presence_ttl=1.0, heartbeat=0.25)
    async with (
        running(native),
        serve(
            front,
            AccessPolicy(tokens=TOKENS),
            default_topic=TopicPolicy(publish="all"),
            metrics=True,
            broker=broker,
        ) as app,
    ):
        async with connect(app.url, token="tb", subprotocols=(SUBPROTOCOL,)) as ws:
            bob = Client(ws)
            await bob.recv()
            await bob.subscribe("t")
            seq, _ = await native.publish_async("t", "to asgi")
            message = await bob.recv("message")
            assert (message["seq"], message["payload"]) == (seq, "to asgi")
            async with client(native) as alice:
                await alice.subscribe("t")
                await bob.send(message_type="publish", topic="t", payload="from asgi", id=1)
                ack = await bob.recv("reply")
                assert ack["payload"]["seq"] == seq + 1
                assert (await alice.recv("message"))["payload"] == "from asgi"
        assert 'wshub_broker_up{node="asgi"} 1' in broker.metrics_text()
