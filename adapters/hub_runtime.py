"""The hub as every front door drives it: ``HubRuntime``.

One ``Hub`` with its gate (``HubGate``), its command runner and the
application's listeners and handlers. A front door (the native server's
``HubHandler``, the ASGI app's ``HubApp``) owns the transport: it asks
``decide`` at each upgrade, calls ``open`` with a ``HubConnection`` and a
wake-up function, feeds every message to ``receive`` and reports the end with
``closed``. Everything the client sees beyond framing (welcome, replies,
errors, presence, auth messages, command results) is decided here, so it is
the same on every front door.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.abc import TaskStatus

from ..core import Closed, HandshakeRequest
from ..core.auth import Authenticator, Denial, Principal
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
from ..core.redact import redact_query
from ..core.registry import ConnectionInfo, HubConnection, Remote, remote_host
from ..core.topics import TopicPolicy
from ._clock import current_time
from .descriptors import descriptor_budget
from .hub_commands import CommandRunner, log_conn
from .hub_commands import logger as hub_logger
from .hub_context import BinaryHandler, CommandContext, CommandHandler, ConnectionContext
from .hub_gate import AwaitingAuth, HubGate, RefusalMode, TokenVerifier, Verdict
from .hub_operations import HubOperations, LoopBinding

if TYPE_CHECKING:
    from .broker import Broker

__all__ = [
    "ConnectListener",
    "DisconnectListener",
    "EventListener",
    "HubRuntime",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Called with each ``Published`` / ``PresenceChanged`` event (sync, in the loop).
EventListener = Callable[[HubEvent], None]
#: Called when a connection joins (``info``) or leaves (``info``, ``Closed``).
ConnectListener = Callable[[ConnectionInfo], Any]
DisconnectListener = Callable[[ConnectionInfo, Closed], Any]


@dataclass(slots=True)
class _Link:
    """How to reach one connection's transport: wake its writer; its peer's host."""

    wake: Callable[[], None]
    host: str | None


class HubRuntime(HubOperations):
    """A ``Hub`` with its gate, commands and listeners, independent of the transport.

    ``run`` must be running for commands to execute and the hub's timers
    (command timeouts, auth deadlines, expiring credentials) to fire.
    See ``HubHandler`` for the arguments.
    """

    def __init__(
        self,
        auth: Authenticator,
        *,
        config: HubConfig | None = None,
        default_topic: TopicPolicy | None = None,
        codec: Codec | None = None,
        slow_consumer_grace: float = 1.0,
        on_event: EventListener | None = None,
        on_connect: ConnectListener | None = None,
        on_disconnect: DisconnectListener | None = None,
        auth_message: bool = False,
        refusal: RefusalMode = "http",
        broker: Broker | None = None,
    ) -> None:
        self.hub = Hub(
            clock=current_time,
            wall_clock=time.time,
            config=config,
            on_output=self._wake,
            codec=codec,
            default_topic=default_topic,
            broker=None if broker is None else broker.wake,
        )
        self.broker = broker
        if broker is not None:
            broker.attach(self)
        if self.hub.config.max_connections is None:
            self.hub.config = replace(self.hub.config, max_connections=descriptor_budget())
        self.gate = HubGate(auth, self.hub, auth_message=auth_message, refusal=refusal)
        self.auth = auth
        self.auth_message = auth_message
        self.refusal = refusal
        self.slow_consumer_grace = slow_consumer_grace
        self.on_event = on_event
        self.loop = LoopBinding(emit=self._emit_events)
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self._links: dict[str, _Link] = {}
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
        """Run the command task group and the hub's timer until cancelled.

        Serving starts afresh: a previous ``begin_shutdown`` no longer applies
        (an ASGI app's lifespan may run again, e.g. one test client per test).
        While it runs, the hub's operations belong to this event loop's thread.
        """
        self._commands.stopping = False
        with self.loop.bound():
            if self.broker is None:
                await self._commands.run(task_status=task_status)
                return
            async with anyio.create_task_group() as tg:  # the broker first: it may refuse
                await tg.start(self.broker.run)
                await self._commands.run(task_status=task_status)
                tg.cancel_scope.cancel()

    def begin_shutdown(self) -> None:
        """Refuse new work: answer pending commands ``shutting_down``, cancel them."""
        self._commands.shutdown()

    @property
    def stopping(self) -> bool:
        """True once ``begin_shutdown`` was called: upgrades get 503."""
        return self._commands.stopping

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> bool:
        """Run a background task in the runner's group; False when not running."""
        return self._commands.start_soon(func, *args)

    # -- a connection's life -------------------------------------------------

    async def decide(
        self, conn_id: str, request: HandshakeRequest, remote: Remote | None
    ) -> Verdict:
        """The verdict on an upgrade (see ``HubGate.decide``)."""
        return await self.gate.decide(
            conn_id, request, remote_host(remote), stopping=self._commands.stopping
        )

    async def open(
        self,
        conn_id: str,
        connection: HubConnection,
        verdict: Principal | AwaitingAuth,
        *,
        remote: Remote | None,
        request: HandshakeRequest | None,
        wake: Callable[[], None],
    ) -> None:
        """``register`` the connection, then ``announce`` it."""
        info = self.register(
            conn_id, connection, verdict, remote=remote, request=request, wake=wake
        )
        if info is not None:
            await self.announce(info)

    def register(
        self,
        conn_id: str,
        connection: HubConnection,
        verdict: Principal | AwaitingAuth,
        *,
        remote: Remote | None,
        request: HandshakeRequest | None,
        wake: Callable[[], None],
    ) -> ConnectionInfo | None:
        """Add an admitted connection to the hub; ``wake`` is called when it has output.

        Call it right after ``decide`` admitted the connection, with nothing
        awaited in between, or admission is not exact. The connection's
        info, or None while it awaits an ``auth`` message.
        """
        self._links[conn_id] = _Link(wake, remote_host(remote))
        if not isinstance(verdict, Principal):
            self.hub.add_unauthenticated(conn_id, connection, remote=remote)
            self._commands.rearm()
            log_conn(
                logging.INFO,
                conn_id,
                "open, awaiting auth: from %s at %s",
                remote,
                _target(request),
            )
            return None
        info = self.hub.add(conn_id, connection, principal=verdict, remote=remote)
        self._commands.rearm()
        if hub_logger.isEnabledFor(logging.INFO):  # _target() is work: only when logged
            log_conn(
                logging.INFO,
                conn_id,
                "open: principal %s from %s at %s",
                verdict.id,
                remote,
                _target(request),
            )
        return info

    async def announce(self, info: ConnectionInfo) -> None:
        """Tell ``on_connect`` that a registered connection joined."""
        if self.on_connect is not None:
            await self._call_listener(info.conn_id, "on_connect", self.on_connect, info)

    async def receive(self, conn_id: str, message: str | bytes) -> None:
        """One whole message of the connection, in order."""
        if isinstance(message, str):
            events = self.hub.receive_text(conn_id, message)
        else:
            events = self.hub.receive_binary(conn_id, message)
        if events:
            await self.handle_events(events)

    async def closed(
        self,
        conn_id: str,
        event: Closed,
        *,
        drop: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        """The connection ended: forget it, cancel its commands, tell the listeners.

        ``drop`` is started in the background after a 1013 (slow consumer):
        it ends a transport whose peer may never read its close frame.
        """
        info = self.hub.connection(conn_id)
        events = self.hub.remove(conn_id)
        self._links.pop(conn_id, None)
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
        if event.code == 1013 and drop is not None:
            self._commands.start_soon(drop)
        if events:
            await self.handle_events(events)
        if self.on_disconnect is not None:
            await self._call_listener(conn_id, "on_disconnect", self.on_disconnect, info, event)

    # -- internals ---------------------------------------------------------

    def _wake(self, conn_id: str) -> None:
        link = self._links.get(conn_id)
        if link is not None:
            link.wake()

    async def _call_listener(self, conn_id: str, name: str, func: Any, *args: Any) -> None:
        try:
            result = func(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log_conn(logging.ERROR, conn_id, "%s raised", name, exc=True)

    async def handle_events(self, events: list[HubEvent]) -> None:
        """Act on what the hub returned: commands, auth messages, binary, listeners."""
        for event in events:
            if isinstance(event, CommandRequest):
                self._start_command(event)
            elif isinstance(event, AuthRequest):
                await self._verify(event)
            elif isinstance(event, BinaryReceived):
                await self._on_binary(event)
            elif isinstance(event, PresenceChanged | Published):
                self._notify(event)
        self._commands.rearm()

    def broker_events(self, events: list[HubEvent]) -> None:
        """Events of the broker's answers (a client's publish numbered): to ``on_event``."""
        self._emit_events(events)

    def _emit_events(self, events: list[HubEvent]) -> None:
        """Events of an application's operation (presence of a server-side subscribe)."""
        for event in events:
            if isinstance(event, PresenceChanged | Published):
                self._notify(event)

    def _notify(self, event: PresenceChanged | Published) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log_conn(logging.ERROR, event.conn_id, "on_event raised", exc=True)

    async def _verify(self, request: AuthRequest) -> None:
        """Check an ``auth`` message's token before the connection's next message.

        Runs in the connection's reader, so nothing else of that connection
        is handled meanwhile; bounded by the request's deadline.
        """
        conn_id = request.conn_id
        if not isinstance(self.auth, TokenVerifier):
            self.hub.reject_auth(conn_id, request.request_id, "auth messages are not supported")
            return
        decision = await self.gate.verify_token(conn_id, request.token, request.deadline)
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
                link = self._links.get(conn_id)
                self.gate.auth_failed(None if link is None else link.host)
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


def _target(request: HandshakeRequest | None) -> str:
    """The request's path and query, credentials redacted, for log lines."""
    if request is None:
        return "?"
    query = redact_query(request.query)
    return f"{request.path}?{query}" if query else request.path
