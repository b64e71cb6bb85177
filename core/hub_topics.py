"""Topics in the hub: subscriptions, presence, publishing, history and recovery.

A publication takes two steps. First the topic's stream numbers it (the next
``seq`` in its ``epoch``) and keeps its envelope in history (``History``);
then ``publication`` delivers it to the subscribers of this process
(``hub_delivery.deliver``). A broker that numbers and keeps publications
elsewhere replaces the first step and feeds ``publication`` directly.
"""

from __future__ import annotations

import base64

from .connection import RandomSource
from .envelope import MAX_TOPIC_LENGTH, ErrorCode, Request
from .frames import PreparedMessage
from .history import History, HistoryBounds, TopicLog
from .hub_broker import PresenceOut
from .hub_brokered import Brokered
from .hub_delivery import deliver
from .hub_events import HubEvent, PresenceChanged, Published
from .hub_output import HubOutput
from .hub_recovery import (
    BadRequest,
    HistoryPage,
    Position,
    encode_history_reply,
    frame_bound,
    missed,
    parse_history_request,
    read,
    recoverable,
    subscribe_since,
)
from .registry import _Entry
from .topics import Topic, TopicPolicy

__all__ = ["Topics", "check_topic_name"]


def check_topic_name(topic: str) -> None:
    if not isinstance(topic, str) or not 0 < len(topic) <= MAX_TOPIC_LENGTH:
        raise ValueError(f"topic must be a non-empty string of at most {MAX_TOPIC_LENGTH} chars")


class Topics:
    """Live topics by name, the policy of unconfigured ones, and their members."""

    __slots__ = ("_out", "_random", "brokered", "default", "history", "topics")

    def __init__(self, out: HubOutput, default: TopicPolicy, random: RandomSource) -> None:
        self._out = out
        self._random = random
        self.default = default
        self.topics: dict[str, Topic] = {}
        self.history = History(out.config.max_history_bytes, self._log_emptied)
        self.brokered: Brokered | None = None  # set when a broker holds the streams

    def configure(
        self,
        name: str,
        policy: TopicPolicy,
        history_size: int | None,
        history_ttl: float | None,
    ) -> None:
        check_topic_name(name)
        state = self.topics.get(name)
        if state is None:
            state = self._create(name, policy, configured=True)
        else:
            state.policy = policy
            state.configured = True
            if policy.slow_consumer == "disconnect":
                state.dropped.clear()
        state.history_size = history_size
        state.history_ttl = history_ttl
        log = state.log
        if log is not None:
            bounds = self.bounds(state)
            if bounds.size:
                self.history.trim(log, self._out.clock(), bounds)
            else:
                self.history.clear(log)
                state.log = None

    def _create(self, name: str, policy: TopicPolicy, *, configured: bool = False) -> Topic:
        """A new stream: seq 0 and a fresh epoch (8 URL-safe characters, 48 random bits)."""
        epoch = base64.urlsafe_b64encode(self._random(6)).decode("ascii")
        state = self.topics[name] = Topic(
            name=name, policy=policy, configured=configured, epoch=epoch
        )
        return state

    def bounds(self, state: Topic) -> HistoryBounds:
        cfg = self._out.config
        size = cfg.history_size if state.history_size is None else state.history_size
        ttl = cfg.history_ttl if state.history_ttl is None else state.history_ttl
        return HistoryBounds(size=size, max_bytes=cfg.history_topic_bytes, ttl=ttl)

    def get_or_keep(self, name: str) -> Topic | None:
        """The topic ``name``; made for a publish when unconfigured topics keep
        history (that publish is what a reconnecting client will need)."""
        state = self.topics.get(name)
        if state is None and self._out.config.history_size > 0:
            state = self._create(name, self.default)
        return state

    def _log_emptied(self, log: TopicLog) -> None:
        """History let go of a topic's last entry: forget the topic if nothing else holds it."""
        state = self.topics.get(log.name)
        if state is not None and state.log is log and state.disposable:
            del self.topics[log.name]

    # -- client requests -------------------------------------------------------------

    def on_subscribe(self, entry: _Entry, request: Request) -> list[HubEvent]:
        out = self._out
        name = request.topic
        if name is None:
            out.client_error(entry, request.id, ErrorCode.INVALID_ENVELOPE, "topic is required")
            return []
        since = None
        if request.payload is not None:
            try:
                since = subscribe_since(request.payload)
            except BadRequest as exc:
                out.client_error(entry, request.id, ErrorCode.INVALID_ENVELOPE, str(exc))
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
        if self.brokered is not None:
            self.brokered.subscribe(entry, state, since, request, joined=joined)
        elif since is not None:
            self._recover(entry, state, since, request, joined=joined)
        elif request.id is not None:
            result: dict[str, object] = {"topic": name, "seq": state.seq, "epoch": state.epoch}
            if state.policy.presence:
                result["present"] = [self._member(cid) for cid in state.subscribers]
            out.send(entry, out.prepare("reply", result, id=request.id, ok=True))
        if joined:
            self.presence(state, entry, True, events)
        return events

    def _recover(
        self, entry: _Entry, state: Topic, since: Position, request: Request, *, joined: bool
    ) -> None:
        """The reply to a subscribe with ``since`` (if it has an id), then the replay."""
        out = self._out
        result: dict[str, object] = {
            "topic": state.name,
            "seq": state.seq,
            "epoch": state.epoch,
            "recovered": False,
        }
        if state.policy.presence:
            result["present"] = [self._member(cid) for cid in state.subscribers]
        replay: list[bytes] = []
        if recoverable(state, since):
            replay = self._replay(entry, state, since, result, request, joined=joined)
        if request.id is not None:
            out.send(entry, out.prepare("reply", result, id=request.id, ok=True))
        for data in replay:
            out.send(entry, PreparedMessage(data, text=True))

    def _replay(
        self,
        entry: _Entry,
        state: Topic,
        since: Position,
        result: dict[str, object],
        request: Request,
        *,
        joined: bool,
    ) -> list[bytes]:
        """The envelopes to replay after the reply, if they fit the connection's
        outbox with it and its own presence ``join`` (else ``recovered`` stays
        false); sets ``recovered``."""
        out = self._out
        data = missed(state, since)
        connection = entry.connection
        result["recovered"] = True
        room = connection.limits.max_outbox_size - connection.outbox_size
        if request.id is not None:
            reply = out.prepare("reply", result, id=request.id, ok=True)
            room -= frame_bound(len(reply.payload))
        if joined and state.policy.presence:
            room -= frame_bound(len(self._presence_message(state, entry, True).payload))
        for item in data:
            room -= frame_bound(len(item))
        if room < 0:
            result["recovered"] = False
            return []
        state.dropped.pop(entry.info.conn_id, None)  # the replay fills what was dropped
        return data

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
        if self.brokered is not None:
            droppable = policy.slow_consumer == "drop"
            self.brokered.on_publish(entry, request, name, droppable)
            return []  # answered, and reported, once the broker numbered it
        seq, delivered = 0, 0
        state = self.get_or_keep(name)
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

    def read_history(self, name: str, since: Position | None, limit: int | None) -> HistoryPage:
        state = self.topics.get(name)
        if limit is None:
            limit = 0 if state is None or state.log is None else len(state.log)
        return read(name, state, since, limit)

    def on_history(self, entry: _Entry, request: Request) -> list[HubEvent]:
        """A ``history`` request: kept envelopes of a topic the client may subscribe to."""
        out = self._out
        name = request.topic
        if name is None:
            out.client_error(entry, request.id, ErrorCode.INVALID_ENVELOPE, "topic is required")
            return []
        try:
            since, limit = parse_history_request(request.payload, out.config.max_history_page)
        except BadRequest as exc:
            out.client_error(entry, request.id, ErrorCode.INVALID_ENVELOPE, str(exc))
            return []
        state = self.topics.get(name)
        policy = self.default if state is None else state.policy
        if not policy.may_subscribe(entry.info, name):
            out.client_error(entry, request.id, ErrorCode.FORBIDDEN, "history refused")
            return []
        if request.id is None:
            return []  # nothing to answer: success without an id is silent
        if self.brokered is not None:
            self.brokered.on_history(entry, name, request.id, since, limit)
            return []
        connection = entry.connection
        timestamp = int(out.wall_clock() * 1000)
        empty = read(name, state, since, 0)
        head = encode_history_reply(empty, request.id, timestamp, out.codec)
        room = connection.limits.max_outbox_size - connection.outbox_size - frame_bound(len(head))
        page = read(name, state, since, limit, room, at_least_one=not connection.outbox_size)
        data = encode_history_reply(page, request.id, timestamp, out.codec)
        out.send(entry, PreparedMessage(data, text=True))
        return []

    # -- membership ------------------------------------------------------------------

    def subscribe(self, entry: _Entry, topic: str) -> list[HubEvent]:
        """A server-side subscribe: no policy check, no reply."""
        events: list[HubEvent] = []
        if topic not in entry.info.subscriptions:
            state = self.join(entry, topic)
            if self.brokered is not None:
                self.brokered.subscribe(entry, state, None, None, joined=True)
            self.presence(state, entry, True, events)
        return events

    def join(self, entry: _Entry, name: str) -> Topic:
        state = self.topics.get(name)
        if state is None:
            state = self._create(name, self.default)
        state.subscribers[entry.info.conn_id] = None
        entry.info.subscriptions.add(name)
        return state

    def leave(self, entry: _Entry, name: str, events: list[HubEvent]) -> None:
        conn_id = entry.info.conn_id
        entry.info.subscriptions.discard(name)
        state = self.topics[name]
        if self.brokered is not None:
            self.brokered.left(state, conn_id)
        else:
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

    def _presence_message(self, state: Topic, entry: _Entry, joined: bool) -> PreparedMessage:
        info = entry.info
        payload = {
            "event": "join" if joined else "leave",
            "conn_id": info.conn_id,
            "principal": info.principal.id,
        }
        return self._out.prepare("presence", payload, topic=state.name)

    def presence(self, state: Topic, entry: _Entry, joined: bool, events: list[HubEvent]) -> None:
        if not state.policy.presence:
            return
        out = self._out
        info = entry.info
        message = self._presence_message(state, entry, joined)
        entries = out.registry.entries
        for conn_id in state.subscribers:
            out.send(entries[conn_id], message)
        if self.brokered is not None:
            self.brokered.queue(
                PresenceOut(
                    topic=state.name,
                    conn_id=info.conn_id,
                    principal_id=info.principal.id,
                    joined=joined,
                    envelope=message.payload,
                )
            )
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
        """Number with the next seq, encode once, keep in history, deliver."""
        seq = state.seq + 1
        message = self._out.prepare(message_type, payload, topic=state.name, seq=seq)
        state.seq = seq
        self._keep(state, message.payload)
        return seq, self.publication(state, message, droppable)

    def publication(self, state: Topic, message: PreparedMessage, droppable: bool) -> int:
        """Deliver a numbered publication to this process's subscribers."""
        return deliver(self._out, state, message, droppable)

    def _keep(self, state: Topic, data: bytes) -> None:
        bounds = self.bounds(state)
        log = state.log
        if not bounds.size:
            if log is not None:  # the defaults changed: a log must never have a gap
                self.history.clear(log)
                state.log = None
            return
        if log is None:
            log = state.log = TopicLog(state.name, state.seq)
        self.history.max_bytes = self._out.config.max_history_bytes
        self.history.append(log, data, self._out.clock(), bounds)
