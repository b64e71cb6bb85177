"""The broker seam: what a hub spread over several processes asks of its broker.

With a broker, the core still decides *what* each connection gets (policies,
replies, replays, presence, slow consumers); the broker decides *where*
publications go and where the streams live. The hub asks through
``BrokerCommand``s, which the driver takes with ``Hub.broker_commands()``
(the hub calls its ``broker`` wake-up when it queued one), and the broker's
answers come back as inputs: a publication arrived (``Hub.publication``),
a stream answered (``Hub.answered``), a publish was numbered
(``Hub.published``) or could not be (``Hub.publish_failed``).

A publication is encoded once, at the node where it is published, split where
its ``seq`` goes (``Outgoing.head``/``tail``); the broker numbers it and
every node that has subscribers frames the same bytes once for them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .envelope import RequestId
from .hub_recovery import Position

__all__ = [
    "Arrival",
    "BrokerCommand",
    "Fetch",
    "Listen",
    "Outgoing",
    "PresenceOut",
    "StreamAnswer",
    "Unlisten",
    "Waiter",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    """A publication to number and spread: ``head + seq + tail`` is its envelope.

    The broker gives it the topic's next ``seq`` in its epoch, keeps it in the
    topic's stream (at most ``history_size`` entries, for ``history_ttl``
    seconds) and sends it to every node listening to the topic. ``ref``
    names it in ``Hub.published`` / ``Hub.publish_failed``.
    """

    ref: int
    topic: str
    head: bytes
    tail: bytes
    droppable: bool
    history_size: int
    history_ttl: float

    def envelope(self, seq: int) -> bytes:
        return b"".join((self.head, str(seq).encode(), self.tail))


@dataclass(frozen=True, slots=True, kw_only=True)
class Listen:
    """This node has subscribers of ``topic`` now: receive its publications.

    Publications arriving before the stream's answer are held by the hub,
    so the broker must be listening before it reads the stream for a
    ``Fetch`` queued after this command."""

    topic: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Unlisten:
    """This node has no subscriber of ``topic`` left."""

    topic: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetch:
    """Read a topic's stream: its position (``seq``, ``epoch``; a new stream
    starts if it has none) and, when ``limit`` > 0, kept entries: those
    after seq ``after`` if ``after`` is not None (from the stream's start
    when its epoch is not ``epoch``), else the newest; at most ``limit``,
    oldest first.
    Answer with ``Hub.answered(StreamAnswer(ref=...))``; presence members of
    the topic on every node go in the answer when ``presence`` is set.
    Entries older than ``max_age`` seconds (the topic's ``history_ttl``) are
    left out, as a single node's history forgets them."""

    ref: int
    topic: str
    after: int | None
    epoch: str | None
    limit: int
    presence: bool
    max_age: float = math.inf  # entries kept longer (seconds) are not given: the history's age


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceOut:
    """A connection of this node joined or left a topic with presence: record
    it where every node sees it and send ``envelope`` (the ``presence``
    message) to the topic's subscribers on the other nodes."""

    topic: str
    conn_id: str
    principal_id: str
    joined: bool
    envelope: bytes


BrokerCommand = Outgoing | Listen | Unlisten | Fetch | PresenceOut


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamAnswer:
    """What the broker read for a ``Fetch``: the stream's position, the
    entries asked for as ``(seq, envelope)`` oldest first, and the presence
    members ``(conn_id, principal_id)`` of the topic on every node."""

    ref: int
    topic: str
    seq: int
    epoch: str
    entries: tuple[tuple[int, bytes], ...] = ()
    members: tuple[tuple[str, str], ...] = ()


#: A publication as it arrived: (seq, epoch, envelope, droppable).
Arrival = tuple[int, str, bytes, bool]


@dataclass(slots=True, eq=False)
class Waiter:
    """A subscriber of this node not yet in step with the topic's stream.

    It waits for the answer to fetch ``ref``: a subscribe (``reply``: with
    the request's ``request_id``, if any) or a live subscriber that missed
    publications (``since`` is where it was). Until answered, arrivals are
    held in ``held``; once answered it has everything up to ``seq`` of
    ``epoch`` and joins the live subscribers as soon as the node's own
    position reaches that far.
    """

    ref: int
    since: Position | None
    reply: bool
    request_id: RequestId | None = None
    announce: bool = False  # send it its own presence ``join`` after the reply
    answered: bool = False
    seq: int = 0
    epoch: str = ""
    held: list[Arrival] = field(default_factory=list)
