"""The hub behind each front door it has, for the integration tests.

``serve(front, auth, **kwargs)`` starts one hub on 127.0.0.1, port 0, and
yields a ``Served``: the ``HubServer`` or ``HubApp`` (every operation,
``command``, ``shutdown``...) plus the ``url`` and ``port`` to reach it. The
ASGI fronts are real servers in this process: uvicorn (its ``websockets``,
``websockets-sansio`` and ``wsproto`` implementations, asyncio only) and
Hypercorn (asyncio and trio). A test module takes the ``front`` fixture
(``front_fixtures``) and gets every front, each on its own event loop.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from wshub.adapters import HubServer
from wshub.adapters.asgi import HubApp
from wshub.core.auth import Authenticator

__all__ = [
    "ASGI_FRONTS",
    "FRONTS",
    "QUIET_LEGACY",
    "Front",
    "Served",
    "front_params",
    "serve",
    "serve_asgi",
]

#: Marks for modules that run uvicorn's legacy ``websockets`` implementation:
#: its deprecation warnings are uvicorn's and websockets', not ours.
QUIET_LEGACY = [
    pytest.mark.filterwarnings("ignore:The `websockets` implementation is deprecated"),
    pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated"),
    pytest.mark.filterwarnings("ignore:remove second argument of ws_handler"),
]


@dataclass(frozen=True)
class Front:
    """A way to serve the hub: ``server`` ("native", "uvicorn", "hypercorn"),
    the ASGI server's WebSocket implementation, the event loop."""

    server: str
    backend: str
    ws: str = ""
    #: Seconds the server keeps a transport whose peer never answers our close
    #: frame (a fixed close timeout); 0 when it drops it as the app returns.
    holds_closed_transport: float = 0.0
    #: Whether a protocol error of the client (invalid UTF-8 in a text frame,
    #: an unmasked frame) gets its close frame (1007, 1002); the servers built
    #: on wsproto drop the TCP connection without one.
    closes_protocol_errors: bool = True

    @property
    def native(self) -> bool:
        return self.server == "native"

    @property
    def id(self) -> str:
        return "-".join(part for part in (self.server, self.ws, self.backend) if part)


FRONTS = (
    Front("native", "asyncio"),
    Front("native", "trio"),
    Front("uvicorn", "asyncio", "websockets"),
    Front("uvicorn", "asyncio", "websockets-sansio", holds_closed_transport=10.0),
    Front(
        "uvicorn", "asyncio", "wsproto", holds_closed_transport=10.0, closes_protocol_errors=False
    ),
    Front("hypercorn", "asyncio", closes_protocol_errors=False),
    Front("hypercorn", "trio", closes_protocol_errors=False),
)
ASGI_FRONTS = tuple(f for f in FRONTS if not f.native)


class Served:
    """A running hub: its ``url`` and ``port``; everything else is the hub's.

    ``stop_server()`` asks the server itself to stop (as a signal would):
    for the ASGI fronts, the hub then only hears of it through the lifespan.
    """

    def __init__(
        self, front: Front, hub: HubServer | HubApp, port: int, stop: Callable[[], None]
    ) -> None:
        self.front = front
        self.target = hub
        self.port = port
        self.url = f"ws://127.0.0.1:{port}"
        self.stop_server = stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


@asynccontextmanager
async def serve(front: Front, auth: Authenticator, **kwargs: Any) -> AsyncIterator[Served]:
    """Serve a hub built with ``kwargs`` behind ``front`` until the block ends.

    At the end the hub is shut down (``shutdown()``: 1001 to everyone), then
    the server is stopped.
    """
    if front.native:
        server = HubServer(auth, **kwargs)
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            try:
                yield Served(front, server, server.port, server.shutdown)
            finally:
                server.shutdown()
        return
    app = HubApp(auth, **kwargs)
    async with serve_asgi(front, app, app) as (port, stop):
        try:
            yield Served(front, app, port, stop)
        finally:
            if app.running:  # unless the test stopped the server itself
                app.shutdown()


@asynccontextmanager
async def serve_asgi(
    front: Front, asgi_app: Any, hub: HubApp | None = None
) -> AsyncIterator[tuple[int, Callable[[], None]]]:
    """Serve any ASGI app behind an ASGI ``front`` on 127.0.0.1, port 0.

    Yields the port and a function that asks the server to stop; returns
    once it stopped. ``hub``: a ``HubApp`` whose lifespan the app runs.
    """
    runner = _uvicorn if front.server == "uvicorn" else _hypercorn
    async with runner(front, asgi_app, hub) as served:
        yield served


@asynccontextmanager
async def _uvicorn(
    front: Front, app: Any, hub: HubApp | None
) -> AsyncIterator[tuple[int, Callable[[], None]]]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, ws=front.ws, lifespan="auto", log_config=None)
    server = uvicorn.Server(config)

    def stop() -> None:
        server.should_exit = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.005)
        try:
            yield port, stop
        finally:
            stop()
    sock.close()


@asynccontextmanager
async def _hypercorn(
    front: Front, app: Any, hub: HubApp | None
) -> AsyncIterator[tuple[int, Callable[[], None]]]:
    from hypercorn.config import Config

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 1.0
    config.accesslog = None
    stop = anyio.Event()
    sockets = config.create_sockets()
    listener = sockets.insecure_sockets[0]
    listener.listen(config.backlog)  # connections wait in the backlog until served
    port = int(listener.getsockname()[1])
    async with anyio.create_task_group() as tg:
        tg.start_soon(_run_hypercorn, front.backend, app, config, sockets, stop)
        with anyio.fail_after(10):  # its lifespan ran: it serves (or will at once)
            while hub is not None and not hub.running:
                await anyio.sleep(0.005)
        try:
            yield port, stop.set
        finally:
            stop.set()


async def _run_hypercorn(
    backend: str, app: Any, config: Any, sockets: Any, stop: anyio.Event
) -> None:
    from hypercorn.utils import wrap_app

    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    if backend == "trio":
        from hypercorn.trio.run import worker_serve as trio_worker_serve

        await trio_worker_serve(wrapped, config, sockets=sockets, shutdown_trigger=stop.wait)
    else:
        from hypercorn.asyncio.run import worker_serve

        await worker_serve(wrapped, config, sockets=sockets, shutdown_trigger=stop.wait)


def front_params(fronts: tuple[Front, ...] = FRONTS) -> list[Any]:
    """``pytest.param`` per front, with readable ids."""
    return [pytest.param(front, id=front.id) for front in fronts]
