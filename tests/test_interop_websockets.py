"""Interop with the ``websockets`` library: its client against our server, our
client against its server. ``websockets`` is asyncio-only, so asyncio only."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection as WsServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from wshub.adapters import ConnectionClosed, EchoHandler, ServerSession, connect
from wshub.core import Closed
from wshub.core.auth import AccessPolicy, Principal, StaticTokens

pytestmark = pytest.mark.anyio

TOKEN = "interop-token"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Echo(EchoHandler):
    """Echo; "close <code>" closes with that code; remembers how sessions ended."""

    def __init__(self) -> None:
        super().__init__(AccessPolicy(tokens=StaticTokens({TOKEN: Principal("bob")})))
        self.closed: list[Closed] = []
        self.done = anyio.Event()

    async def on_message(self, session: ServerSession, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("close "):
            session.close(int(message.split()[1]), "as asked")
        else:
            await super().on_message(session, message)

    async def on_close(self, session: ServerSession, event: Closed) -> None:
        self.closed.append(event)
        self.done.set()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


# -- the websockets client against our server -------------------------------------


async def test_websockets_client_echo_ping_and_close(running_server: Any) -> None:
    handler = Echo()
    with anyio.fail_after(10):
        async with running_server(handler) as server:
            async with ws_connect(
                server.url, additional_headers=AUTH, subprotocols=["wshub.v1"], compression=None
            ) as ws:
                assert ws.subprotocol == "wshub.v1"
                await ws.send("hello")
                assert await ws.recv() == "hello"
                await ws.send(b"\x00\x01\x02")
                assert await ws.recv() == b"\x00\x01\x02"
                big = "y" * 500_000
                await ws.send(big)
                assert await ws.recv() == big
                pong = await ws.ping(b"are you there")
                await pong
                await ws.close(4010, "client leaving")
            await handler.done.wait()
    (event,) = handler.closed
    assert (event.code, event.reason, event.clean) == (4010, "client leaving", True)


async def test_websockets_client_sees_server_close_codes(running_server: Any) -> None:
    with anyio.fail_after(10):
        async with running_server(Echo()) as server:
            async with ws_connect(server.url, additional_headers=AUTH) as ws:
                await ws.send("close 4002")
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4002, "as asked")


async def test_websockets_client_is_refused_without_token(running_server: Any) -> None:
    with anyio.fail_after(10):
        async with running_server(Echo()) as server:
            with pytest.raises(InvalidStatus) as info:
                async with ws_connect(server.url):
                    pytest.fail("accepted without a token")
            assert info.value.response.status_code == 401


@pytest.mark.parametrize("enabled", [True, False])
async def test_websockets_client_compression(running_server: Any, enabled: bool) -> None:
    text = "compress me please " * 5000
    with anyio.fail_after(10):
        async with (
            running_server(Echo(), compression=enabled) as server,
            ws_connect(server.url, additional_headers=AUTH) as ws,
        ):
            assert ws.response is not None
            agreed = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            assert ("permessage-deflate" in agreed) is enabled
            for _ in range(3):  # several messages: context handling on both sides
                await ws.send(text)
                assert await ws.recv() == text
            await ws.send(b"\x07" * 70_000)
            assert await ws.recv() == b"\x07" * 70_000


# -- our client against the websockets server ----------------------------------------


async def _ws_echo(connection: WsServerConnection) -> None:
    async for message in connection:
        if message == "close 4003":
            await connection.close(4003, "their close")
            return
        await connection.send(message)


async def test_our_client_against_websockets_server() -> None:
    with anyio.fail_after(10):
        async with ws_serve(_ws_echo, "127.0.0.1", 0, subprotocols=["chat"]) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", subprotocols=["chat"]) as ws:
                assert ws.subprotocol == "chat"
                await ws.send("hi")
                assert await ws.recv() == "hi"
                await ws.send(b"\xff" * 100_000)
                assert await ws.recv() == b"\xff" * 100_000
            assert ws.closed_event is not None
            assert (ws.closed_event.code, ws.closed_event.clean) == (1000, True)


async def test_our_client_sees_websockets_server_close_code() -> None:
    with anyio.fail_after(10):
        async with ws_serve(_ws_echo, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                await ws.send("close 4003")
                with pytest.raises(ConnectionClosed) as info:
                    await ws.recv()
            assert (info.value.code, info.value.reason) == (4003, "their close")


async def test_our_client_compression_with_websockets_server() -> None:
    text = "deflate both ways " * 5000
    with anyio.fail_after(10):
        async with ws_serve(_ws_echo, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", compression=True) as ws:
                assert ws.core.deflate is not None
                for _ in range(3):
                    await ws.send(text)
                    assert await ws.recv() == text
                assert ws.core.bytes_received < len(text)


async def test_our_client_answers_websockets_server_pings() -> None:
    with anyio.fail_after(10):
        async with ws_serve(
            _ws_echo, "127.0.0.1", 0, ping_interval=0.05, ping_timeout=0.15
        ) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                await anyio.sleep(0.5)  # unanswered pings would have closed it by now
                await ws.send("alive")
                assert await ws.recv() == "alive"
