"""Shared helpers for hub tests: a fake clock and in-memory connection pairs.

Each ``Peer`` is a real ``ServerConnection`` (what the hub drives) opened by a
real ``ClientConnection`` through an in-memory handshake; ``Peer.receive``
feeds the server's output into the client and returns the envelopes the
client really got.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wshub.core import ClientConnection, Closed, Limits, Opened, ServerConnection, TextMessage
from wshub.core.auth import Principal
from wshub.core.events import HandshakeRequest
from wshub.core.hub import Hub
from wshub.core.hub_config import HubConfig
from wshub.core.hub_events import HubEvent

WALL_EPOCH = 1_700_000_000.0


class FakeClock:
    """A clock that moves only when told; serves as monotonic and wall clock."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def zeros(n: int) -> bytes:
    return b"\x00" * n


def open_pair(
    clock: Callable[[], float],
    *,
    limits: Limits | None = None,
    compression: bool = False,
    principal: Principal | None = None,
) -> tuple[ServerConnection, ClientConnection]:
    """A server and a client connection that completed the handshake in memory."""
    server = ServerConnection(limits=limits, compression=compression, clock=clock, random=zeros)
    client = ClientConnection(
        host="hub.test",
        compression=compression,
        limits=Limits(max_message_size=1 << 24, max_outbox_size=1 << 24),
        clock=clock,
        random=zeros,
    )
    server.receive_data(client.data_to_send())
    [request] = server.events_received()
    assert isinstance(request, HandshakeRequest)
    server.accept(principal)
    assert [type(e) for e in server.events_received()] == [Opened]
    client.receive_data(server.data_to_send())
    [opened] = client.events_received()
    assert isinstance(opened, Opened)
    return server, client


@dataclass
class Peer:
    """One connected client as the tests see it."""

    conn_id: str
    principal: Principal
    server: ServerConnection
    client: ClientConnection
    closed: Closed | None = None
    received: list[dict[str, Any]] = field(default_factory=list)

    def receive(self) -> list[dict[str, Any]]:
        """Deliver the server's queued bytes; return the new envelopes."""
        self.client.receive_data(self.server.data_to_send())
        new: list[dict[str, Any]] = []
        for event in self.client.events_received():
            if isinstance(event, TextMessage):
                new.append(json.loads(event.data))
            elif isinstance(event, Closed):
                self.closed = event
        # The client's answers (close echo, pongs) go back to the server.
        self.server.receive_data(self.client.data_to_send())
        self.received += new
        return new

    def text_frame(self, obj: object) -> str:
        """What the server's core hands over when the client sends ``obj`` as JSON."""
        return self.raw_frame(obj if isinstance(obj, str) else json.dumps(obj))

    def raw_frame(self, text: str) -> str:
        self.client.send_text(text)
        self.server.receive_data(self.client.data_to_send())
        [event] = self.server.events_received()
        assert isinstance(event, TextMessage)
        return event.data


class HubHarness:
    """A hub plus the peers it serves, wired like a minimal driver would be."""

    def __init__(
        self,
        config: HubConfig | None = None,
        *,
        limits: Limits | None = None,
        **hub_kwargs: Any,
    ) -> None:
        self.clock = FakeClock(100.0)
        self.wall = FakeClock(WALL_EPOCH)
        self.outputs: list[str] = []
        self.limits = limits
        self.hub = Hub(
            clock=self.clock,
            wall_clock=self.wall,
            config=config,
            on_output=self.outputs.append,
            **hub_kwargs,
        )
        self.peers: dict[str, Peer] = {}
        self._next = 0

    def connect(
        self,
        principal: Principal | str = "alice",
        *,
        remote: tuple[str, int] | str | None = ("127.0.0.1", 50000),
        limits: Limits | None = None,
        compression: bool = False,
        welcome: bool = True,
    ) -> Peer:
        if isinstance(principal, str):
            principal = Principal(principal)
        server, client = open_pair(
            self.clock, limits=limits or self.limits, principal=principal, compression=compression
        )
        self._next += 1
        conn_id = f"c{self._next}"
        self.hub.add(conn_id, server, principal=principal, remote=remote)
        peer = Peer(conn_id, principal, server, client)
        self.peers[conn_id] = peer
        if welcome and self.hub.config.send_welcome:
            [hello] = peer.receive()
            assert hello["message_type"] == "welcome"
            peer.received.clear()
        return peer

    def send(self, peer: Peer, obj: object) -> list[HubEvent]:
        """The client sends ``obj``; the hub handles it."""
        return self.hub.receive_text(peer.conn_id, peer.text_frame(obj))

    def reap(self) -> list[HubEvent]:
        """Driver duty: remove every connection whose core reported Closed."""
        events: list[HubEvent] = []
        for peer in list(self.peers.values()):
            if any(isinstance(e, Closed) for e in peer.server.events_received()):
                events += self.hub.remove(peer.conn_id)
                del self.peers[peer.conn_id]
        return events
