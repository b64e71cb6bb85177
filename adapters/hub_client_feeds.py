"""The application's end of a hub client's deliveries: ``Subscription`` and ``Inbox``.

Each is a bounded queue that the client's reader fills and the application
drains with ``async for``. A full queue makes the reader wait (so a consumer
that stops reading eventually stops the socket too, and the server's
slow-consumer policy applies) instead of growing memory. Queues outlive
connections: messages received before a reconnect are still delivered.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .hub_client_types import Gap, Message, ServerMessage, StreamPosition, Unrecovered

__all__ = ["Feed", "Inbox", "Subscription"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GapMarker:
    """Queued where messages are missing; the iterator raises ``Unrecovered`` there."""

    gap: Gap


class Feed(Generic[T]):
    """A bounded queue of deliveries that ends with the client (or with its error)."""

    def __init__(self, max_queue: int) -> None:
        send, receive = anyio.create_memory_object_stream[T | GapMarker](max_queue)
        self._send: MemoryObjectSendStream[T | GapMarker] = send
        self._receive: MemoryObjectReceiveStream[T | GapMarker] = receive
        self._error: BaseException | None = None

    @property
    def queued(self) -> int:
        """Deliveries received and not read yet (at most ``max_queue``)."""
        return self._receive.statistics().current_buffer_used

    async def put(self, item: T | GapMarker) -> None:
        """Queue an item, waiting for room; dropped if the application left.

        Without waiting while there is room: a replay of thousands of messages
        then costs no trip through the event loop per message.
        """
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            try:
                self._send.send_nowait(item)
            except anyio.WouldBlock:
                await self._send.send(item)

    def end(self, error: BaseException | None = None) -> None:
        """No more items: iteration ends after the queued ones (raising ``error`` if given)."""
        if self._error is None:
            self._error = error
        self._send.close()

    def leave(self) -> None:
        """The application stops reading: free a reader waiting for room."""
        self._receive.close()

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            try:
                item = self._receive.receive_nowait()
            except anyio.WouldBlock:
                item = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self._error is not None:
                raise self._error.with_traceback(None) from None
            raise StopAsyncIteration from None
        if isinstance(item, GapMarker):
            raise Unrecovered(item.gap)
        return self._delivered(item)

    def _delivered(self, item: T) -> T:
        return item


class Subscription(Feed[Message]):
    """One ``async with client.subscribe(topic)`` block: the topic's messages, in order.

    Iterating yields each ``Message`` once, in ``seq`` order, across
    reconnects. Where messages were lost for good (the server could not
    replay them) the iterator raises ``Unrecovered`` once; iterating again
    goes on with the messages after the gap. It ends when the client closes,
    or raises the client's final error (``Refused``, ``GaveUp``), or the
    ``CallError`` of a resubscription the server refused.
    """

    def __init__(self, topic: str, present: dict[str, str], max_queue: int) -> None:
        super().__init__(max_queue)
        self.topic = topic
        self._present = present
        self.position: StreamPosition | None = None

    @property
    def present(self) -> dict[str, str]:
        """Connections on the topic (conn_id -> principal) when it has presence."""
        return dict(self._present)

    def _delivered(self, item: Message) -> Message:
        position = item.position
        if position is not None:
            self.position = position  # where to resume after a restart of the program
        return item


class Inbox(Feed[ServerMessage]):
    """Broadcasts and direct messages from the server (``client.messages()``)."""
