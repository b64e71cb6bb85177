"""Recovery in pages: missed messages read with ``history`` requests.

A subscribe with ``since`` replays what was missed only when it fits the
connection's outbox with the reply; a client that missed more gets
``recovered: false`` while the server still holds everything. Then, and when a
live stream skips ``seq``s (a ``dropped`` notice), ``Recovery`` reads the
missing messages in pages (each ``history`` answer bounded by the server)
while the reader drops that topic's live messages, delivers them in order,
and subscribes again with ``since`` = the last one: that replay is small and
covers every live message dropped meanwhile. What history no longer holds
becomes a ``Gap`` up to where the stream stood, and the subscribe from there
is not paged for again if it fails too (no loop while publishes go on).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .client import ClientSession
from .errors import ConnectionClosed
from .hub_client_link import Link, Pending, Topic, encode
from .hub_client_topics import Reply, parse_history_reply
from .hub_client_types import CallError, ConnectionLost, History, Message, StreamPosition

__all__ = ["Recovery"]

logger = logging.getLogger("wshub.client")


class Recovery(Link):
    """Catch-up from history for a ``Link`` (see the module docstring)."""

    _tasks: TaskGroup | None = None  # the current connection's task group

    def _catch_up(self, state: Topic) -> None:
        super()._catch_up(state)
        if self._tasks is None or self._ws is None:  # pragma: no cover - the reader has both
            return
        self._tasks.start_soon(self._read_missed, state, self._ws)

    async def _read_missed(self, state: Topic, ws: ClientSession) -> None:
        """Page through history from the cursor, then subscribe again from where it ends."""
        plain = False
        try:
            while True:
                position = state.cursor.position
                assert position is not None
                page = await self._history_on(ws, state.name, position)
                if self._topics.get(state.name) is not state:
                    return  # left meanwhile
                if page.recovered is not True:
                    # Lost for good up to where the stream stands now; subscribing
                    # from there replays what came since (no paging again this time).
                    state.no_history = True
                    lost = Reply(seq=page.seq, epoch=page.epoch, recovered=False, present=None)
                    gap = state.cursor.resume(lost, asked=True)
                    if gap is not None:
                        await self._signal_gap(state, gap)
                    break
                for message in page.messages:
                    await self._accept(state, message, message["seq"])
                if not page.messages or state.cursor.seq is None or state.cursor.seq >= page.seq:
                    break
        except (ConnectionClosed, ConnectionLost):
            return  # the next connection resubscribes from the cursor
        except (CallError, TimeoutError) as exc:
            logger.warning("hub client: reading history of %r failed: %s", state.name, exc)
            plain = True  # the reply to a plain subscribe shows the gap
        if ws is self._ws and self._topics.get(state.name) is state:
            await self._send_subscribe(state, again=True, plain=plain)

    async def _history_on(
        self, ws: ClientSession, topic: str, since: StreamPosition | None, limit: int | None = None
    ) -> _Page:
        payload: dict[str, Any] = {}
        if since is not None:
            payload["since"] = {"seq": since.seq, "epoch": since.epoch}
        if limit is not None:
            payload["limit"] = limit
        envelope = {"message_type": "history", "topic": topic, "payload": payload}
        result = await self._request_on(ws, envelope)
        parsed = parse_history_reply(result)
        if parsed is None:
            raise CallError("invalid_reply", "a history reply of an unexpected shape")
        seq, epoch, recovered, envelopes = parsed
        return _Page(seq, epoch, recovered, [e for e in envelopes if e.get("topic") == topic])

    async def _request_on(self, ws: ClientSession, envelope: dict[str, Any]) -> Any:
        """A request on this very connection (not waiting for it to be open)."""
        request_id = next(self._ids)
        pending = self._pending[request_id] = Pending()
        try:
            with anyio.fail_after(self.call_timeout):
                await ws.send(encode({**envelope, "id": request_id}))
                await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        return pending.result()

    @staticmethod
    def _history_result(topic: str, result: Any) -> History:
        parsed = parse_history_reply(result)
        if parsed is None:
            raise CallError("invalid_reply", "a history reply of an unexpected shape")
        seq, epoch, recovered, envelopes = parsed
        messages = tuple(
            Message(
                topic=topic,
                seq=e["seq"],
                epoch=epoch,
                payload=e.get("payload"),
                timestamp=e["timestamp"] if isinstance(e.get("timestamp"), int) else 0,
                message_type=str(e.get("message_type")),
            )
            for e in envelopes
        )
        return History(topic=topic, seq=seq, epoch=epoch, recovered=recovered, messages=messages)


class _Page:
    __slots__ = ("epoch", "messages", "recovered", "seq")

    def __init__(
        self, seq: int, epoch: str | None, recovered: bool | None, messages: list[dict[str, Any]]
    ) -> None:
        self.seq = seq
        self.epoch = epoch
        self.recovered = recovered
        self.messages = messages
