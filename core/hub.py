"""The hub: routing between many connections, as a sans-IO state machine.

Every method is synchronous and non-blocking: it changes the hub's state,
queues bytes on connections (``send_prepared``) and returns what the driver
must act on (a count, a reply, ``HubEvent``s). A message for many recipients
is encoded once and framed once (``PreparedMessage``); the same bytes go to
every uncompressed connection.

The driver's duties, in order of a connection's life:

1. At the handshake, after authentication: ``admit(principal.id, host)``;
   refuse with its status/headers unless ``ok``. Then ``accept`` the
   connection and ``add`` it, with no ``await`` in between.
2. For each ``TextMessage``/``BinaryMessage`` event: ``receive_text`` /
   ``receive_binary``; run the returned ``CommandRequest``s and answer each
   with ``reply``/``reply_error``.
3. Sleep until ``next_deadline()``; then ``handle_timer(now)`` (command
   timeouts; cancel the handlers of the returned ``CommandExpired``).
4. On the connection's ``Closed`` event, whatever its cause (including the
   1013/1008/1003 closes the hub itself starts): ``remove(conn_id)``.

``on_output(conn_id)`` is called whenever the hub queued bytes for, or
closed, a connection: wake that connection's writer. It must not call back
into the hub.

``Hub`` is a facade over its parts, each in its own module: ``HubOutput``
(settings, clocks, registry, encoding and sending), ``Connections``
(admission, authentication, credential deadlines), ``Topics``
(subscriptions, presence, publishing; delivery in ``hub_delivery``) and
``Commands``. Client messages are dispatched here to the part they concern.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from typing import Any

from .auth import Principal
from .connection import RandomSource
from .envelope import Codec, JsonCodec, RequestId
from .errors import LocalProtocolError
from .frames import PreparedMessage
from .history import check_history_settings
from .hub_broker_inputs import BrokerInputs
from .hub_brokered import Brokered
from .hub_commands import Commands
from .hub_config import HubConfig
from .hub_connections import Connections
from .hub_events import HubEvent
from .hub_input import HubInput
from .hub_output import HubOutput, check_message_type
from .hub_recovery import HistoryPage, check_history_read
from .hub_stats import HubStats
from .hub_topics import Topics, check_topic_name
from .registry import Admission, ConnectionInfo, HubConnection, Registry, Remote
from .topics import PublishPolicy, SlowConsumerPolicy, SubscribePolicy, TopicPolicy

__all__ = ["Hub"]

_CLOSE_BINARY = (1003, "binary messages are not accepted")


class Hub(BrokerInputs):
    """Connections, topics, commands and counters of one server process.

    ``clock`` is monotonic (error windows, command deadlines); ``wall_clock``
    gives seconds since the epoch (envelope timestamps, ``connected_at``).
    ``codec`` replaces stdlib ``json``; ``default_topic`` is the policy of
    topics not configured with ``configure_topic``. ``random(n)`` gives ``n``
    random bytes (topic epochs); tests pass a seeded source.

    ``broker``: the topics' streams live in a broker shared by several hubs
    (nodes): publications are numbered and kept there, and this hub asks for
    what it needs with ``broker_commands()``; ``broker()`` is called
    whenever one was queued. The methods a driver with a broker calls
    are in ``BrokerInputs`` (``hub_broker_inputs``).
    """

    __slots__ = ("_commands", "_conns", "_input", "_out", "_topics")

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        config: HubConfig | None = None,
        on_output: Callable[[str], None] | None = None,
        codec: Codec | None = None,
        default_topic: TopicPolicy | None = None,
        random: RandomSource = os.urandom,
        broker: Callable[[], None] | None = None,
    ) -> None:
        self._out = HubOutput(
            config=config or HubConfig(),
            clock=clock,
            wall_clock=wall_clock,
            codec=codec or JsonCodec(),
            on_output=on_output,
        )
        self._conns = Connections(self._out)
        self._topics = Topics(self._out, default_topic or TopicPolicy(), random)
        if broker is not None:
            self._topics.brokered = Brokered(self._out, self._topics, broker)
        self._commands = Commands(self._out)
        self._input = HubInput(self._out, self._conns, self._topics, self._commands)

    @property
    def config(self) -> HubConfig:
        return self._out.config

    @config.setter
    def config(self, config: HubConfig) -> None:
        self._out.config = config

    @property
    def _registry(self) -> Registry:
        return self._out.registry

    # -- connections -------------------------------------------------------

    def admit(self, principal_id: str | None, remote_host: str | None) -> Admission:
        """May one more connection of this principal from this host open?

        Call at the handshake, before ``accept``; on refusal answer with
        ``reject(admission.status, admission.reason, headers=admission.headers)``.
        ``principal_id=None`` admits a connection that will authenticate by
        message (``add_unauthenticated``): only the total and per-host bounds
        apply until ``authenticate`` checks the principal's.
        """
        return self._conns.admit(principal_id, remote_host)

    def add(
        self,
        conn_id: str,
        connection: HubConnection,
        *,
        principal: Principal,
        remote: Remote | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ConnectionInfo:
        """Register an open connection and send it the ``welcome`` envelope."""
        return self._conns.add(conn_id, connection, principal, remote, metadata)

    def add_unauthenticated(
        self,
        conn_id: str,
        connection: HubConnection,
        *,
        remote: Remote | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Register an open connection that must authenticate by message.

        Until an ``auth`` message succeeds (``authenticate``) it receives
        nothing, is in no count but the total and per-host ones, and any other
        message closes it with 1008; after ``HubConfig.auth_timeout`` it is
        closed with 1008 "authentication timeout".
        """
        self._conns.add_unauthenticated(conn_id, connection, remote, metadata)

    def authenticate(
        self, conn_id: str, principal: Principal, request_id: RequestId | None = None
    ) -> bool:
        """Accept the credentials of an ``AuthRequest``.

        A waiting connection is admitted under its principal's bounds (else
        closed with 1013), joins the hub and gets the ``welcome``; an open one
        keeps its principal id and takes the new scopes and expiry (another
        principal id is refused with ``forbidden``). The request, if it had an
        ``id``, is answered with ``{"principal", "expires_at"}``. False if
        the connection is gone or was refused.
        """
        return self._conns.authenticate(conn_id, principal, request_id)

    def reject_auth(self, conn_id: str, request_id: RequestId | None, reason: str) -> None:
        """Refuse the credentials of an ``AuthRequest``: a waiting connection
        is closed with 1008 ``reason``; an open one gets ``unauthorized`` and
        keeps its current credentials until they expire."""
        self._conns.reject_auth(conn_id, request_id, reason)

    def remove(self, conn_id: str) -> list[HubEvent]:
        """Forget a connection (call on its ``Closed`` event). Idempotent.

        Leaves its topics (presence ``leave`` to the others), discards its
        pending commands and error history.
        """
        out = self._out
        entry = out.registry.pop(conn_id)
        if entry is None:
            out.registry.pop_pending(conn_id)
            return []
        self._commands.table.forget(conn_id)
        out.forget(conn_id)
        return self._topics.leave_all(entry)

    def connection(self, conn_id: str) -> ConnectionInfo | None:
        entry = self._out.registry.entries.get(conn_id)
        return None if entry is None else entry.info

    def connections(self) -> list[ConnectionInfo]:
        return [entry.info for entry in self._out.registry.entries.values()]

    def disconnect(self, conn_id: str, code: int = 1008, reason: str = "") -> bool:
        """Start closing one connection; False if unknown or not open."""
        return self._conns.disconnect(conn_id, code, reason)

    def close_all(self, code: int = 1001, reason: str = "server shutting down") -> int:
        """Start closing every open connection (shutdown); how many were open."""
        return self._conns.close_all(code, reason)

    # -- input -------------------------------------------------------------

    def receive_text(self, conn_id: str, text: str) -> list[HubEvent]:
        """Handle one client text message. Never raises on client input."""
        return self._input.text(conn_id, text)

    def receive_binary(self, conn_id: str, data: bytes) -> list[HubEvent]:
        """Report a binary message, or close with 1003 if binary is not accepted."""
        return self._input.binary(conn_id, data)

    # -- output ------------------------------------------------------------

    def broadcast(
        self, message_type: str, payload: object, *, exclude: str | Collection[str] | None = None
    ) -> int:
        """Send one envelope to every open connection (but ``exclude``)."""
        return self._out.broadcast(message_type, payload, exclude)

    def send_to(self, conn_id: str, message_type: str, payload: object) -> int:
        """Send to one connection; 1 if queued, else 0."""
        return self._out.send_to(conn_id, message_type, payload)

    def send_to_principal(self, principal_id: str, message_type: str, payload: object) -> int:
        """Send to every connection of one principal (all of a user's tabs)."""
        return self._out.send_to_principal(principal_id, message_type, payload)

    def publish(
        self,
        topic: str,
        payload: object,
        *,
        message_type: str = "message",
        droppable: bool = False,
    ) -> int:
        """Publish to a topic's subscribers with the next ``seq``.

        ``droppable`` matters on topics with the "drop" slow-consumer policy.
        A topic that is neither configured, nor subscribed, nor holding
        history does not exist: nothing is delivered and no ``seq`` is used,
        unless ``HubConfig.history_size`` keeps history of every topic (then
        the publish makes the topic and is kept).
        """
        check_topic_name(topic)
        check_message_type(message_type)
        brokered = self._topics.brokered
        if brokered is not None:
            brokered.queue(brokered.outgoing(topic, payload, message_type, droppable))
            return 0  # delivered on every node as it comes back from the broker
        state = self._topics.get_or_keep(topic)
        if state is None:
            return 0
        return self._topics.publish(state, payload, message_type, droppable)[1]

    def encode(self, message_type: str, payload: object, *, topic: str | None = None) -> bytes:
        """One envelope, encoded once for ``*_encoded`` here and on other nodes."""
        check_message_type(message_type)
        if topic is None:
            return self._out.prepare(message_type, payload).payload
        return self._out.prepare(message_type, payload, topic=topic).payload

    def broadcast_encoded(
        self, envelope: bytes, *, exclude: str | Collection[str] | None = None
    ) -> int:
        """``broadcast`` of an envelope already encoded (by ``encode``, maybe on another node)."""
        return self._out.broadcast_prepared(PreparedMessage(envelope, text=True), exclude)

    def send_encoded_to(self, conn_id: str, envelope: bytes) -> int:
        return self._out.send_prepared_to(conn_id, PreparedMessage(envelope, text=True))

    def send_encoded_to_principal(self, principal_id: str, envelope: bytes) -> int:
        message = PreparedMessage(envelope, text=True)
        return self._out.send_prepared_to_principal(principal_id, message)

    # -- topics ------------------------------------------------------------

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
        """Set a topic's policy (see ``TopicPolicy``); the topic then persists.

        ``history_size`` / ``history_ttl``: the topic keeps its last
        ``history_size`` envelopes (0: none), each for ``history_ttl`` seconds
        (``math.inf``: no age bound); None takes ``HubConfig``'s default.
        """
        check_topic_name(name)
        check_history_settings(history_size, history_ttl)
        policy = TopicPolicy(
            publish=publish,
            subscribe=subscribe,
            presence=presence,
            slow_consumer=slow_consumer,
            subscribe_scope=subscribe_scope,
            publish_scope=publish_scope,
        )
        self._topics.configure(name, policy, history_size, history_ttl)

    def subscribe(self, conn_id: str, topic: str) -> list[HubEvent]:
        """Subscribe a connection server-side (no policy check, no reply)."""
        check_topic_name(topic)
        entry = self._out.registry.entries.get(conn_id)
        if entry is None:
            raise LocalProtocolError(f"no connection {conn_id!r} in the hub")
        return self._topics.subscribe(entry, topic)

    def unsubscribe(self, conn_id: str, topic: str) -> list[HubEvent]:
        """Unsubscribe a connection server-side; nothing if it was not subscribed."""
        entry = self._out.registry.entries.get(conn_id)
        events: list[HubEvent] = []
        if entry is not None and topic in entry.info.subscriptions:
            self._topics.leave(entry, topic, events)
        return events

    def subscribers(self, topic: str) -> list[str]:
        state = self._topics.topics.get(topic)
        return [] if state is None else [*state.subscribers, *state.waiting]

    def topic_seq(self, topic: str) -> int:
        """The last ``seq`` published on ``topic`` (0 if none or forgotten)."""
        state = self._topics.topics.get(topic)
        return 0 if state is None else state.seq

    def topic_epoch(self, topic: str) -> str | None:
        """The epoch of ``topic``'s stream: its ``seq`` counts within it (None
        while the topic does not exist)."""
        state = self._topics.topics.get(topic)
        return None if state is None else state.epoch

    def history(
        self, topic: str, *, since: tuple[int, str] | None = None, limit: int | None = None
    ) -> HistoryPage:
        """The envelopes ``topic`` keeps: after ``since`` = ``(seq, epoch)``
        when given (none unless that position is recoverable: same epoch,
        history reaching back to ``seq + 1``), else the newest; at most
        ``limit`` (default: all), oldest first. With a broker this node holds
        no history: read it with ``history_fetch``."""
        check_topic_name(topic)
        check_history_read(since, limit)
        return self._topics.read_history(topic, since, limit)

    # -- commands ----------------------------------------------------------

    def register_command(
        self, name: str, *, scope: str | None = None, timeout: float | None = None
    ) -> None:
        """Declare a command clients may call; ``scope`` is required of their
        principal. The handler itself lives in the driver."""
        self._commands.register(name, scope, timeout)

    def reply(self, conn_id: str, request_id: RequestId, payload: object) -> bool:
        """Answer a pending command with success. False (and nothing sent) if
        it is no longer pending: answered, timed out, or its connection gone."""
        return self._commands.reply(conn_id, request_id, payload)

    def reply_error(self, conn_id: str, request_id: RequestId, code: str, message: str) -> bool:
        """Answer a pending command with an error ``code`` (``command_failed``,
        ``shutting_down`` or the application's own); same rules as ``reply``."""
        return self._commands.reply_error(conn_id, request_id, code, message)

    def pending_commands(self, conn_id: str) -> list[RequestId]:
        return self._commands.table.of(conn_id)

    # -- time --------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must next run (a command deadline, an auth
        deadline, a credential expiry or the age bound of a history entry),
        or None."""
        deadline = self._commands.table.next_deadline()
        for timer in (self._conns.next_deadline(), self._topics.history.next_deadline()):
            if timer is not None and (deadline is None or timer < deadline):
                deadline = timer
        return deadline

    def handle_timer(self, now: float | None = None) -> list[HubEvent]:
        """Answer ``command_timeout`` for every command past its deadline;
        close connections whose auth deadline passed or whose credentials
        expired (1008); drop history entries past their age."""
        if now is None:
            now = self._out.clock()
        self._conns.expire(now)
        self._topics.history.expire(now)
        return self._commands.expire(now)

    # -- observation ---------------------------------------------------------

    def stats(self) -> HubStats:
        topics = self._topics.topics
        return HubStats.snapshot(
            self._out.counters,
            connections=len(self._out.registry),
            subscriptions={
                t.name: len(t.subscribers) + len(t.waiting)
                for t in topics.values()
                if t.subscribers or t.waiting
            },
            pending_commands=self._commands.table.total,
            history_entries=self._topics.history.entries,
            history_bytes=self._topics.history.nbytes,
        )

    def footprint(self) -> dict[str, int]:
        """Sizes of every internal structure that grows with connections.

        All zero once every connection is removed (configured topics remain,
        empty); tests assert exactly that.
        """
        registry = self._out.registry
        topics = self._topics.topics.values()
        return {
            "connections": len(registry.entries),
            "principals": len(registry._by_principal),
            "hosts": len(registry._by_host),
            "live_topics": sum(1 for t in topics if not t.configured),
            "subscriptions": sum(len(t.subscribers) + len(t.waiting) for t in topics),
            "dropped_counters": sum(len(t.dropped) for t in topics),
            **self._commands.table.footprint(),
            "error_windows": self._out.error_windows,
            "awaiting_auth": len(registry.pending),
        }
