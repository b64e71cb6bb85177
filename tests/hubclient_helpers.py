"""Shared pieces of the HubClient tests over real sockets: a running
``HubServer``, a TCP reset from the server side, a free port, and a recorder
of state changes that tests wait on (events, never sleeps)."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from wshub.adapters import HubServer
from wshub.adapters.hub_client_types import ConnectionState, StateChange
from wshub.adapters.reconnect import Backoff
from wshub.core.auth import AccessPolicy, Principal, StaticTokens

TOKEN, ADMIN = "alice-token", "admin-token"
TOKENS = StaticTokens({TOKEN: Principal("alice"), ADMIN: Principal("root", frozenset({"admin"}))})

#: Reconnect at once in tests (random() == 0 means a zero delay): no test waits on a clock.
FAST = Backoff(base=0.01, cap=0.05)


def no_jitter() -> float:
    return 0.0


@asynccontextmanager
async def running(port: int = 0, **kwargs: Any) -> AsyncIterator[HubServer]:
    """A ``HubServer`` on 127.0.0.1 (``port`` 0: any free one) for the block."""
    server = HubServer(kwargs.pop("auth", AccessPolicy(tokens=TOKENS)), port=port, **kwargs)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        try:
            yield server
        finally:
            server.shutdown()


def reset(server: HubServer, conn_id: str | None) -> None:
    """Kill one connection's TCP with a reset (SO_LINGER 0), as a dead network would."""
    assert conn_id is not None
    session = server.handler._sessions[conn_id]
    sock = session._driver.sock  # type: ignore[union-attr]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    session.abort()


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class States:
    """Records a client's ``StateChange``s; ``await states.reach(state, n)``."""

    def __init__(self) -> None:
        self.changes: list[StateChange] = []
        self._changed: anyio.Event | None = None

    def __call__(self, change: StateChange) -> None:
        self.changes.append(change)
        if self._changed is not None:
            self._changed.set()

    def of(self, state: ConnectionState) -> list[StateChange]:
        return [c for c in self.changes if c.state is state]

    @property
    def names(self) -> list[str]:
        return [c.state.value for c in self.changes]

    async def reach(self, state: ConnectionState, count: int = 1) -> StateChange:
        """Wait until ``state`` was entered ``count`` times; that change."""
        return await self.until(lambda: len(self.of(state)) >= count, lambda: self.of(state)[-1])

    async def until(self, ready: Callable[[], bool], result: Callable[[], Any]) -> Any:
        while not ready():
            self._changed = anyio.Event()
            await self._changed.wait()
        return result()
