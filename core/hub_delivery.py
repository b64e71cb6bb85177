"""Delivery of one publication to a topic's subscribers, under its slow-consumer policy.

The publication is already encoded and numbered; this module only decides,
per subscriber, whether it is queued, skipped (a droppable message for a full
outbox on a "drop" topic, counted and announced later with a ``dropped``
notice), or makes an overflowing connection fail with 1013.
"""

from __future__ import annotations

from .connection import State
from .frames import PreparedMessage
from .hub_output import HubOutput
from .topics import Topic

__all__ = ["deliver"]


def deliver(out: HubOutput, state: Topic, message: PreparedMessage, droppable: bool) -> int:
    """Queue ``message`` for every open subscriber of ``state``; how many got it."""
    may_drop = droppable and state.policy.slow_consumer == "drop"
    if not may_drop and not state.dropped:
        return out.send_each(state.subscribers, message)  # nobody owed a notice
    entries = out.registry.entries
    notices: dict[int, PreparedMessage] = {}
    delivered = 0
    for conn_id in state.subscribers:
        entry = entries[conn_id]
        connection = entry.connection
        if connection.state is not State.OPEN:
            continue
        owed = state.dropped.get(conn_id, 0)
        if not owed and not may_drop:
            delivered += out.send(entry, message)
            continue
        cap = connection.limits.max_outbox_size
        queued = connection.outbox_size
        size = len(message.frame(connection.deflate))
        if not owed:
            if queued and queued + size > cap:
                state.dropped[conn_id] = 1
                out.counters.drops += 1
            else:
                delivered += out.send(entry, message)
            continue
        notice = notices.get(owed)
        if notice is None:
            notice = notices[owed] = out.prepare("dropped", {"count": owed}, topic=state.name)
        notice_size = len(notice.frame(connection.deflate))
        if not queued and notice_size + size > cap:
            # Only this message fits an empty outbox: it goes alone, the
            # notice waits for the next message (docs/protocol.md).
            delivered += out.send(entry, message)
        elif may_drop and queued + notice_size + size > cap:
            state.dropped[conn_id] = owed + 1
            out.counters.drops += 1
        else:
            del state.dropped[conn_id]
            if out.send(entry, notice):
                delivered += out.send(entry, message)
    return delivered
