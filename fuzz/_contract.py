"""The connection contract, checked after every call a driver makes.

A ``Monitor`` drives one core connection the way an adapter does (feed
bytes, pull events, drain output, fire timers, take decisions) and checks,
after each call:

* the state moved along the core's transition table, and only in the ways
  that kind of call may move it (``CALL_RULES``);
* events follow the grammar of the connection's role (a request before
  ``Opened``, messages only while open, exactly one ``Closed``, nothing after
  it) and agree with the state;
* every byte written parses (``_checks``), and what the application sent
  reaches the wire intact and in order, unless a slow-consumer close dropped it;
* misuse raises at once and changes nothing;
* ``handle_timer(now)`` leaves no deadline at or before ``now``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import ClassVar

from _checks import SENDABLE_CLOSE_CODES, ClientOutput, ContractError, ServerOutput

from wshub.core import (
    BinaryMessage,
    ClientConnection,
    Closed,
    Connection,
    ConnectionClosedError,
    Event,
    HandshakeRequest,
    HttpRequest,
    LocalProtocolError,
    Opened,
    Rejected,
    ServerConnection,
    Side,
    State,
    TextMessage,
)
from wshub.core.connection import _TRANSITIONS

__all__ = ["CALL_RULES", "ClientMonitor", "Monitor", "ServerMonitor", "reachable"]

#: For each kind of call, the states it may leave the connection in, from
#: each state (staying put included). Independent of the core's own table:
#: this is what the public API promises about each method.
CALL_RULES: dict[str, dict[State, frozenset[State]]] = {
    "receive_data/server": {
        State.CONNECTING: frozenset({State.CONNECTING, State.DECIDING, State.CLOSED}),
        State.DECIDING: frozenset({State.DECIDING, State.CLOSED}),
        State.OPEN: frozenset({State.OPEN, State.CLOSED}),
        State.CLOSING: frozenset({State.CLOSING, State.CLOSED}),
        State.CLOSED: frozenset({State.CLOSED}),
    },
    "receive_data/client": {
        State.CONNECTING: frozenset({State.CONNECTING, State.OPEN, State.CLOSED}),
        State.OPEN: frozenset({State.OPEN, State.CLOSED}),
        State.CLOSING: frozenset({State.CLOSING, State.CLOSED}),
        State.CLOSED: frozenset({State.CLOSED}),
    },
    "receive_eof": {s: frozenset({State.CLOSED}) for s in State},
    "handle_timer": {
        State.CONNECTING: frozenset({State.CONNECTING, State.CLOSED}),
        State.DECIDING: frozenset({State.DECIDING, State.CLOSED}),
        State.OPEN: frozenset({State.OPEN, State.CLOSING, State.CLOSED}),
        State.CLOSING: frozenset({State.CLOSING, State.CLOSED}),
        State.CLOSED: frozenset({State.CLOSED}),
    },
    "accept": {State.DECIDING: frozenset({State.OPEN, State.CLOSED})},
    "respond": {State.DECIDING: frozenset({State.CLOSED})},
    "close": {
        State.OPEN: frozenset({State.CLOSING}),
        State.CLOSING: frozenset({State.CLOSING}),
        State.CLOSED: frozenset({State.CLOSED}),
    },
    "send": {State.OPEN: frozenset({State.OPEN, State.CLOSED})},
}

_RECEIVABLE = SENDABLE_CLOSE_CODES | {1005, 1006}


def reachable(before: State, after: State) -> bool:
    """Whether ``after`` follows ``before`` by zero or more steps of the core's table."""
    seen, todo = {before}, [before]
    while todo:
        for nxt in _TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return after in seen


class _Phase(Enum):
    START = "start"
    UPGRADE = "upgrade"  # server: HandshakeRequest reported
    HTTP = "http"  # server: HttpRequest reported
    REJECTED = "rejected"  # client: Rejected reported
    OPEN = "open"
    CLOSED = "closed"


# Per phase: which event types may come next, and the phase they lead to.
_SERVER_GRAMMAR: dict[_Phase, dict[type, _Phase]] = {
    _Phase.START: {HandshakeRequest: _Phase.UPGRADE, HttpRequest: _Phase.HTTP},
    _Phase.UPGRADE: {Opened: _Phase.OPEN},
    _Phase.HTTP: {},
    _Phase.OPEN: {TextMessage: _Phase.OPEN, BinaryMessage: _Phase.OPEN},
    _Phase.CLOSED: {},
}
_CLIENT_GRAMMAR: dict[_Phase, dict[type, _Phase]] = {
    _Phase.START: {Opened: _Phase.OPEN, Rejected: _Phase.REJECTED},
    _Phase.REJECTED: {},
    _Phase.OPEN: {TextMessage: _Phase.OPEN, BinaryMessage: _Phase.OPEN},
    _Phase.CLOSED: {},
}
# The states each phase allows (after the events of a call are pulled).
_PHASE_STATES: dict[_Phase, frozenset[State]] = {
    _Phase.START: frozenset({State.CONNECTING}),
    _Phase.UPGRADE: frozenset({State.DECIDING}),
    _Phase.HTTP: frozenset({State.DECIDING}),
    _Phase.REJECTED: frozenset({State.CONNECTING}),
    _Phase.OPEN: frozenset({State.OPEN, State.CLOSING}),
    _Phase.CLOSED: frozenset({State.CLOSED}),
}


class Monitor:
    """One connection under contract; subclasses know the role's handshake."""

    role = ""
    grammar: ClassVar[dict[_Phase, dict[type, _Phase]]] = {}

    def __init__(self, conn: Connection, wire: ServerOutput | ClientOutput) -> None:
        self.conn = conn
        self.wire = wire
        self.state = conn.state
        self.phase = _Phase.START
        self.events: list[Event] = []
        self.closed: Closed | None = None
        self.opened: Opened | None = None
        self.sent: list[str | bytes] = []  # accepted by send_*, not yet known lost
        #: Whether every message goes through ``send`` (not so when the hub sends).
        self.track_sent = True
        self._delivered = 0  # how many of ``sent`` were drained to the wire
        self._closed_from = State.CONNECTING  # the state the connection was in when it closed
        self._drained_closed = False  # output taken since Closed was reported
        if self.state is not State.CONNECTING:
            raise ContractError(f"a new connection starts in {self.state}")

    # -- driving ----------------------------------------------------------

    def call(self, rule: str, action: Callable[[], object]) -> list[Event]:
        """Run one core call of kind ``rule``; check the state and pull events."""
        before = self.conn.state
        action()
        return self.observe(rule, before)

    def receive(self, data: bytes) -> list[Event]:
        return self.call(f"receive_data/{self.role}", lambda: self.conn.receive_data(data))

    def receive_eof(self) -> list[Event]:
        return self.call("receive_eof", self.conn.receive_eof)

    def timers(self, now: float) -> list[Event]:
        """Fire the timers if a deadline has passed at ``now``."""
        deadline = self.conn.next_deadline()
        if deadline is None or deadline > now:
            return []
        return self.handle_timer(now)

    def handle_timer(self, now: float) -> list[Event]:
        events = self.call("handle_timer", lambda: self.conn.handle_timer(now))
        after = self.conn.next_deadline()
        if after is not None and after <= now:
            raise ContractError(f"deadline {after} survives handle_timer({now})")
        return events

    def sync(self) -> None:
        """Take in state changes made by another driver (the hub closing or
        sending): they must still follow the core's table."""
        now = self.conn.state
        if not reachable(self.state, now):
            raise ContractError(f"{self.state} -> {now} by no path of the table")
        self.state = now

    def pull(self) -> list[Event]:
        """Events from calls another driver made since the last check."""
        self.sync()
        return self.observe(None, self.state)

    def send(self, message: str | bytes) -> bool:
        """Send if open; record what must reach the wire."""
        if self.conn.state is not State.OPEN:
            return False
        empty = self.conn.outbox_size == 0
        result: list[bool] = []

        def action() -> None:
            if isinstance(message, str):
                result.append(self.conn.send_text(message))
            else:
                result.append(self.conn.send_binary(message))

        self.call("send", action)
        if result[0]:
            self.sent.append(message)
        elif empty:
            raise ContractError("a message into an empty outbox was refused")
        return result[0]

    def close(self, code: int, reason: str) -> None:
        self.call("close", lambda: self.conn.close(code, reason))

    def drain(self) -> bytes:
        """Take the output, as the writer task does, and read it as the peer."""
        data = self.conn.data_to_send()
        if self.conn.outbox_size:
            raise ContractError("outbox not empty after data_to_send")
        if data and self._drained_closed:
            raise ContractError("bytes written after Closed had been reported and drained")
        self.wire.feed(data)
        self._delivered = len(self.sent)
        self._check_close_frame()
        self._drained_closed = self.closed is not None
        return data

    def probe(self, action: Callable[[], object], errors: tuple[type[Exception], ...]) -> None:
        """Misuse: ``action`` must raise one of ``errors`` and change nothing."""
        conn = self.conn
        before = (conn.state, conn.outbox_size, conn.next_deadline(), conn.should_close_transport())
        try:
            action()
        except errors:
            pass
        else:
            raise ContractError(f"misuse in {conn.state} did not raise {errors}")
        after = (conn.state, conn.outbox_size, conn.next_deadline(), conn.should_close_transport())
        if after != before:
            raise ContractError(f"misuse changed the connection: {before} -> {after}")
        if conn.events_received():
            raise ContractError("misuse produced events")

    def probe_misuse(self) -> None:
        """Every misuse that is wrong in the current state."""
        state = self.conn.state
        self.probe(lambda: self.conn.close(1005), (ValueError,))
        if state is not State.OPEN:
            closed = state in (State.CLOSING, State.CLOSED)
            wrong = ConnectionClosedError if closed else LocalProtocolError
            self.probe(lambda: self.conn.send_text("x"), (wrong,))
            self.probe(lambda: self.conn.send_binary(b"x"), (wrong,))
        if state in (State.CONNECTING, State.DECIDING):
            self.probe(lambda: self.conn.close(1000), (LocalProtocolError,))

    def finish(self) -> None:
        """After EOF and a last drain: closed, silent, and the wire complete."""
        conn = self.conn
        if conn.state is not State.CLOSED or self.closed is None:
            raise ContractError(f"not closed after EOF: {conn.state}, {self.events[-3:]!r}")
        self.drain()
        if conn.data_to_send() or conn.events_received() or conn.outbox_size:
            raise ContractError("a closed connection still has output or events")
        if conn.next_deadline() is not None:
            raise ContractError("a closed connection still has a deadline")
        if not conn.should_close_transport():
            raise ContractError("closed without asking to close the transport")
        self.wire.finish()
        frames = self.wire.frames
        if self.track_sent and frames is not None and frames.messages != self.sent:
            raise ContractError(
                f"messages on the wire differ from those sent:\n{frames.messages!r}\n{self.sent!r}"
            )

    # -- checks -----------------------------------------------------------

    def observe(self, rule: str | None, before: State) -> list[Event]:
        """Check the state move of one call of kind ``rule`` (None: no call,
        only events to pull) and the events it produced."""
        after = self.conn.state
        if before is not self.state:
            raise ContractError(f"state changed outside any call: {self.state} -> {before}")
        if rule is None:
            if after is not before:
                raise ContractError(f"state changed without a call: {before} -> {after}")
        elif after is not before:
            if after not in _TRANSITIONS[before]:
                raise ContractError(f"{rule}: {before} -> {after} is not in the table")
            allowed = CALL_RULES[rule].get(before, frozenset())
            if after not in allowed:
                raise ContractError(f"{rule} may not move {before} to {after}")
        elif before not in CALL_RULES[rule]:
            raise ContractError(f"{rule} was allowed in {before}")
        self.state = after
        events = self.conn.events_received()
        for event in events:
            self._event(event, rule, before)
        self.events += events
        if after not in _PHASE_STATES[self.phase]:
            raise ContractError(f"state {after} in phase {self.phase.value}")
        if after is State.CLOSED and not self.conn.should_close_transport():
            raise ContractError("closed without asking to close the transport")
        return events

    def _event(self, event: Event, rule: str | None, before: State) -> None:
        if self.closed is not None:
            raise ContractError(f"{event!r} after {self.closed!r}")
        if isinstance(event, Closed):
            self._closed(event, before)
            return
        nxt = self.grammar[self.phase].get(type(event))
        if nxt is None:
            raise ContractError(f"{type(event).__name__} in phase {self.phase.value}")
        self.phase = nxt
        limit = self.conn.limits.max_message_size
        if isinstance(event, TextMessage) and len(event.data.encode("utf-8")) > limit:
            raise ContractError("text message over max_message_size reported")
        if isinstance(event, BinaryMessage) and len(event.data) > limit:
            raise ContractError("binary message over max_message_size reported")
        if isinstance(event, Opened):
            self.opened = event
        self._role_event(event, rule)

    def _role_event(self, event: Event, rule: str | None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _closed(self, event: Closed, before: State) -> None:
        if event.code not in _RECEIVABLE:
            raise ContractError(f"Closed with code {event.code}")
        if not isinstance(event.clean, bool) or not isinstance(event.initiator, Side):
            raise ContractError(f"malformed {event!r}")
        self.closed = event
        self.phase = _Phase.CLOSED
        if event.code == 1013 and event.initiator is Side.LOCAL:
            # Slow consumer: what was queued and not yet written is dropped.
            del self.sent[self._delivered :]
        self._closed_from = before

    def _check_close_frame(self) -> None:
        """Our close frame agrees with the Closed event and the state."""
        frames = self.wire.frames
        if frames is None or frames.close is None:
            return
        if self.conn.state not in (State.CLOSING, State.CLOSED):
            raise ContractError(f"close frame written while {self.conn.state}")
        event = self.closed
        if event is None or self._closed_from is not State.OPEN:
            return
        code, _ = frames.close
        if event.initiator is Side.REMOTE and event.clean:
            echo = None if event.code == 1005 else event.code
            if code != echo:
                raise ContractError(f"close {event.code} answered with {code}")
        elif event.initiator is Side.LOCAL and event.code not in (1006, code):
            raise ContractError(f"failed with {event.code} but wrote close {code}")


class ServerMonitor(Monitor):
    """A ServerConnection: request events, the application's decision, 101."""

    role = "server"
    grammar = _SERVER_GRAMMAR

    def __init__(self, conn: ServerConnection, *, compression: bool) -> None:
        self.server = conn
        self.output = ServerOutput(compression=compression)
        self._accepting = False
        super().__init__(conn, self.output)

    def _role_event(self, event: Event, rule: str | None) -> None:
        if isinstance(event, HandshakeRequest):
            if event.method != "GET" or event.header("sec-websocket-version") != "13":
                raise ContractError(f"HandshakeRequest for an invalid upgrade: {event!r}")
            self.output.upgrade_requested(
                event.header("sec-websocket-key"), event.subprotocols, event.extensions
            )
        elif isinstance(event, HttpRequest):
            self.output.plain_requested(event.method)
        elif isinstance(event, Opened) and not self._accepting:
            raise ContractError(f"server reported Opened during {rule}")

    def accept(self, subprotocol: str | None, principal: object = "fuzz") -> list[Event]:
        self.output.decide(101, subprotocol)
        self._accepting = True
        try:
            events = self.call(
                "accept", lambda: self.server.accept(principal, subprotocol=subprotocol)
            )
        finally:
            self._accepting = False
        if self.opened is None or self.opened.subprotocol != subprotocol:
            raise ContractError(f"accept({subprotocol!r}) reported {self.opened!r}")
        return events

    def respond(self, status: int, body: bytes) -> list[Event]:
        self.output.decide(status)
        return self.call("respond", lambda: self.server.respond(status, body=body))

    def reject(self, status: int, reason: str) -> list[Event]:
        self.output.decide(status)
        return self.call("respond", lambda: self.server.reject(status, reason))

    def drain(self) -> bytes:
        data = super().drain()
        opened = self.opened
        if self.output.status == 101 and opened and self.output.extensions != opened.extensions:
            raise ContractError(f"Opened says {opened.extensions}, 101 {self.output.extensions}")
        return data

    def probe_misuse(self) -> None:
        super().probe_misuse()
        state = self.conn.state
        if state is State.DECIDING:
            self.probe(lambda: self.server.respond(99), (ValueError,))
            if self.phase is _Phase.HTTP:
                self.probe(lambda: self.server.accept("x"), (LocalProtocolError,))
        else:
            self.probe(lambda: self.server.accept("x"), (LocalProtocolError,))
            self.probe(lambda: self.server.reject(403), (LocalProtocolError,))


class ClientMonitor(Monitor):
    """A ClientConnection: its request, then Opened or Rejected."""

    role = "client"
    grammar = _CLIENT_GRAMMAR

    def __init__(self, conn: ClientConnection, *, offered: tuple[str, ...]) -> None:
        self.client = conn
        self.output = ClientOutput()
        self.offered = offered
        super().__init__(conn, self.output)

    def _role_event(self, event: Event, rule: str | None) -> None:
        if isinstance(event, Opened):
            if rule != "receive_data/client":
                raise ContractError(f"client reported Opened during {rule}")
            if event.subprotocol is not None and event.subprotocol not in self.offered:
                raise ContractError(f"client opened with unoffered {event.subprotocol!r}")
            self.output.opened(event.extensions)
