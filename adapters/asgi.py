"""The hub as an ASGI application: ``HubApp``, for uvicorn, Hypercorn, Starlette, FastAPI.

The same hub as ``HubServer`` (the same ``HubRuntime``: auth, Origin and
Host checks, topics, commands, presence, limits, stats) behind an ASGI
server's port, routing and TLS::

    hub = HubApp(AccessPolicy(tokens=StaticTokens(["s3cret"])))
    app = Starlette(routes=[Mount("/ws", app=hub)], lifespan=hub.lifespan)

What the ASGI server does, and what is left to us:

- The server frames and compresses every message itself, so a broadcast is
  encoded once (one ``str`` for every recipient) but framed per connection.
- Each connection has a bounded outbox (``Limits.max_outbox_size``, counted
  in frame bytes) drained by one sender task awaiting ``send``: a peer that
  stops reading fills it and is closed with 1013, as on the native server.
- Keepalive (pings) and the largest message the server reads are the
  server's settings (``--ws-max-size``, ``--ws-ping-interval`` for uvicorn;
  ``websocket_max_message_size``, ``websocket_ping_interval`` for
  Hypercorn); ``Limits.max_message_size`` is checked again here (1009).
- The hub's timers (command timeouts, first-message auth deadlines,
  expiring credentials) run in a task started by the ASGI lifespan: either
  the server's (``HubApp`` as the top-level app) or the parent app's
  (``lifespan=hub.lifespan``). Without it every upgrade is refused with 500
  and the log says why.
- Refusals: with the ``websocket.http.response`` extension (uvicorn,
  Hypercorn) the HTTP status and headers of the native server (401 with
  ``WWW-Authenticate``, 403, 429 with ``Retry-After``, 503); without it, a
  close before accept, which the server answers with 403. ``refusal="close"``
  accepts and closes with 4401/4403/4429 instead, on any server.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Literal, ParamSpec, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from ..core.auth import SUBPROTOCOL, Authenticator, Denial, select_subprotocol
from ..core.envelope import Codec
from ..core.hosts import is_loopback, loopback_hosts, normalize_hosts
from ..core.hub_config import HubConfig
from ..core.hub_stats import prometheus_text
from ..core.limits import Limits
from ..core.outbox_connection import OutboxConnection, TextCache
from ..core.topics import TopicPolicy
from ._asgi_session import (
    AsgiSession,
    Message,
    Receive,
    Scope,
    Send,
    client_address,
    deny,
    handshake_request,
    header_values,
)
from .blocking import BlockingOperations, HubStoppedError
from .broker import Broker
from .hub import METRICS_CONTENT_TYPE
from .hub_commands import log_conn
from .hub_gate import RefusalMode, Refused
from .hub_operations import HubOperations
from .hub_runtime import ConnectListener, DisconnectListener, EventListener, HubRuntime

__all__ = ["HubApp", "ThreadsafeHub"]

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("wshub.asgi")

_NOT_RUNNING = (
    "wshub HubApp: an upgrade arrived but the hub is not running, so it was refused (500). "
    "The hub runs from the ASGI lifespan: as the top-level app, run the server with its "
    "lifespan on (uvicorn --lifespan on, the default 'auto' also works); mounted in "
    "Starlette or FastAPI, pass lifespan=hub.lifespan to the parent app (or enter "
    "'async with hub.lifespan(app):' in your own lifespan)."
)


class HubApp(HubOperations):
    """An ASGI application serving the hub on WebSocket connections.

    Mount it anywhere a WebSocket may arrive (``Mount("/ws", app=hub)``,
    ``app.mount("/ws", hub)``, ``WebSocketRoute("/ws", hub)``) or serve it
    alone (``uvicorn module:hub``). Plain HTTP requests to it get ``/healthz``
    (200), ``/metrics`` when ``metrics`` is set, else 426.

    The arguments are ``HubServer``'s, less the listener's (host, port, TLS,
    compression: the ASGI server's business). ``limits``: of ``Limits``
    only ``max_outbox_size``, ``max_message_size`` and ``close_timeout``
    apply here. ``allowed_hosts``: the ``Host`` values upgrades may carry
    (else 403); "auto" allows only the loopback names when the server
    listens on loopback (DNS rebinding), any Host otherwise; behind a
    reverse proxy on loopback, pass your public host names.
    ``shutdown_timeout``: how long the lifespan's end waits for connections
    to finish their closing handshake.
    """

    def __init__(
        self,
        auth: Authenticator,
        *,
        limits: Limits | None = None,
        config: HubConfig | None = None,
        default_topic: TopicPolicy | None = None,
        codec: Codec | None = None,
        metrics: bool = False,
        slow_consumer_grace: float = 1.0,
        shutdown_timeout: float = 5.0,
        on_event: EventListener | None = None,
        on_connect: ConnectListener | None = None,
        on_disconnect: DisconnectListener | None = None,
        auth_message: bool = False,
        refusal: RefusalMode = "http",
        allowed_hosts: Iterable[str] | Literal["auto"] | None = "auto",
        broker: Broker | None = None,
    ) -> None:
        self.runtime = HubRuntime(
            auth,
            config=config,
            default_topic=default_topic,
            codec=codec,
            slow_consumer_grace=slow_consumer_grace,
            on_event=on_event,
            on_connect=on_connect,
            on_disconnect=on_disconnect,
            auth_message=auth_message,
            refusal=refusal,
            broker=broker,
        )
        self.hub = self.runtime.hub
        self.broker = broker
        self.loop = self.runtime.loop
        self.limits = limits or Limits()
        self.metrics = metrics
        self.slow_consumer_grace = slow_consumer_grace
        self.shutdown_timeout = shutdown_timeout
        self.allowed_hosts: frozenset[str] | Literal["auto"] | None
        if allowed_hosts is None or allowed_hosts == "auto":
            self.allowed_hosts = allowed_hosts
        else:
            self.allowed_hosts = normalize_hosts(allowed_hosts)
        self.command = self.runtime.command
        self.add_command = self.runtime.add_command
        self.binary = self.runtime.binary
        self._texts = TextCache()
        self._sessions: set[AsgiSession] = set()
        self._idle: anyio.Event | None = None  # set when the last session ends
        self._running = False
        self._warned = False
        self._loopback: dict[int, frozenset[str]] = {}
        self._portal: BlockingPortal | None = None
        self._loop_thread: int | None = None
        self._threadsafe = ThreadsafeHub(self)

    # -- lifecycle -------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the lifespan runs (between startup and shutdown)."""
        return self._running

    @property
    def sessions(self) -> int:
        """WebSocket connections this app is serving now (open or closing)."""
        return len(self._sessions)

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:  # noqa: ARG002
        """Run the hub (commands, timers) for the body's duration.

        Starlette/FastAPI: ``Starlette(..., lifespan=hub.lifespan)``. At the
        end: pending commands get ``shutting_down``, connections 1001, and
        those still open after ``shutdown_timeout`` are dropped.
        """
        if self._running:
            raise RuntimeError("this HubApp's lifespan is already running (one at a time)")
        async with anyio.create_task_group() as tg, BlockingPortal() as portal:
            await tg.start(self.runtime.run)
            self._running = True
            self._portal, self._loop_thread = portal, threading.get_ident()
            try:
                yield
            finally:
                self._portal = None
                with anyio.CancelScope(shield=True):
                    await self._stop()
                self._running = False
                tg.cancel_scope.cancel()

    def threadsafe(self) -> ThreadsafeHub:
        """The hub's operations as blocking calls for other threads (``ThreadsafeHub``)."""
        return self._threadsafe

    def shutdown(self) -> None:
        """Stop serving (call from the event loop): commands get ``shutting_down``,
        connections close with 1001, new upgrades get 503. The ASGI server goes on."""
        self.runtime.begin_shutdown()
        for session in list(self._sessions):
            session.close(1001, "server shutting down")

    async def _stop(self) -> None:
        self.shutdown()
        with anyio.move_on_after(self.shutdown_timeout):
            while self._sessions:
                self._idle = anyio.Event()
                await self._idle.wait()
        for session in list(self._sessions):
            log_conn(
                logging.INFO, session.conn_id, "still open at the end of the lifespan: dropped"
            )
            session.abort()

    # -- ASGI ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":  # pragma: no cover - ASGI says startup first
            return
        started = False
        try:
            async with self.lifespan():
                started = True
                await send({"type": "lifespan.startup.complete"})
                while (await receive())["type"] != "lifespan.shutdown":
                    pass  # pragma: no cover - nothing else is defined
        except Exception as exc:
            if started:
                await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, send: Send) -> None:
        path = _route_path(scope)
        status, headers, body = 426, [(b"upgrade", b"websocket")], b"Upgrade Required"
        if scope.get("method") == "GET":
            if path == "/healthz":
                status, headers, body = 200, [], b"ok"
            elif path == "/metrics" and self.metrics:
                text = prometheus_text(self.hub.stats())
                if self.broker is not None:
                    text += self.broker.metrics_text()
                status, body = 200, text.encode("utf-8")
                headers = [(b"content-type", METRICS_CONTENT_TYPE.encode("ascii"))]
        if not any(name == b"content-type" for name, _ in headers):
            headers.append((b"content-type", b"text/plain; charset=utf-8"))
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the peer left before the app was called
        conn_id = secrets.token_hex(8)
        if not self._running:
            if not self._warned:
                self._warned = True
                logger.error(_NOT_RUNNING)
            else:
                logger.error("wshub HubApp: upgrade refused, the hub is not running (no lifespan)")
            await deny(scope, send, 500, "hub not running", ())
            return
        if not self._host_allowed(scope):
            log_conn(logging.INFO, conn_id, "refused: 403 host not allowed")
            await deny(scope, send, 403, "host not allowed", ())
            return
        request = handshake_request(scope)
        remote = client_address(scope)
        try:
            verdict = await self.runtime.decide(conn_id, request, remote)
        except Exception:  # the authenticator raised: a 500, as on the native server
            log_conn(logging.ERROR, conn_id, "deciding the upgrade raised", exc=True)
            verdict = Denial(500, "internal error")
        if isinstance(verdict, Denial):
            await deny(scope, send, verdict.status, verdict.reason, verdict.headers)
            return
        accept: Message = {
            "type": "websocket.accept",
            "subprotocol": select_subprotocol(request, (SUBPROTOCOL,)),
        }
        if isinstance(verdict, Refused):
            await self._refuse_after_accept(receive, send, accept, verdict)
            return
        connection = OutboxConnection(limits=self.limits, texts=self._texts)
        session = AsgiSession(
            self.runtime, conn_id, connection, receive, send, grace=self.slow_consumer_grace
        )
        # No await between the verdict and this: admission stays exact.
        info = self.runtime.register(
            conn_id, connection, verdict, remote=remote, request=request, wake=session.wake
        )
        self._sessions.add(session)
        try:

            async def announce() -> None:
                if info is not None:
                    await self.runtime.announce(info)

            await session.run(accept, announce)
        finally:
            self._sessions.discard(session)
            if not self._sessions and self._idle is not None:
                self._idle.set()

    async def _refuse_after_accept(
        self, receive: Receive, send: Send, accept: Message, refused: Refused
    ) -> None:
        """Refusal mode "close": a code the page can read (4401, 4403, 4429)."""
        try:
            await send(accept)
            await send({"type": "websocket.close", "code": refused.code, "reason": refused.reason})
            with anyio.move_on_after(self.limits.close_timeout):
                while (await receive())["type"] != "websocket.disconnect":
                    pass
        except Exception:  # the peer left first: nothing more to tell it
            logger.debug("refused connection lost", exc_info=True)

    def _host_allowed(self, scope: Scope) -> bool:
        allowed = self.allowed_hosts
        if allowed == "auto":
            allowed = self._auto_hosts(scope)
        if allowed is None:
            return True
        hosts = header_values(scope, b"host")
        return len(hosts) == 1 and hosts[0].strip().lower() in allowed

    def _auto_hosts(self, scope: Scope) -> frozenset[str] | None:
        """Loopback names when the server listens on loopback, else None (any)."""
        server = scope.get("server")
        if not server or server[1] is None or not is_loopback(str(server[0])):
            return None
        port = int(server[1])
        hosts = self._loopback.get(port)
        if hosts is None:
            hosts = self._loopback[port] = loopback_hosts(port)
        return hosts

    def __repr__(self) -> str:
        state = "running" if self._running else "not running"
        return f"<HubApp {state}, {len(self._sessions)} connections>"


def _route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps the full path in ``path``)."""
    path = str(scope.get("path", "/"))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


class ThreadsafeHub(BlockingOperations):
    """A ``HubApp``'s operations as blocking calls, safe from any thread.

    The ``ThreadedHub`` of an ASGI deployment: the loop is the ASGI
    server's, so there is nothing to start or stop; calls made while the
    app's lifespan is not running raise ``HubStoppedError``. From a
    synchronous FastAPI route, a worker thread or a GUI thread::

        hub.threadsafe().publish("news", {"headline": "..."})
    """

    def __init__(self, app: HubApp) -> None:
        self.app = app

    @property
    def _target(self) -> HubApp:
        return self.app

    @property
    def running(self) -> bool:
        return self.app._portal is not None

    def _call(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        portal = self.app._portal
        if portal is None:
            raise HubStoppedError("the hub is not running (its ASGI lifespan is not)")
        if threading.get_ident() == self.app._loop_thread:
            return func(*args, **kwargs)  # already in the loop: a portal call would deadlock
        try:
            return portal.call(lambda: func(*args, **kwargs))
        except RuntimeError as exc:
            if self.app._portal is None:
                raise HubStoppedError("the hub was stopped") from exc
            raise
