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
from ..core.hub_stream import page_of
from ..core.hub_topics import check_topic_name
from ..core.registry import ConnectionInfo
from ..core.topics import PublishPolicy, SlowConsumerPolicy, SubscribePolicy

if TYPE_CHECKING:
    from .blocking import BlockingOperations
    from .broker import Broker

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
    #: Where publications go beyond this process (None: a single node).
    broker: Broker | None = None
    #: Register a command handler (``HubRuntime.add_command``; facades delegate).
    add_command: Callable[..., None]

    def broadcast(
        self, message_type: str, payload: object, *, exclude: str | Collection[str] | None = None
    ) -> int:
        """Send one envelope to every connection but ``exclude`` (ids).

        With a broker: also to every other node's connections; the count is
        this node's (raises ``BrokerUnavailable``, sending nothing, while the
        broker is unreachable)."""
        self.loop.check("broadcast")
        broker = self.broker
        if broker is None:
            return self.hub.broadcast(message_type, payload, exclude=exclude)
        data = self._relayed("broadcast", exclude, message_type, payload)
        return self.hub.broadcast_encoded(data, exclude=exclude)

    def publish(
        self,
        topic: str,
        payload: object,
        *,
        message_type: str = "message",
        droppable: bool = False,
    ) -> int:
        """Publish to a topic's subscribers (with the next ``seq``).

        With a broker the publication is handed to it and 0 is returned: it
        is delivered on every node as it comes back numbered (raises
        ``BrokerUnavailable`` while the broker is unreachable; ``publish_async``
        waits for the numbering)."""
        self.loop.check("publish")
        broker = self.broker
        if broker is None:
            return self.hub.publish(topic, payload, message_type=message_type, droppable=droppable)
        broker.publish(
            self.hub.outgoing(topic, payload, message_type=message_type, droppable=droppable)
        )
        return 0

    async def publish_async(
        self,
        topic: str,
        payload: object,
        *,
        message_type: str = "message",
        droppable: bool = False,
    ) -> tuple[int, str | None]:
        """Publish and return the publication's ``(seq, epoch)`` once numbered
        (by the broker if there is one: raises ``BrokerUnavailable`` if it
        cannot be reached). Without a broker a topic that does not exist
        takes no seq: ``(0, None)``."""
        self.loop.check("publish_async")
        broker = self.broker
        if broker is None:
            self.hub.publish(topic, payload, message_type=message_type, droppable=droppable)
            return self.hub.topic_seq(topic), self.hub.topic_epoch(topic)
        outgoing = self.hub.outgoing(topic, payload, message_type=message_type, droppable=droppable)
        return await broker.publish_wait(outgoing)

    def send_to(self, conn_id: str, message_type: str, payload: object) -> int:
        """Send to one connection: 1 if queued here, 0 if unknown or closing.

        With a broker a connection unknown here is looked for on the other
        nodes (0 is returned: it is not known here whether one had it)."""
        self.loop.check("send_to")
        if self.broker is None or self.hub.connection(conn_id) is not None:
            return self.hub.send_to(conn_id, message_type, payload)
        self._relayed("conn", conn_id, message_type, payload)
        return 0

    def send_to_principal(self, principal_id: str, message_type: str, payload: object) -> int:
        """Send to every connection of one principal (with a broker, on every
        node; the count is this node's)."""
        self.loop.check("send_to_principal")
        if self.broker is None:
            return self.hub.send_to_principal(principal_id, message_type, payload)
        data = self._relayed("principal", principal_id, message_type, payload)
        return self.hub.send_encoded_to_principal(principal_id, data)

    def disconnect(self, conn_id: str, code: int = 1008, reason: str = "") -> bool:
        """Start closing one connection; False if unknown or not open (with a
        broker, a connection unknown here is closed by the node holding it)."""
        self.loop.check("disconnect")
        broker = self.broker
        if broker is None or self.hub.connection(conn_id) is not None:
            return self.hub.disconnect(conn_id, code, reason)
        broker.relay("disconnect", conn_id, f"{code}\n{reason}".encode())
        return False

    def _relayed(
        self,
        kind: str,
        target: str | Collection[str] | None,
        message_type: str,
        payload: object,
    ) -> bytes:
        """Encode once, hand to the broker for the other nodes; the bytes for here."""
        assert self.broker is not None
        data = self.hub.encode(message_type, payload)
        self.broker.relay(kind, target, data)
        return data

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

    async def history_async(
        self, topic: str, *, since: tuple[int, str] | None = None, limit: int | None = None
    ) -> HistoryPage:
        """``history``, read from the broker when there is one (its streams hold
        the history; raises ``BrokerUnavailable`` if it cannot be reached)."""
        self.loop.check("history_async")
        broker = self.broker
        if broker is None:
            return self.hub.history(topic, since=since, limit=limit)
        fetch = self.hub.history_fetch(topic, since=since, limit=limit)
        return page_of(await broker.fetch_wait(fetch), since)

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
