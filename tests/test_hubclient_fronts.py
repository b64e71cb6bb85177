"""``HubClient`` behind every front door of the hub (``HubServer`` on asyncio and
trio; ``HubApp`` under uvicorn and Hypercorn): calls and codes, a refusal that
is not retried, and a disconnection recovered from history."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from hub_fronts import QUIET_LEGACY, Front, front_params, serve

from tests.hubclient_helpers import FAST, TOKEN, TOKENS, States
from wshub.adapters import CommandContext
from wshub.adapters.hub_client import HubClient
from wshub.adapters.hub_client_types import CallError, ConnectionState, Gap, Refused
from wshub.core import HandshakeRequest, Limits
from wshub.core.auth import AccessPolicy
from wshub.core.hub_config import HubConfig

pytestmark = [pytest.mark.anyio, *QUIET_LEGACY]


@pytest.fixture(params=front_params())
def front(request: pytest.FixtureRequest) -> Front:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(front: Front) -> str:
    return front.backend


class Counting(AccessPolicy):
    """The test tokens, counting the handshakes decided."""

    handshakes = 0

    def authenticate(self, request: HandshakeRequest) -> Any:
        self.handshakes += 1
        return super().authenticate(request)


async def test_calls_refusal_and_recovery_behind_every_front(front: Front) -> None:
    with anyio.fail_after(30):
        auth = Counting(tokens=TOKENS)
        async with serve(front, auth) as hub:
            hub.configure_topic("t", history_size=1000, history_ttl=math.inf)

            @hub.command("add")
            async def add(ctx: CommandContext, payload: list[int]) -> int:
                return sum(payload)

            with pytest.raises(Refused):
                async with HubClient(hub.url, token="wrong"):
                    pass
            assert auth.handshakes == 1

            states = States()
            gaps: list[Gap] = []
            async with (
                HubClient(
                    hub.url, token=TOKEN, backoff=FAST, on_state=states, on_gap=gaps.append
                ) as client,
                client.subscribe("t") as sub,
            ):
                assert await client.call("add", [1, 2]) == 3
                with pytest.raises(CallError) as caught:
                    await client.call("nope")
                assert caught.value.code == "unknown_command"
                hub.publish("t", 1)
                assert (await sub.__anext__()).seq == 1
                assert hub.disconnect(str(client.conn_id), 1012, "restarting")
                for seq in range(2, 102):  # while the client is away
                    hub.publish("t", seq)
                got = [(await sub.__anext__()).seq for _ in range(100)]
                assert got == list(range(2, 102))
                assert gaps == []
                assert states.of(ConnectionState.DISCONNECTED)[0].code == 1012
                assert client.principal == "alice"


async def test_drops_are_filled_in_from_history_behind_every_front(front: Front) -> None:
    """A burst in one step of the loop overflows the client's outbox on a
    ``drop`` topic; the client reads what was sent, then the ``dropped``
    notice makes it fetch the rest from history in pages that fit its outbox
    (a few messages each here): every message once, in order, no gap."""
    with anyio.fail_after(60):
        async with serve(
            front,
            AccessPolicy(tokens=TOKENS),
            limits=Limits(max_outbox_size=8 * 1024),
            config=HubConfig(history_topic_bytes=32 << 20),
        ) as hub:
            hub.configure_topic(
                "t", slow_consumer="drop", history_size=10_000, history_ttl=math.inf
            )
            gaps: list[Gap] = []
            async with (
                HubClient(hub.url, token=TOKEN, on_gap=gaps.append) as client,
                client.subscribe("t") as sub,
            ):
                count = 4000  # 8 MB: more than loopback's socket buffers take
                for seq in range(1, count + 1):
                    hub.publish("t", {"n": seq, "pad": "x" * 2000}, droppable=True)
                dropped = hub.stats().drops
                assert dropped > 0
                got = [await sub.__anext__() for _ in range(count - dropped)]
                hub.publish("t", {"n": count + 1, "pad": ""}, droppable=True)  # a `dropped`
                got += [await sub.__anext__() for _ in range(dropped + 1)]
                assert [m.seq for m in got] == list(range(1, count + 2))
                assert [m.payload["n"] for m in got] == list(range(1, count + 2))
                assert gaps == []
