"""Commands in the hub: which clients may call what, and exactly one reply each.

A client request that is not a reserved message type and has an ``id`` is a
command. The hub checks it (registered, scope, no duplicate pending id, the
per-connection bound), hands it to the driver as a ``CommandRequest`` and
answers it exactly once: with the application's reply, its error, or
``command_timeout`` at the deadline.
"""

from __future__ import annotations

from .commands import Command, CommandTable
from .envelope import RESERVED_TYPES, ErrorCode, Request, RequestId
from .hub_events import CommandExpired, CommandRequest, HubEvent
from .hub_output import HubOutput, check_message_type
from .registry import _Entry

__all__ = ["Commands"]


class Commands:
    """Registered commands and the requests awaiting the application's reply."""

    __slots__ = ("_out", "table")

    def __init__(self, out: HubOutput) -> None:
        self._out = out
        self.table = CommandTable()

    def register(self, name: str, scope: str | None, timeout: float | None) -> None:
        check_message_type(name)
        if name in RESERVED_TYPES:
            raise ValueError(f"{name!r} is a reserved message type")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        default = self._out.config.default_command_timeout
        self.table.register(
            name, Command(scope=scope, timeout=default if timeout is None else timeout)
        )

    def on_request(self, entry: _Entry, request: Request, request_id: RequestId) -> list[HubEvent]:
        out = self._out
        name = request.message_type
        table = self.table
        command = table.get(name)
        info = entry.info
        if command is None:
            out.client_error(entry, request_id, ErrorCode.UNKNOWN_COMMAND, f"no command {name!r}")
            return []
        if command.scope is not None and command.scope not in info.principal.scopes:
            out.client_error(entry, request_id, ErrorCode.FORBIDDEN, "missing scope")
            return []
        if table.is_pending(info.conn_id, request_id):
            out.client_error(
                entry, request_id, ErrorCode.DUPLICATE_ID, "a request with this id is pending"
            )
            return []
        if table.count(info.conn_id) >= out.config.max_pending_commands:
            out.client_error(
                entry, request_id, ErrorCode.TOO_MANY_PENDING, "too many pending commands"
            )
            return []
        deadline = out.clock() + command.timeout
        table.start(info.conn_id, request_id, name, deadline)
        out.counters.commands += 1
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

    def reply(self, conn_id: str, request_id: RequestId, payload: object) -> bool:
        table = self.table
        if not table.is_pending(conn_id, request_id):
            return False
        out = self._out
        message = out.prepare("reply", payload, id=request_id, ok=True)
        table.take(conn_id, request_id)
        return out.send(out.registry.entries[conn_id], message)

    def reply_error(self, conn_id: str, request_id: RequestId, code: str, message: str) -> bool:
        if not isinstance(code, str) or not code:
            raise ValueError("code must be a non-empty string")
        table = self.table
        if not table.is_pending(conn_id, request_id):
            return False
        out = self._out
        envelope = out.prepare("reply", None, id=request_id, ok=False, error=(code, message))
        table.take(conn_id, request_id)
        out.counters.command_errors += 1
        out.counters.error(code)
        return out.send(out.registry.entries[conn_id], envelope)

    def expire(self, now: float) -> list[HubEvent]:
        """Answer ``command_timeout`` for every command past its deadline."""
        out = self._out
        events: list[HubEvent] = []
        code = ErrorCode.COMMAND_TIMEOUT.value
        for conn_id, request_id, pending in self.table.expire(now):
            out.counters.command_errors += 1
            out.counters.error(code)
            reply = out.prepare(
                "reply", None, id=request_id, ok=False, error=(code, "command timed out")
            )
            out.send(out.registry.entries[conn_id], reply)
            events.append(CommandExpired(conn_id=conn_id, request_id=request_id, name=pending.name))
        return events
