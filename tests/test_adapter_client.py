"""The anyio client against our server, on asyncio and trio."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from wshub.adapters import (
    Accept,
    ConnectionClosed,
    EchoHandler,
    Handler,
    HandshakeError,
    HandshakeRejected,
    ServerSession,
    connect,
)
from wshub.core import Closed, HandshakeRequest, Limits, Side
from wshub.core.auth import AccessPolicy, Denial

pytestmark = pytest.mark.anyio


class Scripted(Handler):
    """Records the handshake; on "say N" sends N messages then closes with the code asked."""

    def __init__(self) -> None:
        self.requests: list[HandshakeRequest] = []
        self.closed: list[Closed] = []

    async def on_handshake(self, session: ServerSession, request: HandshakeRequest) -> Accept:
        self.requests.append(request)
        return Accept(subprotocol="chat" if "chat" in request.subprotocols else None)

    async def on_message(self, session: ServerSession, message: str | bytes) -> None:
        assert isinstance(message, str)
        verb, *args = message.split()
        if verb == "say":
            for i in range(int(args[0])):
                session.send_text(f"message {i}")
            session.close(int(args[1]), "done")
        elif verb == "echo":
            session.send_text(message)

    async def on_close(self, session: ServerSession, event: Closed) -> None:
        self.closed.append(event)


async def test_iteration_ends_on_normal_close(running_server: Any) -> None:
    with anyio.fail_after(10):
        async with running_server(Scripted()) as server, connect(server.url) as ws:
            await ws.send("say 5 1000")
            received = [message async for message in ws]
            assert received == [f"message {i}" for i in range(5)]
            assert ws.closed_event is not None
            assert (ws.closed_event.code, ws.closed_event.reason) == (1000, "done")
            assert ws.closed_event.initiator is Side.REMOTE
            with pytest.raises(ConnectionClosed):
                await ws.recv()


async def test_iteration_raises_on_other_close_codes(running_server: Any) -> None:
    with anyio.fail_after(10):
        async with running_server(Scripted()) as server, connect(server.url) as ws:
            await ws.send("say 2 4000")
            received: list[str | bytes] = []

            async def collect() -> None:
                async for message in ws:
                    received.append(message)

            with pytest.raises(ConnectionClosed) as info:
                await collect()
            assert received == ["message 0", "message 1"]
            assert (info.value.code, info.value.reason) == (4000, "done")


async def test_close_waits_for_the_closing_handshake(running_server: Any) -> None:
    handler = Scripted()
    with anyio.fail_after(10):
        async with running_server(handler) as server, connect(server.url) as ws:
            await ws.close(4001, "client done")
            assert ws.closed_event is not None
            assert ws.closed_event.clean
            assert ws.closed_event.code == 4001
            assert ws.closed_event.initiator is Side.LOCAL
            assert not ws.is_open
            with pytest.raises(ConnectionClosed):
                await ws.send("too late")
            while not handler.closed:
                await anyio.sleep(0.01)
    assert handler.closed[0].code == 4001


async def test_token_subprotocols_and_headers_reach_the_server(running_server: Any) -> None:
    handler = Scripted()
    with anyio.fail_after(10):
        async with running_server(handler) as server:
            url = server.url + "/room/7?x=1"
            async with connect(
                url, token="t0k", subprotocols=["other", "chat"], headers=[("X-App", "demo")]
            ) as ws:
                assert ws.subprotocol == "chat"
    (request,) = handler.requests
    assert request.header("authorization") == "Bearer t0k"
    assert request.header("x-app") == "demo"
    assert (request.path, request.query) == ("/room/7", "x=1")
    assert request.subprotocols == ("other", "chat")


async def test_rejection_carries_status_headers_and_body(running_server: Any) -> None:
    class Refuse(Handler):
        async def on_handshake(self, session: ServerSession, request: HandshakeRequest) -> Denial:
            return Denial(429, "slow down", (("Retry-After", "3"),))

    with anyio.fail_after(10):
        async with running_server(Refuse()) as server:
            with pytest.raises(HandshakeRejected) as info:
                async with connect(server.url):
                    pytest.fail("the handshake was refused")
    assert info.value.status == 429
    assert ("retry-after", "3") in info.value.headers
    assert info.value.body == b"slow down"
    assert isinstance(info.value, HandshakeError)


async def test_open_timeout_when_the_server_never_answers() -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        accepted: list[anyio.abc.SocketStream] = []

        async def hold(stream: anyio.abc.SocketStream) -> None:
            accepted.append(stream)
            await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, hold)
            with anyio.fail_after(10), pytest.raises(TimeoutError):
                async with connect(f"ws://127.0.0.1:{port}", open_timeout=0.2):
                    pytest.fail("no handshake response was sent")
            tg.cancel_scope.cancel()
    assert accepted


async def test_body_exceptions_propagate_unwrapped(running_server: Any) -> None:
    with anyio.fail_after(10):
        async with running_server(EchoHandler(AccessPolicy(require_auth=False))) as server:
            with pytest.raises(KeyError):
                async with connect(server.url) as ws:
                    raise KeyError("from the body")
    assert ws.closed_event is not None
    assert ws.closed_event.code == 1000


async def test_client_answers_pings_and_stays_open(running_server: Any) -> None:
    # Unanswered, the first ping would close the connection at 0.2 s.
    limits = Limits(ping_interval=0.05, ping_timeout=0.15)
    handler = Scripted()
    with anyio.fail_after(10):
        async with running_server(handler, limits=limits) as server, connect(server.url) as ws:
            (session,) = server.sessions
            pings_before = session.core.bytes_queued
            await anyio.sleep(0.5)  # several ping intervals pass
            assert session.core.bytes_queued > pings_before  # pings were sent...
            assert ws.is_open  # ...and answered
            await ws.send("echo still")
            assert await ws.recv() == "echo still"


async def test_many_large_messages_both_ways_with_backpressure(running_server: Any) -> None:
    """Sending faster than the peer drains waits instead of overflowing the outbox."""
    messages = [bytes([i]) * 200_000 for i in range(30)]
    with anyio.fail_after(20):
        async with (
            running_server(EchoHandler(AccessPolicy(require_auth=False))) as server,
            connect(server.url) as ws,
        ):
            received: list[str | bytes] = []

            async def read() -> None:
                for _ in messages:
                    received.append(await ws.recv())

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                for message in messages:
                    await ws.send(message)
                    assert ws.core.outbox_size <= ws.core.limits.max_outbox_size
            assert received == messages


async def test_compression_round_trip(running_server: Any) -> None:
    text = "compressible " * 10_000
    with anyio.fail_after(10):
        async with (
            running_server(EchoHandler(AccessPolicy(require_auth=False)), compression=True) as srv,
            connect(srv.url, compression=True) as ws,
        ):
            assert ws.core.deflate is not None
            before = ws.core.bytes_received
            await ws.send(text)
            assert await ws.recv() == text
            assert ws.core.bytes_received - before < len(text) // 10


async def test_invalid_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="ws://"):
        async with connect("http://127.0.0.1:1/"):
            pass
