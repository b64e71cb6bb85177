"""Who is connected: the hub's registry of connections and admission counts.

Counts per principal and per remote host are kept beside the registry so
admission at the handshake is O(1), and they drop back to nothing when the
last connection of a principal or host leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .auth import Principal
from .connection import State
from .deflate import DeflateParams
from .events import Headers
from .frames import PreparedMessage
from .hosts import is_loopback
from .limits import Limits
from .ratelimit import TokenBucket

__all__ = ["Admission", "ConnectionInfo", "HubConnection", "Registry", "Remote", "remote_host"]

#: A peer address as the driver knows it: ``(host, port)`` or a bare host.
Remote = tuple[str, int] | str


def remote_host(remote: Remote | None) -> str | None:
    """The host part of a remote address (what per-host limits count)."""
    if remote is None:
        return None
    return remote if isinstance(remote, str) else remote[0]


class HubConnection(Protocol):
    """What the hub needs of a connection; ``ServerConnection`` satisfies it."""

    @property
    def state(self) -> State: ...

    @property
    def limits(self) -> Limits: ...

    @property
    def outbox_size(self) -> int: ...

    @property
    def deflate(self) -> DeflateParams | None: ...

    def send_prepared(self, message: PreparedMessage) -> bool: ...

    def close(self, code: int = 1000, reason: str = "") -> None: ...


if TYPE_CHECKING:  # the connection core must keep satisfying the protocol
    from .server import ServerConnection

    _SERVER_IS_HUB_CONNECTION: type[HubConnection] = ServerConnection


@dataclass(slots=True, eq=False)
class ConnectionInfo:
    """One registered connection, as the application and policies see it.

    ``metadata`` belongs to the application; ``subscriptions`` is maintained
    by the hub (read it, do not change it).
    """

    conn_id: str
    principal: Principal
    remote: Remote | None
    connected_at: float
    metadata: dict[str, Any] = field(default_factory=dict)
    subscriptions: set[str] = field(default_factory=set)

    @property
    def host(self) -> str | None:
        return remote_host(self.remote)


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """The hub's answer at the handshake: ``ok``, or the HTTP refusal to send."""

    ok: bool
    status: int = 0
    reason: str = ""
    headers: Headers = ()


_ADMITTED = Admission(ok=True)


@dataclass(slots=True)
class _Entry:
    """An authenticated connection; ``bucket`` limits its inbound rate,
    ``expires`` is the monotonic time its credentials end."""

    info: ConnectionInfo
    connection: HubConnection
    bucket: TokenBucket | None = None
    expires: float | None = None


@dataclass(slots=True)
class _Pending:
    """A connection accepted without credentials, waiting for its ``auth``
    message until ``deadline``; ``verifying`` while the driver checks one."""

    conn_id: str
    connection: HubConnection
    remote: Remote | None
    deadline: float
    metadata: dict[str, Any]
    verifying: bool = False

    @property
    def host(self) -> str | None:
        return remote_host(self.remote)


class Registry:
    """Connections by id, with per-principal and per-host indexes."""

    __slots__ = ("_by_host", "_by_principal", "entries", "pending")

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        self.pending: dict[str, _Pending] = {}
        self._by_principal: dict[str, dict[str, None]] = {}
        self._by_host: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def admit(
        self,
        principal_id: str | None,
        host: str | None,
        *,
        max_total: int | None,
        max_per_principal: int | None,
        max_per_host: int | None,
        retry_after: int,
    ) -> Admission:
        headers = (("Retry-After", str(retry_after)),)
        if max_total is not None and len(self.entries) + len(self.pending) >= max_total:
            return Admission(ok=False, status=503, reason="server is full", headers=headers)
        if (
            principal_id is not None
            and max_per_principal is not None
            and len(self._by_principal.get(principal_id, ())) >= max_per_principal
        ):
            return Admission(
                ok=False, status=429, reason="too many connections for this user", headers=headers
            )
        if (
            host is not None
            and max_per_host is not None
            and self._by_host.get(host, 0) >= max_per_host
            and not is_loopback(host)
        ):
            return Admission(
                ok=False,
                status=429,
                reason="too many connections from this address",
                headers=headers,
            )
        return _ADMITTED

    def add(self, info: ConnectionInfo, connection: HubConnection) -> _Entry:
        entry = self.entries[info.conn_id] = _Entry(info, connection)
        self._by_principal.setdefault(info.principal.id, {})[info.conn_id] = None
        self._count_host(info.host, 1)
        return entry

    def pop(self, conn_id: str) -> _Entry | None:
        entry = self.entries.pop(conn_id, None)
        if entry is None:
            return None
        info = entry.info
        ids = self._by_principal[info.principal.id]
        del ids[conn_id]
        if not ids:
            del self._by_principal[info.principal.id]
        self._count_host(info.host, -1)
        return entry

    def add_pending(self, pending: _Pending) -> None:
        self.pending[pending.conn_id] = pending
        self._count_host(pending.host, 1)

    def pop_pending(self, conn_id: str) -> _Pending | None:
        pending = self.pending.pop(conn_id, None)
        if pending is not None:
            self._count_host(pending.host, -1)
        return pending

    def _count_host(self, host: str | None, delta: int) -> None:
        if host is None:
            return
        left = self._by_host.get(host, 0) + delta
        if left:
            self._by_host[host] = left
        else:
            del self._by_host[host]

    def of_principal(self, principal_id: str) -> list[str]:
        return list(self._by_principal.get(principal_id, ()))

    def is_empty(self) -> bool:
        """True when no connection and no count remain (used by tests)."""
        return not (self.entries or self.pending or self._by_principal or self._by_host)
