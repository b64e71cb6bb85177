"""Client messages into the hub: rate limit, parse, and hand to the part concerned.

Text from an open connection is counted, checked against its inbound-rate
bucket, parsed into a ``Request`` (or answered with the ``EnvelopeError``'s
code) and dispatched by message type: ``auth`` to ``Connections``,
``subscribe``/``unsubscribe``/``publish``/``history`` to ``Topics``, any other type with
an ``id`` to ``Commands``. A connection still waiting for credentials may
only send its ``auth`` message.
"""

from __future__ import annotations

from .connection import State
from .envelope import EnvelopeError, ErrorCode, parse_request
from .hub_commands import Commands
from .hub_connections import Connections
from .hub_events import BinaryReceived, HubEvent
from .hub_output import CLOSE_RATE, HubOutput
from .hub_topics import Topics
from .ratelimit import TokenBucket
from .registry import _Entry

__all__ = ["HubInput"]

_CLOSE_BINARY = (1003, "binary messages are not accepted")


class HubInput:
    """Dispatch of client text and binary messages to the hub's parts."""

    __slots__ = ("_commands", "_conns", "_out", "_topics")

    def __init__(
        self, out: HubOutput, conns: Connections, topics: Topics, commands: Commands
    ) -> None:
        self._out = out
        self._conns = conns
        self._topics = topics
        self._commands = commands

    def text(self, conn_id: str, text: str) -> list[HubEvent]:
        out = self._out
        entry = out.registry.entries.get(conn_id)
        if entry is None or entry.connection.state is not State.OPEN:
            pending = out.registry.pending.get(conn_id)
            return [] if pending is None else self._conns.on_unauthenticated(pending, text)
        counters = out.counters
        counters.messages_in += 1
        counters.bytes_in += len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
        cfg = out.config
        if not self._within_rate(entry):
            out.client_error(
                entry, None, ErrorCode.RATE_LIMITED, "message rate exceeded", CLOSE_RATE
            )
            return []
        request = parse_request(
            text, max_size=cfg.max_envelope_size, max_depth=cfg.max_depth, codec=out.codec
        )
        if isinstance(request, EnvelopeError):
            out.client_error(entry, request.request_id, request.code, request.message)
            return []
        kind = request.message_type
        if kind == "auth":
            return self._conns.on_auth(entry, request)
        if kind == "subscribe":
            return self._topics.on_subscribe(entry, request)
        if kind == "unsubscribe":
            return self._topics.on_unsubscribe(entry, request)
        if kind == "publish":
            return self._topics.on_publish(entry, request)
        if kind == "history":
            return self._topics.on_history(entry, request)
        if request.id is None:
            out.client_error(
                entry, None, ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown message type {kind!r}"
            )
            return []
        return self._commands.on_request(entry, request, request.id)

    def binary(self, conn_id: str, data: bytes) -> list[HubEvent]:
        out = self._out
        entry = out.registry.entries.get(conn_id)
        if entry is None or entry.connection.state is not State.OPEN:
            pending = out.registry.pending.get(conn_id)
            if pending is not None:
                self._conns.refuse_binary(pending)
            return []
        if not self._within_rate(entry):
            out.client_error(
                entry, None, ErrorCode.RATE_LIMITED, "message rate exceeded", CLOSE_RATE
            )
            return []
        out.counters.messages_in += 1
        out.counters.bytes_in += len(data)
        if out.config.accept_binary:
            return [BinaryReceived(conn_id=conn_id, data=bytes(data))]
        out.close(conn_id, entry.connection, _CLOSE_BINARY)
        return []

    def _within_rate(self, entry: _Entry) -> bool:
        """Take one message from the connection's inbound-rate bucket.

        The bucket is made at the first message: a fresh bucket is full, as one
        made at the handshake would still be, and connections that never send
        (most subscribers) never need one.
        """
        bucket = entry.bucket
        if bucket is None:
            cfg = self._out.config
            if cfg.message_rate is None:
                return True
            bucket = entry.bucket = TokenBucket(cfg.message_rate, cfg.message_burst)
        return bucket.take(self._out.clock())
