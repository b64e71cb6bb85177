"""``BlockingHubClient``: the hub client for synchronous programs.

A ``HubClient`` runs in an event loop on a background thread (an anyio
blocking portal); these methods block the calling thread until the loop has
the answer. Any thread may call them. Callbacks given to the client run in
the loop's thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from .hub_client import HubClient
from .hub_client_feeds import Subscription
from .hub_client_types import ConnectionState, History, Message, StreamPosition

__all__ = ["BlockingHubClient", "BlockingSubscription"]


class BlockingHubClient:
    """A ``HubClient`` driven from plain threads::

    with BlockingHubClient.connect(url, token="s3cret") as client:
        print(client.call("add", [1, 2]))
        with client.subscribe("prices") as sub:
            for message in sub:
                ...
    """

    def __init__(self, portal: BlockingPortal, client: HubClient) -> None:
        self._portal = portal
        self.client = client

    @classmethod
    @contextmanager
    def connect(
        cls, url: str, *, backend: str = "asyncio", **options: Any
    ) -> Iterator[BlockingHubClient]:
        """Start a loop thread, open ``HubClient(url, **options)``; close both at the end."""
        with start_blocking_portal(backend) as portal:
            client = HubClient(url, **options)
            with portal.wrap_async_context_manager(client):
                yield cls(portal, client)

    @property
    def state(self) -> ConnectionState:
        return self.client.state

    @property
    def conn_id(self) -> str | None:
        return self.client.conn_id

    def call(
        self,
        message_type: str,
        payload: Any = None,
        *,
        topic: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """``HubClient.call``, blocking."""
        request = partial(self.client.call, message_type, payload, topic=topic, timeout=timeout)
        return self._portal.call(request)

    def publish(self, topic: str, payload: Any, *, timeout: float | None = None) -> Any:
        """``HubClient.publish``, blocking."""
        return self._portal.call(partial(self.client.publish, topic, payload, timeout=timeout))

    def history(
        self,
        topic: str,
        *,
        since: StreamPosition | None = None,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> History:
        """``HubClient.history``, blocking."""
        request = partial(self.client.history, topic, since=since, limit=limit, timeout=timeout)
        return self._portal.call(request)

    @contextmanager
    def subscribe(
        self, topic: str, *, since: StreamPosition | None = None, timeout: float | None = None
    ) -> Iterator[BlockingSubscription]:
        """``HubClient.subscribe``; iterate the result in this thread."""
        block = self.client.subscribe(topic, since=since, timeout=timeout)
        with self._portal.wrap_async_context_manager(block) as sub:
            yield BlockingSubscription(self._portal, sub)


class BlockingSubscription:
    """A subscription read from a plain thread: ``for message in sub`` or ``sub.get(timeout)``."""

    def __init__(self, portal: BlockingPortal, sub: Subscription) -> None:
        self._portal = portal
        self.subscription = sub

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        message = self._portal.call(self._next, None)
        if message is None:
            raise StopIteration
        return message

    def get(self, timeout: float) -> Message:
        """The next message; ``TimeoutError`` after ``timeout`` seconds,
        ``StopIteration`` once the subscription ended."""
        message = self._portal.call(self._next, timeout)
        if message is None:
            raise StopIteration
        return message

    async def _next(self, timeout: float | None) -> Message | None:
        with anyio.fail_after(timeout):
            try:
                return await self.subscription.__anext__()
            except StopAsyncIteration:
                return None
