"""Commands: the names clients may call, and the requests awaiting a reply.

Each pending request is keyed by connection and request id, so a reply is
accepted exactly once. Deadlines live in a heap with lazy deletion: an
answered request leaves its entry behind until it reaches the top or the
stale entries outnumber the live ones, so replying stays O(1).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from .envelope import RequestId

__all__ = ["Command", "CommandTable", "Pending"]


@dataclass(frozen=True, slots=True)
class Command:
    """A registered command: the scope its caller needs, its time limit."""

    scope: str | None
    timeout: float


@dataclass(frozen=True, slots=True)
class Pending:
    """A request handed to the application and not answered yet."""

    name: str
    deadline: float
    token: int


_Deadline = tuple[float, int, str, RequestId]


class CommandTable:
    """Registered commands and pending requests, with their deadlines."""

    __slots__ = ("_commands", "_deadlines", "_pending", "_token", "total")

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}
        self._pending: dict[str, dict[RequestId, Pending]] = {}
        self._deadlines: list[_Deadline] = []
        self._token = 0
        self.total = 0

    def register(self, name: str, command: Command) -> None:
        self._commands[name] = command

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def of(self, conn_id: str) -> list[RequestId]:
        return list(self._pending.get(conn_id, ()))

    def count(self, conn_id: str) -> int:
        return len(self._pending.get(conn_id, ()))

    def is_pending(self, conn_id: str, request_id: RequestId) -> bool:
        pending = self._pending.get(conn_id)
        return pending is not None and request_id in pending

    def start(self, conn_id: str, request_id: RequestId, name: str, deadline: float) -> None:
        self._token += 1
        self._pending.setdefault(conn_id, {})[request_id] = Pending(name, deadline, self._token)
        self.total += 1
        heapq.heappush(self._deadlines, (deadline, self._token, conn_id, request_id))

    def take(self, conn_id: str, request_id: RequestId) -> Pending:
        """Remove a pending request (it must be pending) and return it."""
        pending = self._pending[conn_id]
        taken = pending.pop(request_id)
        if not pending:
            del self._pending[conn_id]
        self.total -= 1
        self._compact()
        return taken

    def forget(self, conn_id: str) -> None:
        """Discard every pending request of a connection that is gone."""
        pending = self._pending.pop(conn_id, None)
        if pending:
            self.total -= len(pending)
            self._compact()

    def next_deadline(self) -> float | None:
        heap = self._deadlines
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expire(self, now: float) -> list[tuple[str, RequestId, Pending]]:
        """Take every request whose deadline is at or before ``now``, oldest first."""
        expired: list[tuple[str, RequestId, Pending]] = []
        # ``take`` may rebuild the heap: always read it through ``self``.
        while self._deadlines and self._deadlines[0][0] <= now:
            item = heapq.heappop(self._deadlines)
            if self._live(item):
                _, _, conn_id, request_id = item
                expired.append((conn_id, request_id, self.take(conn_id, request_id)))
        return expired

    def footprint(self) -> dict[str, int]:
        return {
            "pending_connections": len(self._pending),
            "pending_commands": self.total,
            "deadlines": len(self._deadlines),
        }

    def _live(self, item: _Deadline) -> bool:
        _, token, conn_id, request_id = item
        pending = self._pending.get(conn_id)
        found = None if pending is None else pending.get(request_id)
        return found is not None and found.token == token

    def _compact(self) -> None:
        """Drop answered requests' deadlines once they outnumber live ones."""
        if not self.total:
            self._deadlines.clear()
        elif len(self._deadlines) > 2 * self.total + 32:
            self._deadlines = [item for item in self._deadlines if self._live(item)]
            heapq.heapify(self._deadlines)
