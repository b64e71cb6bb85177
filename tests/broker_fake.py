"""A broker in memory for the core's tests: several hubs (nodes), one set of streams.

``FakeBroker`` does what the Redis broker does, synchronously and in a
deterministic order: it numbers each ``Outgoing`` in its topic's stream
(``seq`` + 1, the epoch kept; a stream starts with a new epoch), keeps the
last ``history_size`` envelopes, and puts the publication in the inbox of
every node listening to the topic. It answers each ``Fetch`` from the
stream (it keeps no time: ``Fetch.max_age`` is not applied here; the Redis
tests check it). Inboxes are delivered only when a test says so (``FakeNode.deliver``),
so tests choose how publications and answers interleave; ``lose`` drops a
node's undelivered publications (a link that went down), ``restart`` loses
every stream (Redis restarted without its data).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hub_helpers import HubHarness

from wshub.core.hub_broker import (
    Fetch,
    Listen,
    Outgoing,
    PresenceOut,
    StreamAnswer,
    Unlisten,
)
from wshub.core.hub_config import HubConfig


@dataclass
class FakeStream:
    epoch: str
    seq: int = 0
    entries: list[tuple[int, bytes]] = field(default_factory=list)


#: In a node's inbox: ("pub", topic, seq, epoch, envelope, droppable)
#: or ("presence", topic, envelope)
Item = tuple[object, ...]


class FakeBroker:
    def __init__(self) -> None:
        self.streams: dict[str, FakeStream] = {}
        self.nodes: list[FakeNode] = []
        self.presence: dict[str, dict[str, str]] = {}
        self._epochs = 0
        self.answer_fetches = True  # False: fetches wait in ``unanswered``

    def stream(self, topic: str) -> FakeStream:
        stream = self.streams.get(topic)
        if stream is None:
            self._epochs += 1
            stream = self.streams[topic] = FakeStream(epoch=f"e{self._epochs}")
        return stream

    def restart(self) -> None:
        """Every stream is lost: the next use of a topic starts a new epoch."""
        self.streams.clear()

    def node(self, name: str, config: HubConfig | None = None, **kwargs: object) -> FakeNode:
        node = FakeNode(self, name, config, **kwargs)
        self.nodes.append(node)
        return node

    def publish(self, origin: FakeNode, outgoing: Outgoing) -> tuple[int, str]:
        stream = self.stream(outgoing.topic)
        stream.seq += 1
        envelope = outgoing.envelope(stream.seq)
        if outgoing.history_size > 0:
            stream.entries.append((stream.seq, envelope))
            del stream.entries[: -outgoing.history_size]
        for node in self.nodes:
            if outgoing.topic in node.listening:
                item = (
                    "pub",
                    outgoing.topic,
                    stream.seq,
                    stream.epoch,
                    envelope,
                    outgoing.droppable,
                )
                node.inbox.append(item)
        return stream.seq, stream.epoch

    def answer(self, fetch: Fetch) -> StreamAnswer:
        stream = self.stream(fetch.topic)
        entries: list[tuple[int, bytes]] = []
        if fetch.limit:
            if fetch.after is None:
                entries = stream.entries[-fetch.limit :]
            else:  # after ``after`` in the same stream, else from the stream's start
                after = fetch.after if fetch.epoch == stream.epoch else 0
                entries = [e for e in stream.entries if e[0] > after][: fetch.limit]
        members: tuple[tuple[str, str], ...] = ()
        if fetch.presence:
            members = tuple(self.presence.get(fetch.topic, {}).items())
        return StreamAnswer(
            ref=fetch.ref,
            topic=fetch.topic,
            seq=stream.seq,
            epoch=stream.epoch,
            entries=tuple(entries),
            members=members,
        )


class FakeNode(HubHarness):
    """A hub wired to the fake broker (``pump`` runs its broker commands)."""

    def __init__(
        self, broker: FakeBroker, name: str, config: HubConfig | None, **kwargs: object
    ) -> None:
        self.wakes = 0
        super().__init__(config, broker=self._wake, **kwargs)
        self.broker = broker
        self.name = name
        self.listening: set[str] = set()
        self.inbox: deque[Item] = deque()
        self.unanswered: list[Fetch] = []
        self.failing = False  # True: publishes fail (the broker is unreachable)
        self._next = 1000 * len(broker.nodes)  # connection ids unique across nodes

    def _wake(self) -> None:
        self.wakes += 1

    def pump(self) -> None:
        """Carry out every queued broker command, in order."""
        broker = self.broker
        while commands := self.hub.broker_commands():
            for command in commands:
                if isinstance(command, Outgoing):
                    if self.failing:
                        self.hub.publish_failed(command.ref, "broker unavailable")
                    else:
                        seq, epoch = broker.publish(self, command)
                        self.hub.published(command.ref, seq, epoch)
                elif isinstance(command, Listen):
                    self.listening.add(command.topic)
                elif isinstance(command, Unlisten):
                    self.listening.discard(command.topic)
                elif isinstance(command, Fetch):
                    if broker.answer_fetches:
                        self.hub.answered(broker.answer(command))
                    else:
                        self.unanswered.append(command)
                else:
                    assert isinstance(command, PresenceOut)
                    members = broker.presence.setdefault(command.topic, {})
                    if command.joined:
                        members[command.conn_id] = command.principal_id
                    else:
                        members.pop(command.conn_id, None)
                    for node in broker.nodes:
                        if node is not self and command.topic in node.listening:
                            node.inbox.append(("presence", command.topic, command.envelope))

    def answer_all(self) -> None:
        """Answer the fetches held back (with ``answer_fetches`` False), oldest first."""
        fetches, self.unanswered = self.unanswered, []
        for fetch in fetches:
            self.hub.answered(self.broker.answer(fetch))
        self.pump()

    def deliver(self, count: int | None = None) -> int:
        """Hand ``count`` (default: all) inbox items to the hub; deliveries made."""
        delivered = 0
        while self.inbox and (count is None or count > 0):
            item = self.inbox.popleft()
            if item[0] == "pub":
                _, topic, seq, epoch, envelope, droppable = item
                delivered += self.hub.publication(
                    topic,  # type: ignore[arg-type]
                    seq,  # type: ignore[arg-type]
                    epoch,  # type: ignore[arg-type]
                    envelope,  # type: ignore[arg-type]
                    droppable=droppable,  # type: ignore[arg-type]
                )
            else:
                _, topic, envelope = item
                delivered += self.hub.presence_arrived(topic, envelope)  # type: ignore[arg-type]
            if count is not None:
                count -= 1
            self.pump()
        return delivered

    def lose(self) -> None:
        """The link went down: what was in flight to this node is gone."""
        self.inbox.clear()
