"""What a hub client does with each message it reads, on whichever connection.

``Link`` holds the state that outlives connections (topics with their
cursors and subscribers, the inboxes) and the state of the current one
(requests waiting for a reply), and routes every decoded envelope: replies to
their request, topic messages through the cursor to the subscriptions,
presence and broadcasts to their listeners. ``HubClient`` adds the
connection's lifecycle around it.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import anyio

from .client import ClientSession
from .errors import ConnectionClosed
from .hub_client_feeds import GapMarker, Inbox, Subscription
from .hub_client_topics import Cursor, Verdict, parse_subscribe_reply
from .hub_client_types import (
    CallError,
    ConnectionLost,
    Gap,
    Message,
    Presence,
    ServerMessage,
    StreamPosition,
)

__all__ = ["Link", "Pending", "Topic", "encode"]

logger = logging.getLogger("wshub.client")

Callback = Callable[[Any], Any]

#: Server message types the client handles itself (not delivered as ``ServerMessage``).
_PROTOCOL_TYPES = frozenset({"reply", "presence", "dropped", "error", "welcome", "reset"})


class Pending:
    """A request waiting for its reply: a call, or a subscribe of ``topic``."""

    __slots__ = ("asked", "done", "error", "failure", "ok", "payload", "topic")

    def __init__(self, topic: Topic | None = None, *, asked: bool = False) -> None:
        self.topic = topic
        self.asked = asked  # a subscribe that carried ``since``
        self.done = anyio.Event()
        self.ok = False
        self.payload: Any = None
        self.error: tuple[str, str] = ("", "")
        self.failure: BaseException | None = None

    def resolve(self, reply: dict[str, Any]) -> None:
        self.ok = reply.get("ok") is True
        self.payload = reply.get("payload")
        if not self.ok:
            self.error = _error_of(reply)
        self.done.set()

    def fail(self, failure: BaseException) -> None:
        self.failure = failure
        self.done.set()

    def result(self) -> Any:
        """The reply's payload, or the error it carried."""
        if self.failure is not None:
            raise self.failure.with_traceback(None)
        if not self.ok:
            raise CallError(*self.error)
        return self.payload


class Topic:
    """One subscribed topic: its cursor, its subscriptions, its confirmation."""

    __slots__ = (
        "catching_up",
        "confirmed_on",
        "cursor",
        "error",
        "name",
        "no_history",
        "paged_from",
        "present",
        "ready",
        "sent_on",
        "subs",
    )

    def __init__(self, name: str, since: StreamPosition | None = None) -> None:
        self.name = name
        self.cursor = Cursor(name, since)
        self.subs: list[Subscription] = []
        self.present: dict[str, str] = {}  # shared with the subscriptions: updated in place
        self.sent_on = 0  # the connection number a subscribe was sent on
        self.confirmed_on = 0  # the connection number whose reply arrived
        self.ready = anyio.Event()  # set at the first reply (or failure)
        self.error: BaseException | None = None
        self.catching_up = False  # reading missed messages from history: live ones are dropped
        self.paged_from: int | None = None  # the cursor's seq when the last catch-up began
        self.no_history = False  # history did not reach back last time: no paging until it does

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.ready.set()


class Link:
    """Routing of received envelopes; the connection-independent client state."""

    def __init__(
        self,
        *,
        max_queue: int,
        on_message: Callback | None,
        on_presence: Callback | None,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self._max_queue = max_queue
        self._on_message = on_message
        self._on_presence = on_presence
        self._topics: dict[str, Topic] = {}
        self._pending: dict[int, Pending] = {}
        self._inboxes: list[Inbox] = []
        self._left: set[str] = set()  # unsubscribed on this connection: late messages dropped
        self._ws: ClientSession | None = None
        self._conn_no = 0  # +1 per welcomed connection
        self._ids = itertools.count(1)  # request ids, never reused across connections
        self._restoring: set[str] = set()  # topics of this connection not live again yet
        self.call_timeout = 10.0
        self.conn_id: str | None = None
        self.principal: str | None = None

    def topics(self) -> dict[str, StreamPosition | None]:
        """Subscribed topics and where their streams stand (None before an epoch is known)."""
        return {name: state.cursor.position for name, state in self._topics.items()}

    # -- routing ---------------------------------------------------------

    async def _dispatch(self, envelope: dict[str, Any]) -> None:
        kind = envelope.get("message_type")
        topic = envelope.get("topic")
        seq = envelope.get("seq")
        if kind == "reply":
            await self._on_reply(envelope)
        elif isinstance(topic, str) and isinstance(seq, int) and not isinstance(seq, bool):
            await self._on_topic_message(envelope, topic, seq)
        elif kind == "presence" and isinstance(topic, str):
            await self._on_presence_message(envelope, topic)
        elif kind == "reset" and isinstance(topic, str):
            await self._on_reset(envelope, topic)
        elif kind == "dropped":
            # The skipped seqs show as a gap at the topic's next message.
            logger.info("hub client: %s message(s) of %r dropped", envelope.get("payload"), topic)
        elif kind == "error":
            code, message = _error_of(envelope)
            logger.warning("hub client: server error %s: %s", code, message)
        elif isinstance(kind, str) and kind not in _PROTOCOL_TYPES:
            await self._on_server_message(envelope, kind)

    async def _on_reply(self, reply: dict[str, Any]) -> None:
        request_id = reply.get("id")
        pending = self._pending.get(request_id) if isinstance(request_id, int) else None
        if pending is None:
            return  # a call that timed out meanwhile
        if pending.topic is None:
            pending.resolve(reply)
            return
        del self._pending[request_id]  # type: ignore[arg-type]
        state = pending.topic
        await self._on_subscribed(state, pending.asked, reply)
        if state.name in self._restoring:  # (a catch-up from history may go on)
            self._restoring.discard(state.name)
            if not self._restoring:
                await self._restored()

    async def _restored(self) -> None:
        """Hook: every topic of a new connection got its subscribe reply."""

    async def _on_subscribed(self, state: Topic, asked: bool, reply: dict[str, Any]) -> None:
        """A subscribe reply, handled before the messages that follow it."""
        if self._topics.get(state.name) is not state:
            return  # left meanwhile (an unsubscribe followed the subscribe)
        if reply.get("ok") is not True:
            error = CallError(*_error_of(reply))
            del self._topics[state.name]
            for sub in state.subs:
                sub.end(error)
            state.fail(error)
            return
        parsed = parse_subscribe_reply(reply.get("payload"))
        if parsed is None:
            logger.warning("hub client: malformed subscribe reply for %r", state.name)
            return
        state.confirmed_on = self._conn_no
        state.catching_up = False
        state.present.clear()
        state.present.update(parsed.present or ())
        state.ready.set()  # subscribed: what was missed follows (replay, catch-up or gap)
        cursor = state.cursor
        if (
            asked
            and parsed.recovered is False
            and parsed.epoch is not None
            and parsed.epoch == cursor.epoch
            and cursor.seq is not None
            and parsed.seq > cursor.seq
            and state.paged_from != cursor.seq
            and not state.no_history
        ):
            # Same stream, but the replay did not fit (or history is short):
            # read what is missed in pages, then subscribe again from there.
            self._catch_up(state)
            return
        if parsed.recovered is True:
            state.paged_from = None
            state.no_history = False
        gap = cursor.resume(parsed, asked=asked)
        if gap is not None:
            await self._signal_gap(state, gap)

    async def _on_topic_message(self, envelope: dict[str, Any], topic: str, seq: int) -> None:
        state = self._topics.get(topic)
        if state is None:
            if topic not in self._left:  # subscribed by the server, not through this client
                await self._on_server_message(envelope, str(envelope.get("message_type")))
            return
        if state.confirmed_on != self._conn_no or state.catching_up:
            return  # from before the reply on this connection, or read again from history
        last = state.cursor.seq
        if (
            last is not None
            and seq > last + 1
            and state.cursor.epoch is not None
            and not state.no_history
            and state.paged_from != last
        ):
            self._catch_up(state)  # a live gap (``dropped``): fill it from history
            return
        await self._accept(state, envelope, seq)

    async def _on_reset(self, envelope: dict[str, Any], topic: str) -> None:
        """A server spanning several nodes could not continue the stream from
        where this client was: take the new position, signal the gap."""
        state = self._topics.get(topic)
        payload = envelope.get("payload")
        if state is None or state.confirmed_on != self._conn_no or not isinstance(payload, dict):
            return
        seq, epoch = payload.get("seq"), payload.get("epoch")
        if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(epoch, str):
            logger.warning("hub client: malformed reset for %r", topic)
            return
        state.catching_up = False
        await self._signal_gap(state, state.cursor.reset(seq, epoch))

    def _catch_up(self, state: Topic) -> None:
        """Hook: read the topic's missed messages from history, then subscribe again."""
        state.catching_up = True
        state.paged_from = state.cursor.seq

    async def _accept(self, state: Topic, envelope: dict[str, Any], seq: int) -> None:
        """Deliver a topic message once, in order, after signalling a gap before it."""
        verdict, gap = state.cursor.advance(seq)
        if verdict is Verdict.DUPLICATE:
            return
        if gap is not None:
            await self._signal_gap(state, gap)
        message = Message(
            topic=state.name,
            seq=seq,
            epoch=state.cursor.epoch,
            payload=envelope.get("payload"),
            timestamp=_timestamp(envelope),
            message_type=str(envelope.get("message_type")),
        )
        for sub in list(state.subs):
            await sub.put(message)

    async def _signal_gap(self, state: Topic, gap: Gap) -> None:
        logger.info("hub client: %s", gap)
        marker = GapMarker(gap)
        for sub in list(state.subs):
            await sub.put(marker)
        await self._on_gap(gap)

    async def _on_gap(self, gap: Gap) -> None:
        """Hook: the client's ``on_gap`` callback."""

    async def _on_presence_message(self, envelope: dict[str, Any], topic: str) -> None:
        payload = envelope.get("payload")
        if not isinstance(payload, dict):
            return
        event = Presence(
            topic=topic,
            joined=payload.get("event") == "join",
            conn_id=str(payload.get("conn_id")),
            principal=str(payload.get("principal")),
        )
        state = self._topics.get(topic)
        if state is not None:
            if event.joined:
                state.present[event.conn_id] = event.principal
            else:
                state.present.pop(event.conn_id, None)
        if self._on_presence is not None:
            await self._callback(self._on_presence, event)

    async def _on_server_message(self, envelope: dict[str, Any], kind: str) -> None:
        message = ServerMessage(
            message_type=kind,
            payload=envelope.get("payload"),
            timestamp=_timestamp(envelope),
            envelope=envelope,
        )
        if self._on_message is not None:
            await self._callback(self._on_message, message)
        for inbox in list(self._inboxes):
            await inbox.put(message)

    async def _send_subscribe(
        self, state: Topic, *, again: bool = False, plain: bool = False
    ) -> int | None:
        """Send a subscribe for ``state`` on the current connection (once, unless
        ``again``; with the cursor's ``since`` unless ``plain``); its id."""
        ws = self._ws
        if ws is None or (state.sent_on == self._conn_no and not again):
            return None  # the next connection's resubscription sends it
        state.sent_on = self._conn_no
        since = None if plain else state.cursor.since()
        request_id = next(self._ids)
        self._pending[request_id] = Pending(topic=state, asked=since is not None)
        envelope: dict[str, Any] = {"message_type": "subscribe", "topic": state.name}
        envelope["id"] = request_id
        if since is not None:
            envelope["payload"] = {"since": since}
        with suppress(ConnectionClosed):  # then resubscribed on the next connection
            await ws.send(encode(envelope))
        return request_id

    # -- connection end --------------------------------------------------

    def _lost(self) -> None:
        """The connection ended: calls in flight fail, subscribes are resent later."""
        self._ws = None
        for pending in self._pending.values():
            if pending.topic is None:
                pending.fail(ConnectionLost())
        self._pending.clear()
        self._restoring.clear()
        for state in self._topics.values():
            state.catching_up = False
            state.paged_from = None

    async def _callback(self, func: Callback, arg: object) -> None:
        try:
            result = func(arg)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("hub client: callback %r raised", func)


def _error_of(envelope: dict[str, Any]) -> tuple[str, str]:
    error = envelope.get("error")
    if isinstance(error, dict):
        return str(error.get("code") or "unknown_error"), str(error.get("message") or "")
    return "unknown_error", ""


def _timestamp(envelope: dict[str, Any]) -> int:
    value = envelope.get("timestamp")
    return value if isinstance(value, int) else 0


def encode(envelope: dict[str, Any]) -> str:
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
