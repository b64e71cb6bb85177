"""Topics in the hub: subscriptions, presence, and publishing.

A publication takes two steps: the topic's stream numbers it (the next
``seq``) and it is delivered to the subscribers of this process
(``hub_delivery.deliver``).
"""

from __future__ import annotations

from .envelope import MAX_TOPIC_LENGTH, ErrorCode, Request
from .hub_delivery import deliver
from .hub_events import HubEvent, PresenceChanged, Published
from .hub_output import HubOutput
from .registry import _Entry
from .topics import Topic, TopicPolicy

__all__ = ["Topics", "check_topic_name"]


def check_topic_name(topic: str) -> None:
    if not isinstance(topic, str) or not 0 < len(topic) <= MAX_TOPIC_LENGTH:
        raise ValueError(f"topic must be a non-empty string of at most {MAX_TOPIC_LENGTH} chars")


class Topics:
    """Live topics by name, the policy of unconfigured ones, and their members."""

    __slots__ = ("_out", "default", "topics")

    def __init__(self, out: HubOutput, default: TopicPolicy) -> None:
        self._out = out
        self.default = default
        self.topics: dict[str, Topic] = {}

    def configure(self, name: str, policy: TopicPolicy) -> None:
        check_topic_name(name)
        state = self.topics.get(name)
        if state is None:
            self.topics[name] = Topic(name=name, policy=policy, configured=True)
        else:
            state.policy = policy
            state.configured = True
            if policy.slow_consumer == "disconnect":
                state.dropped.clear()

    # -- client requests -------------------------------------------------------------

    def on_subscribe(self, entry: _Entry, request: Request) -> list[HubEvent]:
        out = self._out
        name = request.topic
        if name is None:
            out.client_error(entry, request.id, ErrorCode.INVALID_ENVELOPE, "topic is required")
            return []
        info = entry.info
        events: list[HubEvent] = []
        state = self.topics.get(name)
        joined = False
        if name not in info.subscriptions:
            policy = self.default if state is None else state.policy
            if not policy.may_subscribe(info, name):
                out.client_error(entry, request.id, ErrorCode.FORBIDDEN, "subscription refused")
                return []
            if len(info.subscriptions) >= out.config.max_subscriptions:
                out.client_error(
                    entry, request.id, ErrorCode.TOO_MANY_SUBSCRIPTIONS, "too many subscriptions"
                )
                return []
            state = self.join(entry, name)
            joined = True
        assert state is not None
        if request.id is not None:
            result: dict[str, object] = {"topic": name, "seq": state.seq}
            if state.policy.presence:
                result["present"] = [self._member(cid) for cid in state.subscribers]
            out.send(entry, out.prepare("reply", result, id=request.id, ok=True))
        if joined:
            self.presence(state, entry, True, events)
        return events

    def on_unsubscribe(self, entry: _Entry, request: Request) -> list[HubEvent]:
        out = self._out
        name = request.topic
        if name is None:
            out.client_error(entry, request.id, ErrorCode.INVALID_ENVELOPE, "topic is required")
            return []
        events: list[HubEvent] = []
        if request.id is not None:
            out.send(entry, out.prepare("reply", {"topic": name}, id=request.id, ok=True))
        if name in entry.info.subscriptions:
            self.leave(entry, name, events)
        return events

    def on_publish(self, entry: _Entry, request: Request) -> list[HubEvent]:
        out = self._out
        name = request.topic
        if name is None:
            out.client_error(entry, request.id, ErrorCode.INVALID_ENVELOPE, "topic is required")
            return []
        state = self.topics.get(name)
        policy = self.default if state is None else state.policy
        if not policy.may_publish(entry.info, name):
            out.client_error(entry, request.id, ErrorCode.FORBIDDEN, "publishing refused")
            return []
        seq, delivered = 0, 0
        if state is not None:
            droppable = state.policy.slow_consumer == "drop"
            seq, delivered = self.publish(state, request.payload, "message", droppable)
        if request.id is not None:
            result = {"topic": name, "seq": seq, "delivered": delivered}
            out.send(entry, out.prepare("reply", result, id=request.id, ok=True))
        return [
            Published(
                conn_id=entry.info.conn_id,
                topic=name,
                seq=seq,
                payload=request.payload,
                delivered=delivered,
            )
        ]

    # -- membership ------------------------------------------------------------------

    def subscribe(self, entry: _Entry, topic: str) -> list[HubEvent]:
        """A server-side subscribe: no policy check, no reply."""
        events: list[HubEvent] = []
        if topic not in entry.info.subscriptions:
            state = self.join(entry, topic)
            self.presence(state, entry, True, events)
        return events

    def join(self, entry: _Entry, name: str) -> Topic:
        state = self.topics.get(name)
        if state is None:
            state = self.topics[name] = Topic(name=name, policy=self.default)
        state.subscribers[entry.info.conn_id] = None
        entry.info.subscriptions.add(name)
        return state

    def leave(self, entry: _Entry, name: str, events: list[HubEvent]) -> None:
        conn_id = entry.info.conn_id
        entry.info.subscriptions.discard(name)
        state = self.topics[name]
        del state.subscribers[conn_id]
        state.dropped.pop(conn_id, None)
        self.presence(state, entry, False, events)
        if state.disposable:
            del self.topics[name]

    def leave_all(self, entry: _Entry) -> list[HubEvent]:
        """A departing connection leaves every topic (presence ``leave`` to the others)."""
        events: list[HubEvent] = []
        for name in list(entry.info.subscriptions):
            self.leave(entry, name, events)
        return events

    def _member(self, conn_id: str) -> dict[str, str]:
        principal = self._out.registry.entries[conn_id].info.principal
        return {"conn_id": conn_id, "principal": principal.id}

    def presence(self, state: Topic, entry: _Entry, joined: bool, events: list[HubEvent]) -> None:
        if not state.policy.presence:
            return
        out = self._out
        info = entry.info
        payload = {
            "event": "join" if joined else "leave",
            "conn_id": info.conn_id,
            "principal": info.principal.id,
        }
        message = out.prepare("presence", payload, topic=state.name)
        entries = out.registry.entries
        for conn_id in state.subscribers:
            out.send(entries[conn_id], message)
        events.append(
            PresenceChanged(
                topic=state.name,
                conn_id=info.conn_id,
                principal_id=info.principal.id,
                joined=joined,
            )
        )

    # -- publishing ------------------------------------------------------------------

    def publish(
        self, state: Topic, payload: object, message_type: str, droppable: bool
    ) -> tuple[int, int]:
        """Encode once with the next seq, deliver under the topic's policy."""
        seq = state.seq + 1
        message = self._out.prepare(message_type, payload, topic=state.name, seq=seq)
        state.seq = seq
        return seq, deliver(self._out, state, message, droppable)
