"""Round-trip times from the application: ``ClientSession.ping``, ``ServerSession.ping``."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from conftest import RawClient

from wshub.adapters import ConnectionClosed, EchoHandler, ServerSession, connect
from wshub.core import ConnectionClosedError, Limits
from wshub.core.auth import AccessPolicy

pytestmark = pytest.mark.anyio


class Opened(EchoHandler):
    def __init__(self) -> None:
        super().__init__(AccessPolicy(require_auth=False))
        self.sessions: list[ServerSession] = []
        self.opened = anyio.Event()

    async def on_open(self, session: ServerSession) -> None:
        self.sessions.append(session)
        self.opened.set()


async def test_a_client_pings_the_server(running_server: Any) -> None:
    with anyio.fail_after(10):
        async with running_server(Opened()) as server, connect(server.url) as ws:
            rtts = [await ws.ping() for _ in range(3)]
            assert all(0.0 <= rtt < 10.0 for rtt in rtts)
            assert await ws.ping(b"chosen") >= 0.0
            await ws.send("still echoing")
            assert await ws.recv() == "still echoing"


async def test_the_server_pings_a_client(running_server: Any) -> None:
    handler = Opened()
    with anyio.fail_after(10):
        async with running_server(handler) as server, connect(server.url) as ws:
            await handler.opened.wait()
            session = handler.sessions[0]
            async with anyio.create_task_group() as tg:  # several at once, answered in turn
                rtts: list[float] = []

                async def one() -> None:
                    rtts.append(await session.ping())

                for _ in range(4):
                    tg.start_soon(one)
            assert len(rtts) == 4
            assert all(rtt >= 0.0 for rtt in rtts)
            await ws.send("after")
            assert await ws.recv() == "after"


async def test_a_ping_without_an_answer_fails_when_the_connection_ends(
    running_server: Any,
) -> None:
    handler = Opened()
    limits = Limits(ping_interval=None)
    with anyio.fail_after(10):
        async with (
            running_server(handler, limits=limits) as server,
            RawClient.open(server.port) as raw,
        ):
            await raw.handshake()
            await handler.opened.wait()
            session = handler.sessions[0]
            failure: list[BaseException] = []

            async def unanswered() -> None:
                try:
                    await session.ping(b"hello?")
                except ConnectionClosedError as exc:
                    failure.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(unanswered)
                frame = await raw.recv_frame()
                assert frame[2:] == (0x9, b"hello?")  # sent, never answered
                await raw.stream.aclose()  # the client goes away instead
            assert len(failure) == 1


async def test_a_closed_client_cannot_ping(running_server: Any) -> None:
    with anyio.fail_after(10):
        async with running_server(Opened()) as server, connect(server.url) as ws:
            await ws.close()
            with pytest.raises(ConnectionClosed):
                await ws.ping()
