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
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

from .auth import Principal
from .commands import Command, CommandTable
from .connection import State
from .envelope import (
    MAX_TOPIC_LENGTH,
    RESERVED_TYPES,
    Codec,
    EnvelopeError,
    ErrorCode,
    JsonCodec,
    Request,
    RequestId,
    encode_envelope,
    parse_request,
)
from .errors import LocalProtocolError
from .frames import PreparedMessage
from .hub_config import HubConfig
from .hub_events import (
    AuthRequest,
    BinaryReceived,
    CommandExpired,
    CommandRequest,
    HubEvent,
    PresenceChanged,
    Published,
)
from .hub_stats import Counters, HubStats
from .ratelimit import TokenBucket
from .registry import (
    Admission,
    ConnectionInfo,
    HubConnection,
    Registry,
    Remote,
    _Entry,
    _Pending,
)
from .topics import PublishPolicy, SlowConsumerPolicy, SubscribePolicy, Topic, TopicPolicy

__all__ = ["Hub"]

_CLOSE_TOO_MANY_ERRORS = (1008, "too many invalid messages")
_CLOSE_BINARY = (1003, "binary messages are not accepted")
_CLOSE_RATE = (1008, "message rate exceeded")
_CLOSE_AUTH_REQUIRED = (1008, "authentication required")
_CLOSE_AUTH_TIMEOUT = (1008, "authentication timeout")
_CLOSE_EXPIRED = (1008, "token expired")


def _check_topic_name(topic: str) -> None:
    if not isinstance(topic, str) or not 0 < len(topic) <= MAX_TOPIC_LENGTH:
        raise ValueError(f"topic must be a non-empty string of at most {MAX_TOPIC_LENGTH} chars")


def _auth_token(request: Request) -> str | None:
    """The token of an ``auth`` request: ``payload.token``, a non-empty string."""
    payload = request.payload
    if isinstance(payload, dict):
        token = payload.get("token")
        if isinstance(token, str) and token:
            return token
    return None


def _check_message_type(message_type: str) -> None:
    if not isinstance(message_type, str) or not message_type:
        raise ValueError("message_type must be a non-empty string")


class Hub:
    """Connections, topics, commands and counters of one server process.

    ``clock`` is monotonic (error windows, command deadlines); ``wall_clock``
    gives seconds since the epoch (envelope timestamps, ``connected_at``).
    ``codec`` replaces stdlib ``json``; ``default_topic`` is the policy of
    topics not configured with ``configure_topic``.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        config: HubConfig | None = None,
        on_output: Callable[[str], None] | None = None,
        codec: Codec | None = None,
        default_topic: TopicPolicy | None = None,
    ) -> None:
        self.config = config or HubConfig()
        self._clock = clock
        self._wall_clock = wall_clock
        self._on_output = on_output
        self._codec: Codec = codec or JsonCodec()
        self._default_topic = default_topic or TopicPolicy()
        self._registry = Registry()
        self._topics: dict[str, Topic] = {}
        self._commands = CommandTable()
        self._errors: dict[str, deque[float]] = {}
        self._counters = Counters()
        # Auth deadlines and credential expiries, (monotonic time, conn id);
        # entries are checked against the live state when they come due.
        self._timers: list[tuple[float, str]] = []

    # -- connections -------------------------------------------------------

    def admit(self, principal_id: str | None, remote_host: str | None) -> Admission:
        """May one more connection of this principal from this host open?

        Call at the handshake, before ``accept``; on refusal answer with
        ``reject(admission.status, admission.reason, headers=admission.headers)``.
        ``principal_id=None`` admits a connection that will authenticate by
        message (``add_unauthenticated``): only the total and per-host bounds
        apply until ``authenticate`` checks the principal's.
        """
        cfg = self.config
        return self._registry.admit(
            principal_id,
            remote_host,
            max_total=cfg.max_connections,
            max_per_principal=cfg.max_per_principal,
            max_per_host=cfg.max_per_host,
            retry_after=cfg.retry_after,
        )

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
        if conn_id in self._registry.entries:
            raise LocalProtocolError(f"connection {conn_id!r} is already in the hub")
        if connection.state is not State.OPEN:
            raise LocalProtocolError(f"connection {conn_id!r} is not open")
        info = ConnectionInfo(
            conn_id=conn_id,
            principal=principal,
            remote=remote,
            connected_at=self._wall_clock(),
            metadata=dict(metadata or {}),
        )
        self._open(info, connection)
        return info

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
        if conn_id in self._registry.entries or conn_id in self._registry.pending:
            raise LocalProtocolError(f"connection {conn_id!r} is already in the hub")
        if connection.state is not State.OPEN:
            raise LocalProtocolError(f"connection {conn_id!r} is not open")
        deadline = self._clock() + self.config.auth_timeout
        self._registry.add_pending(
            _Pending(conn_id, connection, remote, deadline, dict(metadata or {}))
        )
        self._arm(deadline, conn_id)

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
        pending = self._registry.pending.get(conn_id)
        if pending is not None:
            self._registry.pop_pending(conn_id)
            if pending.connection.state is not State.OPEN:
                return False
            admission = self.admit(principal.id, pending.host)
            if not admission.ok:
                pending.connection.close(1013, admission.reason)
                self._notify(conn_id)
                return False
            info = ConnectionInfo(
                conn_id=conn_id,
                principal=principal,
                remote=pending.remote,
                connected_at=self._wall_clock(),
                metadata=pending.metadata,
            )
            self._open(info, pending.connection, request_id)
            return True
        entry = self._registry.entries.get(conn_id)
        if entry is None or entry.connection.state is not State.OPEN:
            return False
        if principal.id != entry.info.principal.id:
            self._client_error(entry, request_id, ErrorCode.FORBIDDEN, "principal mismatch")
            return False
        entry.info.principal = principal
        self._set_expiry(entry)
        self._auth_reply(entry, principal, request_id)
        return True

    def reject_auth(self, conn_id: str, request_id: RequestId | None, reason: str) -> None:
        """Refuse the credentials of an ``AuthRequest``: a waiting connection
        is closed with 1008 ``reason``; an open one gets ``unauthorized`` and
        keeps its current credentials until they expire."""
        pending = self._registry.pop_pending(conn_id)
        if pending is not None:
            if pending.connection.state is State.OPEN:
                pending.connection.close(1008, reason)
                self._notify(conn_id)
            return
        entry = self._registry.entries.get(conn_id)
        if entry is not None:
            self._client_error(entry, request_id, ErrorCode.UNAUTHORIZED, reason)

    def _open(
        self,
        info: ConnectionInfo,
        connection: HubConnection,
        request_id: RequestId | None = None,
    ) -> None:
        entry = self._registry.add(info, connection)
        self._set_expiry(entry)
        if request_id is not None:
            self._auth_reply(entry, info.principal, request_id)
        if self.config.send_welcome:
            welcome = self._prepare(
                "welcome", {"conn_id": info.conn_id, "principal": info.principal.id}
            )
            self._send(entry, welcome)

    def _auth_reply(
        self, entry: _Entry, principal: Principal, request_id: RequestId | None
    ) -> None:
        if request_id is not None:
            result = {"principal": principal.id, "expires_at": principal.expires_at}
            self._send(entry, self._prepare("reply", result, id=request_id, ok=True))

    def _set_expiry(self, entry: _Entry) -> None:
        """Turn the principal's wall-clock expiry into a monotonic deadline."""
        expires_at = entry.info.principal.expires_at
        if expires_at is None:
            entry.expires = None
            return
        deadline = self._clock() + max(0.0, expires_at - self._wall_clock())
        entry.expires = deadline
        self._arm(deadline, entry.info.conn_id)

    def _arm(self, deadline: float, conn_id: str) -> None:
        timers = self._timers
        heapq.heappush(timers, (deadline, conn_id))
        live = len(self._registry.pending) + len(self._registry.entries)
        if len(timers) > 2 * live + 64:  # drop what removed connections left behind
            self._timers = [(when, cid) for when, cid in timers if self._timer_is_live(when, cid)]
            heapq.heapify(self._timers)

    def _timer_is_live(self, when: float, conn_id: str) -> bool:
        pending = self._registry.pending.get(conn_id)
        if pending is not None:
            return pending.deadline == when
        entry = self._registry.entries.get(conn_id)
        return entry is not None and entry.expires == when

    def remove(self, conn_id: str) -> list[HubEvent]:
        """Forget a connection (call on its ``Closed`` event). Idempotent.

        Leaves its topics (presence ``leave`` to the others), discards its
        pending commands and error history.
        """
        entry = self._registry.pop(conn_id)
        if entry is None:
            self._registry.pop_pending(conn_id)
            return []
        self._commands.forget(conn_id)
        self._errors.pop(conn_id, None)
        events: list[HubEvent] = []
        for name in list(entry.info.subscriptions):
            self._leave(entry, name, events)
        return events

    def connection(self, conn_id: str) -> ConnectionInfo | None:
        entry = self._registry.entries.get(conn_id)
        return None if entry is None else entry.info

    def connections(self) -> list[ConnectionInfo]:
        return [entry.info for entry in self._registry.entries.values()]

    def disconnect(self, conn_id: str, code: int = 1008, reason: str = "") -> bool:
        """Start closing one connection; False if unknown or not open."""
        entry = self._registry.entries.get(conn_id) or self._registry.pending.get(conn_id)
        if entry is None or entry.connection.state is not State.OPEN:
            return False
        entry.connection.close(code, reason)
        self._notify(conn_id)
        return True

    def close_all(self, code: int = 1001, reason: str = "server shutting down") -> int:
        """Start closing every open connection (shutdown); how many were open."""
        count = 0
        for conn_id, entry in self._registry.entries.items():
            if entry.connection.state is State.OPEN:
                entry.connection.close(code, reason)
                self._notify(conn_id)
                count += 1
        return count

    # -- input -------------------------------------------------------------

    def receive_text(self, conn_id: str, text: str) -> list[HubEvent]:
        """Handle one client text message. Never raises on client input."""
        entry = self._registry.entries.get(conn_id)
        if entry is None or entry.connection.state is not State.OPEN:
            pending = self._registry.pending.get(conn_id)
            return [] if pending is None else self._on_unauthenticated(pending, text)
        counters = self._counters
        counters.messages_in += 1
        counters.bytes_in += len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
        cfg = self.config
        if not self._within_rate(entry):
            self._client_error(
                entry, None, ErrorCode.RATE_LIMITED, "message rate exceeded", _CLOSE_RATE
            )
            return []
        request = parse_request(
            text, max_size=cfg.max_envelope_size, max_depth=cfg.max_depth, codec=self._codec
        )
        if isinstance(request, EnvelopeError):
            self._client_error(entry, request.request_id, request.code, request.message)
            return []
        kind = request.message_type
        if kind == "auth":
            token = _auth_token(request)
            if token is None:
                self._client_error(
                    entry, request.id, ErrorCode.INVALID_ENVELOPE, "payload.token is required"
                )
                return []
            deadline = self._clock() + cfg.auth_timeout
            return [
                AuthRequest(
                    conn_id=conn_id,
                    token=token,
                    request_id=request.id,
                    refresh=True,
                    deadline=deadline,
                )
            ]
        if kind == "subscribe":
            return self._on_subscribe(entry, request)
        if kind == "unsubscribe":
            return self._on_unsubscribe(entry, request)
        if kind == "publish":
            return self._on_publish(entry, request)
        if request.id is None:
            self._client_error(
                entry, None, ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown message type {kind!r}"
            )
            return []
        return self._on_command(entry, request, request.id)

    def receive_binary(self, conn_id: str, data: bytes) -> list[HubEvent]:
        """Report a binary message, or close with 1003 if binary is not accepted."""
        entry = self._registry.entries.get(conn_id)
        if entry is None or entry.connection.state is not State.OPEN:
            pending = self._registry.pending.get(conn_id)
            if pending is not None:
                self._close_pending(pending, _CLOSE_AUTH_REQUIRED)
            return []
        if not self._within_rate(entry):
            self._client_error(
                entry, None, ErrorCode.RATE_LIMITED, "message rate exceeded", _CLOSE_RATE
            )
            return []
        self._counters.messages_in += 1
        self._counters.bytes_in += len(data)
        if self.config.accept_binary:
            return [BinaryReceived(conn_id=conn_id, data=bytes(data))]
        entry.connection.close(*_CLOSE_BINARY)
        self._notify(conn_id)
        return []

    # -- output ------------------------------------------------------------

    def broadcast(
        self, message_type: str, payload: object, *, exclude: str | Collection[str] | None = None
    ) -> int:
        """Send one envelope to every open connection (but ``exclude``)."""
        _check_message_type(message_type)
        message = self._prepare(message_type, payload)
        if exclude is None:
            skip: frozenset[str] = frozenset()
        else:
            skip = frozenset((exclude,) if isinstance(exclude, str) else exclude)
        count = 0
        for conn_id, entry in self._registry.entries.items():
            if conn_id not in skip and self._send(entry, message):
                count += 1
        return count

    def send_to(self, conn_id: str, message_type: str, payload: object) -> int:
        """Send to one connection; 1 if queued, else 0."""
        _check_message_type(message_type)
        message = self._prepare(message_type, payload)
        entry = self._registry.entries.get(conn_id)
        return int(entry is not None and self._send(entry, message))

    def send_to_principal(self, principal_id: str, message_type: str, payload: object) -> int:
        """Send to every connection of one principal (all of a user's tabs)."""
        _check_message_type(message_type)
        message = self._prepare(message_type, payload)
        count = 0
        for conn_id in self._registry.of_principal(principal_id):
            if self._send(self._registry.entries[conn_id], message):
                count += 1
        return count

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
        A topic that is neither configured nor subscribed does not exist:
        nothing is delivered and no ``seq`` is used.
        """
        _check_topic_name(topic)
        _check_message_type(message_type)
        state = self._topics.get(topic)
        if state is None:
            return 0
        return self._publish(state, payload, message_type, droppable)[1]

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
    ) -> None:
        """Set a topic's policy (see ``TopicPolicy``); the topic then persists."""
        _check_topic_name(name)
        policy = TopicPolicy(
            publish=publish,
            subscribe=subscribe,
            presence=presence,
            slow_consumer=slow_consumer,
            subscribe_scope=subscribe_scope,
            publish_scope=publish_scope,
        )
        state = self._topics.get(name)
        if state is None:
            self._topics[name] = Topic(name=name, policy=policy, configured=True)
        else:
            state.policy = policy
            state.configured = True
            if slow_consumer == "disconnect":
                state.dropped.clear()

    def subscribe(self, conn_id: str, topic: str) -> list[HubEvent]:
        """Subscribe a connection server-side (no policy check, no reply)."""
        _check_topic_name(topic)
        entry = self._registry.entries.get(conn_id)
        if entry is None:
            raise LocalProtocolError(f"no connection {conn_id!r} in the hub")
        events: list[HubEvent] = []
        if topic not in entry.info.subscriptions:
            state = self._join(entry, topic)
            self._presence(state, entry, True, events)
        return events

    def unsubscribe(self, conn_id: str, topic: str) -> list[HubEvent]:
        """Unsubscribe a connection server-side; nothing if it was not subscribed."""
        entry = self._registry.entries.get(conn_id)
        events: list[HubEvent] = []
        if entry is not None and topic in entry.info.subscriptions:
            self._leave(entry, topic, events)
        return events

    def subscribers(self, topic: str) -> list[str]:
        state = self._topics.get(topic)
        return [] if state is None else list(state.subscribers)

    def topic_seq(self, topic: str) -> int:
        """The last ``seq`` published on ``topic`` (0 if none or forgotten)."""
        state = self._topics.get(topic)
        return 0 if state is None else state.seq

    # -- commands ----------------------------------------------------------

    def register_command(
        self, name: str, *, scope: str | None = None, timeout: float | None = None
    ) -> None:
        """Declare a command clients may call; ``scope`` is required of their
        principal. The handler itself lives in the driver."""
        _check_message_type(name)
        if name in RESERVED_TYPES:
            raise ValueError(f"{name!r} is a reserved message type")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        default = self.config.default_command_timeout
        self._commands.register(
            name, Command(scope=scope, timeout=default if timeout is None else timeout)
        )

    def reply(self, conn_id: str, request_id: RequestId, payload: object) -> bool:
        """Answer a pending command with success. False (and nothing sent) if
        it is no longer pending: answered, timed out, or its connection gone."""
        if not self._commands.is_pending(conn_id, request_id):
            return False
        message = self._prepare("reply", payload, id=request_id, ok=True)
        self._commands.take(conn_id, request_id)
        return self._send(self._registry.entries[conn_id], message)

    def reply_error(self, conn_id: str, request_id: RequestId, code: str, message: str) -> bool:
        """Answer a pending command with an error ``code`` (``command_failed``,
        ``shutting_down`` or the application's own); same rules as ``reply``."""
        if not isinstance(code, str) or not code:
            raise ValueError("code must be a non-empty string")
        if not self._commands.is_pending(conn_id, request_id):
            return False
        envelope = self._prepare("reply", None, id=request_id, ok=False, error=(code, message))
        self._commands.take(conn_id, request_id)
        self._counters.command_errors += 1
        self._counters.error(code)
        return self._send(self._registry.entries[conn_id], envelope)

    def pending_commands(self, conn_id: str) -> list[RequestId]:
        return self._commands.of(conn_id)

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must next run (a command deadline, an auth
        deadline or a credential expiry), or None."""
        deadline = self._commands.next_deadline()
        timers = self._timers
        while timers and not self._timer_is_live(*timers[0]):
            heapq.heappop(timers)  # its connection authenticated, refreshed or left
        if timers and (deadline is None or timers[0][0] < deadline):
            return timers[0][0]
        return deadline

    def handle_timer(self, now: float | None = None) -> list[HubEvent]:
        """Answer ``command_timeout`` for every command past its deadline;
        close connections whose auth deadline passed or whose credentials
        expired (1008)."""
        if now is None:
            now = self._clock()
        self._expire_credentials(now)
        events: list[HubEvent] = []
        code = ErrorCode.COMMAND_TIMEOUT.value
        for conn_id, request_id, pending in self._commands.expire(now):
            self._counters.command_errors += 1
            self._counters.error(code)
            reply = self._prepare(
                "reply", None, id=request_id, ok=False, error=(code, "command timed out")
            )
            self._send(self._registry.entries[conn_id], reply)
            events.append(CommandExpired(conn_id=conn_id, request_id=request_id, name=pending.name))
        return events

    def _expire_credentials(self, now: float) -> None:
        timers = self._timers
        registry = self._registry
        while timers and timers[0][0] <= now:
            when, conn_id = heapq.heappop(timers)
            pending = registry.pending.get(conn_id)
            if pending is not None and pending.deadline == when:
                self._close_pending(pending, _CLOSE_AUTH_TIMEOUT)
                continue
            entry = registry.entries.get(conn_id)
            if entry is not None and entry.expires == when and entry.connection.state is State.OPEN:
                entry.connection.close(*_CLOSE_EXPIRED)
                self._counters.policy_closes += 1
                self._notify(conn_id)

    # -- observation ---------------------------------------------------------

    def stats(self) -> HubStats:
        return HubStats.snapshot(
            self._counters,
            connections=len(self._registry),
            subscriptions={
                t.name: len(t.subscribers) for t in self._topics.values() if t.subscribers
            },
            pending_commands=self._commands.total,
        )

    def footprint(self) -> dict[str, int]:
        """Sizes of every internal structure that grows with connections.

        All zero once every connection is removed (configured topics remain,
        empty); tests assert exactly that.
        """
        registry = self._registry
        return {
            "connections": len(registry.entries),
            "principals": len(registry._by_principal),
            "hosts": len(registry._by_host),
            "live_topics": sum(1 for t in self._topics.values() if not t.configured),
            "subscriptions": sum(len(t.subscribers) for t in self._topics.values()),
            "dropped_counters": sum(len(t.dropped) for t in self._topics.values()),
            **self._commands.footprint(),
            "error_windows": len(self._errors),
            "awaiting_auth": len(registry.pending),
        }

    # -- client requests -----------------------------------------------------

    def _on_unauthenticated(self, pending: _Pending, text: str) -> list[HubEvent]:
        """Only one ``auth`` message is allowed before credentials are accepted."""
        if pending.verifying or pending.connection.state is not State.OPEN:
            self._close_pending(pending, _CLOSE_AUTH_REQUIRED)
            return []
        cfg = self.config
        request = parse_request(
            text, max_size=cfg.max_envelope_size, max_depth=cfg.max_depth, codec=self._codec
        )
        token = None
        if not isinstance(request, EnvelopeError) and request.message_type == "auth":
            token = _auth_token(request)
        if token is None:
            self._close_pending(pending, _CLOSE_AUTH_REQUIRED)
            return []
        assert not isinstance(request, EnvelopeError)
        pending.verifying = True
        return [
            AuthRequest(
                conn_id=pending.conn_id,
                token=token,
                request_id=request.id,
                refresh=False,
                deadline=pending.deadline,
            )
        ]

    def _close_pending(self, pending: _Pending, close: tuple[int, str]) -> None:
        self._registry.pop_pending(pending.conn_id)
        if pending.connection.state is State.OPEN:
            pending.connection.close(*close)
            self._counters.policy_closes += 1
            self._notify(pending.conn_id)

    def _within_rate(self, entry: _Entry) -> bool:
        """Take one message from the connection's inbound-rate bucket.

        The bucket is made at the first message: a fresh bucket is full, as one
        made at the handshake would still be, and connections that never send
        (most subscribers) never need one.
        """
        bucket = entry.bucket
        if bucket is None:
            cfg = self.config
            if cfg.message_rate is None:
                return True
            bucket = entry.bucket = TokenBucket(cfg.message_rate, cfg.message_burst)
        return bucket.take(self._clock())

    def _on_subscribe(self, entry: _Entry, request: Request) -> list[HubEvent]:
        name = request.topic
        if name is None:
            self._client_error(entry, request.id, ErrorCode.INVALID_ENVELOPE, "topic is required")
            return []
        info = entry.info
        events: list[HubEvent] = []
        state = self._topics.get(name)
        joined = False
        if name not in info.subscriptions:
            policy = self._default_topic if state is None else state.policy
            if not policy.may_subscribe(info, name):
                self._client_error(entry, request.id, ErrorCode.FORBIDDEN, "subscription refused")
                return []
            if len(info.subscriptions) >= self.config.max_subscriptions:
                self._client_error(
                    entry, request.id, ErrorCode.TOO_MANY_SUBSCRIPTIONS, "too many subscriptions"
                )
                return []
            state = self._join(entry, name)
            joined = True
        assert state is not None
        if request.id is not None:
            result: dict[str, object] = {"topic": name, "seq": state.seq}
            if state.policy.presence:
                result["present"] = [self._member(cid) for cid in state.subscribers]
            self._send(entry, self._prepare("reply", result, id=request.id, ok=True))
        if joined:
            self._presence(state, entry, True, events)
        return events

    def _on_unsubscribe(self, entry: _Entry, request: Request) -> list[HubEvent]:
        name = request.topic
        if name is None:
            self._client_error(entry, request.id, ErrorCode.INVALID_ENVELOPE, "topic is required")
            return []
        events: list[HubEvent] = []
        if request.id is not None:
            self._send(entry, self._prepare("reply", {"topic": name}, id=request.id, ok=True))
        if name in entry.info.subscriptions:
            self._leave(entry, name, events)
        return events

    def _on_publish(self, entry: _Entry, request: Request) -> list[HubEvent]:
        name = request.topic
        if name is None:
            self._client_error(entry, request.id, ErrorCode.INVALID_ENVELOPE, "topic is required")
            return []
        state = self._topics.get(name)
        policy = self._default_topic if state is None else state.policy
        if not policy.may_publish(entry.info, name):
            self._client_error(entry, request.id, ErrorCode.FORBIDDEN, "publishing refused")
            return []
        seq, delivered = 0, 0
        if state is not None:
            droppable = state.policy.slow_consumer == "drop"
            seq, delivered = self._publish(state, request.payload, "message", droppable)
        if request.id is not None:
            result = {"topic": name, "seq": seq, "delivered": delivered}
            self._send(entry, self._prepare("reply", result, id=request.id, ok=True))
        return [
            Published(
                conn_id=entry.info.conn_id,
                topic=name,
                seq=seq,
                payload=request.payload,
                delivered=delivered,
            )
        ]

    def _on_command(self, entry: _Entry, request: Request, request_id: RequestId) -> list[HubEvent]:
        name = request.message_type
        command = self._commands.get(name)
        info = entry.info
        if command is None:
            self._client_error(entry, request_id, ErrorCode.UNKNOWN_COMMAND, f"no command {name!r}")
            return []
        if command.scope is not None and command.scope not in info.principal.scopes:
            self._client_error(entry, request_id, ErrorCode.FORBIDDEN, "missing scope")
            return []
        if self._commands.is_pending(info.conn_id, request_id):
            self._client_error(
                entry, request_id, ErrorCode.DUPLICATE_ID, "a request with this id is pending"
            )
            return []
        if self._commands.count(info.conn_id) >= self.config.max_pending_commands:
            self._client_error(
                entry, request_id, ErrorCode.TOO_MANY_PENDING, "too many pending commands"
            )
            return []
        deadline = self._clock() + command.timeout
        self._commands.start(info.conn_id, request_id, name, deadline)
        self._counters.commands += 1
        return [
            CommandRequest(
                conn_id=info.conn_id,
                request_id=request_id,
                name=name,
                payload=request.payload,
                principal=info.principal,
                deadline=deadline,
            )
        ]

    def _client_error(
        self,
        entry: _Entry,
        request_id: RequestId | None,
        code: ErrorCode,
        message: str,
        close: tuple[int, str] = _CLOSE_TOO_MANY_ERRORS,
    ) -> None:
        """Answer a client's mistake, count it, and close 1008 past the limit."""
        self._counters.error(code.value)
        if request_id is None:
            envelope = self._prepare("error", None, error=(code.value, message))
        else:
            envelope = self._prepare(
                "reply", None, id=request_id, ok=False, error=(code.value, message)
            )
        self._send(entry, envelope)
        conn_id = entry.info.conn_id
        now = self._clock()
        window = self._errors.get(conn_id)
        if window is None:
            window = self._errors[conn_id] = deque()
        window.append(now)
        horizon = now - self.config.error_window
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) > self.config.max_errors and entry.connection.state is State.OPEN:
            entry.connection.close(*close)
            self._counters.policy_closes += 1
            self._notify(conn_id)

    # -- topic internals -------------------------------------------------------

    def _join(self, entry: _Entry, name: str) -> Topic:
        state = self._topics.get(name)
        if state is None:
            state = self._topics[name] = Topic(name=name, policy=self._default_topic)
        state.subscribers[entry.info.conn_id] = None
        entry.info.subscriptions.add(name)
        return state

    def _leave(self, entry: _Entry, name: str, events: list[HubEvent]) -> None:
        conn_id = entry.info.conn_id
        entry.info.subscriptions.discard(name)
        state = self._topics[name]
        del state.subscribers[conn_id]
        state.dropped.pop(conn_id, None)
        self._presence(state, entry, False, events)
        if state.disposable:
            del self._topics[name]

    def _member(self, conn_id: str) -> dict[str, str]:
        return {"conn_id": conn_id, "principal": self._registry.entries[conn_id].info.principal.id}

    def _presence(self, state: Topic, entry: _Entry, joined: bool, events: list[HubEvent]) -> None:
        if not state.policy.presence:
            return
        info = entry.info
        payload = {
            "event": "join" if joined else "leave",
            "conn_id": info.conn_id,
            "principal": info.principal.id,
        }
        message = self._prepare("presence", payload, topic=state.name)
        entries = self._registry.entries
        for conn_id in state.subscribers:
            self._send(entries[conn_id], message)
        events.append(
            PresenceChanged(
                topic=state.name,
                conn_id=info.conn_id,
                principal_id=info.principal.id,
                joined=joined,
            )
        )

    def _publish(
        self, state: Topic, payload: object, message_type: str, droppable: bool
    ) -> tuple[int, int]:
        """Encode once with the next seq, deliver under the topic's policy."""
        seq = state.seq + 1
        message = self._prepare(message_type, payload, topic=state.name, seq=seq)
        state.seq = seq
        may_drop = droppable and state.policy.slow_consumer == "drop"
        entries = self._registry.entries
        notices: dict[int, PreparedMessage] = {}
        delivered = 0
        for conn_id in state.subscribers:
            entry = entries[conn_id]
            connection = entry.connection
            if connection.state is not State.OPEN:
                continue
            owed = state.dropped.get(conn_id, 0)
            if not owed and not may_drop:
                delivered += self._send(entry, message)
                continue
            cap = connection.limits.max_outbox_size
            queued = connection.outbox_size
            size = len(message.frame(connection.deflate))
            if not owed:
                if queued and queued + size > cap:
                    state.dropped[conn_id] = 1
                    self._counters.drops += 1
                else:
                    delivered += self._send(entry, message)
                continue
            notice = notices.get(owed)
            if notice is None:
                notice = notices[owed] = self._prepare("dropped", {"count": owed}, topic=state.name)
            notice_size = len(notice.frame(connection.deflate))
            if not queued and notice_size + size > cap:
                # Only this message fits an empty outbox: it goes alone, the
                # notice waits for the next message (docs/protocol.md).
                delivered += self._send(entry, message)
            elif may_drop and queued + notice_size + size > cap:
                state.dropped[conn_id] = owed + 1
                self._counters.drops += 1
            else:
                del state.dropped[conn_id]
                if self._send(entry, notice):
                    delivered += self._send(entry, message)
        return seq, delivered

    # -- sending -----------------------------------------------------------------

    def _prepare(self, message_type: str, payload: object, **fields: Any) -> PreparedMessage:
        timestamp = int(self._wall_clock() * 1000)
        data = encode_envelope(
            message_type, payload, timestamp=timestamp, codec=self._codec, **fields
        )
        return PreparedMessage(data, text=True)

    def _send(self, entry: _Entry, message: PreparedMessage) -> bool:
        """Queue on one connection if open; count; wake its writer."""
        connection = entry.connection
        if connection.state is not State.OPEN:
            return False
        counters = self._counters
        if connection.send_prepared(message):
            counters.messages_out += 1
            counters.bytes_out += len(message.payload)
            size = connection.outbox_size
            counters.outbox_high_water = max(counters.outbox_high_water, size)
            ok = True
        else:
            counters.slow_consumer_closes += 1
            ok = False
        self._notify(entry.info.conn_id)
        return ok

    def _notify(self, conn_id: str) -> None:
        if self._on_output is not None:
            self._on_output(conn_id)
