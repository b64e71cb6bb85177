"""The application's handle on a hub: synchronous, non-blocking operations.

Shared by ``HubHandler``, ``HubServer`` and ``HubApp`` (each reaches one
``Hub``). The hub is not thread-safe: once it runs, its operations belong to
its event loop's thread, and any other thread gets ``WrongThreadError``
instead of a silent data race. From other threads go through
``threadsafe()`` (``LoopBoundHub``), or run the hub in a ``ThreadedHub``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from anyio.lowlevel import EventLoopToken, current_token

from ..core.errors import WsHubError
from ..core.hub import Hub
from ..core.hub_events import HubEvent
from ..core.hub_recovery import HistoryPage
from ..core.hub_stats import HubStats
from ..core.hub_topics import check_topic_name
from ..core.registry import ConnectionInfo
from ..core.topics import PublishPolicy, SlowConsumerPolicy, SubscribePolicy

if TYPE_CHECKING:
    from .blocking import BlockingOperations

__all__ = ["HubOperations", "LoopBinding", "WrongThreadError"]


class WrongThreadError(WsHubError, RuntimeError):
    """A loop-only hub operation was called from another thread.

    Synchronous command handlers run in worker threads: use
    ``ctx.threadsafe_hub`` there (or ``hub.threadsafe()``, or a ``ThreadedHub``).
    """


class LoopBinding:
    """Which event loop thread a running hub belongs to, and how to reach it.

    The hub's runtime binds it for as long as it runs (``bound``); a bound
    hub's operations refuse other threads. ``emit`` hands the hub events an
    operation produced (presence) to the application's listener.
    """

    __slots__ = ("emit", "thread", "token")

    def __init__(self, emit: Callable[[list[HubEvent]], None] | None = None) -> None:
        self.thread: int | None = None
        self.token: EventLoopToken | None = None
        self.emit = emit

    @contextmanager
    def bound(self) -> Iterator[None]:
        """Bind to the calling event loop (call it in the loop) until the block ends."""
        if self.thread is not None:
            raise RuntimeError("this hub is already running in an event loop")
        self.thread, self.token = threading.get_ident(), current_token()
        try:
            yield
        finally:
            self.thread = self.token = None

    @property
    def running(self) -> bool:
        return self.thread is not None

    def in_loop(self) -> bool:
        """True in the bound loop's thread (and anywhere while not bound)."""
        thread = self.thread
        return thread is None or thread == threading.get_ident()

    def check(self, operation: str) -> None:
        """Raise ``WrongThreadError`` unless called from the bound loop's thread."""
        thread = self.thread
        if thread is not None and thread != threading.get_ident():
            raise WrongThreadError(
                f"{operation}() was called from a thread other than the hub's event loop: "
                "use ctx.threadsafe_hub in synchronous command handlers, "
                "hub.threadsafe() in other threads, or a ThreadedHub"
            )


class HubOperations:
    """The application's handle on a running hub: synchronous, non-blocking.

    Each method returns how many connections the message was queued for (or
    whether the connection was found): a connection that just left is
    normal, not an error. Call them in the hub's event loop; other threads
    get ``WrongThreadError`` (see ``threadsafe()``). ``ThreadedHub`` offers
    the same names as blocking calls.
    """

    hub: Hub
    loop: LoopBinding
    #: Register a command handler (``HubRuntime.add_command``; facades delegate).
    add_command: Callable[..., None]

    def broadcast(
        self, message_type: str, payload: object, *, exclude: str | Collection[str] | None = None
    ) -> int:
        """Send one envelope to every connection but ``exclude`` (ids)."""
        self.loop.check("broadcast")
        return self.hub.broadcast(message_type, payload, exclude=exclude)

    def publish(
        self,
        topic: str,
        payload: object,
        *,
        message_type: str = "message",
        droppable: bool = False,
    ) -> int:
        """Publish to a topic's subscribers (with the next ``seq``)."""
        self.loop.check("publish")
        return self.hub.publish(topic, payload, message_type=message_type, droppable=droppable)

    def send_to(self, conn_id: str, message_type: str, payload: object) -> int:
        """Send to one connection: 1 if queued, 0 if unknown or closing."""
        self.loop.check("send_to")
        return self.hub.send_to(conn_id, message_type, payload)

    def send_to_principal(self, principal_id: str, message_type: str, payload: object) -> int:
        """Send to every connection of one principal."""
        self.loop.check("send_to_principal")
        return self.hub.send_to_principal(principal_id, message_type, payload)

    def disconnect(self, conn_id: str, code: int = 1008, reason: str = "") -> bool:
        """Start closing one connection; False if unknown or not open."""
        self.loop.check("disconnect")
        return self.hub.disconnect(conn_id, code, reason)

    def subscribe(self, conn_id: str, topic: str) -> bool:
        """Subscribe a connection server-side (no policy check).

        True if it is subscribed now; False if the connection is unknown (it
        may just have left: like ``send_to``, nothing is raised).
        """
        self.loop.check("subscribe")
        check_topic_name(topic)  # a bad name is the caller's bug, left or not
        if self.hub.connection(conn_id) is None:
            return False
        self._emit(self.hub.subscribe(conn_id, topic))
        return True

    def unsubscribe(self, conn_id: str, topic: str) -> bool:
        """Unsubscribe a connection server-side: True if it was subscribed,
        False if it was not or the connection is unknown."""
        self.loop.check("unsubscribe")
        info = self.hub.connection(conn_id)
        if info is None or topic not in info.subscriptions:
            return False
        self._emit(self.hub.unsubscribe(conn_id, topic))
        return True

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
        """Set a topic's policy (who may publish and subscribe, presence, slow
        consumers, history kept: see ``Hub.configure_topic``)."""
        self.loop.check("configure_topic")
        self.hub.configure_topic(
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
        """The envelopes ``topic`` keeps (see ``Hub.history``)."""
        self.loop.check("history")
        return self.hub.history(topic, since=since, limit=limit)

    def connections(self) -> list[ConnectionInfo]:
        """The open connections (live objects: read them in the loop)."""
        self.loop.check("connections")
        return self.hub.connections()

    def stats(self) -> HubStats:
        self.loop.check("stats")
        return self.hub.stats()

    def threadsafe(self) -> BlockingOperations:
        """These operations as blocking calls that are safe from any thread.

        From the loop's thread they run directly; from another thread they
        are carried into the loop and run there before the call returns
        (``LoopBoundHub``).
        """
        from .blocking import LoopBoundHub

        return LoopBoundHub(self)

    def _emit(self, events: list[HubEvent]) -> None:
        if events and self.loop.emit is not None:
            self.loop.emit(events)
