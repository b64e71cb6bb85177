"""A FastAPI app with ordinary HTTP routes and the wshub hub mounted at /ws.

One token verifier serves both doors: HTTP routes check the bearer token with
it, and the hub authenticates WebSocket upgrades with it. The token comes
from the environment::

    WSHUB_TOKEN=s3cret uvicorn examples.fastapi_app:app
    python -m wshub connect ws://127.0.0.1:8000/ws/ --token s3cret
    {"message_type": "subscribe", "topic": "news", "id": 1}
    {"message_type": "whoami", "id": 2}

    curl -X POST -H 'Authorization: Bearer s3cret' -H 'Content-Type: application/json' \\
         -d '{"headline": "hello"}' http://127.0.0.1:8000/news

The hub runs from the app's lifespan (``lifespan=hub.lifespan``). Mounted at
``/ws``, it answers WebSockets at ``/ws/`` and below (a Starlette ``Mount``
does not match ``/ws`` itself; ``app.add_websocket_route("/ws", hub)`` would).
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException

from wshub.adapters import CommandContext, HubApp
from wshub.core.auth import AccessPolicy, Principal, StaticTokens


def _token_from_environment() -> str:
    token = os.environ.get("WSHUB_TOKEN", "")
    if not token:
        raise SystemExit("set WSHUB_TOKEN to the bearer token clients must send")
    return token


#: The one verifier both doors use.
tokens = StaticTokens({_token_from_environment(): Principal("app-user", frozenset({"news"}))})

hub = HubApp(AccessPolicy(tokens=tokens))
hub.configure_topic("news", subscribe="all", publish="none")

app = FastAPI(title="wshub in FastAPI", lifespan=hub.lifespan)


def principal(authorization: Annotated[str | None, Header()] = None) -> Principal:
    """HTTP routes: the same bearer token, checked by the same verifier."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    found = tokens.verify(token.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        raise HTTPException(401, "invalid bearer token", {"WWW-Authenticate": "Bearer"})
    return found


User = Annotated[Principal, Depends(principal)]


@app.get("/health")
async def health() -> dict[str, Any]:
    return {"ok": True, "connections": hub.stats().connections}


@app.post("/news")
async def post_news(item: dict[str, Any], user: User) -> dict[str, Any]:
    """Publish to the ``news`` topic's WebSocket subscribers."""
    delivered = hub.publish("news", {**item, "by": user.id})
    return {"delivered": delivered}


@app.post("/notice")
def post_notice(item: dict[str, Any], user: User) -> dict[str, Any]:
    """A synchronous route runs in a worker thread: it uses the thread-safe handle."""
    return {"delivered": hub.threadsafe().broadcast("notice", {**item, "by": user.id})}


@hub.command("whoami")
async def whoami(ctx: CommandContext, _payload: Any) -> dict[str, Any]:
    return {"principal": ctx.principal.id, "conn_id": ctx.conn_id}


app.mount("/ws", hub)
