"""``wshub serve --redis URL --node NAME``: two processes on one private Redis."""

from __future__ import annotations

import sys
import urllib.request

import anyio
import pytest
from redis_support import RedisServer
from test_cli import recv, request, serving
from websockets.asyncio.client import connect as ws_connect

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_two_serve_processes_share_topics_and_report_the_broker(
    redis_server: RedisServer,
) -> None:
    flags = ("--redis", redis_server.url, "--metrics")
    async with serving(*flags, "--node", "n1") as one, serving(*flags, "--node", "n2") as two:
        async with (
            ws_connect(one.url, additional_headers=one.headers, subprotocols=["wshub.v1"]) as a,
            ws_connect(two.url, additional_headers=two.headers, subprotocols=["wshub.v1"]) as b,
        ):
            await recv(a)
            await recv(b)
            sub = await request(b, message_type="subscribe", topic="t", id="s")
            epoch = sub["payload"]["epoch"]
            reply = await request(a, message_type="publish", topic="t", payload="hi", id=1)
            assert reply["payload"] == {"topic": "t", "seq": 1, "epoch": epoch}
            message = await recv(b)
            assert (message["seq"], message["payload"]) == (1, "hi")
        http = two.url.replace("ws://", "http://") + "/metrics"
        text = await anyio.to_thread.run_sync(
            lambda: urllib.request.urlopen(http, timeout=10).read().decode()
        )
        assert 'wshub_broker_up{node="n2"} 1\n' in text
        assert 'wshub_broker_received_total{node="n2"} 1\n' in text
        assert 'wshub_broker_channels{node="n2"} 0\n' in text  # b left: no subscriber here


async def test_serve_exits_with_one_line_when_redis_is_unreachable(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    redis_server.stop()
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [sys.executable, "-m", "wshub", "serve", "--port", "0", "--token", "t", "--redis", url],
            check=False,
        )
    assert result.returncode == 1
    assert b"listening on" not in result.stdout
    [line] = result.stderr.decode().splitlines()
    assert line.startswith(f"wshub: redis unavailable at {url}: ")


async def test_node_needs_redis() -> None:
    with anyio.fail_after(30):
        result = await anyio.run_process(
            [sys.executable, "-m", "wshub", "serve", "--node", "x"], check=False
        )
    assert result.returncode != 0
    assert b"--node applies with --redis" in result.stderr
