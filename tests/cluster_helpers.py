"""Several ``wshub serve --redis`` processes on one private Redis, and clients on them.

The nodes are real subprocesses (``test_cli.serving``: port 0, stopped by
PID; ``kill()`` is ``kill -9``); the clients are the ``websockets`` library's,
each with a reader task that files replies by ``id`` and keeps every other
envelope in arrival order, so a test can check what each client got.
Everything is bounded: every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from redis_support import RedisServer
from test_cli import Served, serving
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from wshub.core.tokens import SignedTokens, format_key_file
from wshub.tokenfile import write_private_file

Envelope = dict[str, Any]


class Keys:
    """A signing key file for the nodes, and tokens for any principal."""

    def __init__(self, folder: Path) -> None:
        key = os.urandom(32)
        self.path = folder / "keys"
        write_private_file(self.path, format_key_file([("k1", key)]), exclusive=True)
        self.signer = SignedTokens({"k1": key}, signing_key_id="k1")

    def token(self, principal: str) -> str:
        return self.signer.mint(principal, ttl=3600, now=time.time())


@asynccontextmanager
async def cluster(
    redis: RedisServer, keys: Keys, names: tuple[str, ...], *args: str
) -> AsyncIterator[dict[str, Served]]:
    """``wshub serve --redis URL --node NAME`` for each name, all on ``redis``."""
    async with AsyncExitStack() as stack:
        nodes = {}
        for name in names:
            nodes[name] = await stack.enter_async_context(
                serving(
                    "--redis",
                    redis.url,
                    "--node",
                    name,
                    "--signing-key-file",
                    str(keys.path),
                    *args,
                )
            )
        yield nodes


def kill_node(served: Served) -> None:
    """``kill -9`` the node (by its PID) and reap it."""
    served.process.send_signal(signal.SIGKILL)
    served.process.wait(10)


@dataclass
class Client:
    """One WebSocket client of one node."""

    node: str
    ws: ClientConnection
    welcome: Envelope
    received: list[Envelope] = field(default_factory=list)
    replies: dict[Any, Envelope] = field(default_factory=dict)
    closed: bool = False
    _ids: Any = field(default_factory=count)

    @property
    def conn_id(self) -> str:
        return str(self.welcome["payload"]["conn_id"])

    @property
    def principal(self) -> str:
        return str(self.welcome["payload"]["principal"])

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                envelope = json.loads(raw)
                if envelope.get("id") is not None and envelope["message_type"] in (
                    "reply",
                    "error",
                ):
                    self.replies[envelope["id"]] = envelope
                else:
                    self.received.append(envelope)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True

    async def send(self, **envelope: Any) -> None:
        await self.ws.send(json.dumps(envelope))

    async def request(self, timeout: float = 20.0, **envelope: Any) -> Envelope:
        """Send with a fresh ``id``; the reply (``ok`` or error) to it."""
        request_id = f"r{next(self._ids)}"
        await self.send(id=request_id, **envelope)
        with anyio.fail_after(timeout):
            while request_id not in self.replies:
                if self.closed:
                    raise AssertionError(f"{self.node}: closed before reply to {envelope}")
                await anyio.sleep(0.005)
        return self.replies.pop(request_id)

    async def subscribe(self, topic: str, **payload: Any) -> Envelope:
        reply = await self.request(message_type="subscribe", topic=topic, payload=payload or None)
        assert reply.get("ok") is True, reply
        return reply

    def messages(self, topic: str) -> list[Envelope]:
        return [
            e for e in self.received if e["message_type"] == "message" and e.get("topic") == topic
        ]

    def of_type(self, message_type: str) -> list[Envelope]:
        return [e for e in self.received if e["message_type"] == message_type]


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until true; the seconds it took (AssertionError past ``timeout``)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await anyio.sleep(0.01)
    return time.monotonic() - start


@asynccontextmanager
async def clients(tg: TaskGroup) -> AsyncIterator[Callable[..., Any]]:
    """``connect(node_name, served, token)`` opens a client whose reader runs in ``tg``;
    every client is closed on exit."""
    opened: list[Client] = []

    async def connect(node: str, served: Served, token: str) -> Client:
        ws = await ws_connect(
            served.url,
            additional_headers={"Authorization": f"Bearer {token}"},
            subprotocols=[Subprotocol("wshub.v1")],
            max_queue=None,  # the reader keeps everything; the test bounds the counts
        )
        with anyio.fail_after(10):
            welcome = json.loads(await ws.recv())
        assert welcome["message_type"] == "welcome", welcome
        client = Client(node, ws, welcome)
        opened.append(client)
        tg.start_soon(client.read)
        return client

    try:
        yield connect
    finally:
        for client in opened:
            with anyio.move_on_after(5, shield=True):
                await client.ws.close()
