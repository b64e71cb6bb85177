"""``HubApp`` in a FastAPI app under Starlette's ``TestClient``: how users test
their own apps. The lifespan runs once per client (the hub starts afresh
each time), refusals arrive as ``WebSocketDenialResponse``, and the
thread-safe handle works from the test's thread."""

from __future__ import annotations

import json
import warnings

import pytest
from fastapi import FastAPI

with warnings.catch_warnings():  # Starlette now prefers httpx2; httpx works with all versions
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient, WebSocketDenialResponse

from wshub.adapters import CommandContext, HubApp
from wshub.core.auth import SUBPROTOCOL, AccessPolicy, StaticTokens


def test_the_hub_under_starlettes_test_client_twice() -> None:
    hub = HubApp(AccessPolicy(tokens=StaticTokens(["s3cret"])))
    app = FastAPI(lifespan=hub.lifespan)
    app.mount("/ws", hub)

    @hub.command("add")
    async def add(ctx: CommandContext, payload: list[int]) -> int:
        return sum(payload)

    headers = {"Authorization": "Bearer s3cret"}
    for _ in range(2):  # a new client per test: the lifespan runs again
        with TestClient(app) as client:
            with client.websocket_connect(
                "/ws/", headers=headers, subprotocols=[SUBPROTOCOL]
            ) as ws:
                assert ws.receive_json()["message_type"] == "welcome"
                ws.send_text(json.dumps({"message_type": "add", "id": 1, "payload": [1, 2]}))
                assert ws.receive_json()["payload"] == 3
                assert hub.threadsafe().broadcast("note", "from the test thread") == 1
                assert ws.receive_json()["payload"] == "from the test thread"
            with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws/"):
                pass
            assert denied.value.status_code == 401
            assert denied.value.headers["www-authenticate"] == "Bearer"
        assert not hub.running
