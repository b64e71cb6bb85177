"""The example programs run as written: started as subprocesses on port 0 and
checked with the ``websockets`` library's client (asyncio only)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOKEN = "example-token"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / "threaded_app.py"), "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def read_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    with anyio.fail_after(20):
        while True:
            line = await anyio.to_thread.run_sync(process.stdout.readline)
            assert line, f"the example exited early with {process.wait()}"
            if line.startswith("listening on "):
                return line.split()[2]


async def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait for the exit; the exit code and the rest of its output."""
    out, err = await anyio.to_thread.run_sync(lambda: process.communicate(timeout=20))
    assert "Traceback" not in err, err
    return process.returncode, out


async def recv(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(10):
        value = json.loads(await ws.recv())
    assert isinstance(value, dict)
    return value


async def close_code(ws: ClientConnection) -> int | None:
    """Read (late ticks) until the server closes; the code it sent."""
    while True:
        try:
            await recv(ws)
        except ConnectionClosed as exc:
            return None if exc.rcvd is None else exc.rcvd.code


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
async def test_threaded_app_serves_ticks_and_commands_and_stops_on_sigint(backend: str) -> None:
    process = start("--token", TOKEN, "--interval", "0.02", "--backend", backend)
    try:
        url = await read_url(process)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with ws_connect(url, additional_headers=headers, subprotocols=["wshub.v1"]) as ws:
            assert (await recv(ws))["message_type"] == "welcome"
            await ws.send(json.dumps({"message_type": "subscribe", "topic": "ticks", "id": 1}))
            reply = await recv(ws)
            assert reply["ok"] is True
            last_seq = reply["payload"]["seq"]
            ticks = []
            while len(ticks) < 3:
                message = await recv(ws)
                assert message["topic"] == "ticks"
                ticks.append(message)
            # published by a worker thread, in order, one seq each
            assert [t["seq"] for t in ticks] == [last_seq + 1, last_seq + 2, last_seq + 3]
            assert [t["payload"]["n"] for t in ticks] == [t["seq"] for t in ticks]

            await ws.send(json.dumps({"message_type": "add", "id": 2, "payload": [1, 2, 39]}))
            got: dict[str, Any] = {}
            while "reply" not in got:
                message = await recv(ws)
                got.setdefault(message["message_type"], message)
            assert got["note"]["payload"] == {"text": "you added 3 numbers"}
            assert got["reply"]["payload"] == 42

            process.send_signal(signal.SIGINT)  # Ctrl-C, by its PID
            assert await close_code(ws) == 1001
        code, out = await finish(process)
        assert code == 0
        assert out.splitlines()[-1] == "stopped"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_threaded_app_stops_by_itself_after_seconds() -> None:
    process = start("--seconds", "0.5")
    try:
        url = await read_url(process)
        assert url.startswith("ws://127.0.0.1:")
        code, out = await finish(process)
        assert code == 0
        assert out.splitlines()[-2:] == ["stopping: 0 client(s) connected", "stopped"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
