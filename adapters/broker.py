"""What a hub runtime needs of a broker (the I/O half of the core's broker seam).

The core (``wshub.core.hub_broker``) decides what each connection gets and
queues ``BrokerCommand``s; a ``Broker`` carries them out against a shared
service (``RedisBroker`` in ``broker_redis``, the extra ``wshub[redis]``),
feeds back what arrives, and relays the application's direct sends
(broadcast, ``send_to``, ``send_to_principal``, ``disconnect``) to the other
nodes. Without a broker a hub is one process and none of this exists.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol

from anyio.abc import TaskStatus

from ..core.errors import WsHubError
from ..core.hub_broker import Fetch, Outgoing, StreamAnswer

if TYPE_CHECKING:
    from .hub_runtime import HubRuntime

__all__ = ["Broker", "BrokerUnavailable"]


class BrokerUnavailable(WsHubError, RuntimeError):
    """The broker cannot be reached: the operation was not done.

    Raised by the server-side ``publish`` (and the direct sends) of a hub
    with a broker while its link is down; clients get the error code
    ``unavailable`` instead. A ``publish_async`` whose link failed before the
    broker answered raises it too: that publication may or may not have been
    published, and was not reported as delivered.
    """


class Broker(Protocol):
    """A hub's link to the service that spans its nodes."""

    node: str

    def attach(self, runtime: HubRuntime) -> None:
        """Bind to the runtime whose hub this broker serves (once, before ``run``)."""

    def wake(self) -> None:
        """The hub queued broker commands (called by the core, in the loop)."""

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """Connect (raise ``BrokerUnavailable`` if that fails), report started,
        then serve until cancelled, reconnecting when the link is lost."""

    @property
    def up(self) -> bool:
        """Is the link up now?"""

    def publish(self, outgoing: Outgoing) -> None:
        """Send a server-side publication (raises ``BrokerUnavailable`` when down)."""

    async def publish_wait(self, outgoing: Outgoing) -> tuple[int, str]:
        """Send a publication and wait for its ``(seq, epoch)``."""

    async def fetch_wait(self, fetch: Fetch) -> StreamAnswer:
        """Read a topic's stream for the application (``history_async``)."""

    def relay(self, kind: str, target: str | Collection[str] | None, data: bytes) -> None:
        """Carry a direct send done on this node to the others: ``kind`` is
        "broadcast" (``target``: ids to exclude), "principal", "conn" or
        "disconnect" (``data``: code and reason). Raises ``BrokerUnavailable``."""

    def metrics_text(self) -> str:
        """The broker's lines for ``/metrics`` (Prometheus text)."""
