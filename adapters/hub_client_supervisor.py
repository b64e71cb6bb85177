"""The task that keeps a hub client connected: attempts, backoff, refusals.

``Supervisor`` runs one connection after another: it asks the token source,
connects, reads every message to the connection's end (the welcome opens
the connection for requests, after every topic was subscribed again), then
classifies how it ended (``reconnect.Ending``) and waits the backoff's delay.
It stops for good on a refusal without a new token, after
``Backoff.max_attempts`` failures, or when the application closes the client;
every state change is reported (``StateChange``).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio

from ..core.auth import SUBPROTOCOL
from .client import ClientSession, connect
from .errors import ConnectionClosed, HandshakeError, HandshakeRejected
from .hub_client_link import Callback, encode
from .hub_client_recovery import Recovery
from .hub_client_types import ClientClosed, ConnectionState, Gap, GaveUp, Refused, StateChange
from .reconnect import Backoff, Ending, Retry, classify_close, classify_status, parse_retry_after

__all__ = ["Supervisor", "TokenSource", "TokenTransport"]

logger = logging.getLogger("wshub.client")

#: How the token travels: ``Authorization: Bearer`` header, ``wshub.bearer.<token>``
#: subprotocol (as browsers do), or a first ``auth`` message (servers with
#: ``auth_message=True``).
TokenTransport = Literal["header", "subprotocol", "message"]

#: A token, or a callable (sync or async) asked for one before every attempt.
TokenSource = str | Callable[[], str | Awaitable[str]] | None

_Outcome = tuple[Ending, int | None, str, float | None, BaseException | None]


class Supervisor(Recovery):
    """The connection lifecycle of a hub client (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        token: TokenSource,
        token_transport: TokenTransport,
        backoff: Backoff,
        random: Callable[[], float],
        connect_options: dict[str, Any],
        max_queue: int,
        on_state: Callback | None,
        on_message: Callback | None,
        on_presence: Callback | None,
        on_gap: Callback | None,
    ) -> None:
        if token_transport not in ("header", "subprotocol", "message"):
            raise ValueError("token_transport must be 'header', 'subprotocol' or 'message'")
        super().__init__(max_queue=max_queue, on_message=on_message, on_presence=on_presence)
        self.url = url
        self._token = token
        self._transport = token_transport
        self._backoff = backoff
        self._random = random
        self._connect_options = connect_options
        self._on_state = on_state
        self._on_gap_callback = on_gap
        self._state = ConnectionState.CLOSED
        self._changed: anyio.Event | None = None  # replaced at every change; made in the loop
        self._failure: BaseException | None = None
        self._closing = False
        self._scope: anyio.CancelScope | None = None
        self._welcomed: ClientSession | None = None  # the current connection, once welcomed

    async def _supervise(self) -> None:
        retry = Retry(self._backoff, self._random)
        token: str | None = None
        fresh = True  # ask the token source again before the next attempt
        with anyio.CancelScope() as self._scope:
            try:
                while not self._closing:
                    attempt = retry.failures + 1
                    await self._emit(StateChange(state=ConnectionState.CONNECTING, attempt=attempt))
                    error: BaseException | None = None
                    if fresh:
                        try:
                            token = await self._fetch_token()
                        except Exception as exc:
                            logger.warning("token callback failed: %r", exc)
                            error = exc
                    if error is None:
                        ending, code, reason, retry_after, error = await self._attempt(token, retry)
                    else:
                        ending, code, reason, retry_after = Ending.RETRY, None, "", None
                    if self._closing:
                        break
                    if self._welcomed is None:
                        retry.failed()
                    else:
                        self._welcomed = None
                        change = StateChange(
                            state=ConnectionState.DISCONNECTED, code=code, reason=reason
                        )
                        await self._emit(change)
                    fresh = True
                    if ending is Ending.REFUSED:
                        other = await self._other_token(token)
                        if other is None:
                            await self._finish(Refused(code or 0, reason))
                            return
                        token, fresh = other, False
                    delay = retry.next_delay(retry_after if ending is Ending.THROTTLED else None)
                    if delay is None:
                        await self._finish(GaveUp(retry.failures, error))
                        return
                    await self._emit(
                        StateChange(
                            state=ConnectionState.RECONNECTING,
                            attempt=retry.failures,
                            delay=delay,
                            code=code,
                            reason=reason,
                            error=error,
                        )
                    )
                    await anyio.sleep(delay)
            except Exception as exc:  # a bug: stop loudly rather than spin
                logger.exception("hub client supervisor crashed")
                await self._finish(exc)

    async def _attempt(self, token: str | None, retry: Retry) -> _Outcome:
        """One connection from handshake to end: how it ended."""
        subprotocols: tuple[str, ...] = (SUBPROTOCOL,)
        header_token = token if self._transport == "header" else None
        if token is not None and self._transport == "subprotocol":
            subprotocols += (f"wshub.bearer.{token}",)
        try:
            async with connect(
                self.url, token=header_token, subprotocols=subprotocols, **self._connect_options
            ) as ws:
                async with anyio.create_task_group() as tasks:  # catch-ups of this connection
                    self._tasks = tasks
                    try:
                        if token is not None and self._transport == "message":
                            auth = {"message_type": "auth", "payload": {"token": token}}
                            await ws.send(encode(auth))  # refused: closed 1008, no reply
                        await self._read(ws, retry)
                    except ConnectionClosed:
                        pass
                    finally:
                        self._tasks = None
                        tasks.cancel_scope.cancel()
                        self._lost()
                event = await ws.wait_closed()
                ending = classify_close(event.code)
                return ending, event.code, event.reason, None, ConnectionClosed(event)
        except HandshakeRejected as exc:
            reason = exc.body.decode("utf-8", "replace").strip()[:200]
            retry_after = parse_retry_after(exc.headers)
            return classify_status(exc.status), exc.status, reason, retry_after, exc
        except (OSError, HandshakeError, TimeoutError) as exc:
            return Ending.RETRY, None, str(exc), None, exc

    async def _read(self, ws: ClientSession, retry: Retry) -> None:
        """Read the connection to its end; the welcome opens it for requests."""
        while True:
            text = await ws.recv()
            if not isinstance(text, str):
                continue
            try:
                envelope = json.loads(text)
            except ValueError:
                logger.warning("hub client: a message that is not JSON")
                continue
            if not isinstance(envelope, dict):
                continue
            if self._welcomed is None and envelope.get("message_type") == "welcome":
                await self._open(ws, envelope, retry)
            else:
                await self._dispatch(envelope)

    async def _open(self, ws: ClientSession, welcome: dict[str, Any], retry: Retry) -> None:
        info = welcome.get("payload")
        info = info if isinstance(info, dict) else {}
        self.conn_id = info.get("conn_id")
        self.principal = info.get("principal")
        self._welcomed = ws
        retry.succeeded()
        self._conn_no += 1
        self._left.clear()
        self._ws = ws
        # Topics first (a subscribe may be added while this loop awaits), then
        # calls: the connection counts as open once every topic is live again.
        restoring = self._restoring
        while unsent := [t for t in self._topics.values() if t.sent_on != self._conn_no]:
            for state in unsent:
                request_id = await self._send_subscribe(state)
                if request_id is not None and self._ws is ws:
                    restoring.add(state.name)
        if not restoring:
            await self._restored()

    async def _restored(self) -> None:
        change = StateChange(
            state=ConnectionState.OPEN, conn_id=self.conn_id, principal=self.principal
        )
        await self._emit(change)

    async def _fetch_token(self) -> str | None:
        source = self._token
        if source is None or isinstance(source, str):
            return source
        value = source()
        if inspect.isawaitable(value):
            value = await value
        if not isinstance(value, str):
            raise TypeError(f"the token callback returned {type(value).__name__}, not str")
        return value

    async def _other_token(self, refused: str | None) -> str | None:
        """A token different from the refused one, or None (then stop)."""
        if self._token is None or isinstance(self._token, str):
            return None
        try:
            token = await self._fetch_token()
        except Exception as exc:
            logger.warning("token callback failed after a refusal: %r", exc)
            return None
        return None if token == refused else token

    # -- state -----------------------------------------------------------

    async def _emit(self, change: StateChange) -> None:
        self._state = change.state
        self._wake()
        logger.debug("hub client: %s", change)
        if self._on_state is not None:
            await self._callback(self._on_state, change)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
        self._changed = anyio.Event()

    async def _wait_change(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    async def _finish(self, error: BaseException | None) -> None:
        """The client stops for good: fail waiting calls, end every feed."""
        if error is not None and self._failure is None:
            self._failure = error
        final = self._failure or ClientClosed()
        self._ws = None
        for pending in list(self._pending.values()):
            pending.fail(final)
        self._pending.clear()
        for state in list(self._topics.values()):
            for sub in state.subs:
                sub.end(self._failure)
            state.fail(final)
        for inbox in self._inboxes:
            inbox.end(self._failure)
        if self._state is not ConnectionState.CLOSED:
            await self._emit(StateChange(state=ConnectionState.CLOSED, error=self._failure))
        self._wake()

    async def _on_gap(self, gap: Gap) -> None:
        if self._on_gap_callback is not None:
            await self._callback(self._on_gap_callback, gap)
