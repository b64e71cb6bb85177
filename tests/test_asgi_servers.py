"""``HubApp`` behind real ASGI servers: mounted in Starlette, without a lifespan,
when the server stops, the token subprotocol and query token, and an
independent client (the ``websockets`` library).

The hub's whole integration suite also runs behind these servers
(``test_adapter_hub*.py`` through ``hub_fronts``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest
from hub_fronts import ASGI_FRONTS, QUIET_LEGACY, Front, front_params, serve, serve_asgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute

from wshub.adapters import (
    CommandContext,
    ConnectionClosed,
    HandshakeRejected,
    HubApp,
    connect,
)
from wshub.core import Closed, Limits
from wshub.core.auth import SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX, AccessPolicy, StaticTokens
from wshub.core.registry import ConnectionInfo

pytestmark = [pytest.mark.anyio, *QUIET_LEGACY]

TOKEN = "s3cret"
UVICORN = Front("uvicorn", "asyncio", "wsproto")
HYPERCORN_TRIO = Front("hypercorn", "trio")


def policy(**kwargs: Any) -> AccessPolicy:
    return AccessPolicy(tokens=StaticTokens([TOKEN]), **kwargs)


@pytest.fixture(params=front_params(ASGI_FRONTS))
def front(request: pytest.FixtureRequest) -> Front:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(front: Front) -> str:
    return front.backend


async def recv_json(ws: Any) -> dict[str, Any]:
    value = json.loads(await ws.recv())
    assert isinstance(value, dict)
    return value


async def end_of(ws: Any) -> Closed:
    while True:
        try:
            await ws.recv()
        except ConnectionClosed as exc:
            return exc.event


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        await stream.send(request.encode())
        data = b""
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("front", front_params((UVICORN, HYPERCORN_TRIO)), indirect=True)
async def test_mounted_in_starlette_beside_http_routes(front: Front) -> None:
    hub = HubApp(policy())

    @hub.command("add")
    async def add(ctx: CommandContext, payload: list[int]) -> int:
        return sum(payload)

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"hello, {hub.stats().connections} connected")

    app = Starlette(
        routes=[Route("/hello", hello), Mount("/ws", app=hub), WebSocketRoute("/live", hub)],
        lifespan=hub.lifespan,
    )
    with anyio.fail_after(15):
        async with serve_asgi(front, app, hub) as (port, _stop):
            base = f"ws://127.0.0.1:{port}"
            for path in ("/ws/", "/ws/any/depth", "/live"):
                async with connect(base + path, token=TOKEN) as ws:
                    assert (await recv_json(ws))["message_type"] == "welcome"
                    await ws.send(json.dumps({"message_type": "add", "id": 1, "payload": [2, 3]}))
                    assert (await recv_json(ws))["payload"] == 5
                    assert await http_get(port, "/hello") == (200, b"hello, 1 connected")
            # A Mount matches below its path only: Starlette refuses "/ws" itself.
            with pytest.raises(HandshakeRejected) as refused:
                async with connect(base + "/ws", token=TOKEN):
                    pass
            assert refused.value.status == 403
            # The hub's own refusals keep their status through the router.
            with pytest.raises(HandshakeRejected) as refused:
                async with connect(base + "/ws/", token="wrong"):
                    pass
            assert refused.value.status == 401
            assert await http_get(port, "/ws/healthz") == (200, b"ok")
        assert not hub.running


@pytest.mark.parametrize("front", front_params((UVICORN,)), indirect=True)
async def test_mounted_without_its_lifespan_it_refuses_and_says_why(
    front: Front, caplog: pytest.LogCaptureFixture
) -> None:
    hub = HubApp(policy())
    app = Starlette(routes=[Mount("/ws", app=hub)])  # lifespan=hub.lifespan forgotten
    with anyio.fail_after(15), caplog.at_level(logging.ERROR, logger="wshub.asgi"):
        async with serve_asgi(front, app) as (port, _stop):
            with pytest.raises(HandshakeRejected) as refused:
                async with connect(f"ws://127.0.0.1:{port}/ws/", token=TOKEN):
                    pass
            assert refused.value.status == 500
    assert "pass lifespan=hub.lifespan to the parent app" in caplog.text


async def test_stopping_the_server_ends_the_lifespan_and_every_connection(front: Front) -> None:
    """What each server does to open WebSockets when it stops (README table).

    uvicorn closes them itself with 1012 (service restart) before the
    lifespan ends; Hypercorn waits ``graceful_timeout`` (1 s here), then
    cancels them. To answer 1001 first, call ``hub.shutdown()`` before
    stopping the server (tested in the integration suite).
    """
    ended: list[Closed] = []
    cancelled = anyio.Event()

    def on_disconnect(info: ConnectionInfo, event: Closed) -> None:
        ended.append(event)

    with anyio.fail_after(15):
        async with serve(front, policy(), on_disconnect=on_disconnect) as server:

            @server.command("hang")
            async def hang(ctx: CommandContext, payload: Any) -> None:
                try:
                    await anyio.sleep_forever()
                finally:
                    cancelled.set()

            async with connect(server.url, token=TOKEN) as ws:
                assert (await recv_json(ws))["message_type"] == "welcome"
                await ws.send(json.dumps({"message_type": "hang", "id": 1}))
                while server.stats().pending_commands == 0:
                    await anyio.sleep(0.01)
                server.stop_server()
                seen = (await end_of(ws)).code
        await cancelled.wait()
        assert not server.running
        assert server.sessions == 0
        assert server.hub.footprint() == dict.fromkeys(server.hub.footprint(), 0)
        if front.server == "uvicorn":
            assert seen == 1012
            assert [e.code for e in ended] == [1012]
        else:
            assert seen in (1006, 1011)  # asyncio sends 1011, trio drops the socket
            assert [(e.code, e.reason) for e in ended] == [(1006, "connection dropped")]


async def test_token_subprotocol_and_query_token_only_when_enabled(front: Front) -> None:
    with anyio.fail_after(15):
        async with serve(front, policy()) as server:
            offered = (SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + TOKEN)
            async with connect(server.url, subprotocols=offered) as ws:
                assert ws.subprotocol == SUBPROTOCOL  # the token is never echoed
                assert (await recv_json(ws))["message_type"] == "welcome"
            with pytest.raises(HandshakeRejected) as refused:
                async with connect(server.url + f"/?token={TOKEN}"):
                    pass
            assert refused.value.status == 401
        async with (
            serve(front, policy(allow_query_token=True)) as server,
            connect(server.url + f"/?token={TOKEN}") as ws,
        ):
            assert (await recv_json(ws))["message_type"] == "welcome"


@pytest.mark.parametrize(
    "front", front_params(tuple(f for f in ASGI_FRONTS if f.backend == "asyncio")), indirect=True
)
async def test_the_websockets_library_as_client(front: Front) -> None:
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import InvalidStatus

    with anyio.fail_after(15):
        async with serve(front, policy()) as server:

            @server.command("echo")
            async def echo(ctx: CommandContext, payload: Any) -> Any:
                return payload

            async with ws_connect(
                server.url,
                additional_headers={"Authorization": f"Bearer {TOKEN}"},
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            ) as ws:
                assert ws.subprotocol == SUBPROTOCOL
                assert json.loads(await ws.recv())["message_type"] == "welcome"
                await ws.send(json.dumps({"message_type": "echo", "id": "e", "payload": "ü" * 3}))
                reply = json.loads(await ws.recv())
                assert (reply["id"], reply["payload"]) == ("e", "ü" * 3)
            with pytest.raises(InvalidStatus) as refused:
                async with ws_connect(server.url):
                    pass
            response = refused.value.response
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_our_message_size_limit_under_the_servers_own(front: Front) -> None:
    """The server reads the whole message (its limit: 16 MiB by default), then
    ours applies: 1009, and the other connections do not notice."""
    with anyio.fail_after(15):
        async with (
            serve(front, policy(), limits=Limits(max_message_size=64 * 1024)) as server,
            connect(server.url, token=TOKEN) as big,
            connect(server.url, token=TOKEN) as other,
        ):
            for ws in (big, other):
                assert (await recv_json(ws))["message_type"] == "welcome"
            await big.send("x" * (64 * 1024 + 1))
            event = await end_of(big)
            assert (event.code, event.reason) == (1009, "message too big")
            assert server.broadcast("still", 1) == 1
            assert (await recv_json(other))["payload"] == 1
