"""Topics: who may subscribe and publish, who is subscribed, and the sequence.

An unconfigured topic exists only while it has subscribers or history; then
it is forgotten with its ``seq``. A configured topic (``Hub.configure_topic``)
keeps its policy, its ``seq`` and its ``epoch`` for the hub's life. The epoch
names one run of ``seq`` numbers: a topic created again starts a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .history import TopicLog
from .registry import ConnectionInfo

if TYPE_CHECKING:
    from .hub_broker import Waiter

__all__ = [
    "PublishPolicy",
    "SlowConsumerPolicy",
    "SubscribePolicy",
    "Topic",
    "TopicCheck",
    "TopicPolicy",
]

#: An authorization hook: may this connection do it on this topic?
TopicCheck = Callable[[ConnectionInfo, str], bool]
PublishPolicy = Literal["none", "subscribers", "all"] | TopicCheck
SubscribePolicy = Literal["none", "all"] | TopicCheck
SlowConsumerPolicy = Literal["disconnect", "drop"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicPolicy:
    """What clients may do on a topic and how slow subscribers are treated.

    ``publish``: "none" (default: only the server publishes), "subscribers",
    "all", or a check ``(info, topic) -> bool``. ``subscribe``: "all"
    (default: any authenticated connection), "none", or a check.
    ``slow_consumer``: "disconnect" (default: a full outbox closes the
    connection with 1013) or "drop" (droppable messages are skipped for a full
    outbox and the client is later told how many with a ``dropped`` notice).
    ``subscribe_scope`` / ``publish_scope``: a scope the connection's
    principal must hold to subscribe / to publish, checked before the rule.
    """

    publish: PublishPolicy = "none"
    subscribe: SubscribePolicy = "all"
    presence: bool = False
    slow_consumer: SlowConsumerPolicy = "disconnect"
    subscribe_scope: str | None = None
    publish_scope: str | None = None

    def __post_init__(self) -> None:
        if not callable(self.publish) and self.publish not in ("none", "subscribers", "all"):
            raise ValueError(
                f"publish must be 'none', 'subscribers', 'all' or a callable, got {self.publish!r}"
            )
        if not callable(self.subscribe) and self.subscribe not in ("none", "all"):
            raise ValueError(
                f"subscribe must be 'none', 'all' or a callable, got {self.subscribe!r}"
            )
        if self.slow_consumer not in ("disconnect", "drop"):
            raise ValueError(
                f"slow_consumer must be 'disconnect' or 'drop', got {self.slow_consumer!r}"
            )

    def may_subscribe(self, info: ConnectionInfo, topic: str) -> bool:
        if self.subscribe_scope is not None and self.subscribe_scope not in info.principal.scopes:
            return False
        rule = self.subscribe
        if callable(rule):
            return bool(rule(info, topic))
        return rule == "all"

    def may_publish(self, info: ConnectionInfo, topic: str) -> bool:
        if self.publish_scope is not None and self.publish_scope not in info.principal.scopes:
            return False
        rule = self.publish
        if callable(rule):
            return bool(rule(info, topic))
        if rule == "subscribers":
            return topic in info.subscriptions
        return rule == "all"


@dataclass(slots=True, eq=False)
class Topic:
    """Live state of one topic. ``dropped`` counts, per subscriber, droppable
    messages skipped and not yet announced with a ``dropped`` notice.
    ``history_size`` / ``history_ttl`` override the hub's defaults when set;
    ``log`` holds the kept envelopes while the topic keeps history.

    With a broker (``hub_brokered``): ``listening`` while this node receives
    the topic's publications, ``synced`` while ``seq``/``epoch`` is the
    node's position in the broker's stream, ``waiting`` the subscribers
    not yet in step with it."""

    name: str
    policy: TopicPolicy
    configured: bool = False
    seq: int = 0
    epoch: str = ""
    subscribers: dict[str, None] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    history_size: int | None = None
    history_ttl: float | None = None
    log: TopicLog | None = None
    listening: bool = False
    synced: bool = False
    waiting: dict[str, Waiter] = field(default_factory=dict)

    @property
    def disposable(self) -> bool:
        """True when nothing would be lost by forgetting this topic."""
        return not self.configured and not self.subscribers and not self.waiting and not self.log
