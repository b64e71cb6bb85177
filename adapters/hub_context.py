"""What command and binary handlers receive, and how they signal an error.

Kept apart from the server so handler code can import these small types
without pulling in the whole adapter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.auth import Principal
from ..core.envelope import RequestId
from ..core.registry import ConnectionInfo

if TYPE_CHECKING:
    from .blocking import BlockingOperations
    from .hub_runtime import HubRuntime

__all__ = [
    "BinaryHandler",
    "CommandContext",
    "CommandError",
    "CommandHandler",
    "ConnectionContext",
]


class CommandError(Exception):
    """Raise from a command handler to answer with your own error ``code``.

    The ``message`` is sent to the client as is, so it must hold nothing
    secret; any other exception becomes a generic ``command_failed``.
    """

    def __init__(self, code: str, message: str = "") -> None:
        if not isinstance(code, str) or not code:
            raise ValueError("code must be a non-empty string")
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionContext:
    """The connection a handler runs for, and the hub to act through.

    ``hub`` is the server-side handle (``broadcast``, ``publish``,
    ``send_to``...) for the event loop: async handlers use it. A synchronous
    handler runs in a worker thread, where ``hub`` raises
    ``WrongThreadError``: it uses ``threadsafe_hub`` (the same operations as
    blocking calls carried into the loop).
    """

    conn_id: str
    principal: Principal
    info: ConnectionInfo
    hub: HubRuntime

    @property
    def metadata(self) -> dict[str, Any]:
        """The application's per-connection dictionary (``ConnectionInfo.metadata``)."""
        return self.info.metadata

    @property
    def threadsafe_hub(self) -> BlockingOperations:
        """The hub's operations, safe from any thread (``hub.threadsafe()``).

        For synchronous handlers, which run in worker threads; in the loop's
        thread the calls run directly.
        """
        return self.hub.threadsafe()


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandContext(ConnectionContext):
    """A command invocation: which request, which command, until when.

    ``deadline`` is on the event loop's clock (``anyio.current_time()``); the
    client gets ``command_timeout`` then and the handler is cancelled.
    """

    request_id: RequestId
    command: str
    deadline: float


#: ``async def handler(ctx, payload) -> result``, or a plain function (run in a
#: worker thread). The result must be JSON-serialisable: it becomes the reply.
CommandHandler = (
    Callable[[CommandContext, Any], Awaitable[Any]] | Callable[[CommandContext, Any], Any]
)

#: ``async def handler(ctx, data) -> None`` for binary messages, awaited in
#: order with the connection's other messages.
BinaryHandler = Callable[[ConnectionContext, bytes], Awaitable[None]]
