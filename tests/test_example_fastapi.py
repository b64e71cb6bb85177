"""examples/fastapi_app.py runs as its docstring says: ``uvicorn
examples.fastapi_app:app`` with ``WSHUB_TOKEN`` set, started for real as a
subprocess on port 0, used over HTTP and WebSocket, stopped with SIGINT."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from wshub.adapters import ConnectionClosed, HandshakeRejected, connect

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "fastapi-example-token"
_RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def start(env_token: str | None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "WSHUB_TOKEN"}
    if env_token is not None:
        env["WSHUB_TOKEN"] = env_token
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def read_port(process: subprocess.Popen[str], seen: list[str]) -> int:
    assert process.stderr is not None
    with anyio.fail_after(30):
        while True:
            line = await anyio.to_thread.run_sync(process.stderr.readline)
            seen.append(line)
            assert line, f"uvicorn exited early with {process.wait()}: {''.join(seen)}"
            found = _RUNNING.search(line)
            if found:
                return int(found.group(1))


async def http(
    port: int, method: str, path: str, body: Any = None, token: str | None = None
) -> Any:
    data = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        raw = b""
        try:
            while True:
                raw += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


async def recv(ws: Any) -> dict[str, Any]:
    value = json.loads(await ws.recv())
    assert isinstance(value, dict)
    return value


async def test_the_fastapi_example_serves_http_and_the_hub_on_one_port() -> None:
    process = start(TOKEN)
    log: list[str] = []
    try:
        port = await read_port(process, log)
        with anyio.fail_after(20):
            assert await http(port, "GET", "/health") == (200, {"ok": True, "connections": 0})
            status, _ = await http(port, "POST", "/news", {"headline": "x"}, token="wrong")
            assert status == 401
            with pytest.raises(HandshakeRejected) as refused:
                async with connect(f"ws://127.0.0.1:{port}/ws/", token="wrong"):
                    pass
            assert refused.value.status == 401
            async with connect(f"ws://127.0.0.1:{port}/ws/", token=TOKEN) as ws:
                assert (await recv(ws))["message_type"] == "welcome"
                await ws.send(json.dumps({"message_type": "subscribe", "topic": "news", "id": 1}))
                assert (await recv(ws))["ok"] is True
                await ws.send(json.dumps({"message_type": "whoami", "id": 2}))
                assert (await recv(ws))["payload"]["principal"] == "app-user"
                assert await http(port, "GET", "/health") == (200, {"ok": True, "connections": 1})
                status, result = await http(port, "POST", "/news", {"headline": "hi"}, TOKEN)
                assert (status, result) == (200, {"delivered": 1})
                news = await recv(ws)
                assert (news["topic"], news["payload"]) == (
                    "news",
                    {"headline": "hi", "by": "app-user"},
                )
                status, result = await http(port, "POST", "/notice", {"text": "sync"}, TOKEN)
                assert (status, result) == (200, {"delivered": 1})
                assert (await recv(ws))["payload"] == {"text": "sync", "by": "app-user"}
                process.send_signal(signal.SIGINT)
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.event.code == 1012  # uvicorn's "service restart"
        _, err = await anyio.to_thread.run_sync(lambda: process.communicate(timeout=20))
        assert process.returncode == 0, "".join(log) + err
        assert "Traceback" not in err, err
        assert "Application shutdown complete" in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_without_wshub_token_it_refuses_to_start() -> None:
    process = start(None)
    _, err = await anyio.to_thread.run_sync(lambda: process.communicate(timeout=30))
    assert process.returncode != 0
    assert "set WSHUB_TOKEN" in err
