"""Where each subscribed topic stands for a hub client: its stream cursor.

``Cursor`` is pure bookkeeping (no I/O, no event loop): it decides what to
send when resubscribing (``since``), how to read the subscribe reply
(recovered, or a gap and a new position), and which incoming ``seq`` is new,
a duplicate or past a gap. The client applies its verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from .hub_client_types import Gap, GapReason, StreamPosition

__all__ = ["Cursor", "Reply", "Verdict", "parse_history_reply", "parse_subscribe_reply"]


class Verdict(Enum):
    NEW = "new"  # the next message: deliver
    DUPLICATE = "duplicate"  # seen already: drop
    AFTER_GAP = "after_gap"  # newer than the next one: signal the gap, then deliver


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """A subscribe reply's payload, checked: where the stream stands now."""

    seq: int
    epoch: str | None
    recovered: bool | None  # None: the server did not say (no ``since`` sent, or no support)
    present: tuple[tuple[str, str], ...] | None  # (conn_id, principal) with presence


def parse_subscribe_reply(payload: Any) -> Reply | None:
    """The reply's fields, or None when the payload is not a subscribe reply."""
    if not isinstance(payload, dict):
        return None
    seq = payload.get("seq")
    epoch = payload.get("epoch")
    recovered = payload.get("recovered")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return None
    if epoch is not None and not isinstance(epoch, str):
        return None
    if recovered is not None and not isinstance(recovered, bool):
        return None
    present: tuple[tuple[str, str], ...] | None = None
    members = payload.get("present")
    if isinstance(members, list):
        present = tuple(
            (str(m.get("conn_id")), str(m.get("principal"))) for m in members if isinstance(m, dict)
        )
    return Reply(seq=seq, epoch=epoch, recovered=recovered, present=present)


def parse_history_reply(
    payload: Any,
) -> tuple[int, str | None, bool | None, list[dict[str, Any]]] | None:
    """A ``history`` reply's ``seq``, ``epoch``, ``recovered`` and message envelopes
    (those with an integer ``seq``, in order), or None for another shape."""
    reply = parse_subscribe_reply(payload)
    if reply is None:
        return None
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return None
    envelopes = [
        m
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("seq"), int) and not isinstance(m["seq"], bool)
    ]
    return reply.seq, reply.epoch, reply.recovered, envelopes


class Cursor:
    """The last ``seq`` delivered on one topic and the epoch it belongs to.

    ``seq`` is None until the first subscribe reply (or a ``since`` given by
    the application). Messages carry no epoch: they belong to the epoch of
    the latest reply on the current connection.
    """

    __slots__ = ("epoch", "seq", "topic")

    def __init__(self, topic: str, since: StreamPosition | None = None) -> None:
        self.topic = topic
        self.seq: int | None = None if since is None else since.seq
        self.epoch: str | None = None if since is None else since.epoch

    @property
    def position(self) -> StreamPosition | None:
        if self.seq is None or self.epoch is None:
            return None
        return StreamPosition(self.seq, self.epoch)

    def since(self) -> dict[str, object] | None:
        """The ``since`` to send when subscribing: only with a known epoch (a
        ``seq`` alone cannot be trusted across a restart)."""
        position = self.position
        if position is None:
            return None
        return {"seq": position.seq, "epoch": position.epoch}

    def reset(self, seq: int, epoch: str) -> Gap:
        """The server's ``reset``: the stream goes on after ``(seq, epoch)``;
        what followed the cursor before is lost."""
        last_seq, last_epoch = self.seq, self.epoch
        self.seq, self.epoch = seq, epoch
        changed = epoch != last_epoch
        return Gap(
            topic=self.topic,
            reason=GapReason.EPOCH_CHANGED if changed else GapReason.NOT_RECOVERED,
            last_seq=last_seq,
            last_epoch=last_epoch,
            resumed_at=seq,
            epoch=epoch,
        )

    def resume(self, reply: Reply, *, asked: bool) -> Gap | None:
        """Take a subscribe reply; the gap to signal, if messages are lost.

        ``asked``: the request carried ``since`` (so the server may replay
        what follows the cursor). Without a cursor (a first subscribe) the
        stream simply starts at the reply's ``seq``.
        """
        last_seq, last_epoch = self.seq, self.epoch
        if last_seq is None:
            self.seq, self.epoch = reply.seq, reply.epoch
            return None
        if asked and reply.recovered is True:
            self.epoch = reply.epoch  # the missed messages follow, seq > last_seq
            return None
        self.seq, self.epoch = reply.seq, reply.epoch
        if asked and reply.recovered is False:
            changed = reply.epoch != last_epoch
            reason = GapReason.EPOCH_CHANGED if changed else GapReason.NOT_RECOVERED
        elif reply.seq == last_seq and reply.epoch == last_epoch:
            return None  # nothing was published meanwhile
        elif reply.epoch != last_epoch:
            reason = GapReason.EPOCH_CHANGED
        elif reply.epoch is not None:  # a server with epochs keeps history when configured
            reason = GapReason.NOT_RECOVERED
        else:
            reason = GapReason.NO_RECOVERY
        return Gap(
            topic=self.topic,
            reason=reason,
            last_seq=last_seq,
            last_epoch=last_epoch,
            resumed_at=reply.seq,
            epoch=reply.epoch,
        )

    def advance(self, seq: int) -> tuple[Verdict, Gap | None]:
        """Take an incoming message's ``seq``: deliver, drop, or signal a gap first."""
        last = self.seq
        if last is None:  # not confirmed yet: nothing to compare with
            self.seq = seq
            return Verdict.NEW, None
        if seq <= last:
            return Verdict.DUPLICATE, None
        self.seq = seq
        if seq == last + 1:
            return Verdict.NEW, None
        gap = Gap(
            topic=self.topic,
            reason=GapReason.SEQ_GAP,
            last_seq=last,
            last_epoch=self.epoch,
            resumed_at=seq - 1,
            epoch=self.epoch,
        )
        return Verdict.AFTER_GAP, gap
