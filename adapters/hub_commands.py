"""Running command handlers for the hub: one task each, under the hub's deadlines.

The hub decides who may call what and answers timeouts itself; this runner
owns the tasks: it starts a handler per ``CommandRequest``, turns its result
or exception into the one reply, sleeps until ``Hub.next_deadline()`` and
cancels the handlers of expired commands, of closed connections and, at
shutdown, of everything still running.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ..core.envelope import ErrorCode, RequestId
from ..core.hub import Hub
from ..core.hub_events import CommandExpired
from ._clock import current_time
from .hub_context import CommandContext, CommandError, CommandHandler
from .payloads import PayloadError, Validator, handler_validator

__all__ = ["CommandRunner", "log_conn", "logger"]

logger = logging.getLogger("wshub.hub")


def log_conn(level: int, conn_id: str, message: str, *args: object, exc: bool = False) -> None:
    """Log with the connection id both in the text and as ``record.conn_id``."""
    if logger.isEnabledFor(level):
        logger.log(
            level, "[%s] " + message, conn_id, *args, extra={"conn_id": conn_id}, exc_info=exc
        )


@dataclass(frozen=True, slots=True)
class _Command:
    func: CommandHandler
    is_async: bool
    validate: Validator | None  # from the handler's payload annotation


class CommandRunner:
    """Command handlers by name, and the tasks running them.

    ``run`` must be running (it holds the task group) for commands to start;
    until then, and after ``shutdown``, requests are answered at once.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._handlers: dict[str, _Command] = {}
        self._running: dict[tuple[str, RequestId], anyio.CancelScope] = {}
        self._tg: TaskGroup | None = None
        self._timer_scope: anyio.CancelScope | None = None
        self._armed = math.inf
        self.stopping = False

    def add(
        self,
        name: str,
        func: CommandHandler,
        *,
        scope: str | None = None,
        timeout: float | None = None,
    ) -> None:
        validate = handler_validator(func)  # an unusable annotation fails here, not per call
        self.hub.register_command(name, scope=scope, timeout=timeout)
        self._handlers[name] = _Command(func, inspect.iscoroutinefunction(func), validate)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold the task group and run the deadline timer until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                tg.start_soon(self._timer_loop)
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> bool:
        """Run a background task in the runner's group; False when not running."""
        if self._tg is None:
            return False
        self._tg.start_soon(func, *args)
        return True

    def start(self, ctx: CommandContext, payload: Any) -> None:
        """Run the handler for one request (``ctx`` says which)."""
        conn_id, request_id = ctx.conn_id, ctx.request_id
        command = self._handlers.get(ctx.command)
        if self._tg is None or self.stopping or command is None:
            # Not running, or a command registered on the Hub without a handler.
            code = ErrorCode.SHUTTING_DOWN if command is not None else ErrorCode.COMMAND_FAILED
            self.hub.reply_error(conn_id, request_id, code.value, "command unavailable")
            return
        if command.validate is not None:
            try:
                payload = command.validate(payload, "payload")
            except PayloadError as exc:  # the client's mistake: no handler, no traceback
                log_conn(logging.DEBUG, conn_id, "command %r: %s", ctx.command, exc)
                self.hub.reply_error(conn_id, request_id, ErrorCode.INVALID_PAYLOAD.value, str(exc))
                return
        scope = anyio.CancelScope()
        self._running[conn_id, request_id] = scope
        self._tg.start_soon(self._run, ctx, command, payload, scope)

    def cancel_connection(self, conn_id: str) -> None:
        """Its connection is gone: nobody will read the replies."""
        if not self._running:
            return
        for key, scope in list(self._running.items()):
            if key[0] == conn_id:
                scope.cancel()
                del self._running[key]

    def shutdown(self) -> None:
        """Answer every running command ``shutting_down`` and cancel it."""
        self.stopping = True
        for (conn_id, request_id), scope in list(self._running.items()):
            self.hub.reply_error(
                conn_id, request_id, ErrorCode.SHUTTING_DOWN.value, "server is shutting down"
            )
            scope.cancel()

    def rearm(self) -> None:
        """Pull the timer forward if the hub now has an earlier deadline."""
        scope = self._timer_scope
        if scope is None:
            return
        deadline = self.hub.next_deadline()
        if deadline is not None and deadline < self._armed:
            self._armed = deadline
            scope.deadline = deadline

    async def _run(
        self, ctx: CommandContext, command: _Command, payload: Any, scope: anyio.CancelScope
    ) -> None:
        conn_id, request_id = ctx.conn_id, ctx.request_id
        hub = self.hub
        try:
            with scope:
                try:
                    if command.is_async:
                        result = await command.func(ctx, payload)
                    else:
                        call = functools.partial(command.func, ctx, payload)
                        result = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
                except CommandError as exc:
                    hub.reply_error(conn_id, request_id, exc.code, exc.message)
                    return
                except Exception:
                    # The traceback stays in the server's log; the client
                    # gets a generic error.
                    log_conn(logging.ERROR, conn_id, "command %r raised", ctx.command, exc=True)
                    hub.reply_error(
                        conn_id, request_id, ErrorCode.COMMAND_FAILED.value, "command failed"
                    )
                    return
                try:
                    hub.reply(conn_id, request_id, result)
                except (TypeError, ValueError):
                    log_conn(
                        logging.ERROR,
                        conn_id,
                        "command %r returned a value JSON cannot carry",
                        ctx.command,
                        exc=True,
                    )
                    hub.reply_error(
                        conn_id, request_id, ErrorCode.COMMAND_FAILED.value, "command failed"
                    )
        finally:
            key = (conn_id, request_id)
            if self._running.get(key) is scope:
                del self._running[key]

    async def _timer_loop(self) -> None:
        """Sleep until the hub's next deadline; it answers timeouts, we cancel."""
        while True:
            deadline = self.hub.next_deadline()
            self._armed = math.inf if deadline is None else deadline
            with anyio.CancelScope(deadline=self._armed) as scope:
                self._timer_scope = scope
                await anyio.sleep_forever()
            self._timer_scope = None
            for event in self.hub.handle_timer(current_time()):
                if isinstance(event, CommandExpired):
                    log_conn(logging.WARNING, event.conn_id, "command %r timed out", event.name)
                    running = self._running.pop((event.conn_id, event.request_id), None)
                    if running is not None:
                        running.cancel()
