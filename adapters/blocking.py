"""Blocking, thread-safe operations on a hub running in an event loop elsewhere.

The part ``ThreadedHub`` (the hub in its own thread) and ``HubApp``'s
``threadsafe()`` handle (the hub in an ASGI server's loop) share: each call
is carried into the loop's thread by ``_call`` and runs there to completion
before it returns, so calls from many threads never interleave inside a
message, and the calls of one thread take effect in the order it made them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from anyio import from_thread

from ..core.errors import WsHubError
from ..core.hub_recovery import HistoryPage
from ..core.hub_stats import HubStats
from ..core.registry import ConnectionInfo
from ..core.topics import PublishPolicy, SlowConsumerPolicy, SubscribePolicy
from .hub_operations import HubOperations

if TYPE_CHECKING:
    from .asgi import HubApp
    from .hub import HubServer

__all__ = ["BlockingOperations", "HubStoppedError", "LoopBoundHub"]

P = ParamSpec("P")
T = TypeVar("T")


class HubStoppedError(WsHubError, RuntimeError):
    """The threaded hub was stopped (or its server failed): no more operations."""


class BlockingOperations:
    """The hub's operations as blocking calls, safe from any thread.

    Subclasses say which hub (``_target``) and how a call reaches its loop
    (``_call``).
    """

    @property
    def _target(self) -> HubServer | HubApp | HubOperations:
        raise NotImplementedError

    def _call(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        raise NotImplementedError

    def broadcast(
        self, message_type: str, payload: object, *, exclude: str | Collection[str] | None = None
    ) -> int:
        """Send one envelope to every connection but ``exclude``; how many got it."""
        return self._call(self._target.broadcast, message_type, payload, exclude=exclude)

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
            self._target.publish, topic, payload, message_type=message_type, droppable=droppable
        )

    def send_to(self, conn_id: str, message_type: str, payload: object) -> int:
        return self._call(self._target.send_to, conn_id, message_type, payload)

    def send_to_principal(self, principal_id: str, message_type: str, payload: object) -> int:
        return self._call(self._target.send_to_principal, principal_id, message_type, payload)

    def disconnect(self, conn_id: str, code: int = 1008, reason: str = "") -> bool:
        return self._call(self._target.disconnect, conn_id, code, reason)

    def subscribe(self, conn_id: str, topic: str) -> bool:
        """Subscribe server-side; False if the connection is unknown (it may just have left)."""
        return self._call(self._target.subscribe, conn_id, topic)

    def unsubscribe(self, conn_id: str, topic: str) -> bool:
        """Unsubscribe server-side; False if it was not subscribed or is unknown."""
        return self._call(self._target.unsubscribe, conn_id, topic)

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
        self._call(
            self._target.configure_topic,
            name,
            publish=publish,
            subscribe=subscribe,
            presence=presence,
            slow_consumer=slow_consumer,
            subscribe_scope=subscribe_scope,
            publish_scope=publish_scope,
            history_size=history_size,
            history_ttl=history_ttl,
        )

    def history(
        self, topic: str, *, since: tuple[int, str] | None = None, limit: int | None = None
    ) -> HistoryPage:
        return self._call(self._target.history, topic, since=since, limit=limit)

    def connections(self) -> list[ConnectionInfo]:
        """A snapshot of the open connections (copies: safe to read in any thread)."""
        return self._call(_copy_connections, self._target)

    def stats(self) -> HubStats:
        return self._call(self._target.stats)

    def command(
        self, name: str, *, scope: str | None = None, timeout: float | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register a command on the running hub (see ``HubHandler.command``).

        A plain function runs in a worker thread of the loop, so synchronous
        programs can register ordinary functions; call this handle from it.
        """

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self._call(self._target.add_command, name, func, scope=scope, timeout=timeout)
            return func

        return register


class LoopBoundHub(BlockingOperations):
    """The operations of a hub running in an event loop of this process, as
    blocking calls safe from any thread (``hub.threadsafe()``,
    ``ctx.threadsafe_hub``).

    In the loop's thread a call runs directly; from any other thread it is
    carried into the loop (``anyio.from_thread.run_sync``) and runs there
    before the call returns. Calls while the hub is not running raise
    ``HubStoppedError``; a call must not be made from the loop's thread while
    that thread is blocked elsewhere (nothing could run it).
    """

    __slots__ = ("hub",)

    def __init__(self, hub: HubOperations) -> None:
        self.hub = hub

    @property
    def _target(self) -> HubOperations:
        return self.hub

    @property
    def running(self) -> bool:
        return self.hub.loop.running

    def _call(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = self.hub.loop
        thread, token = loop.thread, loop.token
        if thread is None or token is None:
            raise HubStoppedError("the hub is not running")
        if thread == threading.get_ident():
            return func(*args, **kwargs)
        try:
            return from_thread.run_sync(lambda: func(*args, **kwargs), token=token)
        except RuntimeError as exc:
            if not loop.running:
                raise HubStoppedError("the hub was stopped") from exc
            raise


def _copy_connections(hub: HubOperations) -> list[ConnectionInfo]:
    return [
        ConnectionInfo(
            conn_id=info.conn_id,
            principal=info.principal,
            remote=info.remote,
            connected_at=info.connected_at,
            metadata=dict(info.metadata),
            subscriptions=set(info.subscriptions),
        )
        for info in hub.connections()
    ]
