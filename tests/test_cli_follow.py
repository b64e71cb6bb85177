"""``wshub connect --subscribe / --since``: topics followed by the hub client, as a
subprocess against ``wshub serve`` (asyncio; the client inside is the library's)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from tests.test_cli import Served, run, serving, wshub
from wshub.adapters.hub_client import HubClient

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Lines:
    """A text stream read line by line."""

    def __init__(self, stream: Any) -> None:
        self._stream = TextReceiveStream(stream)
        self._buffer = ""

    async def next(self) -> str:
        with anyio.fail_after(20):
            while "\n" not in self._buffer:
                self._buffer += await self._stream.receive()
        line, self._buffer = self._buffer.split("\n", 1)
        return line


@asynccontextmanager
async def following(served: Served, *args: str) -> AsyncIterator[tuple[Process, Lines, Lines]]:
    """``wshub connect`` following topics, once it said it is connected."""
    assert served.token
    command = wshub("connect", served.url, f"--token={served.token}", *args)  # may start with -
    async with await anyio.open_process(command, stdin=subprocess.PIPE) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        out, err = Lines(process.stdout), Lines(process.stderr)
        try:
            assert (await err.next()).startswith("wshub: connected as ")
            yield process, out, err
        finally:
            if process.returncode is None:
                process.kill()


async def test_follows_topics_answers_requests_and_stops_after_count() -> None:
    async with (
        serving() as served,
        following(served, "--subscribe", "a", "--count", "3") as (
            process,
            out,
            _,
        ),
    ):
        assert process.stdin is not None
        await process.stdin.send(b'{"message_type": "echo", "payload": [1]}\n')
        await process.stdin.send(b'{"message_type": "nope"}\n')
        assert json.loads(await out.next()) == {"reply": [1]}
        error = json.loads(await out.next())["error"]
        assert error["code"] == "unknown_command"
        async with HubClient(served.url, token=served.token) as client:
            for n in range(3):
                await client.publish("a", {"n": n})
        lines = [json.loads(await out.next()) for _ in range(3)]
        assert [(m["topic"], m["seq"], m["payload"]) for m in lines] == [
            ("a", 1, {"n": 0}),
            ("a", 2, {"n": 1}),
            ("a", 3, {"n": 2}),
        ]
        assert set(lines[0]) == {"topic", "seq", "epoch", "message_type", "payload", "timestamp"}
        with anyio.fail_after(20):
            assert await process.wait() == 0


async def test_since_resumes_from_history_after_the_printed_position() -> None:
    async with serving("--history", "100") as served:
        assert served.token
        async with HubClient(served.url, token=served.token) as client:
            for n in range(1, 4):
                await client.publish("a", n)  # nobody subscribed: kept by --history
            kept = await client.history("a")
        assert kept.epoch is not None
        result = await run(
            "connect",
            served.url,
            f"--token={served.token}",
            "--since",
            "a",
            "1",
            kept.epoch,
            "--count",
            "2",
        )
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
        assert [(m["seq"], m["payload"], m["epoch"]) for m in lines] == [
            (2, 2, kept.epoch),
            (3, 3, kept.epoch),
        ]


async def test_a_position_the_server_cannot_resume_is_a_gap_line() -> None:
    async with serving() as served, following(served, "--since", "b", "5", "gone") as (_, out, _):
        gap = json.loads(await out.next())["gap"]
        assert (gap["topic"], gap["last_seq"], gap["last_epoch"]) == ("b", 5, "gone")
        assert gap["reason"] == "epoch_changed"
        assert gap["epoch"] != "gone"


async def test_refusals_and_bad_arguments_exit_1_with_one_line() -> None:
    async with serving() as served:
        result = await run("connect", served.url, "--token", "wrong", "--subscribe", "a")
        assert result.returncode == 1
        assert (
            result.stderr.decode().strip()
            == "wshub: refused by the server: 401 invalid bearer token"
        )
        assert served.token
        for since in (["a", "x", "e"], ["a", "-1", "e"], ["a", "1", ""]):
            result = await run("connect", served.url, f"--token={served.token}", "--since", *since)
            assert result.returncode == 1
            assert result.stderr.decode().startswith("wshub: --since")
