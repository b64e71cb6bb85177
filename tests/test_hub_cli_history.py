"""``wshub serve --history N --history-ttl SECONDS``: a reconnecting client recovers."""

from __future__ import annotations

import sys
import urllib.request

import anyio
import pytest
from test_cli import recv, request, serving
from websockets.asyncio.client import connect as ws_connect

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_serve_history_keeps_messages_for_reconnecting_clients() -> None:
    async with serving("--history", "3", "--history-ttl", "60", "--metrics") as served:
        async with ws_connect(
            served.url, additional_headers=served.headers, subprotocols=["wshub.v1"]
        ) as ws:
            await recv(ws)  # welcome
            for n in range(4):  # nobody is subscribed: kept all the same
                reply = await request(ws, message_type="publish", topic="t", payload=n, id=n)
                assert reply["payload"]["seq"] == n + 1
            page = (await request(ws, message_type="history", topic="t", id="h"))["payload"]
            assert [m["payload"] for m in page["messages"]] == [1, 2, 3]  # the last 3
            since = {"seq": 2, "epoch": page["epoch"]}
            reply = await request(
                ws, message_type="subscribe", topic="t", id="s", payload={"since": since}
            )
            assert reply["payload"]["recovered"] is True
            assert [(await recv(ws))["seq"] for _ in range(2)] == [3, 4]
        http = served.url.replace("ws://", "http://") + "/metrics"
        text = await anyio.to_thread.run_sync(
            lambda: urllib.request.urlopen(http, timeout=10).read().decode()
        )
        assert "wshub_history_entries 3\n" in text


async def test_serve_refuses_a_bad_history_flag() -> None:
    with anyio.fail_after(30):
        result = await anyio.run_process(
            [sys.executable, "-m", "wshub", "serve", "--history", "-1"], check=False
        )
    assert result.returncode != 0
    assert b"--history" in result.stderr
