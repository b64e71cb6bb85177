"""The ``wshub`` command as a subprocess, talked to by independent clients.

The clients are the ``websockets`` library's (asyncio only) and the CLI's
own ``publish`` / ``connect`` subcommands; the server is stopped by its PID.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from conftest import RawClient
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str
    token: str | None
    stderr: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def wshub(*args: str) -> list[str]:
    return [sys.executable, "-m", "wshub", *args]


@asynccontextmanager
async def serving(*args: str, umask: int = -1) -> AsyncIterator[Served]:
    """``wshub serve --port 0 *args`` until it listens (``umask=-1``: inherited)."""
    process = subprocess.Popen(
        wshub("serve", "--port", "0", *args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        umask=umask,
    )
    assert process.stdout is not None
    try:
        token = None
        with anyio.fail_after(20):
            while True:
                line = await anyio.to_thread.run_sync(process.stdout.readline)
                assert line, f"server exited early: {process.wait()} {process.stderr}"
                if line.startswith("token: "):
                    token = line.split()[1]
                elif line.startswith("listening on "):
                    url = line.split()[2]
                    break
        served = Served(process, url, token)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # by its PID
            try:
                await anyio.to_thread.run_sync(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stdout.close()
        assert process.stderr is not None
        stderr = process.stderr.read()
        process.stderr.close()
    served.stderr = stderr


async def recv(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(10):
        value = json.loads(await ws.recv())
    assert isinstance(value, dict)
    return value


async def request(ws: ClientConnection, **envelope: Any) -> dict[str, Any]:
    await ws.send(json.dumps(envelope))
    reply = await recv(ws)
    assert (reply["message_type"], reply.get("id")) == ("reply", envelope["id"]), reply
    return reply


async def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(30):
        return await anyio.run_process(wshub(*args), input=stdin, check=False)


async def test_hub_mode_commands_topics_publish_and_connect() -> None:
    async with serving("--metrics") as served:
        assert served.token
        assert served.url.startswith("ws://127.0.0.1:")
        async with ws_connect(
            served.url, additional_headers=served.headers, subprotocols=["wshub.v1"]
        ) as ws:
            assert ws.subprotocol == "wshub.v1"
            welcome = await recv(ws)
            assert welcome["message_type"] == "welcome"
            conn_id = welcome["payload"]["conn_id"]

            assert (await request(ws, message_type="echo", id=1, payload={"a": [1]}))[
                "payload"
            ] == {"a": [1]}
            now = (await request(ws, message_type="time", id=2))["payload"]
            assert isinstance(now, int)
            assert abs(now - time.time() * 1000) < 60_000
            who = (await request(ws, message_type="whoami", id="w"))["payload"]
            assert who == {"conn_id": conn_id, "principal": welcome["payload"]["principal"]}
            unknown = await request(ws, message_type="nope", id=3)
            assert unknown["error"]["code"] == "unknown_command"

            # any topic, publish allowed to every client (the CLI hub's policy)
            sub = await request(ws, message_type="subscribe", topic="room", id=4)
            assert sub["payload"] == {"topic": "room", "seq": 0, "epoch": sub["payload"]["epoch"]}
            await ws.send(json.dumps({"message_type": "publish", "topic": "room", "payload": 1}))
            own = await recv(ws)
            assert (own["topic"], own["seq"], own["payload"]) == ("room", 1, 1)

            # ``wshub publish`` from another process
            result = await run(
                "publish", served.url, "room", '{"from": "cli"}', "--token", served.token
            )
            assert result.returncode == 0, result.stderr
            reply = json.loads(result.stdout)
            assert reply["ok"] is True
            assert reply["payload"] == {"topic": "room", "seq": 2, "delivered": 1}
            message = await recv(ws)
            assert (message["seq"], message["payload"]) == (2, {"from": "cli"})

            # ``wshub connect``: stdin envelopes in, every message out
            lines = [
                {"message_type": "publish", "topic": "room", "payload": "via connect", "id": 1},
                {"message_type": "whoami", "id": 2},
            ]
            stdin = "".join(json.dumps(line) + "\n" for line in lines).encode()
            result = await run("connect", served.url, "--token", served.token, stdin=stdin)
            assert result.returncode == 0, result.stderr
            printed = [json.loads(line) for line in result.stdout.decode().splitlines()]
            assert [m["message_type"] for m in printed] == ["welcome", "reply", "reply"]
            assert printed[1]["payload"]["seq"] == 3
            assert printed[2]["payload"]["conn_id"] == printed[0]["payload"]["conn_id"]
            assert (await recv(ws))["payload"] == "via connect"

            # metrics, enabled by --metrics
            http = served.url.replace("ws://", "http://") + "/metrics"
            body = await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(http).read())
            assert b"\nwshub_connections 1\n" in body

            # refused without the token
            result = await run("publish", served.url, "room", "1", "--token", "wrong")
            assert result.returncode == 1
            assert result.stderr.decode().strip() == (
                "wshub: server rejected the WebSocket handshake with HTTP 401: invalid bearer "
                "token (pass the hub's token with --token or --token-file)"
            )

            # stopping the server (SIGTERM) closes us with 1001 and exits 0
            served.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1001
            assert await anyio.to_thread.run_sync(served.process.wait, 15) == 0


async def test_echo_mode_without_auth_echoes_text_and_binary() -> None:
    async with serving("--echo", "--no-auth") as served:
        assert served.token is None
        async with ws_connect(served.url) as ws:
            for message in ["hello", "ünï", b"\x00\x01\xff", b""]:
                await ws.send(message)
                with anyio.fail_after(10):
                    assert await ws.recv() == message
    assert "WARNING: --no-auth" in served.stderr


async def test_serve_ping_interval_sets_the_keepalive() -> None:
    """--ping-interval S: a ping every S seconds, and no pong within S closes 1011."""
    async with serving("--echo", "--no-auth", "--ping-interval", "0.3") as served:
        port = int(served.url.rsplit(":", 1)[1])
        async with RawClient.open(port) as raw:
            await raw.handshake()
            with anyio.fail_after(10):
                fin, _rsv1, opcode, payload = await raw.recv_frame()
                assert (fin, opcode, len(payload)) == (True, 0x9, 4)
                code, reason, _ = await raw.recv_close()  # we never answer
            assert (code, reason) == (1011, "keepalive ping timeout")


async def test_hub_requires_a_token_by_default() -> None:
    async with serving("--token", "given") as served:
        assert served.token is None  # given on the command line: not printed
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(served.url):
                pass
        assert refused.value.response.status_code == 401
        async with ws_connect(
            served.url, additional_headers={"Authorization": "Bearer given"}
        ) as ws:
            assert (await recv(ws))["payload"]["principal"] == "token-0"


async def test_serve_auth_message_and_close_refusals_with_a_browser_like_client() -> None:
    """--auth-message: a client that cannot set headers authenticates by its
    first message; --refusal close: a wrong token is told apart (4401)."""
    async with serving("--token", "given", "--auth-message", "--refusal", "close") as served:
        async with ws_connect(served.url, subprotocols=[Subprotocol("wshub.v1")]) as ws:
            await ws.send(
                json.dumps({"message_type": "auth", "id": 1, "payload": {"token": "given"}})
            )
            reply = await recv(ws)
            assert (reply["id"], reply["ok"], reply["payload"]["principal"]) == (1, True, "token-0")
            assert (await recv(ws))["message_type"] == "welcome"
        async with ws_connect(served.url) as ws:
            await ws.send(json.dumps({"message_type": "auth", "payload": {"token": "nope"}}))
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                1008,
                "invalid bearer token",
            )
        async with ws_connect(
            served.url, additional_headers={"Authorization": "Bearer nope"}
        ) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                4401,
                "invalid bearer token",
            )


async def test_serve_lets_many_clients_share_its_token() -> None:
    """The CLI's token is a shared secret, not a user: no per-principal bound,
    and loopback clients are not bounded per address (only the total is)."""
    async with serving("--token", "shared") as served:
        headers = {"Authorization": "Bearer shared"}
        clients = []
        try:
            for _ in range(250):  # past the library's 100 per principal and 200 per host
                ws = await ws_connect(served.url, additional_headers=headers)
                clients.append(ws)
                assert (await recv(ws))["message_type"] == "welcome"
        finally:
            for ws in clients:
                await ws.close()


def test_serve_raises_its_descriptor_limit() -> None:
    import resource

    from wshub.cli import raise_descriptor_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        assert raise_descriptor_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_tune_gc_freezes_startup_objects_and_spaces_young_collections() -> None:
    import gc

    from wshub.cli import GC_GEN0_THRESHOLD, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 1000  # the imported modules at least
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
