"""Recovery from history: ``since`` positions, replays and ``history`` answers.

A position is ``{"seq": n, "epoch": e}``: the last message a client has of a
topic's stream. It is recovered when the stream is the same (same epoch),
not behind the client (``n <= seq``), and its history still holds every
message after ``n``. Replays and answers reuse the exact envelopes kept, so
recovering costs framing, never encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .envelope import Codec, RequestId
from .history import TopicLog
from .topics import Topic

__all__ = [
    "MAX_EPOCH_LENGTH",
    "HistoryPage",
    "Position",
    "check_history_read",
    "encode_history_reply",
    "frame_bound",
    "parse_history_request",
    "parse_since",
    "read",
]

MAX_EPOCH_LENGTH: Final = 64

#: A stream position: (seq, epoch).
Position = tuple[int, str]


class BadRequest(ValueError):
    """A ``since`` or ``limit`` of the wrong shape (answered ``invalid_envelope``)."""


def frame_bound(size: int) -> int:
    """Most bytes a text message of ``size`` bytes takes as one frame on any
    connection: header (at most 10 bytes) plus what permessage-deflate may add
    to incompressible data. zlib emits stored blocks (5 bytes each, RFC 1951
    §3.2.4) as small as its window, which a client may make 512 bytes, so
    this is zlib's own bound for any parameters (deflateBound: an eighth and
    a sixty-fourth more, plus 5 bytes), with the 10-byte header and a byte
    of margin for the sync flush."""
    return size + (size >> 3) + (size >> 6) + 16


def check_history_read(since: object, limit: object) -> None:
    """Raise ValueError unless ``since`` is None or ``(seq >= 0, epoch)`` and
    ``limit`` None or an integer >= 0 (the server-side ``Hub.history``)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be an integer >= 0, got {limit!r}")
    if since is not None:
        if not isinstance(since, tuple) or len(since) != 2:
            raise ValueError(f"since must be a (seq, epoch) pair, got {since!r}")
        seq, epoch = since
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError(f"since seq must be an integer >= 0, got {seq!r}")
        if not isinstance(epoch, str):
            raise ValueError(f"since epoch must be a string, got {epoch!r}")


def parse_since(value: object) -> Position:
    """A client's ``since`` object; raises ``BadRequest`` for any other shape."""
    if not isinstance(value, dict):
        raise BadRequest("since must be an object {seq, epoch}")
    seq = value.get("seq")
    epoch = value.get("epoch")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise BadRequest("since.seq must be an integer >= 0")
    if not isinstance(epoch, str) or len(epoch) > MAX_EPOCH_LENGTH:
        raise BadRequest(f"since.epoch must be a string of at most {MAX_EPOCH_LENGTH} characters")
    return seq, epoch


def subscribe_since(payload: object) -> Position | None:
    """The ``since`` of a subscribe payload, None when absent (raises ``BadRequest``).

    Subscribe payloads were ignored before recovery existed: any payload that
    is not an object, or an object without ``since``, still subscribes plainly.
    """
    if not isinstance(payload, dict):
        return None
    since = payload.get("since")
    return None if since is None else parse_since(since)


def parse_history_request(payload: object, cap: int) -> tuple[Position | None, int]:
    """``since`` and ``limit`` of a history request, ``limit`` capped to ``cap``."""
    if payload is None:
        return None, cap
    if not isinstance(payload, dict):
        raise BadRequest("payload must be an object {since, limit}")
    since = payload.get("since")
    limit = payload.get("limit")
    if limit is None:
        limit = cap
    elif isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise BadRequest("limit must be an integer >= 1")
    return (None if since is None else parse_since(since)), min(limit, cap)


def recoverable(state: Topic, since: Position) -> bool:
    """May the stream be continued for a client that has everything up to ``since``?"""
    seq, epoch = since
    if epoch != state.epoch or seq > state.seq:
        return False
    if seq == state.seq:
        return True
    log = state.log
    return log is not None and log.first <= seq + 1


def missed(state: Topic, since: Position) -> list[bytes]:
    """The kept envelopes after ``since`` (which must be ``recoverable``)."""
    log = state.log
    if log is None or since[0] == state.seq:
        return []
    return log.since(since[0], len(log))


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryPage:
    """What a topic's history holds for a reader: the stream's current ``seq``
    and ``epoch`` (``None`` for a topic that does not exist), whether ``since``
    was recovered (None when none was given), and the exact envelopes, oldest
    first; the first has seq ``start``."""

    topic: str
    seq: int
    epoch: str | None
    recovered: bool | None
    start: int
    envelopes: tuple[bytes, ...]

    def entries(self) -> list[tuple[int, bytes]]:
        """``(seq, envelope)`` pairs."""
        return [(self.start + i, data) for i, data in enumerate(self.envelopes)]


def read(
    name: str,
    state: Topic | None,
    since: Position | None,
    limit: int,
    room: int | None = None,
    *,
    at_least_one: bool = True,
) -> HistoryPage:
    """Up to ``limit`` kept envelopes of a topic: after ``since`` when given
    (nothing unless recoverable), else its newest. ``room`` bounds their total
    ``frame_bound`` size; with ``at_least_one`` (an empty outbox takes any
    message) one envelope is given even past it."""
    if state is None:
        recovered = None if since is None else False
        return HistoryPage(
            topic=name, seq=0, epoch=None, recovered=recovered, start=1, envelopes=()
        )
    log: TopicLog | None = state.log
    recovered = None
    data: list[bytes] = []
    start = state.seq + 1
    if since is not None:
        recovered = recoverable(state, since)
        if recovered and log is not None and since[0] < state.seq:
            start = since[0] + 1
            data = log.since(since[0], limit)
            data = _fit(data, room, at_least_one, newest=False)
    elif log is not None and len(log):
        count = min(limit, len(log))
        start = log.last - count + 1
        data = log.since(start - 1, count)
        kept = _fit(data, room, at_least_one, newest=True)
        start += len(data) - len(kept)
        data = kept
    return HistoryPage(
        topic=name,
        seq=state.seq,
        epoch=state.epoch,
        recovered=recovered,
        start=start,
        envelopes=tuple(data),
    )


def _fit(data: list[bytes], room: int | None, at_least_one: bool, *, newest: bool) -> list[bytes]:
    """The oldest (or newest) envelopes of ``data`` within ``room``."""
    if room is None:
        return data
    total, count = 0, 0
    for item in reversed(data) if newest else data:
        total += frame_bound(len(item)) + 1
        if total > room and (count or not at_least_one):
            break
        count += 1
    return data[len(data) - count :] if newest else data[:count]


def encode_history_reply(
    page: HistoryPage, request_id: RequestId, timestamp: int, codec: Codec
) -> bytes:
    """The ``reply`` to a history request: the page's fields, then its envelopes
    spliced in as they were kept (``"messages": [...]``), without re-encoding."""
    head: dict[str, object] = {"topic": page.topic, "seq": page.seq, "epoch": page.epoch}
    if page.recovered is not None:
        head["recovered"] = page.recovered
    payload = codec.dumps(head).rstrip()
    return b"".join(
        (
            b'{"message_type":"reply","id":',
            codec.dumps(request_id),
            b',"ok":true,"payload":',
            payload[:-1],
            b',"messages":[',
            b",".join(page.envelopes),
            b']},"timestamp":',
            str(timestamp).encode(),
            b"}",
        )
    )
