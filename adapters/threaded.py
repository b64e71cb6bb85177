"""Run a ``HubServer`` in a background thread and drive it from any thread.

For code that is not in the event loop (a GUI thread, worker threads, a
synchronous web framework)::

    hub = ThreadedHub(HubServer(AccessPolicy(tokens=StaticTokens(["s3cret"]))))

    @hub.command("add")              # registered before any client can call
    def add(ctx, payload):           # a plain function: runs in a worker thread
        return sum(payload)

    with hub:                        # launches; returns once it listens
        print(hub.url)
        hub.publish("news", {"headline": "..."})   # blocking, thread-safe

``ThreadedHub.start(server)`` is ``ThreadedHub(server).launch()``. Each
operation is carried into the event loop thread through an anyio blocking
portal and runs there to completion before the call returns, so calls from
many threads never interleave inside a message, and the calls of one thread
take effect in the order that thread made them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ..core.topics import PublishPolicy, SlowConsumerPolicy, SubscribePolicy
from .blocking import BlockingOperations, HubStoppedError
from .hub import HubServer

__all__ = ["HubStoppedError", "ThreadedHub"]

P = ParamSpec("P")
T = TypeVar("T")

_Setup = Callable[[HubServer], None]


class ThreadedHub(BlockingOperations):
    """A ``HubServer`` in its own event loop thread, with blocking, thread-safe operations.

    ``ThreadedHub(server_or_factory)`` prepares it: commands and topic
    policies given now (``command``, ``configure_topic``) are in place
    before the server accepts its first client. ``launch()`` (or entering
    its ``with`` block) starts it; ``stop()`` (or leaving the block) stops
    it. ``ThreadedHub.start(...)`` prepares and launches at once. A factory
    (any callable returning a ``HubServer``) is called inside the event loop
    thread. ``backend`` is ``"asyncio"`` or ``"trio"``.
    """

    def __init__(
        self,
        server: HubServer | Callable[[], HubServer],
        *,
        backend: str = "asyncio",
        backend_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._source = server
        self._backend = backend
        self._backend_options = dict(backend_options) if backend_options else None
        self._server = server if isinstance(server, HubServer) else None
        self._setup: list[_Setup] = []
        self._portal: BlockingPortal | None = None
        self._serving: Future[Any] | None = None
        self._exit_stack = contextlib.ExitStack()
        self._loop_thread: int | None = None
        self._lock = threading.Lock()
        self._launched = False
        self._stopped = False

    @classmethod
    def start(
        cls,
        server: HubServer | Callable[[], HubServer],
        *,
        backend: str = "asyncio",
        backend_options: Mapping[str, Any] | None = None,
    ) -> ThreadedHub:
        """Prepare and launch at once; return once the server listens."""
        return cls(server, backend=backend, backend_options=backend_options).launch()

    def launch(self) -> ThreadedHub:
        """Start the event loop thread and the server; return once it listens.

        Errors while starting (the port is taken...) are raised here, and the
        thread is joined. A hub launches once.
        """
        with self._lock:
            if self._launched or self._stopped:
                raise RuntimeError("a ThreadedHub launches once (and not after stop())")
            self._launched = True
        portal = self._exit_stack.enter_context(
            start_blocking_portal(self._backend, self._backend_options)
        )
        try:
            server = portal.call(self._prepare)
            serving, _ = portal.start_task(server.serve, name="wshub-hub-server")
        except BaseException:
            self._stopped = True
            self._exit_stack.close()
            raise
        self._server, self._portal, self._serving = server, portal, serving
        return self

    def _prepare(self) -> HubServer:
        """In the loop thread: the server, with what was registered before launch."""
        self._loop_thread = threading.get_ident()
        source = self._source
        server = source if isinstance(source, HubServer) else source()
        for setup in self._setup:
            setup(server)
        self._setup.clear()
        return server

    # -- context manager -----------------------------------------------------

    def __enter__(self) -> ThreadedHub:
        if not self._launched:
            self.launch()
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
    def server(self) -> HubServer:
        """The ``HubServer`` (a factory's result exists once launched)."""
        if self._server is None:
            raise HubStoppedError("the hub is not launched yet: its factory has not run")
        return self._server

    @property
    def _target(self) -> HubServer:
        return self.server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def running(self) -> bool:
        return not self._stopped and self._serving is not None and not self._serving.done()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop gracefully and join the thread. Idempotent; nothing to do before launch.

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
        portal, serving = self._portal, self._serving
        if portal is None or serving is None:
            return  # never launched
        try:
            if not serving.done():
                with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                    portal.call(self.server.shutdown)
                try:
                    serving.result(timeout)
                except FutureTimeout:
                    serving.cancel()
                except BaseException:  # the server logged it; stopping goes on
                    pass
        finally:
            self._exit_stack.close()

    # -- before launch: registrations are kept for the loop thread ---------------

    def command(
        self, name: str, *, scope: str | None = None, timeout: float | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register a command (before launch, or on the running hub).

        A plain function runs in a worker thread of the loop; from there,
        call this handle (or ``ctx.threadsafe_hub``), not ``ctx.hub``.
        """
        if self._launched:
            return super().command(name, scope=scope, timeout=timeout)

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self._setup.append(
                lambda server: server.add_command(name, func, scope=scope, timeout=timeout)
            )
            return func

        return register

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
        history_size: int | None = None,
        history_ttl: float | None = None,
    ) -> None:
        """Set a topic's policy (before launch, or on the running hub)."""
        options: dict[str, Any] = {
            "publish": publish,
            "subscribe": subscribe,
            "presence": presence,
            "slow_consumer": slow_consumer,
            "subscribe_scope": subscribe_scope,
            "publish_scope": publish_scope,
            "history_size": history_size,
            "history_ttl": history_ttl,
        }
        if self._launched:
            super().configure_topic(name, **options)
        else:
            self._setup.append(lambda server: server.configure_topic(name, **options))

    # -- operations (blocking, safe from any thread) ---------------------------

    def _call(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        portal, serving = self._portal, self._serving
        if self._stopped:
            raise HubStoppedError("the hub was stopped")
        if portal is None or serving is None:
            raise HubStoppedError("the hub is not launched yet: call launch() first")
        if serving.done():
            raise HubStoppedError("the hub's server is not running") from (
                None if serving.cancelled() else serving.exception()
            )
        if threading.get_ident() == self._loop_thread:
            return func(*args, **kwargs)  # already in the loop: a portal call would deadlock
        try:
            return portal.call(lambda: func(*args, **kwargs))
        except RuntimeError as exc:
            if self._stopped or serving.done():
                raise HubStoppedError("the hub was stopped") from exc
            raise
