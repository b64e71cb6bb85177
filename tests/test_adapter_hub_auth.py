"""Authentication over real sockets, behind every front door (``hub_fronts``):
first-message auth, expiry and refresh, the accept-then-close refusal mode,
the message rate."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest
from hub_fronts import QUIET_LEGACY, Front, Served, front_params, serve

from wshub.adapters import ConnectionClosed, HandshakeRejected, connect
from wshub.core import Closed
from wshub.core.auth import SUBPROTOCOL, Denial, Principal, bearer_token
from wshub.core.events import HandshakeRequest
from wshub.core.hub_config import HubConfig

pytestmark = [pytest.mark.anyio, *QUIET_LEGACY]


class Verifier:
    """Tokens "good", "short" (expires in 0.6 s) and "renew" (in 60 s); sync or async."""

    def __init__(self, *, is_async: bool = False) -> None:
        self.is_async = is_async
        self.allowed_origin = "http://app.test"

    def _check(self, token: str) -> Principal | Denial:
        if token == "good":
            return Principal("alice")
        if token == "short":
            return Principal("alice", expires_at=time.time() + 0.6)
        if token == "renew":
            return Principal("alice", frozenset({"renewed"}), expires_at=time.time() + 60)
        return Denial(401, "invalid bearer token")

    def verify_token(self, token: str) -> Any:
        if not self.is_async:
            return self._check(token)

        async def later() -> Principal | Denial:
            await anyio.sleep(0.01)
            return self._check(token)

        return later()

    def authenticate(self, request: HandshakeRequest) -> Principal | Denial:
        if request.origin not in (None, self.allowed_origin):
            return Denial(403, "origin not allowed")
        token = bearer_token(request)
        if token is None:
            return Denial(401, "missing bearer token")
        return self._check(token)


@pytest.fixture(params=front_params())
def front(request: pytest.FixtureRequest) -> Front:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(front: Front) -> str:
    return front.backend


@pytest.fixture
def running(front: Front) -> Callable[..., AbstractAsyncContextManager[Served]]:
    """``async with running(**kwargs) as server:`` a hub behind this test's front."""

    def start(**kwargs: Any) -> AbstractAsyncContextManager[Served]:
        return serve(front, kwargs.pop("auth", Verifier()), **kwargs)

    return start


async def recv_json(ws: Any) -> dict[str, Any]:
    message = await ws.recv()
    value = json.loads(message)
    assert isinstance(value, dict)
    return value


async def end_of(ws: Any) -> Closed:
    while True:
        try:
            await ws.recv()
        except ConnectionClosed as exc:
            return exc.event


def auth(token: str, id: int = 1) -> str:
    return json.dumps({"message_type": "auth", "id": id, "payload": {"token": token}})


@pytest.mark.parametrize("is_async", [False, True])
async def test_first_message_auth_then_normal_service(is_async: bool, running: Any) -> None:
    with anyio.fail_after(10):
        async with (
            running(auth=Verifier(is_async=is_async), auth_message=True) as server,
            connect(server.url, subprotocols=(SUBPROTOCOL,)) as ws,
        ):
            assert ws.subprotocol == SUBPROTOCOL
            assert server.broadcast("early", 1) == 0  # not authenticated: not reached
            # Pipelined: the subscribe is handled only after the token is verified.
            await ws.send(auth("good"))
            await ws.send(json.dumps({"message_type": "subscribe", "id": 2, "topic": "t"}))
            reply = await recv_json(ws)
            assert (reply["id"], reply["ok"], reply["payload"]["principal"]) == (1, True, "alice")
            welcome = await recv_json(ws)
            assert welcome["message_type"] == "welcome"
            subscribed = await recv_json(ws)
            assert (subscribed["id"], subscribed["ok"]) == (2, True)
            assert server.publish("t", "hello") == 1
            assert (await recv_json(ws))["payload"] == "hello"


async def test_first_message_auth_refuses_a_bad_token_and_a_late_one(running: Any) -> None:
    with anyio.fail_after(10):
        async with running(auth_message=True, config=HubConfig(auth_timeout=0.3)) as server:
            async with connect(server.url) as ws:
                await ws.send(auth("wrong"))
                event = await end_of(ws)
                assert (event.code, event.reason) == (1008, "invalid bearer token")
            async with connect(server.url) as ws:
                event = await end_of(ws)
                assert (event.code, event.reason) == (1008, "authentication timeout")
            async with connect(server.url) as ws:
                await ws.send(json.dumps({"message_type": "subscribe", "topic": "t"}))
                event = await end_of(ws)
                assert (event.code, event.reason) == (1008, "authentication required")
            assert server.hub.footprint()["awaiting_auth"] == 0


async def test_without_auth_message_a_missing_token_is_401(running: Any) -> None:
    with anyio.fail_after(10):
        async with running() as server:
            with pytest.raises(HandshakeRejected) as info:
                async with connect(server.url):
                    pass
            assert info.value.status == 401


async def test_expiring_token_closes_1008_unless_refreshed(running: Any) -> None:
    with anyio.fail_after(10):
        async with running() as server:
            async with connect(server.url, token="short") as ws:
                assert (await recv_json(ws))["message_type"] == "welcome"
                event = await end_of(ws)
                assert (event.code, event.reason) == (1008, "token expired")
            async with connect(server.url, token="short") as ws:
                assert (await recv_json(ws))["message_type"] == "welcome"
                await ws.send(auth("renew", id=5))
                reply = await recv_json(ws)
                assert (reply["id"], reply["ok"]) == (5, True)
                await anyio.sleep(1.0)  # past the first token's expiry
                [info] = server.hub.connections()
                assert info.principal.scopes == frozenset({"renewed"})
                assert server.send_to(info.conn_id, "still", "here") == 1
                assert (await recv_json(ws))["payload"] == "here"
                await ws.send(auth("wrong", id=6))
                refused = await recv_json(ws)
                assert refused["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("kwargs", "code", "reason"),
    [
        ({"token": "wrong"}, 4401, "invalid bearer token"),
        ({}, 4401, "missing bearer token"),
        (
            {"token": "good", "headers": [("Origin", "http://evil.test")]},
            4403,
            "origin not allowed",
        ),
    ],
)
async def test_close_refusal_mode_tells_the_page_why(
    kwargs: dict[str, Any], code: int, reason: str, running: Any
) -> None:
    with anyio.fail_after(10):
        async with running(refusal="close") as server:
            async with connect(server.url, **kwargs) as ws:
                event = await end_of(ws)
                assert (event.code, event.reason) == (code, reason)
            assert server.hub.footprint()["connections"] == 0


async def test_close_refusal_mode_for_connection_limits(running: Any) -> None:
    with anyio.fail_after(10):
        config = HubConfig(max_per_principal=1)
        async with (
            running(refusal="close", config=config) as server,
            connect(server.url, token="good") as first,
        ):
            assert (await recv_json(first))["message_type"] == "welcome"
            async with connect(server.url, token="good") as second:
                event = await end_of(second)
                assert (event.code, event.reason) == (4429, "too many connections for this user")
            assert server.send_to_principal("alice", "ping", 1) == 1


async def test_http_refusal_is_the_default(running: Any) -> None:
    with anyio.fail_after(10):
        async with running() as server:
            with pytest.raises(HandshakeRejected) as info:
                async with connect(
                    server.url, token="good", headers=[("Origin", "http://evil.test")]
                ):
                    pass
            assert info.value.status == 403


async def test_message_flood_is_refused_then_closed_and_others_keep_receiving(running: Any) -> None:
    config = HubConfig(message_rate=5, message_burst=5, max_errors=3)
    with anyio.fail_after(10):
        async with (
            running(config=config) as server,
            connect(server.url, token="good") as canary,
            connect(server.url, token="good") as flooder,
        ):
            for ws in (canary, flooder):
                assert (await recv_json(ws))["message_type"] == "welcome"
            for _ in range(30):
                await flooder.send(json.dumps({"message_type": "unsubscribe", "topic": "t"}))
            codes: list[str] = []
            while True:
                try:
                    codes.append((await recv_json(flooder))["error"]["code"])
                except ConnectionClosed as exc:
                    event = exc.event
                    break
            assert codes == ["rate_limited"] * 4
            assert (event.code, event.reason) == (1008, "message rate exceeded")
            assert server.broadcast("tick", 1) == 1
            assert (await recv_json(canary))["payload"] == 1
