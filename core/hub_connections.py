"""Who may be in the hub: admission, authentication and credential deadlines.

A connection enters either authenticated at the handshake (``add``) or
waiting for an ``auth`` message (``add_unauthenticated``), which it must send
before ``HubConfig.auth_timeout``. Credentials that expire close their
connection with 1008 unless refreshed by another ``auth`` message. Those
deadlines live in one heap of ``(monotonic time, conn id)``; an entry is
checked against the live state when it comes due, so a refresh or a departure
never has to search the heap.
"""

from __future__ import annotations

import heapq
from typing import Any

from .auth import Principal
from .connection import State
from .envelope import EnvelopeError, ErrorCode, Request, RequestId, parse_request
from .errors import LocalProtocolError
from .hub_events import AuthRequest, HubEvent
from .hub_output import HubOutput
from .registry import Admission, ConnectionInfo, HubConnection, Remote, _Entry, _Pending

__all__ = ["Connections", "auth_token"]

_CLOSE_AUTH_REQUIRED = (1008, "authentication required")
_CLOSE_AUTH_TIMEOUT = (1008, "authentication timeout")
_CLOSE_EXPIRED = (1008, "token expired")


def auth_token(request: Request) -> str | None:
    """The token of an ``auth`` request: ``payload.token``, a non-empty string."""
    payload = request.payload
    if isinstance(payload, dict):
        token = payload.get("token")
        if isinstance(token, str) and token:
            return token
    return None


class Connections:
    """Admission, authentication and the auth/expiry deadlines of connections."""

    __slots__ = ("_out", "timers")

    def __init__(self, out: HubOutput) -> None:
        self._out = out
        # Auth deadlines and credential expiries, (monotonic time, conn id);
        # entries are checked against the live state when they come due.
        self.timers: list[tuple[float, str]] = []

    def admit(self, principal_id: str | None, remote_host: str | None) -> Admission:
        cfg = self._out.config
        return self._out.registry.admit(
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
        principal: Principal,
        remote: Remote | None,
        metadata: dict[str, Any] | None,
    ) -> ConnectionInfo:
        if conn_id in self._out.registry.entries:
            raise LocalProtocolError(f"connection {conn_id!r} is already in the hub")
        if connection.state is not State.OPEN:
            raise LocalProtocolError(f"connection {conn_id!r} is not open")
        info = ConnectionInfo(
            conn_id=conn_id,
            principal=principal,
            remote=remote,
            connected_at=self._out.wall_clock(),
            metadata=dict(metadata or {}),
        )
        self._open(info, connection)
        return info

    def add_unauthenticated(
        self,
        conn_id: str,
        connection: HubConnection,
        remote: Remote | None,
        metadata: dict[str, Any] | None,
    ) -> None:
        registry = self._out.registry
        if conn_id in registry.entries or conn_id in registry.pending:
            raise LocalProtocolError(f"connection {conn_id!r} is already in the hub")
        if connection.state is not State.OPEN:
            raise LocalProtocolError(f"connection {conn_id!r} is not open")
        deadline = self._out.clock() + self._out.config.auth_timeout
        registry.add_pending(_Pending(conn_id, connection, remote, deadline, dict(metadata or {})))
        self._arm(deadline, conn_id)

    def authenticate(
        self, conn_id: str, principal: Principal, request_id: RequestId | None
    ) -> bool:
        out = self._out
        registry = out.registry
        pending = registry.pending.get(conn_id)
        if pending is not None:
            registry.pop_pending(conn_id)
            if pending.connection.state is not State.OPEN:
                return False
            admission = self.admit(principal.id, pending.host)
            if not admission.ok:
                out.close(conn_id, pending.connection, (1013, admission.reason))
                return False
            info = ConnectionInfo(
                conn_id=conn_id,
                principal=principal,
                remote=pending.remote,
                connected_at=out.wall_clock(),
                metadata=pending.metadata,
            )
            self._open(info, pending.connection, request_id)
            return True
        entry = registry.entries.get(conn_id)
        if entry is None or entry.connection.state is not State.OPEN:
            return False
        if principal.id != entry.info.principal.id:
            out.client_error(entry, request_id, ErrorCode.FORBIDDEN, "principal mismatch")
            return False
        entry.info.principal = principal
        self._set_expiry(entry)
        self._auth_reply(entry, principal, request_id)
        return True

    def reject_auth(self, conn_id: str, request_id: RequestId | None, reason: str) -> None:
        out = self._out
        pending = out.registry.pop_pending(conn_id)
        if pending is not None:
            if pending.connection.state is State.OPEN:
                out.close(conn_id, pending.connection, (1008, reason))
            return
        entry = out.registry.entries.get(conn_id)
        if entry is not None:
            out.client_error(entry, request_id, ErrorCode.UNAUTHORIZED, reason)

    def disconnect(self, conn_id: str, code: int, reason: str) -> bool:
        registry = self._out.registry
        entry = registry.entries.get(conn_id) or registry.pending.get(conn_id)
        if entry is None or entry.connection.state is not State.OPEN:
            return False
        self._out.close(conn_id, entry.connection, (code, reason))
        return True

    def close_all(self, code: int, reason: str) -> int:
        count = 0
        for conn_id, entry in self._out.registry.entries.items():
            if entry.connection.state is State.OPEN:
                self._out.close(conn_id, entry.connection, (code, reason))
                count += 1
        return count

    # -- auth messages -------------------------------------------------------------

    def on_unauthenticated(self, pending: _Pending, text: str) -> list[HubEvent]:
        """Only one ``auth`` message is allowed before credentials are accepted."""
        if pending.verifying or pending.connection.state is not State.OPEN:
            self.close_pending(pending, _CLOSE_AUTH_REQUIRED)
            return []
        out = self._out
        cfg = out.config
        request = parse_request(
            text, max_size=cfg.max_envelope_size, max_depth=cfg.max_depth, codec=out.codec
        )
        token = None
        if not isinstance(request, EnvelopeError) and request.message_type == "auth":
            token = auth_token(request)
        if token is None:
            self.close_pending(pending, _CLOSE_AUTH_REQUIRED)
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

    def on_auth(self, entry: _Entry, request: Request) -> list[HubEvent]:
        """An open connection renews its credentials with an ``auth`` message."""
        token = auth_token(request)
        if token is None:
            self._out.client_error(
                entry, request.id, ErrorCode.INVALID_ENVELOPE, "payload.token is required"
            )
            return []
        deadline = self._out.clock() + self._out.config.auth_timeout
        return [
            AuthRequest(
                conn_id=entry.info.conn_id,
                token=token,
                request_id=request.id,
                refresh=True,
                deadline=deadline,
            )
        ]

    def refuse_binary(self, pending: _Pending) -> None:
        self.close_pending(pending, _CLOSE_AUTH_REQUIRED)

    def close_pending(self, pending: _Pending, close: tuple[int, str]) -> None:
        self._out.registry.pop_pending(pending.conn_id)
        if pending.connection.state is State.OPEN:
            self._out.close(pending.conn_id, pending.connection, close, policy=True)

    # -- internals -----------------------------------------------------------------

    def _open(
        self,
        info: ConnectionInfo,
        connection: HubConnection,
        request_id: RequestId | None = None,
    ) -> None:
        out = self._out
        entry = out.registry.add(info, connection)
        self._set_expiry(entry)
        if request_id is not None:
            self._auth_reply(entry, info.principal, request_id)
        if out.config.send_welcome:
            welcome = out.prepare(
                "welcome", {"conn_id": info.conn_id, "principal": info.principal.id}
            )
            out.send(entry, welcome)

    def _auth_reply(
        self, entry: _Entry, principal: Principal, request_id: RequestId | None
    ) -> None:
        if request_id is not None:
            result = {"principal": principal.id, "expires_at": principal.expires_at}
            self._out.send(entry, self._out.prepare("reply", result, id=request_id, ok=True))

    def _set_expiry(self, entry: _Entry) -> None:
        """Turn the principal's wall-clock expiry into a monotonic deadline."""
        expires_at = entry.info.principal.expires_at
        if expires_at is None:
            entry.expires = None
            return
        out = self._out
        deadline = out.clock() + max(0.0, expires_at - out.wall_clock())
        entry.expires = deadline
        self._arm(deadline, entry.info.conn_id)

    # -- deadlines -----------------------------------------------------------------

    def _arm(self, deadline: float, conn_id: str) -> None:
        timers = self.timers
        heapq.heappush(timers, (deadline, conn_id))
        registry = self._out.registry
        live = len(registry.pending) + len(registry.entries)
        if len(timers) > 2 * live + 64:  # drop what removed connections left behind
            self.timers = [(when, cid) for when, cid in timers if self._timer_is_live(when, cid)]
            heapq.heapify(self.timers)

    def _timer_is_live(self, when: float, conn_id: str) -> bool:
        registry = self._out.registry
        pending = registry.pending.get(conn_id)
        if pending is not None:
            return pending.deadline == when
        entry = registry.entries.get(conn_id)
        return entry is not None and entry.expires == when

    def next_deadline(self) -> float | None:
        timers = self.timers
        while timers and not self._timer_is_live(*timers[0]):
            heapq.heappop(timers)  # its connection authenticated, refreshed or left
        return timers[0][0] if timers else None

    def expire(self, now: float) -> None:
        """Close connections whose auth deadline passed or whose credentials expired."""
        timers = self.timers
        registry = self._out.registry
        while timers and timers[0][0] <= now:
            when, conn_id = heapq.heappop(timers)
            pending = registry.pending.get(conn_id)
            if pending is not None and pending.deadline == when:
                self.close_pending(pending, _CLOSE_AUTH_TIMEOUT)
                continue
            entry = registry.entries.get(conn_id)
            if entry is not None and entry.expires == when and entry.connection.state is State.OPEN:
                self._out.close(conn_id, entry.connection, _CLOSE_EXPIRED, policy=True)
