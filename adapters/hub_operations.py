"""The application's handle on a hub: synchronous, non-blocking operations.

Shared by ``HubHandler`` and ``HubServer`` (both own a ``Hub``); the
blocking, thread-safe twin is ``ThreadedHub``.
"""

from __future__ import annotations

from collections.abc import Collection

from ..core.hub import Hub
from ..core.hub_recovery import HistoryPage
from ..core.hub_stats import HubStats
from ..core.registry import ConnectionInfo
from ..core.topics import PublishPolicy, SlowConsumerPolicy, SubscribePolicy

__all__ = ["HubOperations"]


class HubOperations:
    """The application's handle on a running hub: synchronous, non-blocking.

    Each method returns how many connections the message was queued for (or
    whether the connection was found). Shared by ``HubHandler`` and
    ``HubServer``; ``ThreadedHub`` offers the same names as blocking calls.
    """

    hub: Hub

    def broadcast(
        self, message_type: str, payload: object, *, exclude: str | Collection[str] | None = None
    ) -> int:
        """Send one envelope to every connection but ``exclude`` (ids)."""
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
        return self.hub.publish(topic, payload, message_type=message_type, droppable=droppable)

    def send_to(self, conn_id: str, message_type: str, payload: object) -> int:
        """Send to one connection: 1 if queued, 0 if unknown or closing."""
        return self.hub.send_to(conn_id, message_type, payload)

    def send_to_principal(self, principal_id: str, message_type: str, payload: object) -> int:
        """Send to every connection of one principal."""
        return self.hub.send_to_principal(principal_id, message_type, payload)

    def disconnect(self, conn_id: str, code: int = 1008, reason: str = "") -> bool:
        """Start closing one connection; False if unknown or not open."""
        return self.hub.disconnect(conn_id, code, reason)

    def subscribe(self, conn_id: str, topic: str) -> None:
        """Subscribe a connection server-side (no policy check)."""
        self.hub.subscribe(conn_id, topic)

    def unsubscribe(self, conn_id: str, topic: str) -> None:
        self.hub.unsubscribe(conn_id, topic)

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
        return self.hub.history(topic, since=since, limit=limit)

    def connections(self) -> list[ConnectionInfo]:
        return self.hub.connections()

    def stats(self) -> HubStats:
        return self.hub.stats()
