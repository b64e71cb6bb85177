"""``BlockingHubClient`` from plain threads (no event loop in the test), against a
``ThreadedHub``; the client's loop runs on asyncio or trio in its own thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.hubclient_helpers import TOKEN, TOKENS
from wshub.adapters import CommandContext, HubServer, ThreadedHub
from wshub.adapters.hub_client_sync import BlockingHubClient
from wshub.adapters.hub_client_types import CallError, Message, Refused
from wshub.core.auth import AccessPolicy


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_server() -> HubServer:
    server = HubServer(AccessPolicy(tokens=TOKENS))
    server.configure_topic("ticks", publish="subscribers", history_size=10)

    @server.command("add")
    async def add(ctx: CommandContext, payload: list[int]) -> int:
        return sum(payload)

    return server


def test_calls_subscriptions_and_errors_from_threads(backend: str) -> None:
    with (
        ThreadedHub.start(make_server) as hub,
        BlockingHubClient.connect(hub.url, token=TOKEN, backend=backend) as client,
    ):
        assert client.call("add", [1, 2]) == 3
        with pytest.raises(CallError) as caught:
            client.call("nope")
        assert caught.value.code == "unknown_command"

        results: list[Any] = []

        def worker(n: int) -> None:
            results.append(client.call("add", [n, n]))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [2 * n for n in range(8)]

        with client.subscribe("ticks") as sub:
            for n in range(1, 4):
                hub.publish("ticks", n)
            assert client.publish("ticks", 4)["seq"] == 4
            got: list[Message] = []
            for message in sub:
                got.append(message)
                if len(got) == 4:
                    break
            assert [(m.seq, m.payload) for m in got] == [(1, 1), (2, 2), (3, 3), (4, 4)]
            with pytest.raises(TimeoutError):
                sub.get(timeout=0.05)  # nothing more was published
            hub.publish("ticks", 5)
            assert sub.get(timeout=5).payload == 5
        kept = client.history("ticks", limit=2)
        assert (kept.seq, [m.payload for m in kept.messages]) == (5, [4, 5])
        assert client.state.value == "open"


def test_a_refusal_is_raised_in_the_calling_thread(backend: str) -> None:
    with ThreadedHub.start(make_server) as hub:
        with (
            pytest.raises(Refused) as caught,
            BlockingHubClient.connect(hub.url, token="wrong", backend=backend),
        ):
            pass
        assert caught.value.code == 401
