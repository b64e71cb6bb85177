"""The sans-IO ``Hub`` over real sockets: ``HubHandler`` and ``HubServer``.

``HubHandler`` is a ``Handler`` that authenticates each upgrade, asks the hub
to admit it, registers the session and feeds it every message; command
requests run as tasks of its own task group, each under the hub's deadline.
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

import inspect
import logging
import math
import ssl as _ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import anyio
from anyio.abc import TaskStatus

from ..core import Closed, HandshakeRequest, HttpRequest, Limits
from ..core.auth import (
    SUBPROTOCOL,
    Authenticator,
    Denial,
    Principal,
    bearer_token,
    select_subprotocol,
)
from ..core.envelope import Codec
from ..core.hub import Hub
from ..core.hub_config import HubConfig
from ..core.hub_events import (
    AuthRequest,
    BinaryReceived,
    CommandRequest,
    HubEvent,
    PresenceChanged,
    Published,
)
from ..core.hub_stats import prometheus_text
from ..core.ratelimit import KeyedLimiter
from ..core.redact import redact_query
from ..core.registry import ConnectionInfo, remote_host
from ..core.topics import TopicPolicy
from ._clock import current_time
from .handler import Accept, Handler, HttpResponse
from .hub_commands import CommandRunner, log_conn
from .hub_commands import logger as hub_logger
from .hub_context import (
    BinaryHandler,
    CommandContext,
    CommandHandler,
    ConnectionContext,
)
from .hub_operations import HubOperations
from .server import WebSocketServer
from .session import ServerSession

__all__ = [
    "CLOSE_CODES",
    "METRICS_CONTENT_TYPE",
    "HubHandler",
    "HubServer",
    "RefusalMode",
    "TokenVerifier",
]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

F = TypeVar("F", bound=Callable[..., Any])

#: Called with each ``Published`` / ``PresenceChanged`` event (sync, in the loop).
EventListener = Callable[[HubEvent], None]
#: Called when a connection joins (``info``) or leaves (``info``, ``Closed``).
ConnectListener = Callable[[ConnectionInfo], Any]
DisconnectListener = Callable[[ConnectionInfo, Closed], Any]


#: How a refused handshake is answered: an HTTP status (the standard way; a
#: browser's page only sees close code 1006) or "close": accept, then close
#: at once with an application code the page can read (``CLOSE_CODES``).
RefusalMode = Literal["http", "close"]

#: Close codes of the "close" refusal mode, by the HTTP status they replace.
CLOSE_CODES: dict[int, int] = {401: 4401, 403: 4403, 429: 4429}


@runtime_checkable
class TokenVerifier(Protocol):
    """An authenticator that can also check a bare token (first-message auth
    and refreshes): a principal, or a denial whose reason is sent back."""

    def verify_token(self, token: str) -> Principal | Denial | Awaitable[Principal | Denial]: ...


@dataclass(frozen=True, slots=True)
class _AwaitingAuth:
    """The principal of a connection accepted to authenticate by message."""


@dataclass(frozen=True, slots=True)
class _Refused:
    """The principal of a connection accepted only to be closed with ``code``."""

    code: int
    reason: str


_AWAITING_AUTH = _AwaitingAuth()


class HubHandler(Handler, HubOperations):
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
    ) -> None:
        if auth_message and not isinstance(auth, TokenVerifier):
            raise ValueError("auth_message=True needs an authenticator with verify_token")
        if refusal not in ("http", "close"):
            raise ValueError(f"refusal must be 'http' or 'close', got {refusal!r}")
        self.auth = auth
        self.auth_message = auth_message
        self.refusal = refusal
        self.metrics = metrics
        self.slow_consumer_grace = slow_consumer_grace
        self.on_event = on_event
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.hub = Hub(
            clock=current_time,
            wall_clock=time.time,
            config=config,
            on_output=self._wake,
            codec=codec,
            default_topic=default_topic,
        )
        self._sessions: dict[str, ServerSession] = {}
        cfg = self.hub.config
        if cfg.max_connections is None:
            cfg = self.hub.config = replace(cfg, max_connections=descriptor_budget())
        self._auth_failures: KeyedLimiter | None = None
        if cfg.auth_failure_rate is not None:
            self._auth_failures = KeyedLimiter(cfg.auth_failure_rate, cfg.auth_failure_burst)
        self._binary: BinaryHandler | None = None
        self._commands = CommandRunner(self.hub)

    # -- registration ------------------------------------------------------

    def command(
        self, name: str, *, scope: str | None = None, timeout: float | None = None
    ) -> Callable[[F], F]:
        """Decorator: register ``handler(ctx, payload) -> result`` as command ``name``.

        ``scope`` must be among the caller's ``Principal.scopes``; ``timeout``
        defaults to ``HubConfig.default_command_timeout``. A plain (non-async)
        function runs in a worker thread.
        """

        def register(func: F) -> F:
            self.add_command(name, func, scope=scope, timeout=timeout)
            return func

        return register

    def add_command(
        self,
        name: str,
        func: CommandHandler,
        *,
        scope: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Register a command handler (the non-decorator form of ``command``)."""
        self._commands.add(name, func, scope=scope, timeout=timeout)

    def binary(self, func: BinaryHandler) -> BinaryHandler:
        """Decorator: handle binary messages with ``async handler(ctx, data)``.

        Without one, a binary message closes its connection with 1003.
        """
        self._binary = func
        self.hub.config = replace(self.hub.config, accept_binary=True)
        return func

    # -- lifecycle ---------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the command task group and the hub's timer until cancelled."""
        await self._commands.run(task_status=task_status)

    def begin_shutdown(self) -> None:
        """Refuse new work: answer pending commands ``shutting_down``, cancel them."""
        self._commands.shutdown()

    # -- Handler hooks -----------------------------------------------------

    async def on_handshake(
        self, session: ServerSession, request: HandshakeRequest
    ) -> Accept | Denial:
        subprotocol = select_subprotocol(request, (SUBPROTOCOL,))
        host = remote_host(session.remote)
        decision = self._too_many_failures(host) or await self._authenticate(session, request)
        if isinstance(decision, Denial):
            if decision.status == 401:
                self._auth_failed(host)
            log_conn(logging.INFO, session.id, "refused: %s %s", decision.status, decision.reason)
            code = CLOSE_CODES.get(decision.status)
            if self.refusal == "close" and code is not None:
                return Accept(principal=_Refused(code, decision.reason), subprotocol=subprotocol)
            return decision
        if self._commands.stopping:
            return Denial(503, "server shutting down")
        # No await from here to the hub.add in on_open: admission stays exact.
        principal_id = decision.id if isinstance(decision, Principal) else None
        admission = self.hub.admit(principal_id, host)
        if not admission.ok:
            log_conn(
                logging.INFO,
                session.id,
                "not admitted (%s): %s %s",
                principal_id,
                admission.status,
                admission.reason,
            )
            code = CLOSE_CODES.get(admission.status)
            if self.refusal == "close" and code is not None:
                return Accept(principal=_Refused(code, admission.reason), subprotocol=subprotocol)
            return Denial(admission.status, admission.reason, admission.headers)
        return Accept(principal=decision, subprotocol=subprotocol)

    def _too_many_failures(self, host: str | None) -> Denial | None:
        """429 while ``host`` has no failed authentication left to spend."""
        limiter = self._auth_failures
        if limiter is None or host is None:
            return None
        wait = limiter.retry_after(host, current_time())
        if wait <= 0:
            return None
        retry = (("Retry-After", str(max(1, math.ceil(wait)))),)
        return Denial(429, "too many failed authentications", retry)

    def _auth_failed(self, host: str | None) -> None:
        if self._auth_failures is not None and host is not None:
            self._auth_failures.take(host, current_time())

    async def _authenticate(
        self, session: ServerSession, request: HandshakeRequest
    ) -> Principal | _AwaitingAuth | Denial:
        decision = self.auth.authenticate(request)
        if not isinstance(decision, (Principal, Denial)) and inspect.isawaitable(decision):
            decision = await decision
        if isinstance(decision, Denial):
            if (
                self.auth_message
                and decision.status == 401
                and bearer_token(request, allow_query=True) is None
            ):
                return _AWAITING_AUTH  # no credentials at all: expect an auth message
            return decision
        if not isinstance(decision, Principal):
            log_conn(logging.ERROR, session.id, "authenticator returned %r", decision)
            return Denial(500, "internal error")
        return decision

    async def on_http(self, session: ServerSession, request: HttpRequest) -> HttpResponse:
        if self.metrics and request.method == "GET" and request.path == "/metrics":
            body = prometheus_text(self.hub.stats()).encode("utf-8")
            return HttpResponse(200, (("Content-Type", METRICS_CONTENT_TYPE),), body)
        return await super().on_http(session, request)

    async def on_open(self, session: ServerSession) -> None:
        principal = session.principal
        if not session.is_open:
            return  # failed by frames that came with the handshake
        conn_id = session.id
        if isinstance(principal, _Refused):
            session.close(principal.code, principal.reason)
            return
        self._sessions[conn_id] = session
        if principal is _AWAITING_AUTH:
            self.hub.add_unauthenticated(conn_id, session.core, remote=session.remote)
            self._commands.rearm()
            log_conn(
                logging.INFO,
                conn_id,
                "open, awaiting auth: from %s at %s",
                session.remote,
                _target(session),
            )
            return
        assert isinstance(principal, Principal)
        info = self.hub.add(conn_id, session.core, principal=principal, remote=session.remote)
        self._commands.rearm()
        if hub_logger.isEnabledFor(logging.INFO):  # _target() is work: only when logged
            log_conn(
                logging.INFO,
                conn_id,
                "open: principal %s from %s at %s",
                principal.id,
                session.remote,
                _target(session),
            )
        if self.on_connect is not None:
            await self._call_listener(conn_id, "on_connect", self.on_connect, info)

    async def on_message(self, session: ServerSession, message: str | bytes) -> None:
        conn_id = session.id
        if isinstance(message, str):
            events = self.hub.receive_text(conn_id, message)
        else:
            events = self.hub.receive_binary(conn_id, message)
        if events:
            await self._handle_events(events)

    async def on_close(self, session: ServerSession, event: Closed) -> None:
        conn_id = session.id
        info = self.hub.connection(conn_id)
        events = self.hub.remove(conn_id)
        self._sessions.pop(conn_id, None)
        self._commands.cancel_connection(conn_id)
        if info is None:
            return
        level = logging.INFO if event.code in (1000, 1001) else logging.WARNING
        if hub_logger.isEnabledFor(level):
            log_conn(
                level,
                conn_id,
                "closed: %s %s (%s)",
                event.code,
                event.reason,
                event.initiator.name.lower() if event.initiator is not None else "transport",
            )
        if event.code == 1013:
            self._commands.start_soon(self._drop_after_grace, session)
        if events:
            await self._handle_events(events)
        if self.on_disconnect is not None:
            await self._call_listener(conn_id, "on_disconnect", self.on_disconnect, info, event)

    # -- internals ---------------------------------------------------------

    def _wake(self, conn_id: str) -> None:
        session = self._sessions.get(conn_id)
        if session is not None:
            session.notify()

    async def _call_listener(self, conn_id: str, name: str, func: Any, *args: Any) -> None:
        try:
            result = func(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log_conn(logging.ERROR, conn_id, "%s raised", name, exc=True)

    async def _handle_events(self, events: list[HubEvent]) -> None:
        for event in events:
            if isinstance(event, CommandRequest):
                self._start_command(event)
            elif isinstance(event, AuthRequest):
                await self._verify(event)
            elif isinstance(event, BinaryReceived):
                await self._on_binary(event)
            elif isinstance(event, PresenceChanged | Published) and self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception:
                    log_conn(logging.ERROR, event.conn_id, "on_event raised", exc=True)
        self._commands.rearm()

    async def _verify(self, request: AuthRequest) -> None:
        """Check an ``auth`` message's token before the connection's next message.

        Runs in the connection's reader, so nothing else of that connection
        is handled meanwhile; bounded by the request's deadline.
        """
        conn_id = request.conn_id
        if not isinstance(self.auth, TokenVerifier):
            self.hub.reject_auth(conn_id, request.request_id, "auth messages are not supported")
            return
        decision: object = Denial(401, "authentication timeout")
        with anyio.move_on_after(max(0.0, request.deadline - current_time())):
            try:
                result = self.auth.verify_token(request.token)
                decision = await result if inspect.isawaitable(result) else result
            except Exception:
                log_conn(logging.ERROR, conn_id, "verify_token raised", exc=True)
                decision = Denial(500, "internal error")
        if isinstance(decision, Principal):
            if self.hub.authenticate(conn_id, decision, request.request_id):
                log_conn(logging.INFO, conn_id, "authenticated by message: %s", decision.id)
                info = self.hub.connection(conn_id)
                if not request.refresh and info is not None and self.on_connect is not None:
                    await self._call_listener(conn_id, "on_connect", self.on_connect, info)
        else:
            reason = decision.reason if isinstance(decision, Denial) else "internal error"
            log_conn(logging.INFO, conn_id, "auth message refused: %s", reason)
            if isinstance(decision, Denial) and decision.status == 401:
                session = self._sessions.get(conn_id)
                self._auth_failed(None if session is None else remote_host(session.remote))
            self.hub.reject_auth(conn_id, request.request_id, reason)

    async def _on_binary(self, event: BinaryReceived) -> None:
        conn_id = event.conn_id
        info = self.hub.connection(conn_id)
        if self._binary is None or info is None:
            self.hub.disconnect(conn_id, 1003, "binary messages are not accepted")
            return
        ctx = ConnectionContext(conn_id=conn_id, principal=info.principal, info=info, hub=self)
        try:
            await self._binary(ctx, event.data)
        except Exception:
            log_conn(logging.ERROR, conn_id, "binary handler raised", exc=True)

    def _start_command(self, request: CommandRequest) -> None:
        info = self.hub.connection(request.conn_id)
        if info is None:  # pragma: no cover - the hub only reports open connections
            return
        ctx = CommandContext(
            conn_id=request.conn_id,
            principal=request.principal,
            info=info,
            hub=self,
            request_id=request.request_id,
            command=request.name,
            deadline=request.deadline,
        )
        self._commands.start(ctx, request.payload)

    async def _drop_after_grace(self, session: ServerSession) -> None:
        """A failed (1013) connection whose peer does not read: stop waiting for it."""
        with anyio.move_on_after(self.slow_consumer_grace):
            await session.wait_closed()
            return
        log_conn(logging.INFO, session.id, "dropping the transport of a slow consumer")
        session.abort()


_DESCRIPTOR_HEADROOM = 100  # listeners, logs, worker threads, the 503s themselves


def descriptor_budget() -> int:
    """Connections this process can hold while keeping descriptors to answer 503.

    The soft ``RLIMIT_NOFILE`` minus 100 descriptors of headroom for
    listeners, logs, threads and the refusals themselves; 10 000 where the
    limit cannot be read.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 10_000
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(1, soft - _DESCRIPTOR_HEADROOM)


def _target(session: ServerSession) -> str:
    """The request's path and query, credentials redacted, for log lines."""
    request = session.request
    if request is None:
        return "?"
    query = redact_query(request.query)
    return f"{request.path}?{query}" if query else request.path


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
        )
        self.hub = self.handler.hub
        self.server = WebSocketServer(
            self.handler,
            host=host,
            port=port,
            ssl=ssl,
            limits=limits,
            compression=compression,
            shutdown_timeout=shutdown_timeout,
            allowed_hosts=allowed_hosts,
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
