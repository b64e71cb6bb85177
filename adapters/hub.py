"""The sans-IO ``Hub`` over real sockets: ``HubHandler`` and ``HubServer``.

``HubHandler`` is the server's ``Handler`` for a ``HubRuntime`` (the hub, its
gate, commands and listeners, shared with the ASGI app): it turns the
runtime's verdict on each upgrade into an accept or an HTTP refusal,
registers the session and feeds it every message.
``HubServer`` puts a ``WebSocketServer`` and a ``HubHandler`` together and
is what applications use::

    server = HubServer(AccessPolicy(tokens=StaticTokens(["s3cret"])))

    @server.command("add")
    async def add(ctx: CommandContext, payload: list[int]) -> int:
        return sum(payload)

    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        server.publish("news", {"headline": "..."})

Every operation of the hub (``broadcast``, ``publish``, ``send_to``...) is
synchronous and non-blocking: it queues bytes and wakes the writers of the
sessions concerned. Call them from the event loop; from other threads use
``ThreadedHub``.
"""

from __future__ import annotations

import logging
import os
import ssl as _ssl
from collections.abc import Awaitable, Iterable
from typing import Literal

import anyio
from anyio.abc import TaskStatus

from ..core import Closed, HandshakeRequest, HttpRequest, Limits
from ..core.auth import SUBPROTOCOL, Authenticator, Denial, Principal, select_subprotocol
from ..core.envelope import Codec
from ..core.hub_config import HubConfig
from ..core.hub_stats import prometheus_text
from ..core.topics import TopicPolicy
from .broker import Broker
from .descriptors import descriptor_budget
from .handler import Accept, Handler, HttpResponse
from .hub_commands import log_conn
from .hub_gate import CLOSE_CODES, AwaitingAuth, RefusalMode, Refused, TokenVerifier
from .hub_operations import HubOperations
from .hub_runtime import ConnectListener, DisconnectListener, EventListener, HubRuntime
from .recording import Recorder
from .server import WebSocketServer
from .session import ServerSession
from .static_files import StaticFiles

__all__ = [
    "CLOSE_CODES",
    "METRICS_CONTENT_TYPE",
    "HubHandler",
    "HubServer",
    "RefusalMode",
    "TokenVerifier",
    "descriptor_budget",
]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HubHandler(HubRuntime, Handler):
    """Drives a ``Hub`` from the server's hooks; runs commands in its task group.

    ``auth`` decides each upgrade (an ``AccessPolicy`` or any ``Authenticator``,
    sync or async) and must yield a ``Principal``. ``metrics`` serves
    ``GET /metrics`` (unauthenticated: enable it only where the port is
    private). ``slow_consumer_grace``: after the hub fails a connection (1013),
    the seconds its close frame may take to leave before the transport is
    dropped. ``run`` must be running for commands to execute (``HubServer``
    does that).

    ``auth_message``: a handshake without any credentials is accepted, and
    the connection must then send ``{"message_type": "auth", "payload":
    {"token": ...}}`` within ``HubConfig.auth_timeout`` (it receives nothing
    before); needs an ``auth`` with ``verify_token`` (``AccessPolicy`` has
    it). The same message renews expiring credentials on an open connection.
    ``refusal``: "http" (default) or "close" (see ``RefusalMode``).
    """

    def __init__(
        self,
        auth: Authenticator,
        *,
        config: HubConfig | None = None,
        default_topic: TopicPolicy | None = None,
        codec: Codec | None = None,
        metrics: bool = False,
        slow_consumer_grace: float = 1.0,
        on_event: EventListener | None = None,
        on_connect: ConnectListener | None = None,
        on_disconnect: DisconnectListener | None = None,
        auth_message: bool = False,
        refusal: RefusalMode = "http",
        broker: Broker | None = None,
    ) -> None:
        super().__init__(
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
        self.metrics = metrics

    # -- Handler hooks -----------------------------------------------------

    async def on_handshake(
        self, session: ServerSession, request: HandshakeRequest
    ) -> Accept | Denial:
        subprotocol = select_subprotocol(request, (SUBPROTOCOL,))
        # No await from the decision to the hub.add in on_open: admission stays exact.
        verdict = await self.decide(session.id, request, session.remote)
        if isinstance(verdict, Denial):
            return verdict
        return Accept(principal=verdict, subprotocol=subprotocol)

    #: ``GET /wshub.js`` (the browser client); ``StaticFiles(demo=True)`` adds the demo page.
    static_files = StaticFiles()

    async def on_http(self, session: ServerSession, request: HttpRequest) -> HttpResponse:
        if self.metrics and request.method == "GET" and request.path == "/metrics":
            text = prometheus_text(self.hub.stats())
            if self.broker is not None:
                text += self.broker.metrics_text()
            body = text.encode("utf-8")
            return HttpResponse(200, (("Content-Type", METRICS_CONTENT_TYPE),), body)
        static = self.static_files.respond(request)
        if static is not None:
            return static
        return await super().on_http(session, request)

    async def on_open(self, session: ServerSession) -> None:
        principal = session.principal
        if not session.is_open:
            return  # failed by frames that came with the handshake
        if isinstance(principal, Refused):
            session.close(principal.code, principal.reason)
            return
        assert isinstance(principal, Principal | AwaitingAuth)
        await self.open(
            session.id,
            session.core,
            principal,
            remote=session.remote,
            request=session.request,
            wake=session.waker,
        )

    def on_message_nowait(
        self, session: ServerSession, message: str | bytes
    ) -> Awaitable[None] | None:
        # The body of HubRuntime.receive, without waiting unless the hub's
        # events need it: most envelopes are routed from the read callback.
        if isinstance(message, str):
            events = self.hub.receive_text(session.id, message)
        else:
            events = self.hub.receive_binary(session.id, message)
        return self.handle_events(events) if events else None

    async def on_message(self, session: ServerSession, message: str | bytes) -> None:
        rest = self.on_message_nowait(session, message)
        if rest is not None:
            await rest

    async def on_close(self, session: ServerSession, event: Closed) -> None:
        await self.closed(session.id, event, drop=lambda: self._drop_after_grace(session))

    async def _drop_after_grace(self, session: ServerSession) -> None:
        """A failed (1013) connection whose peer does not read: stop waiting for it."""
        with anyio.move_on_after(self.slow_consumer_grace):
            await session.wait_closed()
            return
        log_conn(logging.INFO, session.id, "dropping the transport of a slow consumer")
        session.abort()


def _single_error(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The one ``Exception`` inside (possibly nested) groups, else None."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        item = pending.pop()
        if isinstance(item, BaseExceptionGroup):
            pending.extend(item.exceptions)
        else:
            leaves.append(item)
    if len(leaves) == 1 and isinstance(leaves[0], Exception):
        return leaves[0]
    return None


class HubServer(HubOperations):
    """A WebSocket server whose connections are routed by a ``Hub``.

    ``auth`` is required (deny by default): ``AccessPolicy(require_auth=False)``
    is the explicit open mode. Run with ``await tg.start(server.serve)``; stop
    with ``server.shutdown()`` (pending commands get ``shutting_down``, every
    connection 1001, then drain) or by cancelling ``serve``.
    """

    def __init__(
        self,
        auth: Authenticator,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl: _ssl.SSLContext | None = None,
        limits: Limits | None = None,
        compression: bool = False,
        shutdown_timeout: float = 5.0,
        config: HubConfig | None = None,
        default_topic: TopicPolicy | None = None,
        codec: Codec | None = None,
        metrics: bool = False,
        slow_consumer_grace: float = 1.0,
        on_event: EventListener | None = None,
        on_connect: ConnectListener | None = None,
        on_disconnect: DisconnectListener | None = None,
        auth_message: bool = False,
        refusal: RefusalMode = "http",
        allowed_hosts: Iterable[str] | Literal["auto"] | None = "auto",
        record: str | os.PathLike[str] | Recorder | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.handler = HubHandler(
            auth,
            config=config,
            default_topic=default_topic,
            codec=codec,
            metrics=metrics,
            slow_consumer_grace=slow_consumer_grace,
            on_event=on_event,
            on_connect=on_connect,
            on_disconnect=on_disconnect,
            auth_message=auth_message,
            refusal=refusal,
            broker=broker,
        )
        self.hub = self.handler.hub
        self.broker = broker
        self.loop = self.handler.loop
        self.server = WebSocketServer(
            self.handler,
            host=host,
            port=port,
            ssl=ssl,
            limits=limits,
            compression=compression,
            shutdown_timeout=shutdown_timeout,
            allowed_hosts=allowed_hosts,
            record=record,
        )
        self.command = self.handler.command
        self.add_command = self.handler.add_command
        self.binary = self.handler.binary

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        """The bound port (the real one once ``serve`` started, even for port 0)."""
        return self.server.port

    async def serve(
        self, *, task_status: TaskStatus[HubServer] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, report started (with this server), serve until shut down or cancelled.

        A single failure (the port is taken...) is raised as itself, not
        wrapped in an exception group.
        """
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.handler.run)
                try:
                    async with anyio.create_task_group() as serving:
                        await serving.start(self.server.serve)
                        task_status.started(self)
                finally:
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            leaf = _single_error(group)
            if leaf is None:
                raise
            raise leaf from None

    def shutdown(self) -> None:
        """Stop gracefully (call from the event loop); ``serve`` returns when done."""
        self.handler.begin_shutdown()
        self.server.shutdown()
