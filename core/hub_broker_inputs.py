"""The hub's side of a broker: what a driver feeds it from the broker, and takes.

A mixin of ``Hub`` (one facade, one class for users), kept apart because
only a driver with a broker calls it: without one, every method here
raises ``LocalProtocolError``. The work is done by ``Brokered``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import LocalProtocolError
from .hub_broker import BrokerCommand, Fetch, Outgoing, StreamAnswer
from .hub_brokered import Brokered
from .hub_output import check_message_type
from .hub_recovery import check_history_read
from .hub_topics import check_topic_name

if TYPE_CHECKING:
    from .hub_events import HubEvent
    from .hub_topics import Topics

__all__ = ["BrokerInputs"]


class BrokerInputs:
    """Broker commands out; publications, answers and numberings in."""

    __slots__ = ()

    _topics: Topics

    @property
    def _brokered(self) -> Brokered:
        brokered = self._topics.brokered
        if brokered is None:
            raise LocalProtocolError("this hub has no broker")
        return brokered

    def broker_commands(self) -> list[BrokerCommand]:
        """What the broker must do, in order (taken: each is returned once)."""
        return self._brokered.take()

    def outgoing(
        self,
        topic: str,
        payload: object,
        *,
        message_type: str = "message",
        droppable: bool = False,
    ) -> Outgoing:
        """A publication encoded for the broker, not queued: the driver sends it
        itself (and awaits its numbering) when the application waits for it."""
        check_topic_name(topic)
        check_message_type(message_type)
        return self._brokered.outgoing(topic, payload, message_type, droppable)

    def history_fetch(
        self, topic: str, *, since: tuple[int, str] | None = None, limit: int | None = None
    ) -> Fetch:
        """What to read from the broker for ``history`` (same arguments); the
        driver runs it and turns the answer into a page with
        ``hub_stream.page_of(answer, since)``. Not queued."""
        check_topic_name(topic)
        check_history_read(since, limit)
        return self._brokered.history_fetch(topic, since, limit)

    def publication(
        self, topic: str, seq: int, epoch: str, envelope: bytes, *, droppable: bool = False
    ) -> int:
        """A numbered publication arrived from the broker: deliver it to this
        node's subscribers (framed once), in step with the topic's stream.
        How many subscribers it was queued for."""
        return self._brokered.arrival(topic, seq, epoch, envelope, droppable)

    def answered(self, answer: StreamAnswer) -> None:
        """The broker's answer to a ``Fetch``."""
        self._brokered.answered(answer)

    def published(self, ref: int, seq: int, epoch: str) -> list[HubEvent]:
        """The broker numbered ``Outgoing`` ``ref`` (a client's publish is answered)."""
        return self._brokered.published(ref, seq, epoch)

    def publish_failed(self, ref: int, message: str) -> None:
        """``Outgoing`` ``ref`` could not be published: its client gets ``unavailable``."""
        self._brokered.publish_failed(ref, message)

    def resync(self) -> None:
        """The link to the broker was lost and is back: listen again and bring
        every subscriber back in step (from the streams, or with a ``reset``)."""
        self._brokered.resync()

    def presence_arrived(self, topic: str, envelope: bytes) -> int:
        """Another node's ``presence`` envelope: to this node's subscribers of ``topic``."""
        return self._brokered.presence_arrived(topic, envelope)
