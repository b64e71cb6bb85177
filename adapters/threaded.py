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
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .blocking import BlockingOperations, HubStoppedError
from .hub import HubServer

__all__ = ["HubStoppedError", "ThreadedHub"]

P = ParamSpec("P")
T = TypeVar("T")


class ThreadedHub(BlockingOperations):
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
