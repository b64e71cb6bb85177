"""Model-based test of two hub nodes on one broker (``tests/broker_fake.py``), deterministic.

Hypothesis drives clients spread over two nodes that subscribe (plainly or
with ``since`` = the position they really have), unsubscribe, leave and come
back, publish (clients and the server, on either node), while the broker's
publications and fetch answers reach each node whenever the test says, links
lose what is in flight (``lose`` + ``resync``), and the broker loses every
stream (``restart``: new epochs). The reference is the broker's own record of
every publication, ``(topic, epoch, seq) -> payload``.

After every step, for each client and topic, what it received must be a
stream it can trust: each ``message`` is the one the broker numbered (same
payload), in ``seq`` order, without duplicate, and right after the position
the client had (its subscribe reply, its last message, or a ``reset``); a
position only ever jumps through a ``reset`` or a reply with ``recovered:
false``. When everything is delivered and answered, every subscriber is at
the broker's position of the topic: nothing was lost without being told.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from broker_fake import FakeBroker, FakeNode
from hub_helpers import Peer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from wshub.core.hub_config import HubConfig
from wshub.core.topics import TopicPolicy

TOPICS = ("t0", "t1")
HISTORY = 4


@dataclass
class Track:
    """A client's view of one topic: its position and whether it is subscribed."""

    subscribed: bool = False
    seq: int | None = None
    epoch: str | None = None


@dataclass
class Client:
    node: int
    peer: Peer
    tracks: dict[str, Track] = field(default_factory=lambda: {t: Track() for t in TOPICS})


class TwoNodes(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.broker = FakeBroker()
        config = HubConfig(history_size=HISTORY)
        policy = TopicPolicy(publish="all")
        self.nodes = [self.broker.node(f"n{i}", config, default_topic=policy) for i in (0, 1)]
        self.clients: list[Client] = []
        self.payload = 0
        self.record: dict[tuple[str, str, int], int] = {}
        self.broker_publish = self.broker.publish
        self.broker.publish = self._recorded  # type: ignore[method-assign]

    def _recorded(self, origin: FakeNode, outgoing: Any) -> tuple[int, str]:
        seq, epoch = self.broker_publish(origin, outgoing)
        payload = json.loads(outgoing.envelope(seq))["payload"]
        self.record[(outgoing.topic, epoch, seq)] = payload
        return seq, epoch

    # -- rules -----------------------------------------------------------------------

    @precondition(lambda self: len(self.clients) < 4)
    @rule(node=st.integers(0, 1))
    def connect(self, node: int) -> None:
        peer = self.nodes[node].connect(f"p{len(self.clients)}")
        self.clients.append(Client(node, peer))

    @precondition(lambda self: self.clients)
    @rule(pick=st.integers(0, 99), topic=st.sampled_from(TOPICS), since=st.booleans())
    def subscribe(self, pick: int, topic: str, since: bool) -> None:
        self._subscribe(self.clients[pick % len(self.clients)], topic, since)

    def _subscribe(self, client: Client, topic: str, since: bool) -> None:
        self._read(client)
        track = client.tracks[topic]
        message: dict[str, Any] = {"message_type": "subscribe", "topic": topic, "id": topic}
        if since and track.seq is not None:
            message["payload"] = {"since": {"seq": track.seq, "epoch": track.epoch}}
        node = self.nodes[client.node]
        node.send(client.peer, message)
        node.pump()
        track.subscribed = True

    @precondition(lambda self: self.clients)
    @rule(pick=st.integers(0, 99), topic=st.sampled_from(TOPICS))
    def unsubscribe(self, pick: int, topic: str) -> None:
        client = self.clients[pick % len(self.clients)]
        node = self.nodes[client.node]
        node.send(client.peer, {"message_type": "unsubscribe", "topic": topic})
        node.pump()
        self._read(client)
        client.tracks[topic].subscribed = False

    @precondition(lambda self: self.clients)
    @rule(pick=st.integers(0, 99))
    def leave_and_come_back(self, pick: int) -> None:
        """The client's connection ends; it connects again (maybe to the other node)
        and resubscribes with ``since`` where it was subscribed."""
        client = self.clients[pick % len(self.clients)]
        self._read(client)
        node = self.nodes[client.node]
        node.hub.remove(client.peer.conn_id)
        node.pump()
        client.node = 1 - client.node
        node = self.nodes[client.node]
        client.peer = node.connect(client.peer.principal)
        for topic, track in client.tracks.items():
            if track.subscribed:
                self._subscribe(client, topic, True)

    @rule(node=st.integers(0, 1), topic=st.sampled_from(TOPICS))
    def server_publish(self, node: int, topic: str) -> None:
        self.payload += 1
        self.nodes[node].hub.publish(topic, self.payload)
        self.nodes[node].pump()

    @precondition(lambda self: self.clients)
    @rule(pick=st.integers(0, 99), topic=st.sampled_from(TOPICS))
    def client_publish(self, pick: int, topic: str) -> None:
        client = self.clients[pick % len(self.clients)]
        self.payload += 1
        node = self.nodes[client.node]
        node.send(client.peer, {"message_type": "publish", "topic": topic, "payload": self.payload})
        node.pump()

    @rule(node=st.integers(0, 1), count=st.integers(1, 3))
    def deliver(self, node: int, count: int) -> None:
        self.nodes[node].deliver(count)

    @rule(node=st.integers(0, 1))
    def answer(self, node: int) -> None:
        self.nodes[node].answer_all()

    @rule(hold=st.booleans())
    def hold_answers(self, hold: bool) -> None:
        self.broker.answer_fetches = not hold

    @rule(node=st.integers(0, 1))
    def link_lost(self, node: int) -> None:
        target = self.nodes[node]
        target.lose()
        target.unanswered = []  # answers in flight are lost too
        target.listening.clear()
        target.hub.resync()
        target.pump()

    @rule()
    def broker_restart(self) -> None:
        self.broker.restart()

    # -- checks ----------------------------------------------------------------------

    def _read(self, client: Client) -> None:
        for message in client.peer.receive():
            kind = message["message_type"]
            topic = message.get("topic")
            if kind == "reply" and message.get("id") in TOPICS:
                track = client.tracks[message["id"]]
                payload = message["payload"]
                if payload.get("recovered") is True:  # the replay follows from its position
                    assert payload["epoch"] == track.epoch, (payload, track)
                else:  # a plain subscribe, or not recovered: the stream goes on from here
                    track.seq, track.epoch = payload["seq"], payload["epoch"]
            elif kind == "reset":
                track = client.tracks[topic]
                track.seq, track.epoch = message["payload"]["seq"], message["payload"]["epoch"]
            elif kind == "message":
                track = client.tracks[topic]
                assert track.epoch is not None, message
                assert message["seq"] == track.seq + 1, (message, track)  # type: ignore[operator]
                assert self.record[(topic, track.epoch, message["seq"])] == message["payload"]
                track.seq = message["seq"]

    @invariant()
    def every_stream_is_trustworthy(self) -> None:
        for client in self.clients:
            self._read(client)

    def teardown(self) -> None:
        """Quiescence: everything delivered and answered; every subscriber is at
        the broker's position."""
        self.broker.answer_fetches = True
        for _ in range(4):
            for node in self.nodes:
                node.answer_all()
                node.deliver()
        for client in self.clients:
            self._read(client)
            for topic, track in client.tracks.items():
                if not track.subscribed:
                    continue
                stream = self.broker.streams.get(topic)
                if stream is None:  # lost by a restart, not used since
                    continue
                if track.epoch == stream.epoch:
                    assert track.seq == stream.seq, (client.peer.conn_id, topic, track, stream)
                else:  # a new stream nobody published to yet: told with its first message
                    assert stream.seq == 0, (client.peer.conn_id, topic, track, stream)


TestTwoNodes = TwoNodes.TestCase
TestTwoNodes.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
