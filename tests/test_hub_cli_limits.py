"""``wshub serve --message-rate``: the per-connection message rate, from the CLI."""

from __future__ import annotations

import json
import sys

import anyio
import pytest
from test_cli import recv, serving
from websockets.asyncio.client import connect as ws_connect

pytestmark = pytest.mark.anyio

BURST = 10


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def publish_burst(*args: str) -> tuple[list[int], list[str]]:
    """Send ``BURST`` publishes at once: the ids answered with a reply, and
    the codes of the errors (a refused message is not parsed, so its error
    carries no id)."""
    async with (
        serving(*args) as served,
        ws_connect(served.url, additional_headers=served.headers, subprotocols=["wshub.v1"]) as ws,
    ):
        await recv(ws)  # welcome
        for n in range(BURST):
            envelope = {"message_type": "publish", "topic": "t", "payload": n, "id": n}
            await ws.send(json.dumps(envelope))
        served_ids: list[int] = []
        errors: list[str] = []
        for _ in range(BURST):
            answer = await recv(ws)
            if answer["message_type"] == "reply":
                served_ids.append(answer["id"])
            else:
                errors.append(answer["error"]["code"])
        return served_ids, errors


async def test_message_rate_flag_sets_the_rate_and_a_burst_of_twice_as_many() -> None:
    # 2 per second: a bucket of 4, so a burst of 10 sent at once runs out.
    served_ids, errors = await publish_burst("--message-rate", "2")
    assert served_ids[:4] == [0, 1, 2, 3]
    assert len(served_ids) <= 5  # at most one more token refilled (one every 0.5 s)
    assert errors
    assert set(errors) == {"rate_limited"}


async def test_default_message_rate_serves_the_same_burst() -> None:
    assert await publish_burst() == (list(range(BURST)), [])


async def test_message_rate_flag_refuses_a_rate_that_is_not_positive() -> None:
    for bad in ("0", "-1", "inf", "fast"):
        with anyio.fail_after(30):
            result = await anyio.run_process(
                [sys.executable, "-m", "wshub", "serve", "--message-rate", bad], check=False
            )
        assert result.returncode == 2, bad
        assert b"--message-rate" in result.stderr
