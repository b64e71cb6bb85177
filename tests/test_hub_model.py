"""Model-based test of the hub against a small reference model.

Hypothesis drives random sequences of connect, subscribe, unsubscribe,
publish (server and client side), broadcast, send_to, send_to_principal,
commands with replies and timeouts, slow readers, and closes. Every client is
a real ``ClientConnection`` fed with what its ``ServerConnection`` queued, so
the check is on what clients really received. After every step:

* each client's envelopes are exactly the model's expected stream for it
  (a prefix for readers that are not draining, or were failed with 1013),
  with droppable messages of the "drop" topic skipped only when a later
  ``dropped`` notice announces exactly how many;
* only slow readers are ever failed with 1013, no outbox exceeds its cap;
* the hub's subscribers, sequences and pending commands equal the model's.

``HistoryMachine`` runs the same rules on a hub that keeps history (the last
``HISTORY`` messages of every topic for ``TTL`` seconds) and adds recovery:
clients that left come back and resubscribe with ``since`` (the position of
the last message they really received), and connected clients resubscribe
with any position. Each gets exactly the messages published after its
position, in order, when the history covers them, else ``recovered: false``
and nothing; never a silent gap. Epochs are checked by identity: the same
stream always shows the same epoch, a new stream (``t2`` forgotten and made
again) a new one.

At the end everyone leaves and the hub must hold nothing.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from hub_helpers import WALL_EPOCH, HubHarness, Peer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from wshub.core import Closed, Limits, State
from wshub.core.hub_config import HubConfig
from wshub.core.hub_recovery import frame_bound
from wshub.core.topics import TopicPolicy

CAP = 500
TS = int(WALL_EPOCH * 1000)
TOPICS = ("t0", "t1", "t2")  # presence + disconnect; drop; unconfigured
PRINCIPALS = ("p0", "p1", "p2")
MAX_CONNS = 5
TIMEOUT = 5.0

payloads = st.one_of(
    st.integers(-1000, 1000),
    st.text(max_size=12),
    st.sampled_from(["x" * 60, "y" * 120]),
    st.lists(st.integers(0, 9), max_size=4),
)
picks = st.integers(0, 1000)


@dataclass
class Expected:
    envelope: dict[str, Any] | None  # None: left the drop topic t1 (owed drops are forgotten)
    droppable: bool = False


@dataclass
class ModelConn:
    peer: Peer
    fast: bool = True
    truncated: bool = False  # failed by the core with 1013: later expectations are void
    leaving: bool = False  # closing on purpose (client close or hub.disconnect)
    expected: list[Expected] = field(default_factory=list)


class EpochRef:
    """The epoch of one stream (a topic, a generation), whatever its string:
    equal to the first string it is compared with, then only to that one;
    two streams never share a string."""

    def __init__(self, stream: tuple[str, int], bound: dict[str, tuple[str, int]]) -> None:
        self.stream = stream
        self.value: str | None = None
        self._bound = bound

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EpochRef):
            return self.stream == other.stream
        if not isinstance(other, str) or not other:
            return False
        if self.value is None:
            if self._bound.setdefault(other, self.stream) != self.stream:
                return False  # that string names another stream
            self.value = other
        return self.value == other

    def __hash__(self) -> int:
        return hash(self.stream)

    def __repr__(self) -> str:
        return f"EpochRef({self.stream}, {self.value!r})"


@dataclass
class Kept:
    """One published message as the model keeps it for recovery."""

    seq: int
    envelope: dict[str, Any]
    at: float


def encode(envelope: dict[str, Any]) -> bytes:
    """An envelope as the hub encodes it (compact JSON, raw UTF-8)."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def env(message_type: str, payload: Any = None, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"message_type": message_type, **fields, "payload": payload}
    out["timestamp"] = TS
    return out


def error_env(code: str, request_id: Any = None) -> dict[str, Any]:
    if request_id is None:
        return env("error", error={"code": code})
    return env("reply", id=request_id, ok=False, error={"code": code})


def normalize(got: dict[str, Any]) -> dict[str, Any]:
    if "error" in got:
        got = {**got, "error": {"code": got["error"]["code"]}}
    return got


def check_stream(
    received: list[dict[str, Any]], expected: list[Expected], *, complete: bool
) -> None:
    i, owed = 0, 0
    got = [normalize(r) for r in received]
    for item in expected:
        e = item.envelope
        if e is None:
            owed = 0
            continue
        if e.get("topic") == "t1" and e["message_type"] == "message":
            notice = i < len(got) and got[i]["message_type"] == "dropped"
            if notice and i + 1 < len(got) and got[i + 1] == e:
                # The notice goes just before the next message that fits.
                assert got[i] == env("dropped", {"count": owed}, topic="t1"), (got[i], owed)
                assert owed > 0
                owed = 0
                i += 2
                continue
            if not notice and i < len(got) and got[i] == e:
                assert owed == 0, "message delivered while drops were not announced"
                i += 1
                continue
            if item.droppable:
                owed += 1
                continue
        if i == len(got):
            assert not complete, f"missing {e}"
            break
        assert got[i] == e, (i, got[i], e)
        i += 1
    assert i == len(got), f"unexpected {got[i:]}"


class HubMachine(RuleBasedStateMachine):
    HISTORY = 0  # messages kept per topic
    TTL = 10.0  # seconds each is kept

    def __init__(self) -> None:
        super().__init__()
        config = HubConfig(
            max_errors=10_000,
            max_pending_commands=3,
            default_command_timeout=TIMEOUT,
            history_size=self.HISTORY,
            history_ttl=self.TTL,
        )
        self.h = HubHarness(
            config,
            limits=Limits(max_outbox_size=CAP),
            default_topic=TopicPolicy(publish="subscribers"),
            random=random.Random(0).randbytes,
        )
        self.hub = self.h.hub
        self.hub.configure_topic("t0", publish="all", presence=True)
        self.hub.configure_topic("t1", publish="all", slow_consumer="drop")
        self.hub.register_command("cmd")
        self.conns: dict[str, ModelConn] = {}
        self.subs: dict[str, list[str]] = {t: [] for t in TOPICS}
        self.seq = dict.fromkeys(TOPICS, 0)
        self.pending: dict[str, dict[int, tuple[float, int]]] = {}
        self.issued: list[tuple[str, int]] = []
        self.counter = 0
        self.last_failed: set[str] = set()
        self.generation = dict.fromkeys(TOPICS, 0)
        self.bound: dict[str, tuple[str, int]] = {}
        self.epochs: dict[tuple[str, int], EpochRef] = {}
        self.kept: dict[str, list[Kept]] = {t: [] for t in TOPICS}
        self.departed: list[tuple[str, dict[str, tuple[int, str]]]] = []
        self.t2_alive = False

    # -- model helpers ---------------------------------------------------------

    def pick(self, n: int) -> ModelConn:
        return list(self.conns.values())[n % len(self.conns)]

    def live(self, conn_id: str) -> bool:
        mc = self.conns.get(conn_id)
        return mc is not None and not mc.truncated and mc.peer.server.state is State.OPEN

    def expect(self, conn_id: str, envelope: dict[str, Any], droppable: bool = False) -> None:
        if self.live(conn_id):
            self.conns[conn_id].expected.append(Expected(envelope, droppable))

    def member(self, conn_id: str) -> dict[str, str]:
        return {"conn_id": conn_id, "principal": self.conns[conn_id].peer.principal.id}

    def presence(self, conn_id: str, event: str) -> None:
        body = {"event": event, **self.member(conn_id)}
        for other in self.subs["t0"]:
            self.expect(other, env("presence", body, topic="t0"))

    def epoch(self, topic: str) -> EpochRef:
        stream = (topic, self.generation[topic])
        ref = self.epochs.get(stream)
        if ref is None:
            ref = self.epochs[stream] = EpochRef(stream, self.bound)
        return ref

    def t2_exists(self) -> bool:
        return bool(self.subs["t2"] or self.kept["t2"])

    def forget_t2(self) -> None:
        """The unconfigured topic is forgotten when nothing holds it: a new stream."""
        if self.t2_alive and not self.t2_exists():
            self.t2_alive = False
            self.seq["t2"] = 0
            self.generation["t2"] += 1

    def model_publish(
        self, topic: str, payload: Any, message_type: str, droppable: bool
    ) -> list[str]:
        """Expectations of one publish; returns the connections it should reach."""
        if topic == "t2" and not self.t2_exists() and not self.HISTORY:
            return []
        self.seq[topic] += 1
        self.t2_alive |= topic == "t2"
        message = env(message_type, payload, topic=topic, seq=self.seq[topic])
        if self.HISTORY:
            kept = self.kept[topic]
            kept.append(Kept(self.seq[topic], message, self.h.clock.now))
            del kept[: -self.HISTORY]
        reach = [c for c in self.subs[topic] if self.live(c)]
        for conn_id in reach:
            self.expect(conn_id, message, droppable and topic == "t1")
        return reach

    def model_remove(self, conn_id: str) -> None:
        for topic in TOPICS:
            if conn_id in self.subs[topic]:
                self.subs[topic].remove(conn_id)
                if topic == "t0":
                    self.presence(conn_id, "leave")
        self.forget_t2()
        self.pending.pop(conn_id, None)
        self.remember(self.conns.pop(conn_id))

    def remember(self, mc: ModelConn) -> None:
        """Where a departing client stands in each topic it learnt the epoch of:
        its last subscribe reply, then the last message it really received."""
        positions: dict[str, tuple[int, str]] = {}
        for got in mc.peer.received:
            body = got["payload"]
            if got["message_type"] == "reply" and isinstance(body, dict) and "epoch" in body:
                positions[body["topic"]] = (body["seq"], body["epoch"])
            elif got["message_type"] == "message" and got["topic"] in positions:
                positions[got["topic"]] = (got["seq"], positions[got["topic"]][1])
        if positions:
            self.departed = [*self.departed[-4:], (mc.peer.principal.id, positions)]

    def perform(self, op: Any) -> tuple[Any, set[str], int]:
        """Run a hub operation: its result, who the core failed, how many drops."""
        open_before = [c for c in self.conns if self.live(c)]
        drops_before = self.hub.stats().drops
        result = op()
        failed = {c for c in open_before if self.conns[c].peer.server.state is State.CLOSED}
        return result, failed, self.hub.stats().drops - drops_before

    def run(self, op: Any, recipients: list[str] | None = None) -> Any:
        """Perform, check the delivered count against the model, then settle."""
        result, failed, dropped = self.perform(op)
        if recipients is not None:
            assert result == len(recipients) - len(failed & set(recipients)) - dropped
        self.last_failed = failed
        self.settle(failed)
        return result

    def settle(self, failed: set[str] | None = None) -> None:
        for conn_id in failed or ():
            mc = self.conns[conn_id]
            assert not mc.fast, "a reader that keeps up was failed"
            mc.truncated = True
        while True:
            for mc in self.conns.values():
                # Sends made while removing others (presence) may fail slow readers too.
                if mc.peer.server.state is State.CLOSED and not (mc.truncated or mc.leaving):
                    assert not mc.fast, "a reader that keeps up was failed"
                    mc.truncated = True
            for mc in self.conns.values():
                if mc.fast or mc.truncated:
                    mc.peer.receive()
            closed = [
                c
                for c, mc in self.conns.items()
                if any(isinstance(e, Closed) for e in mc.peer.server.events_received())
            ]
            if not closed:
                break
            for conn_id in closed:
                mc = self.conns[conn_id]
                assert mc.peer.closed is not None
                if mc.truncated:
                    assert mc.peer.closed.code == 1013
                self.hub.remove(conn_id)
                self.check(mc)
                self.model_remove(conn_id)
        for mc in self.conns.values():
            self.check(mc)
            assert mc.peer.server.outbox_size <= mc.peer.server.limits.max_outbox_size
        self.check_state()

    def check(self, mc: ModelConn) -> None:
        complete = mc.fast and not mc.truncated
        check_stream(mc.peer.received, mc.expected, complete=complete)

    def check_state(self) -> None:
        hub = self.hub
        assert [i.conn_id for i in hub.connections()] == list(self.conns)
        for topic in TOPICS:
            assert hub.subscribers(topic) == self.subs[topic]
            assert hub.topic_seq(topic) == self.seq[topic]
            if topic != "t2" or self.t2_exists():
                assert self.epoch(topic) == hub.topic_epoch(topic)
            else:
                assert hub.topic_epoch(topic) is None
        assert hub.stats().history_entries == sum(len(k) for k in self.kept.values())
        for conn_id in self.conns:
            assert hub.pending_commands(conn_id) == list(self.pending.get(conn_id, {}))
        assert hub.stats().connections == len(self.conns)

    # -- rules ---------------------------------------------------------------------

    @initialize(
        speeds=st.lists(st.booleans(), min_size=1, max_size=3),
        topics=st.lists(st.sampled_from(TOPICS), min_size=1, max_size=5),
    )
    def populate(self, speeds: list[bool], topics: list[str]) -> None:
        """Start from a few connections, some slow, with subscriptions."""
        for i, fast in enumerate(speeds):
            self.connect(PRINCIPALS[i % len(PRINCIPALS)], fast)
        for i, topic in enumerate(topics):
            self.subscribe(i, topic, False)

    @precondition(lambda self: len(self.conns) < MAX_CONNS)
    @rule(principal=st.sampled_from(PRINCIPALS), fast=st.booleans())
    def connect(self, principal: str, fast: bool) -> None:
        assert self.hub.admit(principal, "127.0.0.1").ok
        peer = self.h.connect(principal, welcome=False)
        mc = self.conns[peer.conn_id] = ModelConn(peer, fast=fast)
        mc.expected.append(
            Expected(env("welcome", {"conn_id": peer.conn_id, "principal": principal}))
        )
        self.settle()

    @precondition(lambda self: self.conns)
    @rule(n=picks, fast=st.booleans())
    def set_speed(self, n: int, fast: bool) -> None:
        self.pick(n).fast = fast
        self.settle()

    @precondition(lambda self: self.conns)
    @rule(n=picks, topic=st.sampled_from(TOPICS), with_id=st.booleans())
    def subscribe(self, n: int, topic: str, with_id: bool) -> None:
        self.subscribe_since(self.pick(n), topic, self.new_id() if with_id else None, None)

    def subscribe_since(
        self, mc: ModelConn, topic: str, rid: int | None, since: tuple[int, str] | None
    ) -> None:
        conn_id = mc.peer.conn_id
        joined = conn_id not in self.subs[topic]
        if joined:
            self.subs[topic].append(conn_id)
            self.t2_alive |= topic == "t2"
        body: dict[str, Any] = {"topic": topic, "seq": self.seq[topic], "epoch": self.epoch(topic)}
        replay: list[Kept] = []
        if since is not None:
            body["recovered"] = self.recoverable(topic, since)
        if topic == "t0":
            body["present"] = [self.member(c) for c in self.subs["t0"]]
        if since is not None and body["recovered"]:
            replay = [k for k in self.kept[topic] if k.seq > since[0]]
            if not self.replay_fits(mc, topic, rid, body, replay, joined=joined):
                body["recovered"], replay = False, []
            elif topic == "t1" and not joined:
                mc.expected.append(Expected(None))  # recovery settles what was dropped
        if rid is not None:
            self.expect(conn_id, env("reply", body, id=rid, ok=True))
        for kept in replay:
            self.expect(conn_id, kept.envelope)
        if joined and topic == "t0":
            self.presence(conn_id, "join")
        payload = None if since is None else {"since": {"seq": since[0], "epoch": since[1]}}
        frame = mc.peer.text_frame(self.request("subscribe", rid, topic=topic, payload=payload))
        self.run(lambda: self.hub.receive_text(conn_id, frame))

    def replay_fits(
        self,
        mc: ModelConn,
        topic: str,
        rid: int | None,
        body: dict[str, Any],
        replay: list[Kept],
        *,
        joined: bool,
    ) -> bool:
        """A replay goes only if it fits the outbox with the reply and the
        client's own presence join (each frame counted at its largest,
        ``frame_bound``); else ``recovered`` is false."""
        room = mc.peer.server.limits.max_outbox_size - mc.peer.server.outbox_size
        if rid is not None:
            real = {**body, "epoch": self.hub.topic_epoch(topic)}
            room -= frame_bound(len(encode(env("reply", real, id=rid, ok=True))))
        if joined and topic == "t0":
            join = env("presence", {"event": "join", **self.member(mc.peer.conn_id)}, topic="t0")
            room -= frame_bound(len(encode(join)))
        return room >= sum(frame_bound(len(encode(k.envelope))) for k in replay)

    def recoverable(self, topic: str, since: tuple[int, str]) -> bool:
        seq, epoch = since
        if self.bound.get(epoch) != (topic, self.generation[topic]) or seq > self.seq[topic]:
            return False
        kept = self.kept[topic]
        return seq == self.seq[topic] or (bool(kept) and kept[0].seq <= seq + 1)

    @precondition(lambda self: self.HISTORY and self.conns)
    @rule(
        n=picks,
        topic=st.sampled_from(TOPICS),
        back=st.integers(-1, 6),
        stale=st.booleans(),
    )
    def resubscribe_since(self, n: int, topic: str, back: int, stale: bool) -> None:
        """A connected client asks for what came after some position (the way
        to recover what a ``dropped`` notice announced): any seq, the current
        epoch or one of another stream."""
        seq = max(0, self.seq[topic] - back)
        if stale:
            current = (topic, self.generation[topic])
            epoch = next((e for e, s in self.bound.items() if s != current), "gone")
        else:
            # The current stream's epoch: the hub tells (the model only knows it by identity).
            epoch = self.hub.topic_epoch(topic) or "fresh"
        self.subscribe_since(self.pick(n), topic, self.new_id(), (seq, epoch))

    @precondition(lambda self: self.departed and len(self.conns) < MAX_CONNS)
    @rule(n=picks)
    def reconnect(self, n: int) -> None:
        """A client that left comes back and resubscribes to each topic with the
        position of the last message it really received: it gets exactly the
        messages it missed, or ``recovered: false``, never a silent gap."""
        principal, positions = self.departed.pop(n % len(self.departed))
        assert self.hub.admit(principal, "127.0.0.1").ok
        peer = self.h.connect(principal, welcome=False, limits=Limits(max_outbox_size=1 << 16))
        mc = self.conns[peer.conn_id] = ModelConn(peer, fast=True)
        mc.expected.append(
            Expected(env("welcome", {"conn_id": peer.conn_id, "principal": principal}))
        )
        for topic, since in positions.items():
            self.subscribe_since(mc, topic, self.new_id(), since)
        self.settle()

    @precondition(lambda self: self.conns)
    @rule(n=picks, topic=st.sampled_from(TOPICS), with_id=st.booleans())
    def unsubscribe(self, n: int, topic: str, with_id: bool) -> None:
        mc = self.pick(n)
        conn_id = mc.peer.conn_id
        rid = self.new_id() if with_id else None
        if rid is not None:
            self.expect(conn_id, env("reply", {"topic": topic}, id=rid, ok=True))
        if conn_id in self.subs[topic]:
            self.subs[topic].remove(conn_id)
            if topic == "t1":  # leaving the drop topic forgets what it owed; others don't
                mc.expected.append(Expected(None))
            if topic == "t0":
                self.presence(conn_id, "leave")
            if topic == "t2":
                self.forget_t2()
        frame = mc.peer.text_frame(self.request("unsubscribe", rid, topic=topic))
        self.run(lambda: self.hub.receive_text(conn_id, frame))

    @rule(topic=st.sampled_from(TOPICS), payload=payloads, droppable=st.booleans())
    def server_publish(self, topic: str, payload: Any, droppable: bool) -> None:
        reach = self.model_publish(topic, payload, "message", droppable)
        self.run(lambda: self.hub.publish(topic, payload, droppable=droppable), reach)
        if topic == "t1" and droppable:
            assert not self.last_failed, "a droppable message must be dropped, not fail a reader"

    @rule(count=st.integers(1, 6), payload=payloads, catch_up=st.booleans())
    def burst_droppable(self, count: int, payload: Any, catch_up: bool) -> None:
        """A stream of droppable messages on the drop topic: slow readers lose
        some; if they then catch up once, the next message brings the notice."""
        for _ in range(count):
            self.server_publish("t1", payload, True)
        if catch_up:
            for mc in self.conns.values():
                mc.peer.receive()
            self.server_publish("t1", payload, True)

    @precondition(lambda self: self.conns)
    @rule(n=picks)
    def drain(self, n: int) -> None:
        """A slow reader catches up once, and stays slow."""
        mc = self.pick(n)
        mc.peer.receive()
        check_stream(mc.peer.received, mc.expected, complete=not mc.truncated)
        self.settle()

    @precondition(lambda self: self.conns)
    @rule(n=picks, topic=st.sampled_from(TOPICS), payload=payloads)
    def client_publish(self, n: int, topic: str, payload: Any) -> None:
        mc = self.pick(n)
        conn_id = mc.peer.conn_id
        rid = self.new_id()
        allowed = topic != "t2" or conn_id in self.subs["t2"]
        reach: list[str] = []
        if allowed:
            reach = self.model_publish(topic, payload, "message", topic == "t1")
        else:
            self.expect(conn_id, error_env("forbidden", rid))
        frame = mc.peer.text_frame(self.request("publish", rid, topic=topic, payload=payload))
        events, failed, dropped = self.perform(lambda: self.hub.receive_text(conn_id, frame))
        if allowed:
            delivered = len(reach) - len(failed & set(reach)) - dropped
            [published] = events
            assert (published.topic, published.seq, published.payload) == (
                topic,
                self.seq[topic],
                payload,
            )
            if conn_id in failed & set(reach) and published.delivered == delivered + 1:
                delivered += 1  # its own message fitted; the reply then overflowed
            assert published.delivered == delivered
            body = {"topic": topic, "seq": self.seq[topic], "delivered": delivered}
            self.expect(conn_id, env("reply", body, id=rid, ok=True))
        else:
            assert events == []
        self.settle(failed)

    @rule(n=picks, exclude=st.booleans(), payload=payloads)
    def broadcast(self, n: int, exclude: bool, payload: Any) -> None:
        skip = self.pick(n).peer.conn_id if exclude and self.conns else None
        reach = [c for c in self.conns if c != skip and self.live(c)]
        for conn_id in reach:
            self.expect(conn_id, env("note", payload))
        self.run(lambda: self.hub.broadcast("note", payload, exclude=skip), reach)

    @rule(n=picks, payload=payloads, ghost=st.booleans())
    def send_to(self, n: int, payload: Any, ghost: bool) -> None:
        target = "ghost" if ghost or not self.conns else self.pick(n).peer.conn_id
        reach = [target] if self.live(target) else []
        for conn_id in reach:
            self.expect(conn_id, env("dm", payload))
        self.run(lambda: self.hub.send_to(target, "dm", payload), reach)

    @rule(principal=st.sampled_from(PRINCIPALS), payload=payloads)
    def send_to_principal(self, principal: str, payload: Any) -> None:
        reach = [c for c, mc in self.conns.items() if mc.peer.principal.id == principal]
        reach = [c for c in reach if self.live(c)]
        for conn_id in reach:
            self.expect(conn_id, env("user", payload))
        self.run(lambda: self.hub.send_to_principal(principal, "user", payload), reach)

    @precondition(lambda self: self.conns)
    @rule(n=picks, payload=payloads)
    def command(self, n: int, payload: Any) -> None:
        mc = self.pick(n)
        conn_id = mc.peer.conn_id
        rid = self.new_id()
        pending = self.pending.setdefault(conn_id, {})
        if len(pending) >= 3:
            self.expect(conn_id, error_env("too_many_pending", rid))
        else:
            self.counter += 1
            pending[rid] = (self.h.clock.now + TIMEOUT, self.counter)
            self.issued.append((conn_id, rid))
        if not pending:
            del self.pending[conn_id]
        frame = mc.peer.text_frame(self.request("cmd", rid, payload=payload))
        events = self.run(lambda: self.hub.receive_text(conn_id, frame))
        assert [(e.conn_id, e.request_id) for e in events] == (
            [(conn_id, rid)] if rid in self.pending.get(conn_id, {}) else []
        )

    @precondition(lambda self: self.issued)
    @rule(n=picks, ok=st.booleans(), payload=payloads)
    def reply(self, n: int, ok: bool, payload: Any) -> None:
        conn_id, rid = self.issued[n % len(self.issued)]
        pending = self.pending.get(conn_id, {})
        answered = rid in pending and self.live(conn_id)
        if rid in pending:
            del pending[rid]
            if not pending:
                del self.pending[conn_id]
        if answered:
            if ok:
                self.expect(conn_id, env("reply", payload, id=rid, ok=True))
            else:
                self.expect(conn_id, error_env("command_failed", rid))
        if ok:
            result = self.run(lambda: self.hub.reply(conn_id, rid, payload))
        else:
            result = self.run(lambda: self.hub.reply_error(conn_id, rid, "command_failed", "no"))
        # True iff it was pending, unless queueing the reply failed a slow reader.
        assert result is (answered and conn_id not in self.last_failed)

    @rule(seconds=st.sampled_from([0.5, 2.0, TIMEOUT]))
    def advance_time(self, seconds: float) -> None:
        deadlines = [d for p in self.pending.values() for d, _ in p.values()]
        deadlines += [kept[0].at + self.TTL for kept in self.kept.values() if kept]
        assert self.hub.next_deadline() == min(deadlines, default=None)
        self.h.clock.advance(seconds)
        now = self.h.clock.now
        for kept in self.kept.values():
            kept[:] = [k for k in kept if now < k.at + self.TTL]
        self.forget_t2()
        due = sorted(
            (deadline, order, conn_id, rid)
            for conn_id, pending in self.pending.items()
            for rid, (deadline, order) in pending.items()
            if deadline <= now
        )
        for _, _, conn_id, rid in due:
            del self.pending[conn_id][rid]
            if not self.pending[conn_id]:
                del self.pending[conn_id]
            self.expect(conn_id, error_env("command_timeout", rid))
        events = self.run(lambda: self.hub.handle_timer(now))
        assert [(e.conn_id, e.request_id) for e in events] == [(c, r) for _, _, c, r in due]

    @precondition(lambda self: self.conns)
    @rule(n=picks)
    def client_close(self, n: int) -> None:
        mc = self.pick(n)
        peer = mc.peer
        mc.fast = mc.leaving = True
        peer.receive()
        if peer.client.state is State.OPEN:
            peer.client.close(1000)
            peer.server.receive_data(peer.client.data_to_send())
        self.settle()

    @precondition(lambda self: self.conns)
    @rule(n=picks)
    def server_disconnect(self, n: int) -> None:
        mc = self.pick(n)
        was_open = self.live(mc.peer.conn_id)
        mc.leaving = True
        assert self.hub.disconnect(mc.peer.conn_id, 4001, "bye") is was_open
        mc.fast = True  # it reads what was queued before the close, then nothing more
        self.settle()
        assert mc.peer.closed is not None
        assert mc.peer.closed.code == 4001

    # -- helpers -------------------------------------------------------------------

    def new_id(self) -> int:
        self.counter += 1
        return self.counter

    @staticmethod
    def request(kind: str, rid: int | None, **fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"message_type": kind, **fields}
        if rid is not None:
            out["id"] = rid
        return out

    def teardown(self) -> None:
        for mc in list(self.conns.values()):
            mc.fast = True
        self.settle()
        for mc in list(self.conns.values()):
            mc.leaving = True
            peer = mc.peer
            if peer.client.state is State.OPEN:
                peer.client.close(1000)
                peer.server.receive_data(peer.client.data_to_send())
        self.settle()
        assert not self.conns
        self.hub.handle_timer(self.h.clock.now + self.TTL)  # history ages out
        assert self.hub.stats().history_entries == 0
        assert self.hub.next_deadline() is None
        assert set(self.hub.footprint().values()) == {0}, self.hub.footprint()


HubMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestHubModel = HubMachine.TestCase


class HistoryMachine(HubMachine):
    HISTORY = 4


HistoryMachine.TestCase.settings = HubMachine.TestCase.settings
TestHistoryModel = HistoryMachine.TestCase
