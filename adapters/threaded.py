"""Run a ``HubServer`` in a background thread and drive it from any thread.

For code that is not in the event loop (a GUI thread, worker threads, a
synchronous web framework)::

    server = HubServer(AccessPolicy(tokens=StaticTokens(["s3cret"])))
    with ThreadedHub.start(server) as hub:     # returns once it listens
        print(hub.url)
        hub.publish("news", {"headline": "..."})   # blocking, thread-safe

Each operation is carried into the event loop thread through an anyio
blocking portal and runs there to completion before the call returns, so
calls from many threads never interleave inside a message, and the calls of
one thread take effect in the order that thread made them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ..core.errors import WsHubError
from ..core.hub_stats import HubStats
from ..core.registry import ConnectionInfo
from ..core.topics import PublishPolicy, SlowConsumerPolicy, SubscribePolicy
from .hub import HubServer

__all__ = ["HubStoppedError", "ThreadedHub"]

P = ParamSpec("P")
T = TypeVar("T")


class HubStoppedError(WsHubError, RuntimeError):
    """The threaded hub was stopped (or its server failed): no more operations."""


class ThreadedHub:
    """A running ``HubServer`` with blocking, thread-safe operations.

    Build it with ``ThreadedHub.start(server_or_factory)``; stop it with
    ``stop()`` or by leaving its ``with`` block. A factory (any callable
    returning a ``HubServer``) is called inside the event loop thread.
    """

    def __init__(
        self,
        server: HubServer,
        portal: BlockingPortal,
        exit_stack: contextlib.ExitStack,
        serving: Future[Any],
    ) -> None:
        self.server = server
        self._portal = portal
        self._exit_stack = exit_stack
        self._serving = serving
        self._loop_thread = portal.call(threading.get_ident)
        self._lock = threading.Lock()
        self._stopped = False

    @classmethod
    def start(
        cls,
        server: HubServer | Callable[[], HubServer],
        *,
        backend: str = "asyncio",
        backend_options: Mapping[str, Any] | None = None,
    ) -> ThreadedHub:
        """Start the event loop thread and the server; return once it listens.

        ``backend`` is ``"asyncio"`` or ``"trio"``. Errors while starting (the
        port is taken...) are raised here, and the thread is joined.
        """
        stack = contextlib.ExitStack()
        portal = stack.enter_context(
            start_blocking_portal(backend, dict(backend_options) if backend_options else None)
        )
        try:
            instance = server if isinstance(server, HubServer) else portal.call(server)
            serving, _ = portal.start_task(instance.serve, name="wshub-hub-server")
        except BaseException:
            stack.close()
            raise
        return cls(instance, portal, stack, serving)

    # -- context manager -----------------------------------------------------

    def __enter__(self) -> ThreadedHub:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state -----------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def running(self) -> bool:
        return not self._stopped and not self._serving.done()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop gracefully and join the thread. Idempotent.

        Pending commands get ``shutting_down``, every connection is closed
        with 1001 and drained (``HubServer``'s ``shutdown_timeout``); if the
        server is still not done after ``timeout`` seconds it is cancelled.
        """
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("stop() would wait for itself: call it outside the hub's loop")
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            if not self._serving.done():
                with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                    self._portal.call(self.server.shutdown)
                try:
                    self._serving.result(timeout)
                except FutureTimeout:
                    self._serving.cancel()
                except BaseException:  # the server logged it; stopping goes on
                    pass
        finally:
            self._exit_stack.close()

    # -- operations (blocking, safe from any thread) ---------------------------

    def _call(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._stopped:
            raise HubStoppedError("the hub was stopped")
        if self._serving.done():
            raise HubStoppedError("the hub's server is not running") from (
                None if self._serving.cancelled() else self._serving.exception()
            )
        if threading.get_ident() == self._loop_thread:
            return func(*args, **kwargs)  # already in the loop: a portal call would deadlock
        try:
            return self._portal.call(lambda: func(*args, **kwargs))
        except RuntimeError as exc:
            if self._stopped or self._serving.done():
                raise HubStoppedError("the hub was stopped") from exc
            raise

    def broadcast(
        self, message_type: str, payload: object, *, exclude: str | Collection[str] | None = None
    ) -> int:
        """Send one envelope to every connection but ``exclude``; how many got it."""
        return self._call(self.server.broadcast, message_type, payload, exclude=exclude)

    def publish(
        self,
        topic: str,
        payload: object,
        *,
        message_type: str = "message",
        droppable: bool = False,
    ) -> int:
        """Publish to a topic's subscribers; how many got it."""
        return self._call(
            self.server.publish, topic, payload, message_type=message_type, droppable=droppable
        )

    def send_to(self, conn_id: str, message_type: str, payload: object) -> int:
        return self._call(self.server.send_to, conn_id, message_type, payload)

    def send_to_principal(self, principal_id: str, message_type: str, payload: object) -> int:
        return self._call(self.server.send_to_principal, principal_id, message_type, payload)

    def disconnect(self, conn_id: str, code: int = 1008, reason: str = "") -> bool:
        return self._call(self.server.disconnect, conn_id, code, reason)

    def subscribe(self, conn_id: str, topic: str) -> None:
        self._call(self.server.subscribe, conn_id, topic)

    def unsubscribe(self, conn_id: str, topic: str) -> None:
        self._call(self.server.unsubscribe, conn_id, topic)

    def configure_topic(
        self,
        name: str,
        *,
        publish: PublishPolicy = "none",
        subscribe: SubscribePolicy = "all",
        presence: bool = False,
        slow_consumer: SlowConsumerPolicy = "disconnect",
        subscribe_scope: str | None = None,
        publish_scope: str | None = None,
    ) -> None:
        self._call(
            self.server.configure_topic,
            name,
            publish=publish,
            subscribe=subscribe,
            presence=presence,
            slow_consumer=slow_consumer,
            subscribe_scope=subscribe_scope,
            publish_scope=publish_scope,
        )

    def connections(self) -> list[ConnectionInfo]:
        """A snapshot of the open connections (copies: safe to read in any thread)."""
        return self._call(_copy_connections, self.server)

    def stats(self) -> HubStats:
        return self._call(self.server.stats)

    def command(
        self, name: str, *, scope: str | None = None, timeout: float | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register a command on the running hub (see ``HubHandler.command``).

        A plain function runs in a worker thread of the loop, so synchronous
        programs can register ordinary functions; call this handle from it.
        """

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self._call(self.server.add_command, name, func, scope=scope, timeout=timeout)
            return func

        return register


def _copy_connections(server: HubServer) -> list[ConnectionInfo]:
    return [
        ConnectionInfo(
            conn_id=info.conn_id,
            principal=info.principal,
            remote=info.remote,
            connected_at=info.connected_at,
            metadata=dict(info.metadata),
            subscriptions=set(info.subscriptions),
        )
        for info in server.connections()
    ]
