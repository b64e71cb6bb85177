"""Topics of a hub whose streams live in a broker (several nodes, one stream per topic).

The node does not number publications: it encodes them once (``Outgoing``)
and the broker numbers, keeps and spreads them. Every node delivers what
arrives for its subscribers, in ``seq`` order, and keeps in step with each
topic's stream:

- A topic the node has subscribers for is *listened to* (``Listen``); the
  node's position (``Topic.seq``/``epoch``) is the last publication that
  arrived, or the stream's position in a ``Fetch`` answer.
- A subscriber is *live* (``Topic.subscribers``) when it has everything up
  to the node's position; else it *waits* (``Topic.waiting``) for a fetch
  of the stream: a subscribe (the reply needs the stream's position, a
  ``since`` needs its entries) or a live subscriber that the node could not
  keep in step (an arrival past a gap, a new epoch, a broker reconnect).
  Arrivals meanwhile are held for it. The answer gives it the entries it
  missed, or, when the stream cannot give them, a ``reset`` notice (its new
  position, what it had after the old one being lost), then what was held;
  it turns live once the node's position is no further than its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from .envelope import ErrorCode, Request, RequestId, encode_topic_parts
from .frames import PreparedMessage
from .hub_broker import (
    Arrival,
    BrokerCommand,
    Fetch,
    Listen,
    Outgoing,
    StreamAnswer,
    Unlisten,
    Waiter,
)
from .hub_delivery import deliver
from .hub_events import HubEvent, Published
from .hub_output import HubOutput
from .hub_recovery import Position, _fit, encode_history_reply, frame_bound
from .hub_stream import holds_all_after, page_of
from .registry import _Entry
from .topics import Topic

if TYPE_CHECKING:
    from .hub_topics import Topics

__all__ = ["Brokered"]


class Brokered:
    """The broker-side half of ``Topics``: commands out, answers and arrivals in."""

    __slots__ = ("_next_ref", "_out", "_publishes", "_reads", "_topics", "_wake", "commands")

    def __init__(self, out: HubOutput, topics: Topics, wake: Callable[[], None]) -> None:
        self._out = out
        self._topics = topics
        self._wake = wake
        self._next_ref = 0
        self.commands: list[BrokerCommand] = []
        # client publishes and history requests waiting for the broker, by ref
        self._publishes: dict[int, tuple[str, RequestId | None, str, object]] = {}
        self._reads: dict[int, tuple[str, RequestId, Position | None, int]] = {}

    # -- commands --------------------------------------------------------------------

    def queue(self, command: BrokerCommand) -> None:
        self.commands.append(command)
        self._wake()

    def take(self) -> list[BrokerCommand]:
        commands = self.commands
        self.commands = []
        return commands

    def _ref(self) -> int:
        self._next_ref += 1
        return self._next_ref

    def outgoing(self, name: str, payload: object, message_type: str, droppable: bool) -> Outgoing:
        """Encode a publication once, for the broker to number (raises on a non-JSON payload)."""
        out = self._out
        head, tail = encode_topic_parts(
            message_type,
            name,
            payload,
            timestamp=int(out.wall_clock() * 1000),
            codec=out.codec,
        )
        size, ttl = self._history_bounds(name)
        return Outgoing(
            ref=self._ref(),
            topic=name,
            head=head,
            tail=tail,
            droppable=droppable,
            history_size=size,
            history_ttl=ttl,
        )

    def _fetch(self, state: Topic, since: Position | None, limit: int) -> int:
        """Queue a fetch of ``state``'s stream (after ``since``), listening first; its ref."""
        if not state.listening:
            state.listening = True
            self.queue(Listen(topic=state.name))
        ref = self._ref()
        self.queue(
            Fetch(
                ref=ref,
                topic=state.name,
                after=None if since is None else since[0],
                epoch=None if since is None else since[1],
                limit=limit,
                presence=state.policy.presence,
                max_age=self._topics.bounds(state).ttl,
            )
        )
        return ref

    # -- subscribers -----------------------------------------------------------------

    def subscribe(
        self,
        entry: _Entry,
        state: Topic,
        since: Position | None,
        request: Request | None,
        *,
        joined: bool,
    ) -> None:
        """Make ``entry`` a subscriber of ``state``: live at once when the node is
        in step and nothing more is needed, else waiting for a fetch."""
        conn_id = entry.info.conn_id
        presence = state.policy.presence
        if since is None and not presence and state.synced:
            state.waiting.pop(conn_id, None)
            state.subscribers[conn_id] = None
            if request is not None and request.id is not None:
                result = {"topic": state.name, "seq": state.seq, "epoch": state.epoch}
                out = self._out
                out.send(entry, out.prepare("reply", result, id=request.id, ok=True))
            return
        state.subscribers.pop(conn_id, None)
        state.waiting[conn_id] = Waiter(
            ref=self._fetch(state, since, self._limit(state, since)),
            since=since,
            reply=request is not None,
            request_id=None if request is None else request.id,
            announce=joined and presence,
        )

    def left(self, state: Topic, conn_id: str) -> None:
        """``conn_id`` is no longer a subscriber: stop listening when it was the last."""
        state.subscribers.pop(conn_id, None)
        state.waiting.pop(conn_id, None)
        if state.listening and not state.subscribers and not state.waiting:
            state.listening = False
            state.synced = False
            self.queue(Unlisten(topic=state.name))

    def resync(self) -> None:
        """The broker's link was lost and is back: publications may have been
        missed. Listen again and put every subscriber back in step."""
        for state in list(self._topics.topics.values()):
            if not state.listening:
                continue
            self.queue(Listen(topic=state.name))
            position = (state.seq, state.epoch) if state.synced else None
            state.synced = False
            for conn_id, waiter in list(state.waiting.items()):
                if waiter.answered:
                    self._rewait(state, conn_id, (waiter.seq, waiter.epoch), [])
                else:  # its fetch may be lost with the link: ask again
                    waiter.ref = self._fetch(state, waiter.since, self._limit(state, waiter.since))
            for conn_id in list(state.subscribers):
                assert position is not None  # live subscribers only exist in step
                self._rewait(state, conn_id, position, [])

    def _rewait(self, state: Topic, conn_id: str, since: Position, held: list[Arrival]) -> None:
        """A subscriber out of step at ``since``: wait for the stream's entries after it."""
        state.subscribers.pop(conn_id, None)
        state.waiting[conn_id] = Waiter(
            ref=self._fetch(state, since, self._limit(state, since)),
            since=since,
            reply=False,
            held=held,
        )

    def _limit(self, state: Topic, since: Position | None) -> int:
        """How many entries a fetch for a subscriber asks: none for a plain
        subscribe, else all the topic keeps (at least one: a stream whose
        history is configured elsewhere may hold some)."""
        return 0 if since is None else max(self._topics.bounds(state).size, 1)

    # -- publications ----------------------------------------------------------------

    def arrival(self, name: str, seq: int, epoch: str, data: bytes, droppable: bool) -> int:
        """A numbered publication arrived from the broker: deliver it here."""
        state = self._topics.topics.get(name)
        if state is None or not state.listening:
            return 0  # a late one for a topic this node no longer listens to
        item: Arrival = (seq, epoch, data, droppable)
        message = PreparedMessage(data, text=True)
        delivered = 0
        if not state.synced:
            state.synced = True  # no live subscriber: nothing can be out of step
            state.seq, state.epoch = seq, epoch
        elif epoch == state.epoch and seq <= state.seq:
            return 0  # already delivered (the broker said it twice)
        elif epoch == state.epoch and seq == state.seq + 1:
            state.seq = seq
            delivered = deliver(self._out, state, message, droppable)
        else:  # past a gap, or a new stream: the live subscribers catch up from the stream
            position = (state.seq, state.epoch)
            for conn_id in list(state.subscribers):
                self._rewait(state, conn_id, position, [])  # this arrival is held just below
            state.seq, state.epoch = seq, epoch
        for conn_id, waiter in list(state.waiting.items()):
            if not waiter.answered:
                waiter.held.append(item)
            else:
                delivered += self._feed(state, conn_id, waiter, item, message)
        return delivered

    def _feed(
        self,
        state: Topic,
        conn_id: str,
        waiter: Waiter,
        item: Arrival,
        message: PreparedMessage,
        *,
        promote: bool = True,
    ) -> int:
        """Give an answered waiter an arrival it lacks; live once in step with the
        node (with ``promote``: ``_settle`` promotes after all it held)."""
        seq, epoch = item[0], item[1]
        if epoch != waiter.epoch:
            # Another stream than the answer's: older (published before the
            # read) or newer; a fetch read from now on tells which, and holds
            # this one if it is the newer: it need not be held.
            self._rewait(state, conn_id, (waiter.seq, waiter.epoch), [])
            return 0
        if seq > waiter.seq + 1:
            self._rewait(state, conn_id, (waiter.seq, waiter.epoch), [item])
            return 0
        sent = 0
        if seq == waiter.seq + 1:
            waiter.seq = seq
            sent = int(self._out.send(self._out.registry.entries[conn_id], message))
        if promote:
            _promote(state, conn_id, waiter)
        return sent

    def answered(self, answer: StreamAnswer) -> None:
        """The broker read a stream for a fetch: settle what waited for it."""
        read = self._reads.pop(answer.ref, None)
        if read is not None:
            self._history_reply(read, answer)
            return
        state = self._topics.topics.get(answer.topic)
        if state is None:
            return
        if not state.synced and state.listening:
            # read after listening began: every later publication will arrive
            state.synced = True
            state.seq, state.epoch = answer.seq, answer.epoch
        for conn_id, waiter in list(state.waiting.items()):
            if waiter.ref == answer.ref and not waiter.answered:
                self._settle(state, conn_id, waiter, answer)

    def _settle(self, state: Topic, conn_id: str, waiter: Waiter, answer: StreamAnswer) -> None:
        out = self._out
        entry = out.registry.entries[conn_id]
        seq, epoch = answer.seq, answer.epoch
        since = waiter.since
        replay: list[bytes] = []
        recovered = since is not None and holds_all_after(since, answer)
        if recovered:
            assert since is not None
            replay = [data for n, data in answer.entries if n > since[0]]
        if waiter.reply:
            result: dict[str, object] = {"topic": state.name, "seq": seq, "epoch": epoch}
            if since is not None:
                result["recovered"] = recovered
            if state.policy.presence:
                members = dict(answer.members)  # its own join may reach the broker after the read
                members.setdefault(conn_id, entry.info.principal.id)
                result["present"] = [{"conn_id": c, "principal": p} for c, p in members.items()]
            join = None
            if waiter.announce:
                join = self._topics._presence_message(state, entry, True)
            if replay and not self._fits(entry, result, waiter.request_id, join, replay):
                result["recovered"] = False
                replay = []
            if waiter.request_id is not None:
                out.send(entry, out.prepare("reply", result, id=waiter.request_id, ok=True))
            for data in replay:
                out.send(entry, PreparedMessage(data, text=True))
            if join is not None:
                out.send(entry, join)
        elif since is not None:
            if recovered:
                for data in replay:
                    out.send(entry, PreparedMessage(data, text=True))
            else:  # told: a new stream is given from its start when the broker still has it
                fresh = since[1] != epoch and holds_all_after((0, epoch), answer)
                notice = {"epoch": epoch, "seq": 0 if fresh else seq}
                out.send(entry, out.prepare("reset", notice, topic=state.name))
                if fresh:
                    replay = [data for _, data in answer.entries]
                    for data in replay:
                        out.send(entry, PreparedMessage(data, text=True))
        if replay:
            state.dropped.pop(conn_id, None)  # the replay fills what was dropped
        waiter.answered = True
        waiter.seq, waiter.epoch = seq, epoch
        held, waiter.held = waiter.held, []
        for i, item in enumerate(held):
            current = state.waiting[conn_id]
            if current is not waiter:  # waiting again: the rest goes with it
                current.held.extend(held[i:])
                return
            message = PreparedMessage(item[2], text=True)
            self._feed(state, conn_id, waiter, item, message, promote=False)
        if state.waiting[conn_id] is waiter:
            _promote(state, conn_id, waiter)

    def _fits(
        self,
        entry: _Entry,
        result: dict[str, object],
        request_id: RequestId | None,
        join: PreparedMessage | None,
        replay: list[bytes],
    ) -> bool:
        """Do the reply, the replay and the presence join fit the connection's outbox?"""
        out = self._out
        connection = entry.connection
        room = connection.limits.max_outbox_size - connection.outbox_size
        if request_id is not None:
            reply = out.prepare("reply", result, id=request_id, ok=True)
            room -= frame_bound(len(reply.payload))
        if join is not None:
            room -= frame_bound(len(join.payload))
        for data in replay:
            room -= frame_bound(len(data))
        return room >= 0

    def presence_arrived(self, name: str, data: bytes) -> int:
        """A ``presence`` envelope from another node: to this node's subscribers."""
        state = self._topics.topics.get(name)
        if state is None:
            return 0
        message = PreparedMessage(data, text=True)
        answered = [conn_id for conn_id, waiter in state.waiting.items() if waiter.answered]
        return self._out.send_each([*state.subscribers, *answered], message)

    # -- client publishes and history reads ------------------------------------------

    def on_publish(self, entry: _Entry, request: Request, name: str, droppable: bool) -> None:
        outgoing = self.outgoing(name, request.payload, "message", droppable)
        self._publishes[outgoing.ref] = (entry.info.conn_id, request.id, name, request.payload)
        self.queue(outgoing)

    def published(self, ref: int, seq: int, epoch: str) -> list[HubEvent]:
        """The broker numbered publish ``ref``: answer the client that sent it."""
        pending = self._publishes.pop(ref, None)
        if pending is None:
            return []
        conn_id, request_id, name, payload = pending
        out = self._out
        entry = out.registry.entries.get(conn_id)
        if entry is not None and request_id is not None:
            result = {"topic": name, "seq": seq, "epoch": epoch}
            out.send(entry, out.prepare("reply", result, id=request_id, ok=True))
        return [Published(conn_id=conn_id, topic=name, seq=seq, payload=payload, delivered=0)]

    def publish_failed(self, ref: int, message: str) -> None:
        """Publish ``ref`` did not reach the broker: the client gets ``unavailable``
        (not counted against it: the fault is not the client's)."""
        pending = self._publishes.pop(ref, None)
        if pending is None:
            return
        conn_id, request_id = pending[0], pending[1]
        out = self._out
        entry = out.registry.entries.get(conn_id)
        if entry is None:
            return
        code = ErrorCode.UNAVAILABLE.value
        out.counters.error(code)
        if request_id is None:
            envelope = out.prepare("error", None, error=(code, message))
        else:
            envelope = out.prepare("reply", None, id=request_id, ok=False, error=(code, message))
        out.send(entry, envelope)

    def history_fetch(self, name: str, since: Position | None, limit: int | None) -> Fetch:
        """A fetch for a server-side history read (not queued: the driver runs it
        and makes the page with ``page_of``); ``limit`` None: all the topic keeps."""
        size, ttl = self._history_bounds(name)
        return Fetch(
            ref=self._ref(),
            topic=name,
            after=None if since is None else since[0],
            epoch=None if since is None else since[1],
            limit=max(size, 1) if limit is None else limit,
            presence=False,
            max_age=ttl,
        )

    def _history_bounds(self, name: str) -> tuple[int, float]:
        """The topic's history size and age (its own, else the hub's defaults)."""
        state = self._topics.topics.get(name)
        if state is None:
            cfg = self._out.config
            return cfg.history_size, cfg.history_ttl
        bounds = self._topics.bounds(state)
        return bounds.size, bounds.ttl

    def on_history(
        self, entry: _Entry, name: str, request_id: RequestId, since: Position | None, limit: int
    ) -> None:
        """A client's ``history`` request: read the broker's stream, answer then."""
        ref = self._ref()
        self._reads[ref] = (entry.info.conn_id, request_id, since, limit)
        self.queue(
            Fetch(
                ref=ref,
                topic=name,
                after=None if since is None else since[0],
                epoch=None if since is None else since[1],
                limit=limit,
                presence=False,
                max_age=self._history_bounds(name)[1],
            )
        )

    def _history_reply(
        self, read: tuple[str, RequestId, Position | None, int], answer: StreamAnswer
    ) -> None:
        conn_id, request_id, since, limit = read
        out = self._out
        entry = out.registry.entries.get(conn_id)
        if entry is None:
            return
        whole = page_of(answer, since)
        timestamp = int(out.wall_clock() * 1000)
        head = encode_history_reply(replace(whole, envelopes=()), request_id, timestamp, out.codec)
        connection = entry.connection
        room = connection.limits.max_outbox_size - connection.outbox_size - frame_bound(len(head))
        envelopes = list(whole.envelopes[:limit])
        kept = _fit(envelopes, room, not connection.outbox_size, newest=since is None)
        start = whole.start
        if since is None:
            start += len(envelopes) - len(kept)
        page = replace(whole, start=start, envelopes=tuple(kept))
        reply = encode_history_reply(page, request_id, timestamp, out.codec)
        out.send(entry, PreparedMessage(reply, text=True))


def _promote(state: Topic, conn_id: str, waiter: Waiter) -> None:
    """An answered waiter exactly at the node's position is live (one ahead of it
    waits for the node to catch up: what arrives until then, it has)."""
    if state.synced and waiter.epoch == state.epoch and waiter.seq == state.seq:
        del state.waiting[conn_id]
        state.subscribers[conn_id] = None
