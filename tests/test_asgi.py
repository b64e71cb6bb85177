"""``HubApp`` driven as a raw ASGI callable, without a server (asyncio and trio).

What only the app decides: refusals with and without the
``websocket.http.response`` extension, the Host allowlist, the lifespan
protocol and the error without it, plain HTTP, our message-size limit, peers
that leave early, the close timeout, and the thread-safe handle. The same hub
behind real servers is tested in ``test_adapter_hub*.py`` and
``test_asgi_servers.py``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup

from wshub.adapters import HubApp, HubStoppedError
from wshub.core import Closed, Limits
from wshub.core.auth import SUBPROTOCOL, AccessPolicy, Principal, StaticTokens
from wshub.core.registry import ConnectionInfo

pytestmark = pytest.mark.anyio

TOKEN = "s3cret"
HTTP_RESPONSE = {"websocket.http.response": {}}


def policy(**kwargs: Any) -> AccessPolicy:
    return AccessPolicy(tokens=StaticTokens({TOKEN: Principal("alice")}), **kwargs)


def ws_scope(
    *,
    token: str | None = TOKEN,
    host: str | None = "127.0.0.1:8000",
    headers: tuple[tuple[str, str], ...] = (),
    server: tuple[str, int] = ("127.0.0.1", 8000),
    extensions: dict[str, Any] | None = None,
    subprotocols: tuple[str, ...] = (SUBPROTOCOL,),
    path: str = "/",
    query: bytes = b"",
) -> dict[str, Any]:
    raw = [*(() if host is None else (("host", host),)), *headers]
    if token is not None:
        raw.append(("authorization", f"Bearer {token}"))
    return {
        "type": "websocket",
        "path": path,
        "root_path": "",
        "query_string": query,
        "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in raw],
        "subprotocols": list(subprotocols),
        "server": server,
        "client": ("127.0.0.1", 5555),
        "extensions": HTTP_RESPONSE if extensions is None else extensions,
    }


class Peer:
    """The server side of one ASGI call: what the app receives and what it sent."""

    def __init__(self) -> None:
        self.inbox, self._app_receive = anyio.create_memory_object_stream[dict[str, Any]](100)
        self._app_send, self.outbox = anyio.create_memory_object_stream[dict[str, Any]](100)
        self.done = anyio.Event()

    async def receive(self) -> dict[str, Any]:
        return await self._app_receive.receive()

    async def send(self, message: dict[str, Any]) -> None:
        await self._app_send.send(message)

    async def put(self, message: dict[str, Any]) -> None:
        await self.inbox.send(message)

    async def get(self) -> dict[str, Any]:
        return await self.outbox.receive()

    async def text(self) -> dict[str, Any]:
        message = await self.get()
        assert message["type"] == "websocket.send", message
        value = json.loads(message["text"])
        assert isinstance(value, dict)
        return value


async def call(tg: TaskGroup, app: HubApp, scope: dict[str, Any]) -> Peer:
    peer = Peer()

    async def run() -> None:
        try:
            await app(scope, peer.receive, peer.send)
        finally:
            peer.done.set()

    tg.start_soon(run)
    return peer


@asynccontextmanager
async def running(app: HubApp) -> AsyncIterator[TaskGroup]:
    async with anyio.create_task_group() as tg, app.lifespan():
        yield tg
        tg.cancel_scope.cancel()


async def opened(tg: TaskGroup, app: HubApp, **scope: Any) -> Peer:
    peer = await call(tg, app, ws_scope(**scope))
    await peer.put({"type": "websocket.connect"})
    accept = await peer.get()
    assert accept == {"type": "websocket.accept", "subprotocol": SUBPROTOCOL}
    assert (await peer.text())["message_type"] == "welcome"
    return peer


async def refusal(app: HubApp, **scope: Any) -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, headers and body of a refused upgrade (with the extension)."""
    async with running(app) as tg:
        peer = await call(tg, app, ws_scope(**scope))
        await peer.put({"type": "websocket.connect"})
        start, body = await peer.get(), await peer.get()
        assert start["type"] == "websocket.http.response.start"
        assert body["type"] == "websocket.http.response.body"
        await peer.done.wait()
        return start["status"], dict(start["headers"]), body["body"]


# -- refusals --------------------------------------------------------------------


async def test_refusals_are_http_responses_with_the_extension() -> None:
    with anyio.fail_after(5):
        status, headers, body = await refusal(HubApp(policy()), token=None)
        assert (status, body) == (401, b"missing bearer token")
        assert headers[b"www-authenticate"] == b"Bearer"
        assert headers[b"content-type"] == b"text/plain; charset=utf-8"
        assert headers[b"content-length"] == b"20"
        status, _, body = await refusal(
            HubApp(policy(allowed_origins=["https://app.test"])),
            headers=(("origin", "https://evil.test"),),
        )
        assert (status, body) == (403, b"origin not allowed")


async def test_without_the_extension_a_refusal_is_a_close_before_accept() -> None:
    app = HubApp(policy())
    with anyio.fail_after(5):
        async with running(app) as tg:
            peer = await call(tg, app, ws_scope(token="wrong", extensions={}))
            await peer.put({"type": "websocket.connect"})
            message = await peer.get()
            # The ASGI server answers 403 for this close (there is no accept).
            assert message == {
                "type": "websocket.close",
                "code": 1008,
                "reason": "invalid bearer token",
            }
            await peer.done.wait()


async def test_refusal_close_mode_accepts_then_closes_with_4401() -> None:
    app = HubApp(policy(), refusal="close")
    with anyio.fail_after(5):
        async with running(app) as tg:
            peer = await call(tg, app, ws_scope(token="wrong"))
            await peer.put({"type": "websocket.connect"})
            assert (await peer.get())["type"] == "websocket.accept"
            assert await peer.get() == {
                "type": "websocket.close",
                "code": 4401,
                "reason": "invalid bearer token",
            }
            await peer.put({"type": "websocket.disconnect", "code": 4401})
            await peer.done.wait()
            assert app.stats().connections == 0


@pytest.mark.parametrize(
    ("allowed", "server", "host", "ok"),
    [
        ("auto", ("127.0.0.1", 8000), "127.0.0.1:8000", True),
        ("auto", ("127.0.0.1", 8000), "localhost:8000", True),
        ("auto", ("127.0.0.1", 8000), "evil.test:8000", False),  # DNS rebinding
        ("auto", ("127.0.0.1", 8000), "127.0.0.1:9000", False),
        ("auto", ("127.0.0.1", 8000), None, False),
        ("auto", ("10.1.2.3", 8000), "anything.test", True),  # not loopback: any Host
        (["app.test"], ("127.0.0.1", 8000), "APP.test", True),
        (["app.test"], ("127.0.0.1", 8000), "127.0.0.1:8000", False),
        (None, ("127.0.0.1", 8000), "evil.test", True),
    ],
)
async def test_the_host_allowlist(
    allowed: Any, server: tuple[str, int], host: str | None, ok: bool
) -> None:
    app = HubApp(policy(), allowed_hosts=allowed)
    with anyio.fail_after(5):
        if ok:
            async with running(app) as tg:
                await opened(tg, app, host=host, server=server)
        else:
            status, _, body = await refusal(app, host=host, server=server)
            assert (status, body) == (403, b"host not allowed")


async def test_two_host_headers_are_refused() -> None:
    app = HubApp(policy())
    with anyio.fail_after(5):
        status, _, _ = await refusal(app, headers=(("host", "127.0.0.1:8000"),))
        assert status == 403


# -- lifespan --------------------------------------------------------------------


async def test_the_lifespan_protocol_runs_the_hub() -> None:
    app = HubApp(policy())
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            peer = await call(tg, app, {"type": "lifespan"})
            await peer.put({"type": "lifespan.startup"})
            assert await peer.get() == {"type": "lifespan.startup.complete"}
            assert app.running
            # a second lifespan while the first runs is refused
            second = await call(tg, app, {"type": "lifespan"})
            await second.put({"type": "lifespan.startup"})
            failed = await second.get()
            assert failed["type"] == "lifespan.startup.failed"
            assert "already running" in failed["message"]
            await peer.put({"type": "lifespan.shutdown"})
            assert await peer.get() == {"type": "lifespan.shutdown.complete"}
            await peer.done.wait()
            assert not app.running


async def test_without_the_lifespan_upgrades_are_refused_and_the_log_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = HubApp(policy())
    with anyio.fail_after(5), caplog.at_level(logging.ERROR, logger="wshub.asgi"):
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                peer = await call(tg, app, ws_scope())
                await peer.put({"type": "websocket.connect"})
                start, body = await peer.get(), await peer.get()
                assert (start["status"], body["body"]) == (500, b"hub not running")
    messages = [r.getMessage() for r in caplog.records]
    assert "lifespan=hub.lifespan" in messages[0]  # the full explanation, once
    assert len(messages) == 2
    assert "lifespan=hub.lifespan" not in messages[1]


# -- plain HTTP ------------------------------------------------------------------


async def http_get(app: HubApp, path: str, root_path: str = "") -> tuple[int, bytes]:
    scope = {"type": "http", "method": "GET", "path": path, "root_path": root_path}
    async with anyio.create_task_group() as tg:
        peer = await call(tg, app, scope)
        start, body = await peer.get(), await peer.get()
    return start["status"], body["body"]


async def test_plain_http_health_metrics_and_426() -> None:
    with anyio.fail_after(5):
        assert await http_get(HubApp(policy()), "/healthz") == (200, b"ok")
        assert (await http_get(HubApp(policy()), "/metrics"))[0] == 426
        assert await http_get(HubApp(policy()), "/") == (426, b"Upgrade Required")
        status, body = await http_get(HubApp(policy(), metrics=True), "/ws/metrics", "/ws")
        assert status == 200
        assert b"wshub_connections 0" in body


# -- connections -------------------------------------------------------------------


async def test_our_message_size_limit_closes_1009() -> None:
    app = HubApp(policy(), limits=Limits(max_message_size=10))
    with anyio.fail_after(5):
        async with running(app) as tg:
            peer = await opened(tg, app)
            await peer.put({"type": "websocket.receive", "text": "é" * 5})  # 10 bytes: fine
            error = await peer.text()
            assert error["error"]["code"] == "invalid_json"
            await peer.put({"type": "websocket.receive", "text": "é" * 6})  # 12 bytes
            assert await peer.get() == {
                "type": "websocket.close",
                "code": 1009,
                "reason": "message too big",
            }
            await peer.put({"type": "websocket.disconnect", "code": 1009})
            await peer.done.wait()


async def test_a_peer_gone_before_the_connect_event_costs_nothing() -> None:
    app = HubApp(policy())
    with anyio.fail_after(5):
        async with running(app) as tg:
            peer = await call(tg, app, ws_scope())
            await peer.put({"type": "websocket.disconnect", "code": 1006})
            await peer.done.wait()
            assert app.sessions == 0


async def test_a_failing_accept_reports_the_connection_closed() -> None:
    ended: list[tuple[str, Closed]] = []

    def on_disconnect(info: ConnectionInfo, event: Closed) -> None:
        ended.append((info.principal.id, event))

    app = HubApp(policy(), on_disconnect=on_disconnect)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        raise OSError("the client left")

    with anyio.fail_after(5):
        async with running(app):
            await app(ws_scope(), receive, send)
    assert [(who, e.code, e.reason) for who, e in ended] == [
        ("alice", 1006, "connection lost during handshake")
    ]
    assert app.hub.footprint() == dict.fromkeys(app.hub.footprint(), 0)


async def test_a_close_the_peer_never_answers_ends_after_close_timeout() -> None:
    app = HubApp(policy(), limits=Limits(close_timeout=0.2))
    with anyio.fail_after(5):
        async with running(app) as tg:
            peer = await opened(tg, app)
            [info] = app.connections()
            assert app.disconnect(info.conn_id, 1008, "go away")
            assert await peer.get() == {
                "type": "websocket.close",
                "code": 1008,
                "reason": "go away",
            }
            # no disconnect event ever comes: the session gives up by itself
            await peer.done.wait()
            assert app.sessions == 0
            assert app.stats().connections == 0


async def test_the_lifespan_end_closes_1001_and_drops_what_does_not_close() -> None:
    app = HubApp(policy(), shutdown_timeout=0.2)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            async with app.lifespan():
                peer = await opened(tg, app)
            # left the lifespan: the close was sent; the peer never answered,
            # so after shutdown_timeout the session was dropped
            assert await peer.get() == {
                "type": "websocket.close",
                "code": 1001,
                "reason": "server shutting down",
            }
            await peer.done.wait()
            assert app.sessions == 0
            assert not app.running


# -- the thread-safe handle ----------------------------------------------------------


async def test_threadsafe_handle_from_a_worker_thread() -> None:
    app = HubApp(policy())
    handle = app.threadsafe()
    with pytest.raises(HubStoppedError, match="not running"):
        handle.broadcast("early", 1)
    with anyio.fail_after(5):
        async with running(app) as tg:
            peer = await opened(tg, app)
            assert handle.running

            def work() -> tuple[int, int, str]:
                handle.configure_topic("t", publish="all")
                [info] = handle.connections()
                handle.subscribe(info.conn_id, "t")
                sent = handle.publish("t", {"from": "thread"})
                return sent, handle.stats().connections, threading.current_thread().name

            sent, connections, thread = await anyio.to_thread.run_sync(work)
            assert (sent, connections) == (1, 1)
            assert thread != threading.current_thread().name
            message = await peer.text()
            assert (message["topic"], message["payload"]) == ("t", {"from": "thread"})
            # in the loop's own thread the call runs directly
            assert handle.broadcast("direct", 2) == 1
            assert (await peer.text())["payload"] == 2
    assert not handle.running
    with pytest.raises(HubStoppedError):
        handle.publish("t", 3)


async def test_an_authenticator_that_raises_is_a_500_and_the_app_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def authenticate(self, request: Any) -> Principal:
            if request.path == "/broken":
                raise RuntimeError("database down")
            return Principal("bob")

    app = HubApp(Broken())
    with anyio.fail_after(5), caplog.at_level(logging.ERROR, logger="wshub.hub"):
        status, _, body = await refusal(app, path="/broken")
        assert (status, body) == (500, b"internal error")
        async with running(app) as tg:
            await opened(tg, app)
    assert "database down" in caplog.text


async def test_a_handler_error_closes_1011_and_stops_delivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = HubApp(policy())
    calls: list[str | bytes] = []

    async def broken(conn_id: str, message: str | bytes) -> None:
        calls.append(message)
        raise RuntimeError("hub bug")

    with anyio.fail_after(5), caplog.at_level(logging.ERROR, logger="wshub.hub"):
        async with running(app) as tg:
            peer = await opened(tg, app)
            app.runtime.receive = broken  # type: ignore[method-assign]
            await peer.put({"type": "websocket.receive", "bytes": b"1"})
            await peer.put({"type": "websocket.receive", "bytes": b"2"})
            assert await peer.get() == {
                "type": "websocket.close",
                "code": 1011,
                "reason": "internal error",
            }
            await peer.put({"type": "websocket.disconnect", "code": 1011})
            await peer.done.wait()
    assert calls == [b"1"]  # the second message is not delivered
    assert caplog.text.count("handling a message raised") == 1


async def test_the_senders_signal_keeps_a_set_that_comes_before_the_wait() -> None:
    from wshub.adapters._asgi_session import _Signal

    signal = _Signal()
    with anyio.fail_after(5):
        signal.set()
        signal.set()  # two wake-ups before a wait: one wait returns at once
        await signal.wait()
        woke = anyio.Event()

        async def waiter() -> None:
            await signal.wait()
            woke.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.05)
            assert not woke.is_set()  # the earlier sets were consumed
            signal.set()
            await woke.wait()
