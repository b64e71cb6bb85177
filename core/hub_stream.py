"""Reading a broker's answer against a client's position (``since``).

Pure functions over ``StreamAnswer``: does the stream go on from where the
client was, does the answer hold everything after it, and the history page
it makes. Shared by the node's recovery (``hub_brokered``) and the drivers'
server-side history reads.
"""

from __future__ import annotations

from .hub_broker import StreamAnswer
from .hub_recovery import HistoryPage, Position

__all__ = ["goes_on_from", "holds_all_after", "page_of"]


def page_of(answer: StreamAnswer, since: Position | None) -> HistoryPage:
    """A history read answered by the broker: the entries after ``since`` when
    the stream goes on from it (``recovered``), else none; without ``since``,
    the entries read (the newest)."""
    recovered: bool | None = None
    entries = answer.entries
    if since is not None:
        recovered = goes_on_from(since, answer)
        if not recovered:
            entries = ()
    return HistoryPage(
        topic=answer.topic,
        seq=answer.seq,
        epoch=answer.epoch,
        recovered=recovered,
        start=entries[0][0] if entries else answer.seq + 1,
        envelopes=tuple(data for _, data in entries),
    )


def goes_on_from(since: Position, answer: StreamAnswer) -> bool:
    """Does the answer's stream go on from ``since``: same epoch, not behind,
    and its entries start right after it (or there is nothing after it)?"""
    seq, epoch = since
    if epoch != answer.epoch or seq > answer.seq:
        return False
    entries = answer.entries
    return seq == answer.seq or (bool(entries) and entries[0][0] == seq + 1)


def holds_all_after(since: Position, answer: StreamAnswer) -> bool:
    """Does the answer hold every entry after ``since``, up to the stream's end?"""
    if not goes_on_from(since, answer):
        return False
    entries = answer.entries
    return since[0] == answer.seq or entries[-1][0] == answer.seq
