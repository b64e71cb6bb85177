"""The anyio server over real sockets, on asyncio and trio."""

from __future__ import annotations

import logging
import ssl
import zlib
from typing import Any

import anyio
import pytest
import trustme

from wshub.adapters import (
    Accept,
    ConnectionClosed,
    EchoHandler,
    Handler,
    HandshakeRejected,
    ServerSession,
    WebSocketServer,
    connect,
)
from wshub.core import Closed, HandshakeRequest, Limits, Side
from wshub.core.auth import AccessPolicy, Denial, Principal, StaticTokens

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"
ORIGIN = "http://localhost:8000"
MIB = 1 << 20


def open_echo() -> EchoHandler:
    return EchoHandler(AccessPolicy(require_auth=False))


def token_echo() -> EchoHandler:
    policy = AccessPolicy(
        tokens=StaticTokens({TOKEN: Principal("alice")}), allowed_origins=[ORIGIN]
    )
    return EchoHandler(policy)


class Recorder(EchoHandler):
    """Echo, and remember what happened to each session."""

    def __init__(self) -> None:
        super().__init__(AccessPolicy(require_auth=False))
        self.closed: dict[str, Closed] = {}
        self.opened: list[ServerSession] = []
        self.all_closed = anyio.Event()

    async def on_open(self, session: ServerSession) -> None:
        self.opened.append(session)

    async def on_close(self, session: ServerSession, event: Closed) -> None:
        self.closed[session.id] = event
        if len(self.closed) == len(self.opened):
            self.all_closed.set()


# -- messages ----------------------------------------------------------------


async def test_echo_text_and_binary(running_server: Any) -> None:
    with anyio.fail_after(10):
        async with running_server(open_echo()) as server, connect(server.url) as ws:
            for message in ["hello", "", "ünïcødé ✓", b"\x00\xff" * 10, b""]:
                await ws.send(message)
                assert await ws.recv() == message
        assert ws.closed_event is not None
        assert (ws.closed_event.code, ws.closed_event.clean) == (1000, True)


async def test_one_mebibyte_message_echoes(running_server: Any) -> None:
    payload = bytes(range(256)) * (MIB // 256)
    with anyio.fail_after(10):
        async with (
            running_server(open_echo()) as server,
            connect(server.url, limits=Limits(max_message_size=2 * MIB)) as ws,
        ):
            await ws.send(payload)
            assert await ws.recv() == payload
            await ws.send("x" * MIB)
            assert await ws.recv() == "x" * MIB


async def test_one_byte_over_the_limit_closes_1009(running_server: Any) -> None:
    with anyio.fail_after(10):
        async with running_server(open_echo()) as server, connect(server.url) as ws:
            await ws.send(b"\x00" * (MIB + 1))
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.code == 1009


async def test_deflate_bomb_closes_1009(running_server: Any, raw_client: Any) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(b"\x00" * 10_000_000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[:-4]  # RFC 7692 §7.2.1: the empty-block tail is not sent
    assert len(bomb) < 20_000
    with anyio.fail_after(10):
        async with (
            running_server(open_echo(), compression=True) as server,
            raw_client(server.port) as raw,
        ):
            headers = await raw.handshake(
                headers=(("Sec-WebSocket-Extensions", "permessage-deflate"),)
            )
            assert headers["sec-websocket-extensions"].startswith("permessage-deflate")
            await raw.send_frame(0x2, bomb, rsv1=True)
            code, _reason, _ = await raw.recv_close()
            assert code == 1009


# -- access control and plain HTTP ----------------------------------------------


async def test_missing_and_wrong_tokens_get_401(running_server: Any) -> None:
    with anyio.fail_after(10):
        async with running_server(token_echo()) as server:
            for token in (None, "wrong"):
                with pytest.raises(HandshakeRejected) as info:
                    async with connect(server.url, token=token):
                        pass
                assert info.value.status == 401
                assert any(n == "www-authenticate" for n, _ in info.value.headers)


async def test_foreign_origin_gets_403(running_server: Any) -> None:
    with anyio.fail_after(10):
        async with running_server(token_echo()) as server:
            with pytest.raises(HandshakeRejected) as info:
                async with connect(
                    server.url, token=TOKEN, headers=[("Origin", "http://evil.example")]
                ):
                    pass
            assert info.value.status == 403


async def test_token_by_header_is_accepted(running_server: Any) -> None:
    with anyio.fail_after(10):
        async with (
            running_server(token_echo()) as server,
            connect(server.url, token=TOKEN, headers=[("Origin", ORIGIN)]) as ws,
        ):
            assert ws.subprotocol is None
            await ws.send("ping")
            assert await ws.recv() == "ping"
            (session,) = server.sessions
            assert session.principal == Principal("alice")


async def test_token_by_subprotocol_is_accepted_and_not_echoed(running_server: Any) -> None:
    offered = ["wshub.v1", f"wshub.bearer.{TOKEN}"]
    with anyio.fail_after(10):
        async with (
            running_server(token_echo()) as server,
            connect(server.url, subprotocols=offered) as ws,
        ):
            assert ws.subprotocol == "wshub.v1"
            await ws.send(b"ok")
            assert await ws.recv() == b"ok"


async def test_plain_http_requests(running_server: Any, raw_client: Any) -> None:
    with anyio.fail_after(10):
        async with running_server(token_echo()) as server:
            host = f"127.0.0.1:{server.port}".encode()
            requests = [
                (b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", 200),
                (b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", 426),
                (b"\x16\x03\x01 this is not HTTP\r\n\r\n", 400),
                # Bound to loopback: any other Host is DNS rebinding (403).
                (b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n", 403),
                (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 403),
            ]
            for request, expected in requests:
                async with raw_client(server.port) as raw:
                    await raw.send(request)
                    status, headers, body = await raw.read_response()
                    assert status == expected
                    assert await raw.read_to_eof() == b""  # one request per connection
                    if status == 200:
                        assert body == b"ok"
                    if status == 426:
                        assert headers["upgrade"] == "websocket"


# -- timers -------------------------------------------------------------------


async def test_peer_that_never_answers_pings_is_closed(
    running_server: Any, raw_client: Any
) -> None:
    limits = Limits(ping_interval=0.2, ping_timeout=0.2, close_timeout=0.5)
    handler = Recorder()
    with anyio.fail_after(10):
        async with (
            running_server(handler, limits=limits) as server,
            raw_client(server.port) as raw,
        ):
            await raw.handshake()
            code, reason, before = await raw.recv_close()
            assert [opcode for _, _, opcode, _ in before] == [0x9]  # one ping, unanswered
            assert code == 1011
            assert "ping" in reason
            assert await raw.read_to_eof() == b""
            await handler.all_closed.wait()
    (event,) = handler.closed.values()
    assert (event.code, event.initiator) == (1011, Side.LOCAL)


async def test_half_sent_handshake_is_dropped(running_server: Any, raw_client: Any) -> None:
    limits = Limits(handshake_timeout=0.2)
    with anyio.fail_after(10):
        async with (
            running_server(open_echo(), limits=limits) as server,
            raw_client(server.port) as raw,
        ):
            await raw.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: web")
            status, _headers, _body = await raw.read_response()
            assert status == 408
            assert await raw.read_to_eof() == b""
            assert server.sessions == []


async def test_close_timer_is_armed_while_the_reader_waits(
    running_server: Any, raw_client: Any
) -> None:
    """close() from the application arms the close timeout at once: a peer that
    never answers the close frame is dropped without any further input."""
    limits = Limits(close_timeout=0.2, ping_interval=None)
    handler = Recorder()
    with anyio.fail_after(10):
        async with (
            running_server(handler, limits=limits) as server,
            raw_client(server.port) as raw,
        ):
            await raw.handshake()
            await raw.send_frame(0x1, b"hello")
            assert (await raw.recv_frame())[3] == b"hello"
            (session,) = server.sessions
            session.close(4000, "bye")
            code, reason, _ = await raw.recv_close()
            assert (code, reason) == (4000, "bye")
            assert await raw.read_to_eof() == b""  # dropped: we never answered
            closed = await session.wait_closed()
    assert closed.code == 1006
    assert not closed.clean


# -- lifecycle ------------------------------------------------------------------


async def test_graceful_shutdown_closes_clients_with_1001(running_server: Any) -> None:
    server = WebSocketServer(open_echo())
    done = anyio.Event()
    codes: list[int] = []

    async def serve(*, task_status: anyio.abc.TaskStatus[WebSocketServer]) -> None:
        await server.serve(task_status=task_status)
        done.set()

    async def client(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with connect(server.url) as ws:
            task_status.started()
            async for _ in ws:
                pass  # ends quietly on 1001
            assert ws.closed_event is not None
            codes.append(ws.closed_event.code)
            assert ws.closed_event.reason == "server shutting down"

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(serve)
            async with anyio.create_task_group() as clients:
                for _ in range(3):
                    await clients.start(client)
                assert len(server.sessions) == 3
                server.shutdown()
            await done.wait()
    assert codes == [1001, 1001, 1001]
    assert server.sessions == []


async def test_cancelling_serve_still_closes_clients_with_1001() -> None:
    server = WebSocketServer(open_echo())
    server_scope = anyio.CancelScope()

    async def run_server(*, task_status: anyio.abc.TaskStatus[WebSocketServer]) -> None:
        with server_scope:
            await server.serve(task_status=task_status)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(run_server)
            async with connect(server.url) as ws:
                server_scope.cancel()
                async for _ in ws:
                    pass
    assert ws.closed_event is not None
    assert ws.closed_event.code == 1001


async def test_shutdown_answers_pending_handshakes_with_503(raw_client: Any) -> None:
    deciding = anyio.Event()

    class Slow(Handler):
        async def on_handshake(self, session: ServerSession, request: HandshakeRequest) -> Accept:
            deciding.set()
            await anyio.sleep_forever()
            raise AssertionError

    server = WebSocketServer(Slow(), shutdown_timeout=0.5)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            async with raw_client(server.port) as raw:
                await raw.send(
                    f"GET / HTTP/1.1\r\nHost: localhost:{server.port}\r\n".encode()
                    + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
                await deciding.wait()
                server.shutdown()
                status, _headers, _body = await raw.read_response()
                assert status == 503


async def test_shutdown_answers_half_sent_requests_with_503(raw_client: Any) -> None:
    server = WebSocketServer(open_echo(), shutdown_timeout=0.5)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            async with raw_client(server.port) as raw:
                await raw.send(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: webso")
                while not any(
                    slot.session is not None and slot.session.core.bytes_received
                    for slot in server._slots
                ):
                    await anyio.sleep(0.01)  # until the server has read the partial head
                server.shutdown()
                status, _headers, body = await raw.read_response()
                assert status == 503
                assert body == b"server shutting down"


async def test_exception_in_on_message_closes_1011_and_spares_others(
    running_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Fragile(EchoHandler):
        async def on_message(self, session: ServerSession, message: str | bytes) -> None:
            if message == "boom":
                raise RuntimeError("handler bug")
            await super().on_message(session, message)

    with anyio.fail_after(10), caplog.at_level(logging.ERROR, logger="wshub.server"):
        async with (
            running_server(Fragile(AccessPolicy(require_auth=False))) as server,
            connect(server.url) as other,
            connect(server.url) as victim,
        ):
            await victim.send("boom")
            with pytest.raises(ConnectionClosed) as info:
                await victim.recv()
            assert (info.value.code, info.value.reason) == (1011, "internal error")
            await other.send("still here")
            assert await other.recv() == "still here"
    records = [r for r in caplog.records if r.name == "wshub.server" and r.exc_info]
    assert records
    assert "on_message" in records[0].getMessage()
    assert "handler bug" not in info.value.reason


async def test_session_abort_drops_the_transport_without_a_close_frame(
    running_server: Any, raw_client: Any
) -> None:
    class Aborting(Recorder):
        async def on_message(self, session: ServerSession, message: str | bytes) -> None:
            session.abort()

    handler = Aborting()
    with anyio.fail_after(10):
        async with running_server(handler) as server, raw_client(server.port) as client:
            await client.handshake()
            await client.send_frame(0x1, b"please go")
            rest = await client.read_to_eof()
            assert rest == b""  # no close frame: the transport was just dropped
            await handler.all_closed.wait()
    [event] = handler.closed.values()
    assert event.code == 1006
    assert not event.clean


async def test_exception_in_on_handshake_gives_500(running_server: Any) -> None:
    class Broken(Handler):
        async def on_handshake(self, session: ServerSession, request: HandshakeRequest) -> Denial:
            raise ValueError("oops")

    with anyio.fail_after(10):
        async with running_server(Broken()) as server:
            with pytest.raises(HandshakeRejected) as info:
                async with connect(server.url):
                    pass
            assert info.value.status == 500
            assert b"oops" not in info.value.body


async def test_slow_consumer_is_closed_1013_and_others_are_unaffected(
    running_server: Any, raw_client: Any
) -> None:
    chunk = b"\x00" * 65536
    flooded = anyio.Event()

    class Flooder(Recorder):
        async def on_message(self, session: ServerSession, message: str | bytes) -> None:
            if message != "flood":
                await super().on_message(session, message)
                return
            # Yield between sends so the writer fills the kernel buffers first:
            # the outbox overflows only once the peer really stops reading.
            while session.send_binary(chunk):
                await anyio.sleep(0)
            flooded.set()

    handler = Flooder()
    limits = Limits(max_outbox_size=256 * 1024, close_timeout=0.3)
    with anyio.fail_after(20):
        async with (
            running_server(handler, limits=limits) as server,
            connect(server.url) as other,
            raw_client(server.port) as raw,
        ):
            await raw.handshake()
            await raw.send_frame(0x1, b"flood")
            await flooded.wait()
            await other.send("unaffected")
            assert await other.recv() == "unaffected"
            received = await raw.read_to_eof()  # the server dropped us
            assert len(received) > limits.max_outbox_size
            slow = next(
                s
                for s in handler.opened
                if s.remote == raw.stream.extra(anyio.abc.SocketAttribute.local_address)
            )
            event = await slow.wait_closed()
            assert (event.code, event.initiator) == (1013, Side.LOCAL)
            await other.send("still fine")
            assert await other.recv() == "still fine"


async def test_bad_clients_do_not_stop_the_accept_loop(
    running_server: Any, raw_client: Any
) -> None:
    with anyio.fail_after(10):
        async with running_server(open_echo()) as server:
            for _ in range(10):
                async with raw_client(server.port):
                    pass  # connect and leave at once
            async with raw_client(server.port) as raw:
                await raw.handshake()
                await raw.send(b"\x81")  # half a frame header, then gone
            async with connect(server.url) as ws:
                await ws.send("still serving")
                assert await ws.recv() == "still serving"


# -- TLS ----------------------------------------------------------------------------


async def test_tls_server_and_wss_client(running_server: Any, raw_client: Any) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with anyio.fail_after(10):
        async with running_server(open_echo(), ssl=server_ctx) as server:
            assert server.url.startswith("wss://127.0.0.1:")
            async with connect(server.url, ssl=client_ctx) as ws:
                await ws.send("secure")
                assert await ws.recv() == "secure"
                await ws.send(b"\x01" * 300_000)
                assert await ws.recv() == b"\x01" * 300_000
            assert ws.closed_event is not None
            assert ws.closed_event.code == 1000
            # A plain-TCP client fails the TLS handshake and is dropped; the
            # server lives on.
            async with raw_client(server.port) as plain:
                await plain.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert b"HTTP" not in await plain.read_to_eof()
            async with connect(server.url, ssl=client_ctx) as ws:
                await ws.send("again")
                assert await ws.recv() == "again"
