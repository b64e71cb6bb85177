"""What every part of the hub shares: its settings, clocks, registry and output.

``HubOutput`` encodes envelopes, queues them on connections (counting, and
waking each connection's writer through ``on_output``), closes connections,
and answers clients' mistakes with their error window. The other parts of the
hub (admission, topics, commands) hold one and change nothing but through it
and their own state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import Any

from .connection import State
from .envelope import Codec, ErrorCode, RequestId, encode_envelope
from .frames import PreparedMessage
from .hub_config import HubConfig
from .hub_stats import Counters
from .registry import HubConnection, Registry, _Entry

__all__ = ["CLOSE_RATE", "CLOSE_TOO_MANY_ERRORS", "HubOutput", "check_message_type"]

CLOSE_TOO_MANY_ERRORS = (1008, "too many invalid messages")
CLOSE_RATE = (1008, "message rate exceeded")


def _nobody_to_wake(conn_id: str) -> None:
    """``on_output`` of a hub driven by hand: its caller reads each connection's bytes."""


def check_message_type(message_type: str) -> None:
    if not isinstance(message_type, str) or not message_type:
        raise ValueError("message_type must be a non-empty string")


class HubOutput:
    """Settings, clocks, the registry, counters, and the one way out to clients.

    ``config`` may be replaced while the hub runs (the adapter does, before
    serving): every part reads it from here.
    """

    __slots__ = (
        "_errors",
        "_on_output",
        "clock",
        "codec",
        "config",
        "counters",
        "registry",
        "wall_clock",
    )

    def __init__(
        self,
        *,
        config: HubConfig,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        codec: Codec,
        on_output: Callable[[str], None] | None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.wall_clock = wall_clock
        self.codec = codec
        self.registry = Registry()
        self.counters = Counters()
        self._on_output = _nobody_to_wake if on_output is None else on_output
        self._errors: dict[str, deque[float]] = {}

    def prepare(self, message_type: str, payload: object, **fields: Any) -> PreparedMessage:
        """Encode one envelope, stamped with the wall clock, ready for many sends."""
        timestamp = int(self.wall_clock() * 1000)
        data = encode_envelope(
            message_type, payload, timestamp=timestamp, codec=self.codec, **fields
        )
        return PreparedMessage(data, text=True)

    def send(self, entry: _Entry, message: PreparedMessage) -> bool:
        """Queue on one connection if open; count; wake its writer."""
        return self.send_entries((entry,), message) == 1

    def send_each(self, conn_ids: Iterable[str], message: PreparedMessage) -> int:
        """``send`` to each of ``conn_ids`` (registered); how many got it."""
        return self.send_entries(map(self.registry.entries.__getitem__, conn_ids), message)

    def send_entries(self, entries: Iterable[_Entry], message: PreparedMessage) -> int:
        """``send`` to each of ``entries``; how many got it.

        The one place a queued message is counted and its writer woken. Kept
        tight for fan-out, where a publication to many subscribers spends most
        of its time: the counters are added up once at the end.
        """
        on_output = self._on_output
        opened = State.OPEN
        delivered = closes = 0
        high_water = self.counters.outbox_high_water
        for entry in entries:
            connection = entry.connection
            if connection.state is not opened:
                continue
            if connection.send_prepared(message):
                delivered += 1
                queued = connection.outbox_size
                if queued > high_water:  # noqa: PLR1730 (cheaper than calling max, per subscriber)
                    high_water = queued
            else:
                closes += 1
            on_output(entry.info.conn_id)
        counters = self.counters
        counters.messages_out += delivered
        counters.bytes_out += delivered * len(message.payload)
        counters.outbox_high_water = high_water
        counters.slow_consumer_closes += closes
        return delivered

    def notify(self, conn_id: str) -> None:
        self._on_output(conn_id)

    def close(
        self,
        conn_id: str,
        connection: HubConnection,
        close: tuple[int, str],
        *,
        policy: bool = False,
    ) -> None:
        """Start closing an open connection; ``policy`` counts it as a 1008 of ours."""
        connection.close(*close)
        if policy:
            self.counters.policy_closes += 1
        self.notify(conn_id)

    def client_error(
        self,
        entry: _Entry,
        request_id: RequestId | None,
        code: ErrorCode,
        message: str,
        close: tuple[int, str] = CLOSE_TOO_MANY_ERRORS,
    ) -> None:
        """Answer a client's mistake, count it, and close 1008 past the limit."""
        self.counters.error(code.value)
        if request_id is None:
            envelope = self.prepare("error", None, error=(code.value, message))
        else:
            envelope = self.prepare(
                "reply", None, id=request_id, ok=False, error=(code.value, message)
            )
        self.send(entry, envelope)
        conn_id = entry.info.conn_id
        now = self.clock()
        window = self._errors.get(conn_id)
        if window is None:
            window = self._errors[conn_id] = deque()
        window.append(now)
        horizon = now - self.config.error_window
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) > self.config.max_errors and entry.connection.state is State.OPEN:
            self.close(conn_id, entry.connection, close, policy=True)

    # -- direct sends (not to a topic) ---------------------------------------------

    def broadcast(
        self, message_type: str, payload: object, exclude: str | Collection[str] | None
    ) -> int:
        check_message_type(message_type)
        return self.broadcast_prepared(self.prepare(message_type, payload), exclude)

    def broadcast_prepared(
        self, message: PreparedMessage, exclude: str | Collection[str] | None
    ) -> int:
        if exclude is None:
            skip: frozenset[str] = frozenset()
        else:
            skip = frozenset((exclude,) if isinstance(exclude, str) else exclude)
        entries = self.registry.entries
        return self.send_entries([e for c, e in entries.items() if c not in skip], message)

    def send_to(self, conn_id: str, message_type: str, payload: object) -> int:
        check_message_type(message_type)
        return self.send_prepared_to(conn_id, self.prepare(message_type, payload))

    def send_prepared_to(self, conn_id: str, message: PreparedMessage) -> int:
        entry = self.registry.entries.get(conn_id)
        return int(entry is not None and self.send(entry, message))

    def send_to_principal(self, principal_id: str, message_type: str, payload: object) -> int:
        check_message_type(message_type)
        return self.send_prepared_to_principal(principal_id, self.prepare(message_type, payload))

    def send_prepared_to_principal(self, principal_id: str, message: PreparedMessage) -> int:
        return self.send_each(self.registry.of_principal(principal_id), message)

    def forget(self, conn_id: str) -> None:
        """Drop a departed connection's error window."""
        self._errors.pop(conn_id, None)

    @property
    def error_windows(self) -> int:
        return len(self._errors)
