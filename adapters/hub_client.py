"""``HubClient``: a hub connection that stays up, for services, scripts and tests.

Built on ``connect``/``ClientSession``. One supervisor task owns the
connection: it connects (token from a string or a callback asked at every
attempt), reads every message in order, and after a loss waits a full-jitter
backoff and connects again; a refusal (401/403, 4401/4403/1008) is retried
only with a different token. On each new connection every topic is
subscribed again with ``since`` (its last ``seq`` and ``epoch``), so the
server replays what was missed; the cursor drops duplicates and turns what
cannot be replayed into an explicit ``Unrecovered`` in the subscription.

Calls (commands, publish) wait for an open connection within their timeout
and are sent once: a connection lost before the reply is ``ConnectionLost``,
never a silent resend.
"""

from __future__ import annotations

import json
import random as _random
import ssl as _ssl
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

import anyio

from ..core import Limits
from .client import ClientSession
from .errors import ConnectionClosed
from .hub_client_feeds import Inbox, Subscription
from .hub_client_link import Callback, Pending, Topic, encode
from .hub_client_supervisor import Supervisor, TokenSource, TokenTransport
from .hub_client_types import CallTimeout, ClientClosed, ConnectionState, History, StreamPosition
from .reconnect import Backoff

__all__ = ["HubClient", "TokenSource"]


class HubClient(Supervisor):
    """A self-healing connection to a wshub hub::

        async with HubClient(url, token="s3cret") as client:
            async with client.subscribe("prices") as sub:
                async for message in sub:
                    print(message.seq, message.payload)

    Entering waits for the first open connection (retrying under
    ``backoff``) and raises ``Refused`` or ``GaveUp`` if none opens; leaving
    closes it (1000). ``token_transport``: ``"header"`` (``Authorization:
    Bearer``), ``"subprotocol"`` (``wshub.bearer.<token>``, as browsers do)
    or ``"message"`` (a first ``auth`` message).
    ``random`` feeds the backoff's jitter (tests pass their own).
    Callbacks (sync or async) run in the reader, in order with the messages:
    keep them short.
    """

    def __init__(
        self,
        url: str,
        *,
        token: TokenSource = None,
        token_transport: TokenTransport = "header",
        backoff: Backoff | None = None,
        random: Callable[[], float] = _random.random,
        call_timeout: float = 10.0,
        max_queue: int = 256,
        on_state: Callback | None = None,
        on_message: Callback | None = None,
        on_presence: Callback | None = None,
        on_gap: Callback | None = None,
        headers: Iterable[tuple[str, str]] = (),
        ssl: _ssl.SSLContext | None = None,
        limits: Limits | None = None,
        compression: bool = False,
        open_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            url,
            token=token,
            token_transport=token_transport,
            backoff=backoff or Backoff(),
            random=random,
            connect_options={
                "headers": tuple(headers),
                "ssl": ssl,
                "limits": limits,
                "compression": compression,
                "open_timeout": open_timeout,
            },
            max_queue=max_queue,
            on_state=on_state,
            on_message=on_message,
            on_presence=on_presence,
            on_gap=on_gap,
        )
        self.call_timeout = call_timeout
        self._stack: AsyncExitStack | None = None

    # -- lifecycle -------------------------------------------------------

    async def __aenter__(self) -> HubClient:
        if self._stack is not None:
            raise RuntimeError("a HubClient can be entered once")
        self._stack = AsyncExitStack()
        tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._state = ConnectionState.CONNECTING
        tg.start_soon(self._supervise)
        try:
            while self._state is not ConnectionState.OPEN:
                if self._failure is not None:
                    raise self._failure.with_traceback(None)
                await self._wait_change()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (1000) and end every subscription and call."""
        self._closing = True
        try:
            ws = self._ws
            if ws is not None:  # the closing handshake first: cancelling drops the transport
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.call_timeout):
                    await ws.close()
            if self._scope is not None:
                self._scope.cancel()
            if self._stack is not None:
                await self._stack.aclose()
        finally:
            with anyio.CancelScope(shield=True):  # even when closed by a cancellation
                await self._finish(None)

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def error(self) -> BaseException | None:
        """Why the client stopped for good (``Refused``, ``GaveUp``), else None."""
        return self._failure

    # -- requests --------------------------------------------------------

    async def call(
        self,
        message_type: str,
        payload: Any = None,
        *,
        topic: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send a request and return its reply's payload.

        Raises ``CallError`` with the server's code (``unknown_command``,
        ``forbidden``, your handler's own...), ``CallTimeout`` when no reply
        came within ``timeout`` (default ``call_timeout``; time spent waiting
        for a connection counts), ``ConnectionLost`` when the connection
        ended after sending, or the client's final error once it stopped.
        """
        envelope: dict[str, Any] = {"message_type": message_type, "payload": payload}
        if topic is not None:
            envelope["topic"] = topic
        json.dumps(payload)  # not JSON: TypeError/ValueError now, before waiting
        limit = self.call_timeout if timeout is None else timeout
        try:
            with anyio.fail_after(limit):
                pending = await self._request(envelope)
        except TimeoutError:
            raise CallTimeout(f"no reply to {message_type!r} within {limit} s") from None
        return pending.result()

    async def publish(self, topic: str, payload: Any, *, timeout: float | None = None) -> Any:
        """Publish on a topic (if its policy lets this client); the reply's
        payload ``{"topic", "seq", "delivered"}``."""
        return await self.call("publish", payload, topic=topic, timeout=timeout)

    async def history(
        self,
        topic: str,
        *,
        since: StreamPosition | None = None,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> History:
        """The messages ``topic`` keeps: after ``since`` (none unless ``recovered``),
        else the newest; at most ``limit`` and what the server's page allows
        (page on with ``since`` = the last message's ``position``)."""
        payload: dict[str, Any] = {}
        if since is not None:
            payload["since"] = {"seq": since.seq, "epoch": since.epoch}
        if limit is not None:
            payload["limit"] = limit
        result = await self.call("history", payload, topic=topic, timeout=timeout)
        return self._history_result(topic, result)

    async def _request(self, envelope: dict[str, Any]) -> Pending:
        while True:
            ws = await self._wait_open()
            request_id = next(self._ids)
            pending = self._pending[request_id] = Pending()
            try:
                await ws.send(encode({**envelope, "id": request_id}))
            except ConnectionClosed:  # not queued, so not sent: wait for the next connection
                self._pending.pop(request_id, None)
                await self._wait_replaced(ws)
                continue
            try:
                await pending.done.wait()
            finally:
                self._pending.pop(request_id, None)
            return pending

    async def _wait_open(self) -> ClientSession:
        while True:
            if self._failure is not None:
                raise self._failure.with_traceback(None)
            if self._closing:
                raise ClientClosed()
            ws = self._ws
            if ws is not None and self._state is ConnectionState.OPEN:
                return ws
            await self._wait_change()

    async def _wait_replaced(self, ws: ClientSession) -> None:
        while self._ws is ws and self._failure is None and not self._closing:
            await self._wait_change()

    # -- subscriptions ---------------------------------------------------

    @asynccontextmanager
    async def subscribe(
        self,
        topic: str,
        *,
        since: StreamPosition | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Subscription]:
        """Subscribe for the block; yields the ``Subscription`` once the server confirmed.

        ``since``: resume a stream the program followed before (a message's
        ``position``); the server replays what came after it, or the
        iterator raises ``Unrecovered`` first. Several blocks may follow the
        same topic: the server sees one subscription, each block gets every
        message. Raises ``CallError`` (``forbidden``...) or ``CallTimeout``.
        """
        if self._failure is not None:
            raise self._failure.with_traceback(None)
        if self._closing or self._stack is None:
            raise ClientClosed()
        state = self._topics.get(topic)
        if state is not None and since is not None:
            raise ValueError(f"already subscribed to {topic!r}: since applies to a new topic")
        if state is None:
            state = self._topics[topic] = Topic(topic, since)
        sub = Subscription(topic, state.present, self._max_queue)
        state.subs.append(sub)
        try:
            await self._send_subscribe(state)
            limit = self.call_timeout if timeout is None else timeout
            try:
                with anyio.fail_after(limit):
                    await state.ready.wait()
            except TimeoutError:
                raise CallTimeout(f"no reply to subscribe {topic!r} within {limit} s") from None
            if state.error is not None:
                raise state.error.with_traceback(None)
            yield sub
        finally:
            sub.leave()
            await self._detach(state, sub)

    async def _detach(self, state: Topic, sub: Subscription) -> None:
        if sub in state.subs:
            state.subs.remove(sub)
        if state.subs or self._topics.get(state.name) is not state:
            return
        del self._topics[state.name]
        ws = self._ws
        if ws is None or state.sent_on != self._conn_no:
            return
        self._left.add(state.name)
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(self.call_timeout),
            suppress(ConnectionClosed),
        ):
            await ws.send(encode({"message_type": "unsubscribe", "topic": state.name}))

    @asynccontextmanager
    async def messages(self, *, max_queue: int | None = None) -> AsyncIterator[Inbox]:
        """Broadcasts and direct messages received while the block runs."""
        inbox = Inbox(self._max_queue if max_queue is None else max_queue)
        self._inboxes.append(inbox)
        try:
            yield inbox
        finally:
            self._inboxes.remove(inbox)
            inbox.leave()
