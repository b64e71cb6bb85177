"""``wshub serve --demo`` allows its own origin only; ``wshub serve --token``
refuses tokens a browser cannot send in a subprotocol."""

from __future__ import annotations

import re
import subprocess

import anyio
import pytest
from test_cli import serving, wshub
from test_static_files import http
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the CLI tests use the websockets library's client


def origin_headers(origin: str) -> dict[str, str]:
    return {"Origin": origin}


async def test_serve_demo_allows_its_own_origin_only() -> None:
    async with serving("--demo", "--token", "tok") as served:
        port = int(served.url.rsplit(":", 1)[1])
        assert served.process.stdout is not None
        line = await anyio.to_thread.run_sync(served.process.stdout.readline)
        assert line.strip() == f"demo: http://127.0.0.1:{port}/#token=tok"
        status, _headers, body = await http(port, "/")
        assert status == 200
        assert b"/demo/demo.js" in body
        protocols = [Subprotocol("wshub.v1"), Subprotocol("wshub.bearer.tok")]
        for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
            async with ws_connect(
                served.url, subprotocols=protocols, additional_headers=origin_headers(origin)
            ) as ws:
                assert ws.subprotocol == "wshub.v1"
        for origin in ("http://evil.example", f"http://127.0.0.1:{port + 1}"):
            with pytest.raises(InvalidStatus) as info:
                async with ws_connect(
                    served.url, subprotocols=protocols, additional_headers=origin_headers(origin)
                ):
                    pass
            assert info.value.response.status_code == 403


async def test_serve_without_demo_refuses_its_own_origin() -> None:
    async with serving("--token", "tok") as served:
        port = int(served.url.rsplit(":", 1)[1])
        assert (await http(port, "/"))[0] == 426
        with pytest.raises(InvalidStatus) as info:
            async with ws_connect(
                served.url,
                subprotocols=[Subprotocol("wshub.v1"), Subprotocol("wshub.bearer.tok")],
                additional_headers=origin_headers(f"http://127.0.0.1:{port}"),
            ):
                pass
        assert info.value.response.status_code == 403


@pytest.mark.parametrize("token", ["a/b=", "two words", "caf\u00e9", "x,y"])
def test_serve_refuses_tokens_a_browser_cannot_send(token: str) -> None:
    result = subprocess.run(
        wshub("serve", "--port", "0", "--token", "fine", "--token", token),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "token 2" in result.stderr
    assert "--auth-message" in result.stderr
    assert re.search(r"A-Z a-z 0-9 and !#\$%&'\*\+-\.\^_`\|~", result.stderr), result.stderr
    assert token not in result.stderr  # only the offending characters are named


async def test_serve_accepts_such_tokens_with_auth_message() -> None:
    async with serving("--token", "a/b=", "--auth-message") as served:
        assert served.url.startswith("ws://")


async def test_demo_is_refused_with_echo() -> None:
    result = await anyio.run_process(
        wshub("serve", "--port", "0", "--echo", "--demo", "--no-auth"), check=False
    )
    assert result.returncode != 0
    assert b"--demo" in result.stderr
