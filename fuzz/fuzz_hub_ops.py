"""Fuzz the hub with sequences of operations, checking invariants after each.

The input is read by ``ByteReader``: first the hub's configuration (small
limits, a small outbox so slow-consumer and drop paths run), then operations
until the bytes run out: add and remove connections (real in-memory
``ServerConnection``s opened by a ``ClientConnection``), client messages
through the connection core (fuzzed text, envelopes built from fuzzed fields,
binary), server-side sends and publishes, replies to pending commands,
topic configuration, history settings (per topic and hub-wide), subscribes
with ``since`` and ``history`` requests (real and stale positions, wrong
shapes), ``Hub.history`` reads, time passing (hub and connection timers),
clients reading their output or not, closing or dropping their transport.

The harness drives the hub as the adapter does: every ``Closed`` event of a
connection is answered with ``hub.remove``, but only when the fuzzer chooses
to pump that connection's events, so the hub also sees connections that are
closed and not yet removed.

Oracles: nothing raises; after every operation the registry, subscriptions,
pending commands, ``footprint()`` and ``stats()`` agree with each other and
with what the harness knows; counters never go down; clients only ever
receive well-formed envelopes (a ``history`` answer: contiguous messages of
its topic, none past its ``seq``, none unless recovered); every topic's
history is contiguous and ends at its ``seq``, and the history totals agree;
and once every connection is removed and history has aged out, the hub holds
nothing but its configured topics. Every server and client connection
is also under a contract monitor (``_contract``): whatever the hub does to a
connection moves it only along the core's transition table, events follow
the grammar with exactly one ``Closed``, and every byte either side writes
parses (a 101, then valid frames; the client's request, then masked frames).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _common import FakeClock, main
from _contract import ClientMonitor, ServerMonitor
from _hub_common import ByteReader, open_pair

from wshub.core import (
    BinaryMessage,
    ClientConnection,
    Closed,
    CommandExpired,
    CommandRequest,
    Event,
    Hub,
    HubConfig,
    HubStats,
    Limits,
    LocalProtocolError,
    ServerConnection,
    State,
    TextMessage,
)
from wshub.core.auth import Principal
from wshub.core.envelope import RequestId
from wshub.core.hub_events import AuthRequest
from wshub.core.topics import PublishPolicy, SlowConsumerPolicy, SubscribePolicy

WALL_START = 1_700_000_000.0
PRINCIPALS = (
    Principal("alice", scopes=frozenset({"admin"})),
    Principal("bob"),
    Principal("carol", scopes=frozenset({"admin", "ops"})),
    Principal("dave", expires_at=WALL_START + 30),  # closed with 1008 once expired
    Principal("dave", scopes=frozenset({"ops"}), expires_at=WALL_START + 90),
)
HOSTS = ("10.0.0.1", "10.0.0.2", None, ("10.0.0.1", 4242))
TOPICS = ("news", "room", "t\u00e9", "x" * 256)
COMMANDS = ("echo", "admin.kick", "slow")
MESSAGE_TYPES = ("subscribe", "unsubscribe", "publish", "auth", *COMMANDS, "nope", "", "history")
OUTBOX_SIZES = (64, 160, 400, 2048)
ENVELOPE_SIZES = (48, 200, 4096)
CLOSE_CODES = (1000, 1001, 1008, 1011, 4000)
PUBLISH_POLICIES: tuple[PublishPolicy, ...] = ("none", "subscribers", "all")
SUBSCRIBE_POLICIES: tuple[SubscribePolicy, ...] = ("none", "all")
SLOW_CONSUMER_POLICIES: tuple[SlowConsumerPolicy, ...] = ("disconnect", "drop")
COUNTERS = (
    "messages_in",
    "bytes_in",
    "messages_out",
    "bytes_out",
    "drops",
    "slow_consumer_closes",
    "policy_closes",
    "commands",
    "command_errors",
    "outbox_high_water",
)


@dataclass
class Peer:
    conn_id: str
    principal: Principal
    server: ServerConnection
    client: ClientConnection
    smon: ServerMonitor
    cmon: ClientMonitor
    registered: bool = True
    awaiting: bool = False  # added without credentials: first-message auth
    received: int = 0
    inbox: list[Event] = field(default_factory=list)  # server events not yet processed

    def to_server(self, data: bytes) -> None:
        """The server reads what the client wrote."""
        self.smon.sync()
        self.inbox += self.smon.receive(data)


@dataclass
class World:
    """The hub under test and everything the harness knows about it."""

    hub: Hub
    clock: FakeClock
    limits: Limits
    peers: dict[str, Peer] = field(default_factory=dict)
    retired: list[Peer] = field(default_factory=list)  # removed from the hub
    pending: list[tuple[str, RequestId]] = field(default_factory=list)
    auth_requests: list[AuthRequest] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    last: HubStats | None = None
    next_id: int = 0


def _json_value(reader: ByteReader, depth: int = 0) -> Any:
    """A small JSON value; strings may hold lone surrogates (sent as escapes)."""
    kind = reader.int_in_range(0, 7 if depth < 4 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return reader.boolean()
    if kind == 2:
        return reader.int_in_range(0, 1 << 16) - (1 << 15)
    if kind == 3:
        return reader.text(24)
    if kind == 4:
        return reader.text(12, surrogates=True)
    if kind == 5:
        return [_json_value(reader, depth + 1) for _ in range(reader.int_in_range(0, 3))]
    if kind == 6:
        return {
            reader.text(6): _json_value(reader, depth + 1) for _ in range(reader.int_in_range(0, 3))
        }
    return "p" * reader.int_in_range(0, 300)  # large enough to overflow small outboxes


def _server_payload(reader: ByteReader) -> Any:
    """Payloads the application sends: JSON, without lone surrogates."""
    kind = reader.int_in_range(0, 3)
    if kind == 0:
        return None
    if kind == 1:
        return {"n": reader.int_in_range(0, 1000), "s": reader.text(16)}
    if kind == 2:
        return "q" * reader.int_in_range(0, 500)
    return [reader.text(8) for _ in range(reader.int_in_range(0, 3))]


def _request_id(reader: ByteReader) -> object:
    kind = reader.int_in_range(0, 7)
    if kind <= 2:
        return reader.int_in_range(0, 3)  # few ids: duplicates happen
    if kind == 3:
        return str(reader.int_in_range(0, 3))
    if kind == 4:
        return reader.text(8, surrogates=True)
    if kind == 5:
        return reader.pick((True, 1.5, [1], "i" * 129, -(2**70)))
    if kind == 6:
        return None
    return reader.text(10)


def _envelope_text(reader: ByteReader) -> str:
    """A client envelope from fuzzed fields, or fuzzed text as it is."""
    if reader.int_in_range(0, 4) == 0:
        return reader.text(200)
    envelope: dict[str, object] = {}
    kind = reader.int_in_range(0, len(MESSAGE_TYPES))
    envelope["message_type"] = (
        reader.text(8, surrogates=True) if kind == len(MESSAGE_TYPES) else MESSAGE_TYPES[kind]
    )
    choice = reader.int_in_range(0, 5)
    if choice < 4:
        envelope["topic"] = TOPICS[choice]
    elif choice == 4:
        envelope["topic"] = reader.text(8, surrogates=True)
    ident = _request_id(reader)
    if ident is not None:
        envelope["id"] = ident
    if reader.boolean():
        envelope["payload"] = _json_value(reader)
    return json.dumps(envelope, ensure_ascii=True)  # lone surrogates become \ud8xx escapes


def _pick_peer(world: World, reader: ByteReader) -> Peer | None:
    if not world.peers:
        return None
    return world.peers[reader.pick(sorted(world.peers))]


def _process(world: World, peer: Peer) -> None:
    """Act on a connection's events as the adapter does."""
    hub = world.hub
    events, peer.inbox = [*peer.inbox, *peer.smon.pull()], []
    for event in events:
        if isinstance(event, TextMessage):
            for hub_event in hub.receive_text(peer.conn_id, event.data):
                if isinstance(hub_event, CommandRequest):
                    if hub_event.conn_id != peer.conn_id:
                        raise AssertionError(f"command of another connection: {hub_event!r}")
                    world.pending.append((hub_event.conn_id, hub_event.request_id))
                elif isinstance(hub_event, AuthRequest):
                    if hub_event.conn_id != peer.conn_id or hub_event.refresh == peer.awaiting:
                        raise AssertionError(f"auth request does not fit: {hub_event!r}")
                    world.auth_requests.append(hub_event)
        elif isinstance(event, BinaryMessage):
            hub.receive_binary(peer.conn_id, event.data)
        elif isinstance(event, Closed):
            hub.remove(peer.conn_id)
            peer.registered = False
            if hub.connection(peer.conn_id) is not None:
                raise AssertionError(f"{peer.conn_id} still registered after remove")
            if hub.pending_commands(peer.conn_id):
                raise AssertionError(f"{peer.conn_id} keeps pending commands after remove")
            world.retired.append(world.peers.pop(peer.conn_id))


def _drain(world: World, peer: Peer) -> None:
    """The client reads what the server queued, answers (pongs, close echo)."""
    peer.smon.sync()
    for event in peer.cmon.receive(peer.smon.drain()):
        if isinstance(event, TextMessage):
            _check_envelope(event.data)
            peer.received += 1
    if peer.server.should_close_transport():
        peer.inbox += peer.smon.receive_eof()
    else:
        peer.to_server(peer.cmon.drain())
    _process(world, peer)


def _check_envelope(text: str) -> None:
    envelope = json.loads(text)
    if not isinstance(envelope, dict) or not isinstance(envelope.get("message_type"), str):
        raise AssertionError(f"client got a malformed envelope: {text!r}")
    if not isinstance(envelope.get("timestamp"), int) or "payload" not in envelope:
        raise AssertionError(f"client got an envelope without timestamp/payload: {text!r}")
    kind = envelope["message_type"]
    if (kind == "reply" and not isinstance(envelope.get("ok"), bool)) or (
        kind == "error" and not isinstance(envelope.get("error"), dict)
    ):
        raise AssertionError(f"reply without ok / error without error: {text!r}")
    payload = envelope["payload"]
    if kind == "reply" and isinstance(payload, dict) and "messages" in payload:
        _check_history_answer(payload, text)


def _check_history_answer(answer: dict[str, Any], text: str) -> None:
    """A history answer: contiguous messages of its topic up to its seq, none
    when not recovered."""
    messages = answer["messages"]
    seqs = [m["seq"] for m in messages]
    if any(m["topic"] != answer["topic"] or "timestamp" not in m for m in messages):
        raise AssertionError(f"history answer with foreign or broken messages: {text!r}")
    if seqs and seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        raise AssertionError(f"history answer with a gap: {text!r}")
    if seqs and seqs[-1] > answer["seq"]:
        raise AssertionError(f"history answer past the topic's seq: {text!r}")
    if answer.get("recovered") is False and messages:
        raise AssertionError(f"messages given though not recovered: {text!r}")


def _waiting_hosts(world: World) -> list[str | None]:
    """Hosts of the connections the hub holds as waiting for an auth message."""
    hub = world.hub
    return [pending.host for pending in hub._registry.pending.values()]


def _op_add(world: World, reader: ByteReader) -> None:
    hub = world.hub
    principal = reader.pick(PRINCIPALS)
    remote = reader.pick(HOSTS)
    host = remote[0] if isinstance(remote, tuple) else remote
    awaiting = reader.int_in_range(0, 3) == 0
    admission = hub.admit(None if awaiting else principal.id, host)
    cfg = hub.config
    held = len(hub.connections()) + len(hub._registry.pending)
    same_principal = sum(1 for info in hub.connections() if info.principal.id == principal.id)
    same_host = sum(1 for info in hub.connections() if host is not None and info.host == host)
    same_host += sum(1 for h in _waiting_hosts(world) if host is not None and h == host)
    assert cfg.max_connections is not None
    assert cfg.max_per_principal is not None
    assert cfg.max_per_host is not None
    full = (
        held >= cfg.max_connections
        or (not awaiting and same_principal >= cfg.max_per_principal)
        or same_host >= cfg.max_per_host
    )
    if admission.ok == full:
        raise AssertionError(f"admission {admission!r} disagrees with the counts")
    if not admission.ok:
        return
    smon, cmon = open_pair(
        world.clock, limits=world.limits, compression=reader.boolean(), principal=principal
    )
    server, client = smon.server, cmon.client
    world.next_id += 1
    conn_id = f"c{world.next_id}"
    if awaiting:
        hub.add_unauthenticated(conn_id, server, remote=remote)
        if hub.connection(conn_id) is not None:
            raise AssertionError("a connection waiting for auth is listed as open")
        peer = Peer(conn_id, Principal(""), server, client, smon, cmon, awaiting=True)
        world.peers[conn_id] = peer
        return
    info = hub.add(conn_id, server, principal=principal, remote=remote)
    if info.conn_id != conn_id or info.principal != principal:
        raise AssertionError(f"add returned {info!r}")
    world.peers[conn_id] = Peer(conn_id, principal, server, client, smon, cmon)


def _op_auth(world: World, reader: ByteReader) -> None:
    """A client sends an ``auth`` message, or the driver decides a pending one."""
    hub = world.hub
    if reader.boolean() or not world.auth_requests:
        peer = _pick_peer(world, reader)
        if peer is None or peer.client.state is not State.OPEN:
            return
        envelope = {"message_type": "auth", "payload": {"token": reader.text(8) or "t"}}
        ident = _request_id(reader)
        if ident is not None:
            envelope["id"] = ident
        peer.cmon.send(json.dumps(envelope, ensure_ascii=True))
        peer.to_server(peer.cmon.drain())
        _process(world, peer)
        return
    request = world.auth_requests.pop(reader.int_in_range(0, len(world.auth_requests) - 1))
    peer = world.peers.get(request.conn_id)
    if reader.boolean():
        hub.reject_auth(request.conn_id, request.request_id, reader.text(20))
        if hub.connection(request.conn_id) is None and request.conn_id in hub._registry.pending:
            raise AssertionError("a rejected waiting connection is still waiting")
        return
    principal = reader.pick(PRINCIPALS)
    before = hub.connection(request.conn_id)
    accepted = hub.authenticate(request.conn_id, principal, request.request_id)
    info = hub.connection(request.conn_id)
    if request.conn_id in hub._registry.pending:
        raise AssertionError("authenticate left the connection waiting")
    if accepted:
        if info is None or info.principal != principal:
            raise AssertionError(f"authenticate accepted but the hub holds {info!r}")
        if before is not None and before.principal.id != principal.id:
            raise AssertionError("a refresh switched principals")
        if peer is not None:
            peer.awaiting = False
            peer.principal = principal
    elif info is not None and before is None:
        raise AssertionError("authenticate refused but registered the connection")


def _op_client_text(world: World, reader: ByteReader) -> None:
    peer = _pick_peer(world, reader)
    text = _envelope_text(reader)
    if peer is None or peer.client.state is not State.OPEN:
        return
    peer.cmon.send(text)
    peer.to_server(peer.cmon.drain())
    if reader.boolean():
        _process(world, peer)


def _op_client_binary(world: World, reader: ByteReader) -> None:
    peer = _pick_peer(world, reader)
    data = reader.bytes(64)
    if peer is None or peer.client.state is not State.OPEN:
        return
    peer.cmon.send(data)
    peer.to_server(peer.cmon.drain())
    _process(world, peer)


def _op_reply(world: World, reader: ByteReader) -> None:
    if not world.pending:
        return
    conn_id, request_id = world.pending.pop(reader.int_in_range(0, len(world.pending) - 1))
    hub = world.hub
    was_pending = request_id in hub.pending_commands(conn_id)
    if reader.boolean():
        answered = hub.reply(conn_id, request_id, _server_payload(reader))
    else:
        code = reader.pick(("command_failed", "shutting_down", "app_error"))
        answered = hub.reply_error(conn_id, request_id, code, reader.text(20))
    if answered and not was_pending:
        raise AssertionError("a reply to a request that was not pending was sent")
    if request_id in hub.pending_commands(conn_id):
        raise AssertionError("a request is still pending after its reply")
    # A second reply is always refused.
    if hub.reply(conn_id, request_id, None):
        raise AssertionError("a request was answered twice")


def _op_timers(world: World, reader: ByteReader) -> None:
    world.clock.now += reader.pick((0.0, 0.5, 1.0, 3.0, 11.0, 25.0))
    now = world.clock.now
    hub = world.hub
    if reader.boolean():
        hub.handle_timer(now)
    else:
        deadline = hub.next_deadline()
        if deadline is not None and deadline <= now:
            hub.handle_timer()
    deadline = hub.next_deadline()
    if deadline is not None and deadline <= now and reader.boolean():
        for event in hub.handle_timer(now):
            if not isinstance(event, CommandExpired):
                raise AssertionError(f"handle_timer gave {event!r}")
        deadline = hub.next_deadline()
        if deadline is not None and deadline <= now:
            raise AssertionError("a deadline at or before now survives handle_timer")
    if reader.boolean():
        for peer in list(world.peers.values()):
            peer.smon.sync()
            peer.inbox += peer.smon.handle_timer(now)
            peer.cmon.handle_timer(now)


def _op_server_send(world: World, reader: ByteReader) -> None:
    hub = world.hub
    kind = reader.int_in_range(0, 3)
    message_type = reader.pick(("note", "message", "x"))
    payload = _server_payload(reader)
    if kind == 0:
        peers = sorted(world.peers)
        exclude = [c for c in peers if reader.boolean()] if peers else None
        count = hub.broadcast(message_type, payload, exclude=exclude)
        if count > len(world.peers):
            raise AssertionError("broadcast reached more connections than exist")
    elif kind == 1:
        peer = _pick_peer(world, reader)
        conn_id = peer.conn_id if peer is not None else "ghost"
        if hub.send_to(conn_id, message_type, payload) not in (0, 1):
            raise AssertionError("send_to counted more than one")
    elif kind == 2:
        principal = reader.pick(PRINCIPALS)
        count = hub.send_to_principal(principal.id, message_type, payload)
        if count > sum(1 for p in world.peers.values() if p.principal.id == principal.id):
            raise AssertionError("send_to_principal reached other principals")
    else:
        topic = reader.pick(TOPICS)
        before = hub.topic_seq(topic)
        subscribers = len(hub.subscribers(topic))
        count = hub.publish(topic, payload, message_type=message_type, droppable=reader.boolean())
        if count > subscribers:
            raise AssertionError("publish delivered to more than the subscribers")
        if hub.topic_seq(topic) not in (before, before + 1):
            raise AssertionError("publish moved seq by more than one")


def _op_topic(world: World, reader: ByteReader) -> None:
    hub = world.hub
    topic = reader.pick(TOPICS)
    kind = reader.int_in_range(0, 2)
    if kind == 0:
        hub.configure_topic(
            topic,
            publish=reader.pick(PUBLISH_POLICIES),
            subscribe=reader.pick(SUBSCRIBE_POLICIES),
            presence=reader.boolean(),
            slow_consumer=reader.pick(SLOW_CONSUMER_POLICIES),
        )
        return
    peer = _pick_peer(world, reader)
    if peer is None:
        return
    if peer.awaiting:
        try:
            hub.subscribe(peer.conn_id, topic)
        except LocalProtocolError:
            return  # the driver's mistake: not an open, authenticated connection
        raise AssertionError("a connection waiting for auth was subscribed")
    if kind == 1:
        hub.subscribe(peer.conn_id, topic)
        if peer.conn_id not in hub.subscribers(topic):
            raise AssertionError("server-side subscribe did not subscribe")
    else:
        hub.unsubscribe(peer.conn_id, topic)
        if peer.conn_id in hub.subscribers(topic):
            raise AssertionError("server-side unsubscribe left the subscriber")


def _op_close(world: World, reader: ByteReader) -> None:
    hub = world.hub
    peer = _pick_peer(world, reader)
    kind = reader.int_in_range(0, 5)
    if peer is None:
        return
    if kind == 0:
        opened = peer.server.state is State.OPEN
        if hub.disconnect(peer.conn_id, reader.pick(CLOSE_CODES), reader.text(20)) != opened:
            raise AssertionError("disconnect disagrees with the connection state")
    elif kind == 1:
        hub.close_all()
    elif kind == 2:  # the client closes
        if peer.client.state is State.OPEN:
            peer.cmon.close(reader.pick(CLOSE_CODES), "")
            peer.to_server(peer.cmon.drain())
    elif kind == 3:  # the transport drops
        peer.smon.sync()
        peer.inbox += peer.smon.receive_eof()
    elif kind == 4:  # the driver removes an open connection early (idempotent)
        hub.remove(peer.conn_id)
        hub.remove(peer.conn_id)
        peer.registered = False
        world.retired.append(world.peers.pop(peer.conn_id))
    else:
        _process(world, peer)


def _op_drain(world: World, reader: ByteReader) -> None:
    for conn_id in sorted(world.peers):
        peer = world.peers.get(conn_id)
        if peer is not None and reader.boolean():
            _drain(world, peer)


def _op_history_settings(world: World, reader: ByteReader) -> None:
    """History settings of one topic or of the hub, or a server-side read."""
    hub = world.hub
    topic = reader.pick(TOPICS)
    kind = reader.int_in_range(0, 2)
    if kind == 0:
        hub.configure_topic(
            topic,
            publish=reader.pick(PUBLISH_POLICIES),
            slow_consumer=reader.pick(SLOW_CONSUMER_POLICIES),
            presence=reader.boolean(),
            history_size=reader.pick((None, 0, 1, 3, 8)),
            history_ttl=reader.pick((None, 1.0, 5.0, 30.0)),
        )
    elif kind == 1:
        hub.config = replace(
            hub.config,
            history_size=reader.pick((0, 2, 5)),
            history_ttl=reader.pick((1.0, 5.0, 30.0)),
            history_topic_bytes=reader.pick((64, 400, 1 << 20)),
            max_history_bytes=reader.pick((200, 2000, 1 << 20)),
            max_history_page=reader.pick((1, 3, 1000)),
        )
    else:
        epoch = hub.topic_epoch(topic)
        seq = max(0, hub.topic_seq(topic) - reader.int_in_range(0, 4))
        since = (seq, epoch or "") if reader.boolean() else None
        limit = reader.pick((None, 0, 1, 5))
        page = hub.history(topic, since=since, limit=limit)
        seqs = [s for s, _ in page.entries()]
        if [json.loads(data)["seq"] for _, data in page.entries()] != seqs:
            raise AssertionError(f"history page numbered wrongly: {page!r}")
        if (page.recovered is None) != (since is None) or (seqs and seqs[-1] > page.seq):
            raise AssertionError(f"history page does not fit its request: {page!r}")
        if limit is not None and len(seqs) > limit:
            raise AssertionError(f"history page over its limit: {page!r}")


def _op_recover(world: World, reader: ByteReader) -> None:
    """A client subscribes with ``since`` or asks for history: a real position,
    a stale one, or a wrong shape."""
    hub = world.hub
    peer = _pick_peer(world, reader)
    topic = reader.pick(TOPICS)
    message_type = reader.pick(("subscribe", "history"))
    epoch = hub.topic_epoch(topic)
    seq = hub.topic_seq(topic) + 1 - reader.int_in_range(0, 6)  # maybe ahead, maybe < 0
    shape = reader.int_in_range(0, 4)
    since: Any
    if shape == 0:
        since = {"seq": max(seq, 0), "epoch": epoch or "e"}
    elif shape == 1:
        since = {"seq": seq, "epoch": reader.text(8, surrogates=True)}
    elif shape == 2:
        since = _json_value(reader)
    elif shape == 3:
        since = None
    else:
        since = {"seq": max(seq, 0), "epoch": epoch}  # None while the topic does not exist
    payload: Any = {"since": since}
    if message_type == "history" and reader.boolean():
        payload["limit"] = reader.pick((0, 1, 3, 10_000, -1, True, "2"))
    if reader.int_in_range(0, 5) == 0:
        payload = _json_value(reader)
    envelope: dict[str, Any] = {"message_type": message_type, "topic": topic, "payload": payload}
    ident = _request_id(reader)
    if ident is not None:
        envelope["id"] = ident
    if peer is None or peer.client.state is not State.OPEN:
        return
    peer.cmon.send(json.dumps(envelope, ensure_ascii=True))
    peer.to_server(peer.cmon.drain())
    _process(world, peer)


OPS = (
    _op_add,
    _op_auth,
    _op_client_text,
    _op_client_text,
    _op_client_text,
    _op_client_binary,
    _op_reply,
    _op_timers,
    _op_server_send,
    _op_server_send,
    _op_topic,
    _op_close,
    _op_drain,
    _op_history_settings,
    _op_recover,
)


def check_invariants(world: World) -> None:
    """Everything the hub reports agrees with itself and with the harness, and
    every connection moved only along the core's transition table."""
    hub = world.hub
    for peer in world.peers.values():
        peer.smon.sync()
    infos = hub.connections()
    registered = {info.conn_id for info in infos}
    waiting = set(hub._registry.pending)
    if registered & waiting:
        raise AssertionError(f"open and waiting at once: {registered & waiting}")
    if not waiting <= {c for c, p in world.peers.items() if p.registered and p.awaiting}:
        raise AssertionError(f"waiting connections the harness did not add so: {waiting}")
    expected = {c for c, p in world.peers.items() if p.registered and not p.awaiting}
    if registered != expected:
        raise AssertionError(f"registry {sorted(registered)} != harness {sorted(expected)}")
    for info in infos:
        for topic in info.subscriptions:
            if info.conn_id not in hub.subscribers(topic):
                raise AssertionError(f"{info.conn_id} in {topic!r} but not among its subscribers")
    footprint = hub.footprint()
    stats = hub.stats()
    pending = sum(len(hub.pending_commands(info.conn_id)) for info in infos)
    subscriptions = sum(len(info.subscriptions) for info in infos)
    principals = {info.principal.id for info in infos}
    hosts = {info.host for info in infos if info.host is not None}
    hosts |= {h for h in _waiting_hosts(world) if h is not None}
    checks = {
        "connections": (footprint["connections"], stats.connections, len(infos)),
        "pending": (footprint["pending_commands"], stats.pending_commands, pending),
        "subscriptions": (
            footprint["subscriptions"],
            sum(stats.subscriptions.values()),
            subscriptions,
        ),
        "principals": (footprint["principals"], len(principals)),
        "hosts": (footprint["hosts"], len(hosts)),
    }
    for name, values in checks.items():
        if len(set(values)) != 1:
            raise AssertionError(f"{name} disagree: {values} {footprint} {stats}")
    if footprint["pending_connections"] > footprint["connections"]:
        raise AssertionError(f"pending commands of unknown connections: {footprint}")
    if footprint["error_windows"] > footprint["connections"]:
        raise AssertionError(f"error windows of unknown connections: {footprint}")
    if footprint["dropped_counters"] > footprint["subscriptions"]:
        raise AssertionError(f"drop counters of non-subscribers: {footprint}")
    if footprint["deadlines"] < footprint["pending_commands"]:
        raise AssertionError(f"pending commands without deadline: {footprint}")
    deadline = hub.next_deadline()
    expiring = any(info.principal.expires_at is not None for info in infos)
    if pending and deadline is None:
        raise AssertionError(f"no deadline with {pending} commands pending")
    if deadline is not None and not (pending or waiting or expiring or stats.history_entries):
        raise AssertionError(f"next_deadline {deadline} with nothing to time")
    if footprint["awaiting_auth"] != len(waiting):
        raise AssertionError(f"awaiting_auth disagrees: {footprint} {waiting}")
    _check_history(world, stats)
    if any(count <= 0 for count in stats.subscriptions.values()):
        raise AssertionError(f"empty topic in stats: {stats.subscriptions}")
    if world.last is not None:
        for name in COUNTERS:
            if getattr(stats, name) < getattr(world.last, name):
                raise AssertionError(f"counter {name} went down")
        for code, count in world.last.errors_by_code.items():
            if stats.errors_by_code.get(code, 0) < count:
                raise AssertionError(f"errors_by_code[{code}] went down")
    world.last = stats


def _check_history(world: World, stats: HubStats) -> None:
    """Each topic's history is contiguous and ends at its seq; totals agree."""
    topics = world.hub._topics.topics.values()
    entries = total = 0
    for state in topics:
        log = state.log
        if log is None:
            continue
        if log.last != state.seq:
            raise AssertionError(f"history of {state.name!r} ends at {log.last}, seq {state.seq}")
        if log.nbytes != sum(len(d) for d in log.data) or len(log.times) != len(log.data):
            raise AssertionError(f"history of {state.name!r} miscounted")
        entries += len(log)
        total += log.nbytes
        if not state.configured and not state.subscribers and not len(log):
            raise AssertionError(f"{state.name!r} is held by nothing")
    if (stats.history_entries, stats.history_bytes) != (entries, total):
        raise AssertionError(f"history totals {stats} disagree with the topics")


def _make_world(reader: ByteReader) -> World:
    config = HubConfig(
        max_connections=reader.int_in_range(1, 6),
        max_per_principal=reader.int_in_range(1, 4),
        max_per_host=reader.int_in_range(1, 4),
        max_envelope_size=reader.pick(ENVELOPE_SIZES),
        max_depth=reader.int_in_range(1, 5),
        max_errors=reader.int_in_range(0, 4),
        error_window=reader.pick((1.0, 5.0, 60.0)),
        max_pending_commands=reader.int_in_range(1, 3),
        default_command_timeout=reader.pick((1.0, 4.0, 20.0)),
        max_subscriptions=reader.int_in_range(1, 3),
        accept_binary=reader.boolean(),
        send_welcome=reader.boolean(),
    )
    limits = Limits(
        max_message_size=4096,
        max_outbox_size=reader.pick(OUTBOX_SIZES),
        ping_interval=reader.pick((None, 5.0)),
        ping_timeout=5.0,
        close_timeout=3.0,
        idle_timeout=reader.pick((None, 20.0)),
    )
    clock = FakeClock(100.0)
    wall = FakeClock(WALL_START)
    outputs: list[str] = []
    hub = Hub(clock=clock, wall_clock=wall, config=config, on_output=outputs.append)
    hub.register_command("echo")
    hub.register_command("admin.kick", scope="admin", timeout=2.0)
    hub.register_command("slow", timeout=30.0)
    return World(hub=hub, clock=clock, limits=limits, outputs=outputs)


def _finish(world: World) -> None:
    """Remove everything; the hub must then hold nothing."""
    hub = world.hub
    # Draining one client may close another (its messages overflow a slow
    # consumer): repeat until every output is read and every Closed handled.
    for _ in range(8):
        for conn_id in sorted(world.peers):
            peer = world.peers.get(conn_id)
            if peer is not None:
                _drain(world, peer)
        check_invariants(world)
        if all(p.server.outbox_size == 0 for p in world.peers.values()):
            break
    # Every Closed event has been processed: no closed connection may remain.
    for peer in world.peers.values():
        if peer.server.state is State.CLOSED:
            raise AssertionError(f"{peer.conn_id} is closed and still registered")
    for conn_id in list(world.peers):
        hub.remove(conn_id)
        world.peers[conn_id].registered = False
    if hub._registry.pending:
        raise AssertionError(f"waiting connections left after remove: {hub._registry.pending}")
    check_invariants(world)
    for conn_id, request_id in world.pending:
        if hub.reply(conn_id, request_id, None):
            raise AssertionError("a reply to a removed connection was sent")
    hub.handle_timer(world.clock.now + 1e6)  # history ages out (every age bound is finite)
    if hub.stats().history_entries:
        raise AssertionError(f"history kept past its age: {hub.stats()}")
    footprint = hub.footprint()
    if any(footprint.values()):
        raise AssertionError(f"the hub holds something after removing everyone: {footprint}")
    stats = hub.stats()
    if stats.connections or stats.pending_commands or stats.subscriptions:
        raise AssertionError(f"stats not empty after removing everyone: {stats}")
    if hub.next_deadline() is not None or hub.handle_timer(world.clock.now + 1e6):
        raise AssertionError("timers left after removing everyone")
    # Every transport ends: each connection reports its one Closed, and all
    # that both sides wrote parses.
    for peer in [*world.peers.values(), *world.retired]:
        for monitor in (peer.smon, peer.cmon):
            monitor.sync()
            monitor.receive_eof()
            monitor.finish()


def test_one_input(data: bytes) -> None:
    reader = ByteReader(data)
    world = _make_world(reader)
    steps = 0
    while reader.remaining() and steps < 200:
        steps += 1
        reader.pick(OPS)(world, reader)
        check_invariants(world)
    _finish(world)


def seeds() -> dict[str, bytes]:
    """Named seed inputs: each opens a few connections, then exercises one area.

    Bytes follow the reads of ``_make_world`` and of each ``_op_*`` in order.
    """
    # Config: connections, per principal, per host, envelope size, depth,
    # max errors, window, pending, timeout, subscriptions, binary, welcome;
    # then limits: outbox, ping, idle.
    roomy = bytes([5, 3, 3, 2, 4, 3, 2, 2, 1, 2, 0, 1, 3, 0, 0])
    tight = bytes([5, 3, 3, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1])

    def add(principal: int, host: int = 0, compression: int = 0) -> bytes:
        return bytes([0, principal, host, compression])

    def text(conn: int, kind: int, topic: int, ident: bytes, payload: bytes = b"\x00") -> bytes:
        """op, peer, "envelope", type, topic, id, payload (flag, value), process now."""
        return bytes([1, conn, 1, kind, topic]) + ident + payload + b"\x01"

    def drain(peers: int) -> bytes:
        return bytes([11] + [1] * peers)

    hello = b"\x01\x03\x05hello"  # payload: text "hello"
    two = add(0) + add(1, 1)
    return {
        "subscribe_publish": roomy
        + two
        + bytes([9, 0, 0, 2, 1, 1, 0])  # configure "news": all publish, presence
        + text(0, 0, 0, b"\x00\x01")
        + text(1, 0, 0, b"\x03\x02")
        + text(0, 2, 0, b"\x00\x03", hello)
        + text(1, 2, 1, b"\x06")
        + drain(2)
        + text(1, 1, 0, b"\x07\x02ab")
        + drain(2),
        "commands": roomy
        + two
        + text(0, 3, 5, b"\x00\x01", hello)
        + text(0, 3, 5, b"\x00\x01")
        + text(0, 5, 5, b"\x00\x02")
        + text(1, 4, 5, b"\x00\x02")
        + text(0, 4, 5, b"\x03\x01")
        + text(1, 6, 5, b"\x06")
        + bytes([5, 0, 1, 0])  # reply to the first pending: null
        + bytes([5, 0, 0, 1, 3, b"x"[0]])  # reply_error shutting_down
        + bytes([6, 4, 1])  # 11 s later, hub timer: command_timeout
        + drain(2),
        "slow_consumer": tight
        + two
        + bytes([9, 1, 0, 1, 1, 0, 0])  # "room": subscribers publish, disconnect
        + bytes([9, 1, 1, 0])  # c1 subscribed server-side
        + bytes([9, 1, 1, 1])  # c2 too
        + bytes([7, 3, 1, 2, 0, 0xFF, 1, 1])  # publish 255 chars to "room", droppable
        + bytes([7, 3, 1, 2, 0, 0xFF, 1, 0])
        + bytes([7, 0, 0, 2, 0, 0xFF, 0, 0])  # broadcast, nobody excluded
        + drain(2)
        + bytes([6, 4, 0, 1]),
        "errors_and_binary": tight
        + add(2, 2, 1)
        + bytes([1, 0, 0, 5])
        + b"{oops"
        + b"\x01"
        + text(0, 7, 5, b"\x06")
        + text(0, 6, 5, b"\x05\x00")
        + bytes([4, 0, 3, 1, 2, 3])
        + drain(1),
        "close_paths": roomy
        + two
        + add(2, 3)
        + bytes([10, 0, 0, 2, 3])
        + b"bye"  # disconnect c1 with 1008
        + bytes([10, 1, 2, 1])  # c2's client closes with 1001
        + bytes([10, 2, 3])  # c3's transport drops
        + drain(3)
        + add(1)
        + bytes([10, 0, 4])  # removed early
        + bytes([10, 0, 1])  # close_all
        + drain(1),
        "presence_drop": roomy
        + two
        + bytes([9, 1, 0, 2, 1, 1, 1])  # "room": all publish, presence, drop
        + text(0, 0, 1, b"\x00\x01")
        + text(1, 0, 1, b"\x00\x02")
        + bytes([7, 3, 1, 2, 0, 0xF0, 1, 1]) * 12  # droppable publishes fill the outboxes
        + drain(1)
        + bytes([7, 3, 1, 2, 0, 0x10, 1, 1])
        + drain(2)
        + bytes([9, 1, 0, 0, 0, 0, 0])  # reconfigure: disconnect policy
        + text(1, 1, 1, b"\x00\x05")
        + drain(2),
        "history_recovery": roomy
        + bytes([0, 0, 0, 1, 0, 0, 1, 1, 1, 0])  # add c1 (alice), c2 (bob), with credentials
        + bytes([13, 0, 0, 2, 0, 0, 3, 3])  # "news": all publish, 3 kept for 30 s
        + bytes([8, 3, 1, 0, 0, 0]) * 3  # three server publishes to "news"
        + bytes([14, 0, 0, 0, 3, 0, 1, 0, 2])  # c1 subscribes since {1, epoch}, id 2
        + bytes([14, 1, 0, 1, 4, 0, 1, 2, 1, 0, 3])  # c2: history since {0, epoch}, limit 3
        + bytes([14, 0, 0, 0, 0, 1, 4, 0x61, 0x62, 0x63, 0x64, 1, 0, 1])  # a stale epoch
        + bytes([13, 1, 1, 1, 0, 1, 1, 1])  # hub-wide: 2 kept for 1 s, small caps
        + bytes([8, 3, 1, 0, 1, 0])  # "room" has nobody: kept all the same
        + bytes([13, 1, 2, 0, 1, 2])  # Hub.history("room", since, limit 1)
        + bytes([7, 4, 1, 0])  # 11 s later: history ages out
        + bytes([12, 1, 1]),
        "surrogate_free_unicode": roomy
        + add(0)
        + text(0, 0, 2, b"\x07\x04\xc3\xa9t\xc3")
        + bytes([1, 0, 0, 12])
        + '{"message_type":"é"}'.encode()
        + b"\x01"
        + drain(1),
    }


def run_corpus(paths: list[str] | list[Path]) -> int:
    """Replay files (or folders of files) without atheris; return how many ran."""
    return _common.run_corpus(test_one_input, paths)


if __name__ == "__main__":
    main(test_one_input)

__all__ = ["check_invariants", "run_corpus", "seeds", "test_one_input"]
