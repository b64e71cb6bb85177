"""Shared pieces of the HubClient tests over real sockets: a running
``HubServer``, a relay that resets TCP connections mid-stream, a free port,
and a recorder of state changes that tests wait on (events, never sleeps)."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

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


class Proxy:
    """A TCP relay between clients and a server that a test can cut with a reset.

    ``reset()`` closes both sockets of every relayed connection with
    SO_LINGER 0, so each end gets an RST mid-stream, as when a network dies;
    neither the client nor the server is touched.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.connections = 0
        self._links: list[tuple[SocketStream, SocketStream, anyio.CancelScope]] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(SocketAttribute.local_port)
        task_status.started()
        await listener.serve(self._relay)

    def reset(self) -> int:
        """Reset every relayed connection; how many there were."""
        links, self._links = self._links, []
        for client, upstream, scope in links:
            for stream in (client, upstream):
                sock = stream.extra(SocketAttribute.raw_socket)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            scope.cancel()  # the streams close on the way out: with linger 0, an RST
        return len(links)

    async def _relay(self, client: SocketStream) -> None:
        self.connections += 1
        async with client:
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
            except OSError:
                return
            async with upstream:
                with anyio.CancelScope() as scope:
                    link = (client, upstream, scope)
                    self._links.append(link)
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_pump, client, upstream)
                        tg.start_soon(_pump, upstream, client)
                if link in self._links:
                    self._links.remove(link)


async def _pump(source: SocketStream, sink: SocketStream) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
        await sink.send_eof()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass


@asynccontextmanager
async def proxied(**kwargs: Any) -> AsyncIterator[tuple[HubServer, Proxy]]:
    """A running ``HubServer`` and a ``Proxy`` in front of it (clients use ``proxy.url``)."""
    async with running(allowed_hosts=None, **kwargs) as server:
        proxy = Proxy(server.port)
        async with anyio.create_task_group() as tg:
            await tg.start(proxy.serve)
            try:
                yield server, proxy
            finally:
                tg.cancel_scope.cancel()


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
